// The logit lens: see include/attn/lens.h.
#include "attn/lens.h"

#include <string>

#include "attn/error.h"
#include "core/thread_pool.h"
#include "kernels/ops.h"

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
    // Each row: its log-sum-exp (as LogprobOf takes it), then one pass for the top k (ties to the
    // lower id) and the rank of the text's next token. Rows in parallel.
    ThreadPool::Global().Run(n, options.threads, [&](int64_t t, int) {
      const float* row = logits.data() + t * c.vocab_size;
      const double lse = ops::LogSumExp(row, c.vocab_size);
      const bool has_next = t + 1 < n;
      const int32_t next = has_next ? tokens[static_cast<size_t>(t + 1)] : 0;
      const float v = row[next];
      int32_t* ids = lens.top_ids.data() + static_cast<size_t>(l * n + t) * k;
      int64_t kept = 0, rank = 0;
      for (int32_t j = 0; j < static_cast<int32_t>(c.vocab_size); ++j) {
        const float x = row[j];
        rank += x > v || (x == v && j < next);
        // Insert j among the kept ids when it beats the last one (strictly: an equal later id loses).
        if (kept == static_cast<int64_t>(k) && !(x > row[ids[k - 1]])) continue;
        int64_t at = kept < static_cast<int64_t>(k) ? kept++ : static_cast<int64_t>(k) - 1;
        while (at > 0 && x > row[ids[at - 1]]) {
          ids[at] = ids[at - 1];
          --at;
        }
        ids[at] = j;
      }
      for (size_t j = 0; j < k; ++j)
        lens.top_logprobs[static_cast<size_t>(l * n + t) * k + j] = static_cast<float>(row[ids[j]] - lse);
      if (has_next) {
        const size_t r = static_cast<size_t>(l * (n - 1) + t);
        lens.next_logprob[r] = static_cast<float>(v - lse);
        lens.next_rank[r] = static_cast<int32_t>(rank);
      }
    });
  }
  return lens;
}

}  // namespace attn
