// Perplexity of a text under a model, measured as llama.cpp's llama-perplexity measures it, and the
// KL divergence of a model's next-token distributions from a base model's (llama-perplexity's
// --kl-divergence, computed in the same run instead of through a saved logits file).
//
// The text's tokens are cut into chunks of `context` tokens (a tail shorter than a chunk is not
// used). Each chunk is evaluated in a fresh session, its first token replaced by BOS when the model
// adds one; only the second half of each chunk is scored (positions [context/2, context - 1) predict
// the token after them), so every scored token has at least context/2 tokens before it.
// PPL = exp(mean NLL); its error is ppl * stderr(NLL) as llama.cpp reports it.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "attn/model.h"

namespace attn {

struct PerplexityOptions {
  // Tokens per chunk (llama.cpp's -c), 4 .. the model's context length; 0: 512, or the model's
  // context length when that is shorter.
  int64_t context = 0;
  int64_t max_chunks = -1;       // -1: every whole chunk of the text
  int threads = 0;               // 0 = every core
  DType kv_dtype = DType::kF16;  // the KV cache's storage (llama.cpp's default is f16)
  // When set, each scored position's next-token distribution is also compared with this model's
  // (which may be the same model with another KV cache type): the two must share the vocabulary.
  const Model* base = nullptr;
  DType base_kv_dtype = DType::kF32;
};

// The KL divergence KL(base || model) in nats per scored token, and how often the two agree.
struct KlDivergence {
  double mean = 0, stderr_mean = 0;  // mean over scored tokens, and its standard error
  double median = 0, p99 = 0, max = 0;
  double top1_agreement = 0;  // fraction of positions where both models' argmax is the same id
  double base_ppl = 0, base_ppl_stderr = 0;
  // mean and RMS over scored tokens of p_model(next) - p_base(next), llama.cpp's "delta p".
  double delta_p_mean = 0, delta_p_rms = 0;
};

struct PerplexityResult {
  int64_t n_tokens = 0;  // tokens of the text (BOS included when the model adds one)
  int64_t n_chunks = 0, context = 0;
  int64_t n_scored = 0;  // scored tokens: n_chunks * (context - 1 - context / 2)
  double nll = 0;        // mean negative log-likelihood (nats) of the scored tokens
  double ppl = 0, ppl_stderr = 0;
  std::vector<double> chunk_ppl;  // perplexity over chunks [0, i] after each chunk i (as llama.cpp prints)
  std::vector<float> token_nll;   // every scored token's NLL, chunk by chunk, in text order
  bool has_kl = false;
  KlDivergence kl;  // when options.base is set
  double seconds = 0;
};

// A text's tokens as llama-perplexity reads it: BOS first when the model adds one, then the text
// with special-token strings kept as text (Encode with parse_special = false).
std::vector<int32_t> PerplexityTokens(const Tokenizer& tokenizer, std::string_view text);

// Called after each chunk with the chunk's index and the result so far (chunk_ppl filled up to it).
using PerplexityProgress = std::function<void(int64_t chunk, const PerplexityResult& so_far)>;

// Measures the perplexity of `tokens` (a text as the model reads it: Tokenizer::EncodePrompt or
// BOS + Encode(text, parse_special = false), which is what llama-perplexity scores). Throws
// attn::Error for a context out of range, a text shorter than one chunk, max_chunks of 0 or below
// -1, a base model of another vocabulary, or logits that are not finite.
PerplexityResult Perplexity(const Model& model, std::span<const int32_t> tokens,
                            const PerplexityOptions& options, const PerplexityProgress& progress = nullptr);

}  // namespace attn
