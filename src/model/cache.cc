// RunWithCache and RunWithHooks (include/attn/model.h): one forward pass over a whole sequence
// with hooks, so every point is visited once with all positions.
#include <string>
#include <vector>

#include "attn/error.h"
#include "attn/model.h"

namespace attn {

std::string CachedActivation::FullName() const {
  return layer < 0 ? name : "blocks." + std::to_string(layer) + "." + name;
}

const CachedActivation* ActivationCache::Find(const std::string& full_name) const {
  for (const CachedActivation& a : activations)
    if (a.FullName() == full_name) return &a;
  return nullptr;
}

std::vector<float> RunWithHooks(const Model& model, std::span<const int32_t> tokens, const Hooks& hooks,
                                int threads) {
  if (tokens.empty()) throw Error("run with hooks: no tokens");
  const int64_t n = static_cast<int64_t>(tokens.size());
  std::vector<float> logits(static_cast<size_t>(n * model.config().vocab_size));
  Session session(model, n);
  ForwardOptions o;
  o.all_logits = true;
  o.threads = threads;
  o.hooks = &hooks;
  o.max_chunk = n;
  model.Forward(session, tokens, logits.data(), o);
  return logits;
}

ActivationCache RunWithCache(const Model& model, std::span<const int32_t> tokens, const HookFilter& wants,
                             int threads) {
  ActivationCache cache;
  Hooks hooks;
  hooks.wants = wants;
  hooks.read_only = true;  // capture only: the pass computes a plain forward's numbers
  hooks.fn = [&](const HookPoint& p) {
    const size_t count = static_cast<size_t>(p.heads * p.rows * p.cols);
    cache.activations.push_back(
        {p.name, p.layer, p.heads, p.rows, p.cols, std::vector<float>(p.data, p.data + count)});
  };
  cache.logits = RunWithHooks(model, tokens, hooks, threads);
  return cache;
}

}  // namespace attn
