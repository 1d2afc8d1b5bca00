// Text embeddings: one forward pass without the unembedding, then pooling (include/attn/embed.h).
#include "attn/embed.h"

#include <algorithm>
#include <cmath>

#include "attn/error.h"

namespace attn {

Pooling ParsePooling(const std::string& name) {
  if (name == "mean") return Pooling::kMean;
  if (name == "last") return Pooling::kLast;
  if (name == "cls") return Pooling::kCls;
  throw Error("pooling = \"" + name + "\" (must be mean, last or cls)");
}

const char* PoolingName(Pooling pooling) {
  switch (pooling) {
    case Pooling::kMean:
      return "mean";
    case Pooling::kLast:
      return "last";
    case Pooling::kCls:
      return "cls";
  }
  return "?";
}

std::vector<float> Embed(const Model& model, std::span<const int32_t> tokens, const EmbedOptions& options) {
  const ModelConfig& c = model.config();
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) throw Error("embed: no tokens");
  if (n > c.context_length)
    throw Error("embed: " + std::to_string(n) + " tokens, more than the model's context of " +
                std::to_string(c.context_length));
  const int64_t d = c.d_model;
  std::vector<float> hidden(static_cast<size_t>(n * d));
  Session session(model, n, options.kv_dtype);
  ForwardOptions fo;
  fo.threads = options.threads;
  fo.hidden = hidden.data();
  model.Forward(session, tokens, nullptr, fo);
  std::vector<double> sum(static_cast<size_t>(d), 0.0);
  const int64_t first = options.pooling == Pooling::kLast ? n - 1 : 0;
  const int64_t last = options.pooling == Pooling::kMean ? n : first + 1;
  for (int64_t i = first; i < last; ++i)
    for (int64_t j = 0; j < d; ++j) sum[static_cast<size_t>(j)] += hidden[static_cast<size_t>(i * d + j)];
  const double count = static_cast<double>(last - first);
  double norm = 0.0;
  for (double& v : sum) v /= count, norm += v * v;
  norm = std::sqrt(norm);
  if (!std::isfinite(norm)) throw Error("embed: the hidden states are not finite");
  const double scale = options.normalize && norm > 0.0 ? 1.0 / norm : 1.0;
  std::vector<float> out(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j)
    out[static_cast<size_t>(j)] = static_cast<float>(sum[static_cast<size_t>(j)] * scale);
  return out;
}

}  // namespace attn
