// Sampling and text generation with a KV cache.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "attn/model.h"

namespace attn {

// The sampling chain, applied in this order (llama.cpp's default order for these stages):
// repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw.
// temperature == 0 is greedy (argmax, ties to the lowest id); the other stages then do nothing.
struct SamplerOptions {
  float temperature = 0.0f;
  int top_k = 40;                   // 0 = off
  float top_p = 0.95f;              // 1 = off
  float min_p = 0.05f;              // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off; llama.cpp/CTRL rule: logit > 0 ? logit / p : logit * p
  int repetition_window = 64;       // last tokens the penalty looks at
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& options);
  // Picks the next token from logits [vocab]; `history` is every token so far (for the penalty).
  // Throws attn::Error when the logits hold a NaN or infinity.
  int32_t Sample(std::span<const float> logits, std::span<const int32_t> history);

 private:
  SamplerOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

// One token's log-probability and the most likely alternatives at its position (most likely
// first; ties by lower id).
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;
};

struct GenerateOptions {
  int max_tokens = 128;
  SamplerOptions sampling;
  std::vector<std::string> stop;  // stop strings (not included in the text)
  bool stop_at_eos = true;        // end at an end-of-generation token (not included)
  int threads = 0;                // 0 = every core
  // The KV cache's storage (Session): f16 by default, as llama.cpp's; kF32 for exact float32.
  // (GenerateInSession uses its session's.)
  DType kv_dtype = DType::kF16;
  // When the model's context is full: -1 ends the generation (stop_reason "context"); k >= 0
  // shifts the context (Model::ShiftContext), keeping the first k positions and forgetting half
  // of the rest, and goes on.
  int64_t context_keep = -1;
  // Log-probabilities, as OpenAI's logprobs: -1 records none; k >= 0 records, for each sampled
  // token, its log-probability under the model's own next-token distribution (the log-softmax of
  // the logits, before the sampler's penalty and temperature) and the k most likely tokens.
  int logprobs = -1;
  // With logprobs >= 0: the same for every prompt token after the first (OpenAI's echo). The whole
  // prompt is then evaluated (GenerateInSession takes none of it from the session's cache).
  bool prompt_logprobs = false;
  // With logprobs >= 0: called with each sampled token's entry as soon as it is sampled (before the
  // token's text reaches on_text), for streams.
  std::function<void(const TokenLogprob&)> on_logprob;
};

struct GenerateResult {
  std::vector<int32_t> prompt_tokens;
  std::vector<int32_t> tokens;  // generated ids (without a final EOS)
  std::string text;             // generated text (stop string removed)
  std::string stop_reason;      // "eos", "stop", "length"
  double prompt_ms = 0.0, gen_ms = 0.0;
  int64_t n_prompt_evaluated = 0, n_gen_evaluated = 0;
  int64_t n_prompt_cached = 0;   // prompt tokens already in the session's cache (GenerateInSession)
  int64_t n_context_shifts = 0;  // context shifts made (GenerateOptions::context_keep)
  // GenerateOptions::logprobs: one per sampled token, aligned with `tokens`, plus the EOS token's
  // when the generation ended at one (it is not in `tokens`).
  std::vector<TokenLogprob> logprobs;
  // GenerateOptions::prompt_logprobs: one per prompt token after the first.
  std::vector<TokenLogprob> prompt_logprobs;
};

// token's log-probability under the log-softmax of `logits` [vocab] and the k most likely tokens.
TokenLogprob LogprobOf(std::span<const float> logits, int32_t token, int k);

// Tokenizes `prompt` (special tokens parsed, BOS when the model asks for it), evaluates it, then
// samples up to max_tokens tokens. on_text receives text as soon as it is final (held back only
// while it could be the start of a stop string or ends inside a UTF-8 character). Throws
// attn::Error for an empty prompt or one longer than the model's context.
GenerateResult Generate(const Model& model, const std::string& prompt, const GenerateOptions& options,
                        const std::function<void(const std::string&)>& on_text = nullptr);
// The same from token ids.
GenerateResult GenerateFromTokens(const Model& model, std::vector<int32_t> prompt_tokens,
                                  const GenerateOptions& options,
                                  const std::function<void(const std::string&)>& on_text = nullptr);
// The same in an existing session (a conversation): the cached positions that begin the prompt
// are reused, so only the rest of the prompt is evaluated (llama.cpp's prompt cache); the cache
// beyond them is dropped, and the capacity grows as needed. Afterwards the session holds the
// prompt and the generated tokens (all but the last one sampled, which was never evaluated).
// Chunking differs from a fresh evaluation, so the logits can differ in the last bits.
GenerateResult GenerateInSession(const Model& model, Session& session, std::vector<int32_t> prompt_tokens,
                                 const GenerateOptions& options,
                                 const std::function<void(const std::string&)>& on_text = nullptr);

}  // namespace attn
