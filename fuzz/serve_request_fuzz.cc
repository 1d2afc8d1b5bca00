// libFuzzer target for `attn serve`'s request parsers: arbitrary bytes as the body of
// /v1/embeddings (first byte 'E'), else /v1/completions (first byte even) or /v1/chat/completions (odd).
// Every input must be refused with attn::Error or parse into a request, and a parsed request must build its
// response objects and stream chunks (with the first byte's bits choosing a model tool format and
// reasoning, and a chat's last message as the answer to read, which must read the same when it
// streams in two pieces, its calls' streamed arguments joining to theirs), under ASan and UBSan. Seeds:
// fuzz/corpus/serve_request/ (requests of the tests) and fuzz/serve_request.dict (the field names).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "attn/error.h"
#include "serve/openai.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] == 'E') {  // /v1/embeddings: parse, then build a response for what parsed
    try {
      const attn::serve::EmbeddingRequest r = attn::serve::ParseEmbeddingRequest(
          std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
      std::vector<std::vector<float>> out(r.inputs.size(), std::vector<float>(3, 0.5f));
      (void)attn::serve::EmbeddingResponseJson(out, "m", static_cast<int64_t>(r.inputs.size()));
    } catch (const attn::Error&) {
    }
    return 0;
  }
  const auto endpoint =
      data[0] % 2 ? attn::serve::Endpoint::kChatCompletions : attn::serve::Endpoint::kCompletions;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    attn::serve::Request r = attn::serve::ParseRequest(body, endpoint);
    // What the server decides from the model's template: a tool format of its own, reasoning.
    const int format = (((data[0] >> 1) & 3) | ((data[0] & 32) ? 4 : 0) | ((data[0] & 64) ? 8 : 0)) %
                       attn::serve::kToolFormats;
    r.answer_format = static_cast<attn::serve::ToolFormat>(format);
    if (r.tools) r.tool_format = r.answer_format;
    // Calls held by grammars (a model's own format only): their arguments stream.
    r.tool_grammar = r.tools && r.tool_format != attn::serve::ToolFormat::kGeneric && (data[0] & 128) != 0;
    r.reasoning = (data[0] & 8) != 0;
    r.thinking_open = (data[0] & 16) != 0;
    attn::GenerateResult result;
    // Any bytes, UTF-8 or not: the prompt's, or a chat's last message (an answer in a tool format).
    result.text = r.messages.empty() ? r.prompt.substr(0, 16) : r.messages.back().second.substr(0, 256);
    result.stop_reason = r.stream ? "stop" : "length";
    // Log-probabilities for the prompt's tokens and three sampled ones (the last an EOS past the
    // text), token texts cut from the prompt's bytes (UTF-8 or not).
    if (r.prompt_tokens)
      result.prompt_tokens.assign(r.prompt_tokens->begin(),
                                  r.prompt_tokens->begin() + std::min<size_t>(r.prompt_tokens->size(), 64));
    for (size_t i = 1; i < result.prompt_tokens.size(); ++i)
      result.prompt_logprobs.push_back({result.prompt_tokens[i], -1.0f, {{1, -0.5f}, {2, -0.5f}}});
    result.tokens = {3, 4};
    result.logprobs = {{3, -0.1f, {{3, -0.1f}}}, {4, -2.0f, {}}, {2, -0.3f, {{5, -0.2f}}}};
    const attn::serve::ResponseInfo info{"cmpl-1", 0, "m"};
    const attn::serve::TokenText text = [&r](int32_t t) {
      return r.prompt.substr(0, static_cast<size_t>(t) % 8);
    };
    const attn::GenerateResult results[] = {result, result};
    (void)attn::serve::ResponseJson(r, info, std::span(results, static_cast<size_t>(r.n > 1 ? 2 : 1)), text);
    (void)attn::serve::StreamChunk(r, info, result.text, r.include_usage,
                                   attn::serve::StreamLogprobs(r, result.logprobs, 7, text));
    // The answer read as it streams, cut in two where the body's length says, reads as it does whole.
    if (std::unique_ptr<attn::serve::AnswerSplitter> whole = attn::serve::ChatAnswerSplitter(r)) {
      const attn::serve::AnswerSplitter::Out all = whole->Split(result.text);
      std::unique_ptr<attn::serve::AnswerSplitter> parts = attn::serve::ChatAnswerSplitter(r);
      const size_t cut = result.text.empty() ? 0 : size % (result.text.size() + 1);
      attn::serve::AnswerSplitter::Out streamed = parts->Feed(result.text.substr(0, cut));
      streamed += parts->Feed(result.text.substr(cut));
      streamed += parts->Finish();
      if (streamed.content != all.content || streamed.reasoning != all.reasoning ||
          streamed.calls != all.calls)
        __builtin_trap();
      // Streamed arguments: each call's deltas, joined, are its name and arguments, however cut.
      for (const attn::serve::AnswerSplitter::Out* out :
           {&all, static_cast<const attn::serve::AnswerSplitter::Out*>(&streamed)}) {
        std::vector<std::string> names, args;
        for (const attn::serve::AnswerSplitter::CallDelta& d : out->call_deltas) {
          if (d.index == names.size()) names.push_back(d.name), args.emplace_back();
          if (d.index + 1 != names.size() || names.back().empty()) __builtin_trap();
          args.back() += d.arguments;
        }
        if (r.tool_grammar && names.size() != out->calls.size()) __builtin_trap();
        for (size_t k = 0; k < names.size() && r.tool_grammar; ++k)
          if (names[k] != out->calls[k]["name"] || args[k] != attn::serve::ArgumentsText(out->calls[k]))
            __builtin_trap();
      }
      (void)attn::serve::StreamToolCalls(r, info, all.calls, 0, 0);
      (void)attn::serve::StreamToolDeltas(r, info, streamed.call_deltas, 0);
    }
    (void)attn::serve::StreamFinish(r, info, result, r.n - 1, true);
    (void)attn::serve::StreamEnd(r, info, results);
  } catch (const attn::Error&) {
  }
  return 0;
}
