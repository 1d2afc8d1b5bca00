// The viewer page of `attn inspect`: the embedded template with the data substituted.
#include "inspect/report_page.h"

#include <string>
#include <string_view>

#include "attn/error.h"
#include "attn_report_html.h"  // generated: kReportHtmlTemplate (cmake/embed_text.cmake)

namespace attn::report {

std::string RenderReport(std::string_view page_template, const std::string& data_json) {
  const size_t at = page_template.find(kReportPlaceholder);
  if (at == std::string_view::npos) {
    throw Error("RenderReport: the page template (" + std::to_string(page_template.size()) +
                " bytes) lacks the data placeholder " + std::string(kReportPlaceholder));
  }
  // '<' occurs in JSON only inside strings, where \u003c means the same character; the HTML parser
  // then never sees "</script" or "<!--" inside the data element.
  std::string page;
  page.reserve(page_template.size() + data_json.size() + data_json.size() / 16);
  page.append(page_template.substr(0, at));
  for (const char c : data_json) {
    if (c == '<') {
      page.append("\\u003c");
    } else {
      page.push_back(c);
    }
  }
  page.append(page_template.substr(at + kReportPlaceholder.size()));
  return page;
}

std::string RenderReport(const std::string& data_json) {
  return RenderReport(cli::kReportHtmlTemplate, data_json);
}

}  // namespace attn::report
