// libFuzzer target for the Jinja interpreter of chat templates (src/tokenizer/jinja.h): the input is
// a template, as a GGUF file's tokenizer.chat_template would carry it. Parsing and rendering (on a
// conversation with a system prompt, tools and a tool call) may refuse it only with attn::Error;
// a template that renders must render the same text again, within the output bound.
// Seeds: fuzz/corpus/jinja/ (real models' templates from tests/fixtures/chat_templates/, and
// snippets of the language's corners).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "attn/error.h"
#include "tokenizer/jinja.h"

namespace {

const nlohmann::ordered_json& Context() {
  static const nlohmann::ordered_json context = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Weather in Paris? é 日本"},
      {"role": "assistant", "content": "", "tool_calls": [{"id": "call12345", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
      {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "{\"t\": 18.5}"},
      {"role": "user", "content": "  thanks\n"}
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})");
  return context;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;
  const std::string source(reinterpret_cast<const char*>(data), size);
  attn::jinja::RenderOptions options;
  options.now = "2026-01-15 10:30:00";
  try {
    const attn::jinja::Template t(source);
    const std::string first = t.Render(Context(), options);
    if (first.size() > attn::jinja::kMaxStringBytes) std::abort();
    if (t.Render(Context(), options) != first) std::abort();  // rendering is deterministic
  } catch (const attn::Error&) {
  }
  return 0;
}
