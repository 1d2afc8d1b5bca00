// The viewer page that `attn inspect` writes: one self-contained HTML file (no network, no external
// fonts or scripts) made from tools/attn/report/report.html, which is embedded in the binary.
#pragma once

#include <string>
#include <string_view>

namespace attn::report {

// The page's data placeholder, inside <script id="attn-data" type="application/json">.
inline constexpr std::string_view kReportPlaceholder = "/*ATTN_DATA*/";

// Returns the viewer page with `data_json` (a JSON object in the schema the page documents at its
// top) in place of the placeholder. Every '<' in the JSON becomes the escape \u003c, which JSON.parse
// reads back as '<', so no token text can end or re-mode the <script> element that holds it (this
// covers "</" as well as "<!--"). Throws attn::Error if the template lacks the placeholder.
std::string RenderReport(const std::string& data_json);

// The same with another template (tests use this to check the placeholder handling).
std::string RenderReport(std::string_view page_template, const std::string& data_json);

}  // namespace attn::report
