// Text embeddings from a decoder: the final norm's output of every token (what the unembedding
// reads), pooled into one vector, as llama.cpp's --embeddings computes them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "attn/model.h"

namespace attn {

enum class Pooling : uint8_t {
  kMean,  // the mean over every token (llama.cpp's "mean")
  kLast,  // the last token's (llama.cpp's "last"; what a causal model has read the whole text by)
  kCls,   // the first token's (llama.cpp's "cls")
};

// "mean", "last" or "cls"; throws attn::Error naming the value otherwise.
Pooling ParsePooling(const std::string& name);
const char* PoolingName(Pooling pooling);

struct EmbedOptions {
  Pooling pooling = Pooling::kMean;
  bool normalize = true;  // to unit L2 norm (llama.cpp's default for embeddings)
  int threads = 0;
  DType kv_dtype = DType::kF16;  // the KV cache's storage during the pass (llama.cpp's default)
};

// The embedding [d_model] of `tokens` (one fresh sequence). Throws attn::Error for no tokens, more
// than the model's context, or a token out of range.
std::vector<float> Embed(const Model& model, std::span<const int32_t> tokens, const EmbedOptions& options);

}  // namespace attn
