// Generation: evaluate the prompt once, then one token at a time through the KV cache.
#include "attn/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <string>

#include "attn/error.h"
#include "kernels/ops.h"

namespace attn {
namespace {

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Bytes at the end of `text` that begin a UTF-8 sequence whose last bytes have not come yet.
size_t IncompleteUtf8Tail(const std::string& text) {
  // Back over at most 3 continuation bytes to the lead byte of the last sequence.
  for (size_t back = 1; back <= std::min<size_t>(4, text.size()); ++back) {
    const auto c = static_cast<unsigned char>(text[text.size() - back]);
    if ((c & 0xC0) == 0x80) continue;
    const size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return need > back ? back : 0;
  }
  return 0;  // only continuation bytes: invalid UTF-8, passed on as it is
}

// Length of the end of `text` held back from the stream until the next token decides it: the
// longest suffix that is a proper prefix of some stop string, or a character still incomplete
// (so that no streamed piece splits one).
size_t HeldBack(const std::string& text, const std::vector<std::string>& stops) {
  size_t keep = IncompleteUtf8Tail(text);
  for (const std::string& stop : stops) {
    for (size_t len = std::min(stop.size() - 1, text.size()); len > keep; --len) {
      if (text.compare(text.size() - len, len, stop, 0, len) == 0) {
        keep = len;
        break;
      }
    }
  }
  return keep;
}

// Prompt tokens evaluated per pass when their logits are all kept (prompt_logprobs): bounds the
// [tokens, vocab] buffer.
constexpr int64_t kLogprobPiece = 256;

}  // namespace

TokenLogprob LogprobOf(std::span<const float> logits, int32_t token, int k) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  if (token < 0 || token >= vocab)
    throw Error("logprobs: token " + std::to_string(token) + " is not in the vocabulary");
  const double lse = ops::LogSumExp(logits.data(), vocab);
  TokenLogprob r;
  r.token = token;
  r.logprob = static_cast<float>(logits[static_cast<size_t>(token)] - lse);
  const int64_t n = std::min<int64_t>(std::max(k, 0), vocab);
  if (n == 0) return r;
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  const auto more_likely = [&](int32_t a, int32_t b) {
    return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)] ||
           (logits[static_cast<size_t>(a)] == logits[static_cast<size_t>(b)] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), more_likely);
  for (int64_t i = 0; i < n; ++i)
    r.top.emplace_back(ids[static_cast<size_t>(i)],
                       static_cast<float>(logits[static_cast<size_t>(ids[static_cast<size_t>(i)])] - lse));
  return r;
}

GenerateResult GenerateFromTokens(const Model& model, std::vector<int32_t> prompt_tokens,
                                  const GenerateOptions& options,
                                  const std::function<void(const std::string&)>& on_text) {
  const ModelConfig& c = model.config();
  const int64_t n_prompt = static_cast<int64_t>(prompt_tokens.size());
  const int64_t capacity = std::clamp<int64_t>(n_prompt + std::max(options.max_tokens, 1), 1,
                                               std::max<int64_t>(c.context_length, 1));
  Session session(model, capacity, options.kv_dtype);
  return GenerateInSession(model, session, std::move(prompt_tokens), options, on_text);
}

