// The logit lens (nostalgebraist, 2020): the residual stream after each block read through the
// model's own head (final norm, unembedding), as if the blocks after it were skipped, to see
// where in depth the model's prediction forms.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "attn/model.h"

namespace attn {

struct LogitLensOptions {
  int top_k = 5;    // most likely tokens kept per layer and position (1 to vocab)
  int threads = 0;  // 0 = every core
};

// Row l (0 <= l <= n_layers) is the residual stream after l blocks: row 0 the embeddings
// (blocks.0.hook_resid_pre), row n_layers the last block's output, whose lens is the model's own
// logits (Model::Unembed on the same rows, bit for bit). Log-probabilities are the log-softmax
// of the lens's logits; ties rank the lower id first.
struct LogitLens {
  int64_t layers = 0;  // n_layers + 1
  int64_t tokens = 0;
  int top_k = 0;
  std::vector<int32_t> top_ids;     // [layers, tokens, top_k], most likely first
  std::vector<float> top_logprobs;  // [layers, tokens, top_k]
  // [layers, tokens - 1]: at position t, the log-probability of token t + 1 (the text's own next
  // token) and its rank (0 = the lens's top prediction).
  std::vector<float> next_logprob;
  std::vector<int32_t> next_rank;
};

// One forward pass over `tokens` (a fresh sequence) that keeps the residual stream, then the
// model's head on every layer's rows. Throws attn::Error for no tokens, a token outside the
// vocabulary, a sequence longer than the context or top_k outside [1, vocab].
LogitLens ComputeLogitLens(const Model& model, std::span<const int32_t> tokens,
                           const LogitLensOptions& options = {});

}  // namespace attn
