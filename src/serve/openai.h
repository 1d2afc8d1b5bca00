// The OpenAI-style HTTP API of `attn serve`, without the HTTP: request bodies of /v1/completions
// and /v1/chat/completions parsed into generation options (every rejection names the field), and
// the response objects and stream chunks built from a generation's result. Kept apart from the
// server so that it can be tested and fuzzed on its own.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "attn/generate.h"
#include "serve/reasoning.h"
#include "serve/tools.h"

namespace attn::serve {

enum class Endpoint { kCompletions, kChatCompletions };

struct Request {
  Endpoint endpoint = Endpoint::kCompletions;
  // /v1/completions: the prompt as text, or as token ids.
  std::string prompt;
  std::optional<std::vector<int32_t>> prompt_tokens;
  // /v1/chat/completions: (role, content) in order.
  std::vector<std::pair<std::string, std::string>> messages;
  // llama.cpp's "chat_template_kwargs": variables for the chat template (e.g. {"enable_thinking":
  // false}); an object, empty when not given. Given, the prompt is the file's Jinja template's.
  nlohmann::ordered_json chat_template_kwargs = nlohmann::ordered_json::object();
  // The messages as a Jinja chat template takes them (serve::TemplateMessage: tool calls as
  // structures, tool results as "tool" messages), and the request's "tools" as given: what the
  // server renders with the file's template when it uses the model's own tool format.
  nlohmann::ordered_json template_messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json template_tools;  // null without tools
  std::string tool_choice = "auto";
  ToolRequest tool_request;  // the tools as parsed (their schemas: the calls' grammars)
  // The generic form's answer schema (json_schema holds it too unless the request has a
  // constraint of its own, tools_constraint, which only a model's own tool format allows).
  std::string tool_schema;
  bool tools_constraint = false;
  // Set by the server: tools in the model's own format (serve/tools.h) instead of the generic JSON
  // answer (kGeneric); json_schema is then cleared and the answer read in that format.
  ToolFormat tool_format = ToolFormat::kGeneric;
  // Set by the server: grammars hold the calls in tool_format (serve::ToolCallGrammars), so their
  // arguments stream as they are written (ToolSplitter's stream_arguments).
  bool tool_grammar = false;
  // Set by the server (--reasoning-format deepseek, serve/reasoning.h): a chat answer's <think> block
  // goes to reasoning_content; thinking_open: the prompt itself opened the block.
  bool reasoning = false;
  bool thinking_open = false;
  // Set by the server: the format the model's template writes answers in, tools or not. kHarmony:
  // gpt-oss's channels (serve::HarmonySplitter; with reasoning, the analysis channel goes to
  // reasoning_content, the final one to content); kFunctionaryV32: without tools, the text of its
  // "all" segments is the content (serve::FunctionaryTextSplitter).
  ToolFormat answer_format = ToolFormat::kGeneric;
  // max_tokens (or max_completion_tokens); absent: 16 for completions (OpenAI's default), until the
  // end of the turn or the context for chat.
  std::optional<int> max_tokens;
  SamplerOptions sampling;  // OpenAI's defaults: temperature 1, top_p 1; top_k and min_p off
  bool seeded = false;      // "seed" given (else the server draws one)
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // llama.cpp's cache_prompt: reuse the cached positions that begin the prompt (default); false
  // evaluates the whole prompt afresh, so the numbers are those of a new session.
  bool cache_prompt = true;
  // Log-probabilities (GenerateOptions::logprobs): -1 off, else the number of alternatives per
  // token. /v1/completions: "logprobs": k; /v1/chat/completions: "logprobs": true with
  // "top_logprobs": k. In a stream, each chunk carries those of the tokens whose text it carries.
  int logprobs = -1;
  // /v1/completions "echo": the prompt comes back before the completion (with its tokens'
  // log-probabilities when logprobs is on). Not with "stream".
  bool echo = false;
  // response_format {"type": "json_object"}: JSON mode (GenerateOptions::json).
  bool json = false;
  // A grammar the answer must follow (GenerateOptions::grammar / json_schema, checked while the
  // request is read): llama.cpp's "grammar" (GBNF text) and "json_schema" (an object), OpenAI's
  // response_format {"type": "json_schema", "json_schema": {"schema": ...}} and llama.cpp's
  // {"type": "json_object", "schema": ...}. At most one constraint per request.
  std::string grammar;
  std::string json_schema;
  // /v1/chat/completions with "tools" (serve/tools.h): the tools are described in the system
  // message, json_schema holds the answer's form, and the answer becomes tool_calls or content.
  bool tools = false;
  // OpenAI's "n": choices generated for the prompt (each its own sequence and draw: seed + i when
  // seeded), 1 to kMaxChoices.
  int n = 1;
};
constexpr int kMaxChoices = 16;

// The text of one token id (Tokenizer::TokenToPiece), for the logprobs' token strings.
using TokenText = std::function<std::string(int32_t)>;

// A request body that must be a JSON object (at most 64 levels deep); throws attn::Error (kValue)
// saying what is wrong. /tokenize and /detokenize read theirs with it too.
nlohmann::json ParseObject(std::string_view body);

// Parses a request body. Throws attn::Error (kValue) naming the field and the value for malformed
// JSON, a missing prompt / messages, a value of the wrong type or out of range, and for options
// attn does not implement (n > 1, logprobs, tools, penalties other than repeat_penalty, ...).
// Unknown fields are ignored, as OpenAI's clients send many.
Request ParseRequest(std::string_view body, Endpoint endpoint);

// The `finish_reason` of a generation's stop_reason ("eos" and "stop" -> "stop", "length").
std::string FinishReason(const std::string& stop_reason);

// Identity of one response: its id ("cmpl-N" / "chatcmpl-N"), creation time, model name.
struct ResponseInfo {
  std::string id;
  int64_t created = 0;
  std::string model;
};

// The whole (non-streamed) response object, JSON text: choices[i].text or .message.content (after
// the prompt with echo), choices[i].logprobs in the endpoint's format when asked for, one choice
// per result; usage (the prompt counted once, every choice's completion tokens); and attn's
// timings of choice 0 (prompt tokens evaluated / taken from the cache, milliseconds).
std::string ResponseJson(const Request& request, const ResponseInfo& info,
                         std::span<const GenerateResult> results, const TokenText& token_text);

// One server-sent event of a stream ("data: {...}\n\n") for choice `index`: a piece of text, or the
// role chunk that opens a chat stream (role_chunk). `logprobs`: the chunk's choices[0].logprobs
// (StreamLogprobs), null when not asked for.
// With reasoning, a chat chunk carries delta.reasoning_content instead of delta.content.
std::string StreamChunk(const Request& request, const ResponseInfo& info, const std::string& text,
                        bool role_chunk = false, const nlohmann::json& logprobs = nullptr, int index = 0,
                        bool reasoning = false);
// The logprobs object of a stream chunk for the sampled tokens `entries`, in the endpoint's format;
// text_offset: characters of prompt and completion before the first of them (completions).
nlohmann::json StreamLogprobs(const Request& request, std::span<const TokenLogprob> entries,
                              int64_t text_offset, const TokenText& token_text);
// A completion request's prompt as text: the prompt string, or its token ids' texts joined.
std::string PromptText(const Request& request, const TokenText& token_text);
// Characters (UTF-8 lead bytes) of s: the unit of OpenAI's text_offset.
int64_t Chars(const std::string& s);
// How a chat answer to `request` reads as it streams: the think block apart (request.reasoning;
// gpt-oss: its analysis channel), the calls apart (request.tools, in request.tool_format); null when
// the answer is content as written. The stream and the whole answer read through the same one.
std::unique_ptr<AnswerSplitter> ChatAnswerSplitter(const Request& request);
// The chunk that carries calls `first`, `first` + 1, ... of choice `index` (delta.tool_calls, each
// whole, with its index).
std::string StreamToolCalls(const Request& request, const ResponseInfo& info,
                            std::span<const nlohmann::ordered_json> calls, size_t first, int index);
// The chunk that carries `deltas` of choice `index`'s calls (delta.tool_calls as llama.cpp's server
// and OpenAI stream them: a call's first entry with its index, id, type and name, the next ones
// with its index and the next piece of its arguments).
std::string StreamToolDeltas(const Request& request, const ResponseInfo& info,
                             std::span<const AnswerSplitter::CallDelta> deltas, int index);
// The chunk that ends choice `index` with its finish_reason (tool_calls where the stream gave
// `calls` and the answer ended as it should).
std::string StreamFinish(const Request& request, const ResponseInfo& info, const GenerateResult& result,
                         int index = 0, bool calls = false);
// The end of the stream once every choice has finished: the usage chunk when asked for, then
// "data: [DONE]".
std::string StreamEnd(const Request& request, const ResponseInfo& info,
                      std::span<const GenerateResult> results);

// A /v1/embeddings request: "input" is a string, an array of strings, an array of token ids, or an
// array of such arrays (OpenAI's four forms); each becomes one input, as text or as token ids.
// "encoding_format" may only be "float"; "dimensions" is refused (no truncation); "pooling" (mean,
// last, cls) overrides the server's. Throws attn::Error (kValue) naming the field.
struct EmbeddingInput {
  std::string text;
  std::optional<std::vector<int32_t>> tokens;
};
struct EmbeddingRequest {
  std::vector<EmbeddingInput> inputs;
  std::optional<std::string> pooling;
};
EmbeddingRequest ParseEmbeddingRequest(std::string_view body);
// The response: {"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model",
// "usage": {"prompt_tokens", "total_tokens"}}.
std::string EmbeddingResponseJson(const std::vector<std::vector<float>>& embeddings, const std::string& model,
                                  int64_t prompt_tokens);

// {"error": {"message", "type", "code"}} for an HTTP status.
std::string ErrorJson(const std::string& message, int status);

}  // namespace attn::serve
