// The logit lens: see include/attn/lens.h.
#include "attn/lens.h"

#include <string>

#include "attn/error.h"
#include "attn/generate.h"

namespace attn {

LogitLens ComputeLogitLens(const Model& model, std::span<const int32_t> tokens,
                           const LogitLensOptions& options) {
  const ModelConfig& c = model.config();
  if (tokens.empty()) throw Error("logit lens: no tokens");
  if (options.top_k < 1 || options.top_k > c.vocab_size)
    throw Error("logit lens: top_k = " + std::to_string(options.top_k) + " (must be in [1, " +
                std::to_string(c.vocab_size) + "])");
  const int64_t n = static_cast<int64_t>(tokens.size()), last = c.n_layers - 1;
  const ActivationCache cache = RunWithCache(
      model, tokens,
      [last](const char* name, int layer) {
        const std::string_view s = name;
        return s == "hook_resid_pre" || (s == "hook_resid_post" && layer == last);
      },
      options.threads);

  LogitLens lens;
  lens.layers = c.n_layers + 1;
  lens.tokens = n;
  lens.top_k = options.top_k;
  const size_t k = static_cast<size_t>(options.top_k);
  lens.top_ids.resize(static_cast<size_t>(lens.layers * n) * k);
  lens.top_logprobs.resize(lens.top_ids.size());
  lens.next_logprob.resize(static_cast<size_t>(lens.layers * (n - 1)));
  lens.next_rank.resize(lens.next_logprob.size());
  std::vector<float> logits(static_cast<size_t>(n * c.vocab_size));
  for (int64_t l = 0; l < lens.layers; ++l) {
    const std::string name = l < c.n_layers ? "blocks." + std::to_string(l) + ".hook_resid_pre"
                                            : "blocks." + std::to_string(last) + ".hook_resid_post";
    const CachedActivation* resid = cache.Find(name);
    if (resid == nullptr || resid->rows != n || resid->cols != c.d_model)
      throw Error("logit lens: the forward pass did not give " + name);
    model.Unembed(resid->data.data(), n, logits.data(), options.threads);
    for (int64_t t = 0; t < n; ++t) {
      const std::span<const float> row(logits.data() + t * c.vocab_size, static_cast<size_t>(c.vocab_size));
      const int32_t next = t + 1 < n ? tokens[static_cast<size_t>(t + 1)] : 0;
      const TokenLogprob lp = LogprobOf(row, next, options.top_k);
      const size_t at = static_cast<size_t>(l * n + t) * k;
      for (size_t j = 0; j < k; ++j) {
        lens.top_ids[at + j] = lp.top[j].first;
        lens.top_logprobs[at + j] = lp.top[j].second;
      }
      if (t + 1 < n) {
        const float v = row[static_cast<size_t>(next)];
        int32_t rank = 0;
        for (int32_t j = 0; j < static_cast<int32_t>(row.size()); ++j)
          rank += row[static_cast<size_t>(j)] > v || (row[static_cast<size_t>(j)] == v && j < next);
        const size_t r = static_cast<size_t>(l * (n - 1) + t);
        lens.next_logprob[r] = lp.logprob;
        lens.next_rank[r] = rank;
      }
    }
  }
  return lens;
}

}  // namespace attn
