// OpenAI's function calling ("tools" in /v1/chat/completions) for any chat model, in the way of
// llama.cpp's generic tool handling for models without a tool format of their own: the tools are
// described in the system message, the answer is constrained (a JSON schema, src/model/
// json_schema.h) to one JSON object, either {"tool_calls": [{"name": ..., "arguments": {...}}]} or
// {"response": "..."}, and that object becomes the choice's message: tool_calls (finish_reason
// "tool_calls") or content. Earlier turns go back into the prompt in the same form: an assistant
// message's tool_calls as that JSON, a "tool" message as a user turn {"tool_response": ...}.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace attn::serve {

struct ToolSpec {
  std::string name;
  std::string description;
  nlohmann::ordered_json parameters;  // a JSON schema of the arguments (an object)
};

struct ToolRequest {
  std::vector<ToolSpec> tools;
  // "auto" (the model chooses: calls or an answer), "required" (calls only), or one tool's name.
  std::string choice = "auto";
  bool parallel = true;  // parallel_tool_calls: up to kMaxCalls calls in one answer, else one
};
constexpr int kMaxCalls = 8;

// "tools", "tool_choice" and "parallel_tool_calls" of a request body (parsed in document order);
// nullopt when there are no tools or tool_choice is "none". Throws attn::Error naming the field.
std::optional<ToolRequest> ParseTools(const nlohmann::ordered_json& body);

// The system text that describes the tools and the answer's two forms.
std::string ToolInstructions(const ToolRequest& tools);
// The JSON schema (text) the answer follows.
std::string ToolAnswerSchema(const ToolRequest& tools);

// A message of the conversation in the prompt's form: an assistant message with "tool_calls" as
// the JSON object the model writes, a "tool" message as a user turn; others as their content.
// Throws attn::Error naming messages[i] for a malformed one.
std::string ToolAwareContent(const nlohmann::json& message, size_t i, const std::string& content);

// A message of the request as a chat template takes it (what transformers passes): role, content
// (a string, "" when absent), and tool_calls with their arguments as JSON objects (OpenAI sends
// them as text), tool_call_id and name where given. Checks as ToolAwareContent.
nlohmann::ordered_json TemplateMessage(const nlohmann::json& message, size_t i, const std::string& role,
                                       const std::string& content);

// A model's own tool-call format, as its chat template asks for it (the template renders the tools
// and earlier calls itself; attn serve --jinja then reads the answer so):
//   kToolCallTags (Hermes 2 / 3, Qwen 2.5 / 3 / 3.5, QwQ, Qwen3-Coder): each call in
//     <tool_call>...</tool_call>, holding a JSON object {"name", "arguments"} or <function=NAME>
//     with <parameter=P>VALUE</parameter> elements (a VALUE that is not JSON is a string);
//   kMistral (Mistral Nemo / Small, Devstral, Ministral): "[TOOL_CALLS]" then a JSON array of
//     {"name", "arguments"} (v3), or per call NAME [CALL_ID]ID [ARGS]{...} (v11 and later);
//   kLlama3Json (Llama 3.1 / 3.2 / 3.3): the whole answer one JSON object {"name", "parameters"},
//     after an optional <|python_tag|>;
//   kHarmony (gpt-oss): messages "<|channel|>C<|message|>BODY<|end|>" (after the prompt's
//     "<|start|>assistant", then each after "<|start|>assistant"); a header "to=functions.NAME"
//     makes BODY (JSON) a call, the analysis channel is reasoning, the final channel the content.
//   kDeepSeek (DeepSeek R1 and its Qwen / Llama distills, V3.1): the calls between
//     <｜tool▁calls▁begin｜> and <｜tool▁calls▁end｜>, each <｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
//     then its arguments in a ```json block (R1), or NAME<｜tool▁sep｜>ARGS (V3.1), then
//     <｜tool▁call▁end｜>.
//   kFunctionaryV32 (Functionary v3.2): after the prompt's ">>>", segments RECIPIENT\nBODY joined by
//     ">>>": "all" is text for the user, any other recipient a call of that function (BODY: JSON);
//   kFunctionaryV31 (Functionary v3.1, Llama 3.1's custom tool format): text, then
//     <function=NAME>{...}</function> per call.
// kGeneric: none of these (the generic form above).
enum class ToolFormat {
  kGeneric,
  kToolCallTags,
  kMistral,
  kLlama3Json,
  kHarmony,
  kDeepSeek,
  kFunctionaryV32,
  kFunctionaryV31
};
ToolFormat TemplateToolFormat(const std::string& chat_template);
// The choice's message for an answer in `format`: text before the first call is the content (null
// when blank); an answer with no call, or one that does not parse, is returned as its text. Ids
// are "call_" + id_prefix + "_" + k, or for kMistral nine letters and digits (its templates refuse
// others when the call comes back in the next request).
nlohmann::json NativeToolAnswerMessage(ToolFormat format, const std::string& text,
                                       const std::string& id_prefix, bool* tool_calls);

// gpt-oss's harmony answer read into its channels: the analysis channel's text (reasoning), the
// final (and other) channels' text (content), and the calls ({"name", "arguments"}); nullopt when
// a call's arguments are not a JSON object. Text before any header (an answer without channels)
// is content.
struct HarmonyAnswer {
  std::string reasoning, content;
  std::vector<nlohmann::ordered_json> calls;
};
std::optional<HarmonyAnswer> ParseHarmony(const std::string& text);

// The choice's message for an answer `text`: {"role": "assistant", "content": null, "tool_calls":
// [...]} (ids "call_" + id_prefix + "_" + k) or {"role": "assistant", "content": response}.
// *tool_calls tells which; an answer cut short (not one JSON object) is returned as its text.
nlohmann::json ToolAnswerMessage(const std::string& text, const std::string& id_prefix, bool* tool_calls);

}  // namespace attn::serve
