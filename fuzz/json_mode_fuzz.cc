// libFuzzer target for JSON mode's recognizer (src/model/json_constraint.h), differential against
// nlohmann::json's parser: bytes the recognizer takes as one complete object must parse as an
// object, and an object the parser takes (starting with '{', within the recognizer's whitespace
// and depth bounds) must be accepted and complete. Inputs with bytes >= 0x80, \u escapes or NUL
// bytes are only run, not compared (the recognizer passes any UTF-8 and lone surrogates, as
// Python's json does, and nlohmann refuses them; nlohmann takes a NUL as the end of the input).
// Seeds: fuzz/corpus/json_mode/.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "model/json_constraint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  attn::JsonRecognizer r;
  size_t accepted = 0;
  while (accepted < size && r.Feed(data[accepted])) ++accepted;
  const bool complete = accepted == size && r.complete();

  bool comparable = text.find("\\u") == std::string::npos;
  int run = 0, opens = 0;
  for (uint8_t c : text) {
    if (c >= 0x80 || c == 0) comparable = false;  // nlohmann's parser stops at a NUL byte
    run = (c == ' ' || c == '\n' || c == '\t' || c == '\r') ? run + 1 : 0;
    if (run > attn::JsonRecognizer::kMaxWhitespace) comparable = false;
    if (c == '{' || c == '[') ++opens;
  }
  if (opens > attn::JsonRecognizer::kMaxDepth) comparable = false;
  if (!comparable) return 0;

  bool parses = false;
  try {
    parses = nlohmann::json::parse(text).is_object();
  } catch (const nlohmann::json::out_of_range&) {
    return 0;  // a number beyond a double (5e+999) stops nlohmann's parse: its limit, not JSON's
  } catch (const nlohmann::json::exception&) {
  }
  if (complete && !parses) std::abort();  // the recognizer took what is not one object
  if (parses && !text.empty() && text[0] == '{' && !complete) std::abort();  // it refused an object
  return 0;
}
