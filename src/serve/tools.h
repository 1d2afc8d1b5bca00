// OpenAI's function calling ("tools" in /v1/chat/completions) for any chat model, in the way of
// llama.cpp's generic tool handling for models without a tool format of their own: the tools are
// described in the system message, the answer is constrained (a JSON schema, src/model/
// json_schema.h) to one JSON object, either {"tool_calls": [{"name": ..., "arguments": {...}}]} or
// {"response": "..."}, and that object becomes the choice's message: tool_calls (finish_reason
// "tool_calls") or content. Earlier turns go back into the prompt in the same form: an assistant
// message's tool_calls as that JSON, a "tool" message as a user turn {"tool_response": ...}.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "attn/generate.h"
#include "serve/reasoning.h"

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
//     <function=NAME>{...}</function> per call;
//   kKimiK2 (Kimi K2 Instruct / Thinking): between <|tool_calls_section_begin|> and
//     <|tool_calls_section_end|>, per call <|tool_call_begin|>functions.NAME:INDEX
//     <|tool_call_argument_begin|>{...}<|tool_call_end|>;
//   kCommandR7B (Command R7B, Command A): <|START_THINKING|>PLAN<|END_THINKING|> (reasoning), then
//     <|START_ACTION|>[{"tool_call_id", "tool_name", "parameters"}, ...]<|END_ACTION|>, or the
//     answer in <|START_RESPONSE|> ... <|END_RESPONSE|> (the markers dropped, with tools or not).
// kGeneric: none of these (the generic form above).
enum class ToolFormat {
  kGeneric,
  kToolCallTags,
  kMistral,
  kLlama3Json,
  kHarmony,
  kDeepSeek,
  kFunctionaryV32,
  kFunctionaryV31,
  kKimiK2,
  kCommandR7B
};
constexpr int kToolFormats = 10;
ToolFormat TemplateToolFormat(const std::string& chat_template);

// Reading an answer with tools, as it streams (the splitters of serve/reasoning.h). Every format's
// reading holds the same rules, so that an answer streams as it reads whole: a call comes out once
// its block is whole (a block cut by the end of the answer is read as it stands); a block that
// does not parse is content as written; text around the calls is content, with the whitespace at
// its ends and next to the calls dropped. kGeneric: the answer's JSON object, its "response"
// string streamed as content as it is written (a string cut short: what was written of it), its
// "tool_calls" read once complete; an answer that is neither is content as written. kHarmony:
// HarmonySplitter with calls. thinking_open: the prompt opened the format's own thinking block
// (kCommandR7B's <|START_THINKING|>; other formats' <think> is ReasoningSplitter's).
// stream_arguments: every call also comes as Out::call_deltas, its name first, then its arguments
// as they are written (whitespace between JSON tokens dropped) once its name and the "{" of its
// arguments were read (in a list of calls, Mistral's v3 form or Command R7B's action, each in
// turn: a call ends where the next begins), in every format but Qwen3-Coder's XML parameters,
// whose calls come whole once read; a
// block whose arguments began to stream is a call from then on, its arguments the JSON text as
// written (what attn serve does where a grammar holds the calls, so that they are well formed
// unless cut short). The deltas of call k joined are ToolCallJson's arguments.
std::unique_ptr<AnswerSplitter> ToolSplitter(ToolFormat format, bool thinking_open = false,
                                             bool stream_arguments = false);

// The grammars that keep the calls of an answer in `format` well formed while the text around
// them stays free (GenerateOptions::triggered_grammars): each opens where the format's marker
// appears in the answer and holds what follows to the format's form, a tool's name and JSON
// arguments that fit its schema, up to the end of the arguments (the markers after them are
// free). Where the name and the arguments are one JSON object (<tool_call>, Mistral's list,
// Command R7B's action, Llama 3.x after <|python_tag|>), each tool's arguments follow its own
// schema; where the name comes before them (Kimi K2, DeepSeek, Functionary, Mistral's [ARGS],
// gpt-oss, Llama 3.x's bare {"name": ...}), the arguments fit one of the tools' schemas.
// Qwen3-Coder's <function=NAME> form takes each tool's parameters by name (the required ones
// always), values as text. A schema that refers back to its root, or that does not convert, is
// relaxed to any object. A tool_choice naming a tool: that tool only. kGeneric: none (its whole
// answer is constrained).
std::vector<TriggeredGrammar> ToolCallGrammars(ToolFormat format, const ToolRequest& tools);
// tool_choice "required" or a tool's name (as llama.cpp does): the grammar (GBNF) of a whole answer
// of calls in `format`, one or, with parallel_tool_calls, up to kMaxCalls, markers included; for
// kToolCallTags after a think block where the template `thinks` (writes <think>), or after the
// end of the one the prompt opened (thinking_open). Markers that are control tokens are spelled in
// ordinary ones. Throws attn::Error where CallsCanBeRequired is false.
std::string RequiredCallsGrammar(ToolFormat format, const ToolRequest& tools, bool thinks = false,
                                 bool thinking_open = false);
// Whether RequiredCallsGrammar takes `format` (not gpt-oss's channels, DeepSeek's two call forms
// or Command R7B's thinking first).
bool CallsCanBeRequired(ToolFormat format);

// Functionary v3.2's answer without tools: the text of its "all" segments is the content, other
// segments stay as written.
std::unique_ptr<AnswerSplitter> FunctionaryTextSplitter();

// One call of a message's tool_calls: {"id", "type": "function", "function": {"name", "arguments"
// (JSON text)}}, call {"name", "arguments"} being the k-th of its answer. Ids are "call_" +
// id_prefix + "_" + k, or for kMistral nine letters and digits (its templates refuse others when
// the call comes back in the next request).
// The id of the k-th call of an answer (ToolCallJson's).
std::string ToolCallId(ToolFormat format, const std::string& id_prefix, size_t k);
// A call's arguments as JSON text: as streamed (whitespace between tokens dropped) where they
// streamed, else the parsed object's compact JSON.
std::string ArgumentsText(const nlohmann::ordered_json& call);
nlohmann::json ToolCallJson(ToolFormat format, const nlohmann::ordered_json& call,
                            const std::string& id_prefix, size_t k);

// The choice's message of a split answer: {"role": "assistant", "content", "reasoning_content"
// (when there is some), "tool_calls" (when there are calls; content then null when empty)};
// *tool_calls tells whether there are calls.
nlohmann::json AnswerMessage(ToolFormat format, const AnswerSplitter::Out& answer,
                             const std::string& id_prefix, bool* tool_calls);
// The message of a whole answer `text` in `format`.
nlohmann::json ToolAnswerMessage(ToolFormat format, const std::string& text, const std::string& id_prefix,
                                 bool* tool_calls);

}  // namespace attn::serve
