// libFuzzer target for the JSON schema converter (src/model/json_schema.h): any input is either
// refused with attn::Error or converted to a grammar that the GBNF parser (src/model/grammar.h)
// must accept; the text after the first NUL byte is then fed to the grammar (the matcher must
// neither crash nor accept a text that is not JSON). Seeds: fuzz/corpus/json_schema/.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "attn/error.h"
#include "model/grammar.h"
#include "model/json_schema.h"

namespace {

// `text` with every run of digits outside strings cut to its first two digits: the JSON stays
// JSON (a number keeps its shape) and its numbers stay within double's range, which nlohmann's
// parser needs (it refuses 1e400 or a 400-digit integer as "number overflow", though RFC 8259
// allows them, and the grammars rightly admit them).
std::string SmallNumbers(const std::string& text) {
  std::string out;
  bool in_string = false, escaped = false;
  int digits = 0;
  for (char c : text) {
    if (in_string) {
      out += c;
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c >= '0' && c <= '9') {
      if (++digits <= 2) out += c;
      continue;
    }
    digits = 0;
    if (c == '"') in_string = true;
    out += c;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string schema = input.substr(0, nul);
  const std::string text = nul == std::string::npos ? std::string() : input.substr(nul + 1);
  if (schema.size() > 4096 || text.size() > 512) return 0;
  std::string gbnf;
  try {
    gbnf = attn::JsonSchemaToGbnf(std::string_view(schema));
  } catch (const attn::Error&) {
    return 0;
  }
  std::shared_ptr<attn::Grammar> g;
  try {
    g = attn::Grammar::Parse(gbnf);
  } catch (const attn::Error&) {
    std::abort();  // the converter wrote a grammar the parser refuses
  }
  try {
    attn::GrammarMatcher m(g);
    if (m.Feed(text) && m.complete()) {
      // A complete sentence of a schema's grammar is JSON (nlohmann refuses lone surrogate
      // escapes, which the grammar refuses too, and stops at NUL bytes, which it never admits;
      // its numbers are first brought into double's range).
      if (!nlohmann::json::accept(SmallNumbers(text))) std::abort();
    }
  } catch (const attn::Error&) {
    // more parses than Grammar::kMaxStacks
  }
  return 0;
}