GenerateResult GenerateInSession(const Model& model, Session& session, std::vector<int32_t> prompt_tokens,
                                 const GenerateOptions& options,
                                 const std::function<void(const std::string&)>& on_text) {
  const ModelConfig& c = model.config();
  const Tokenizer& tok = model.tokenizer();
  if (prompt_tokens.empty()) throw Error("generate: the prompt is empty (no tokens)");
  if (options.max_tokens < 0) {
    throw Error("generate: max_tokens = " + std::to_string(options.max_tokens) + " (must be >= 0)");
  }
  for (const std::string& s : options.stop) {
    if (s.empty()) throw Error("generate: an empty stop string");
  }
  if (options.context_keep >= 0 && c.arch == Arch::kGpt2)
    throw Error("generate: a context shift needs rotary positions; gpt2's are learned (no --context-shift)");
  const int64_t n_prompt = static_cast<int64_t>(prompt_tokens.size());
  if (n_prompt > c.context_length) {
    throw Error("generate: the prompt has " + std::to_string(n_prompt) +
                " tokens, more than the model's context of " + std::to_string(c.context_length));
  }
  // The session's cached positions that start the prompt are kept (at least the last prompt token
  // is evaluated, for its logits); the rest of the cache is dropped.
  const bool prompt_logprobs = options.logprobs >= 0 && options.prompt_logprobs;
  const std::vector<int32_t>& cached = session.tokens();
  int64_t reuse = 0;
  while (!prompt_logprobs && reuse < static_cast<int64_t>(cached.size()) && reuse + 1 < n_prompt &&
         cached[static_cast<size_t>(reuse)] == prompt_tokens[static_cast<size_t>(reuse)])
    ++reuse;
  session.Truncate(reuse);
  session.Reserve(std::min<int64_t>(c.context_length, n_prompt + std::max(options.max_tokens, 1)));
  Sampler sampler(options.sampling);

  GenerateResult result;
  result.prompt_tokens = prompt_tokens;
  std::vector<int32_t> history = prompt_tokens;
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));

  auto t0 = std::chrono::steady_clock::now();
  if (prompt_logprobs) {
    // In pieces, every row's logits kept: row p scores prompt token p + 1; the last row is the
    // first generated token's distribution.
    const int64_t vocab = c.vocab_size;
    std::vector<float> rows;
    for (int64_t start = 0; start < n_prompt; start += kLogprobPiece) {
      const int64_t n = std::min(kLogprobPiece, n_prompt - start);
      rows.resize(static_cast<size_t>(n * vocab));
      model.Forward(
          session,
          std::span<const int32_t>(prompt_tokens).subspan(static_cast<size_t>(start), static_cast<size_t>(n)),
          rows.data(), true, options.threads);
      for (int64_t r = 0; r < n; ++r) {
        const std::span<const float> row(rows.data() + r * vocab, static_cast<size_t>(vocab));
        if (start + r + 1 < n_prompt)
          result.prompt_logprobs.push_back(
              LogprobOf(row, prompt_tokens[static_cast<size_t>(start + r + 1)], options.logprobs));
        else
          std::copy(row.begin(), row.end(), logits.begin());
      }
    }
  } else {
    model.Forward(session, std::span<const int32_t>(prompt_tokens).subspan(static_cast<size_t>(reuse)),
                  logits.data(), false, options.threads);
  }
  result.prompt_ms = MsSince(t0);
  result.n_prompt_evaluated = n_prompt - reuse;
  result.n_prompt_cached = reuse;

  std::string text;     // everything generated so far
  size_t streamed = 0;  // bytes of `text` already passed to on_text
  result.stop_reason = "length";
  for (int i = 0; i < options.max_tokens; ++i) {
    const int32_t next = sampler.Sample(logits, history);
    if (options.logprobs >= 0) {
      result.logprobs.push_back(LogprobOf(logits, next, options.logprobs));
      if (options.on_logprob) options.on_logprob(result.logprobs.back());
    }
    if (options.stop_at_eos && tok.IsEndOfGeneration(next)) {
      result.stop_reason = "eos";
      break;
    }
    result.tokens.push_back(next);
    history.push_back(next);
    text += tok.TokenToPiece(next);

    size_t stop_at = std::string::npos;
    for (const std::string& s : options.stop) {
      const size_t found = text.find(s, streamed > s.size() ? streamed - s.size() : 0);
      if (found != std::string::npos) stop_at = std::min(stop_at, found);
    }
    if (stop_at != std::string::npos) {
      text.resize(stop_at);
      result.stop_reason = "stop";
      break;
    }
    const size_t ready = text.size() - HeldBack(text, options.stop);
    if (on_text && ready > streamed) on_text(text.substr(streamed, ready - streamed));
    streamed = std::max(streamed, ready);

    if (i + 1 == options.max_tokens) break;
    if (session.n_past() >= session.capacity()) {  // full: the capacity is the model's context
      if (options.context_keep < 0) {
        result.stop_reason = "context";
        break;
      }
      const int64_t keep = std::min(options.context_keep, session.n_past() - 2);
      model.ShiftContext(session, keep, (session.n_past() - keep) / 2);
      ++result.n_context_shifts;
    }
    // Like llama.cpp's eval timing, gen_ms counts the forward passes only (not sampling).
    const auto t1 = std::chrono::steady_clock::now();
    model.Forward(session, std::span<const int32_t>(&next, 1), logits.data(), false, options.threads);
    result.gen_ms += MsSince(t1);
    ++result.n_gen_evaluated;
  }
  if (on_text && text.size() > streamed) on_text(text.substr(streamed));
  result.text = std::move(text);
  return result;
}

GenerateResult Generate(const Model& model, const std::string& prompt, const GenerateOptions& options,
                        const std::function<void(const std::string&)>& on_text) {
  return GenerateFromTokens(model, model.tokenizer().EncodePrompt(prompt), options, on_text);
}

}  // namespace attn
