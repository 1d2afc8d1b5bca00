// Activation steering (include/attn/steer.h).
#include "attn/steer.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "attn/error.h"

namespace attn {

std::vector<float> SteeringVector(const Model& model, std::span<const std::vector<int32_t>> adds,
                                  std::span<const std::vector<int32_t>> subs, int layer, int threads) {
  const ModelConfig& c = model.config();
  if (layer < 0 || layer >= c.n_layers)
    throw Error("steering: layer " + std::to_string(layer) + " is not in [0, " + std::to_string(c.n_layers) +
                ")");
  if (adds.empty() || adds.size() != subs.size())
    throw Error("steering: " + std::to_string(adds.size()) + " texts to add and " +
                std::to_string(subs.size()) + " to subtract (give as many of each, at least one)");
  const size_t d = static_cast<size_t>(c.d_model);
  std::vector<float> sum(d, 0.0f);
  const auto last_row = [&](std::span<const int32_t> tokens, float sign) {
    if (tokens.empty()) throw Error("steering: a text with no tokens");
    Hooks hooks;
    hooks.read_only = true;
    hooks.wants = [layer](const char* name, int l) {
      return l == layer && std::strcmp(name, "hook_resid_pre") == 0;
    };
    hooks.fn = [&](const HookPoint& p) {
      if (p.pos0 + p.rows != static_cast<int64_t>(tokens.size())) return;  // not the pass's last piece
      const float* row = p.data + (p.rows - 1) * p.cols;
      for (size_t i = 0; i < d; ++i) sum[i] += sign * row[i];
    };
    (void)RunWithHooks(model, tokens, hooks, threads);
  };
  for (size_t k = 0; k < adds.size(); ++k) {
    last_row(adds[k], 1.0f);
    last_row(subs[k], -1.0f);
  }
  for (float& v : sum) v /= static_cast<float>(adds.size());
  return sum;
}

Hooks SteeringHooks(int layer, std::vector<float> vector, float scale, int64_t from) {
  Hooks hooks;
  hooks.wants = [layer](const char* name, int l) {
    return l == layer && std::strcmp(name, "hook_resid_pre") == 0;
  };
  hooks.fn = [v = std::move(vector), scale, from](const HookPoint& p) {
    if (static_cast<size_t>(p.cols) != v.size())
      throw Error("steering: a vector of " + std::to_string(v.size()) + " values for a residual stream of " +
                  std::to_string(p.cols));
    for (int64_t r = std::max<int64_t>(0, from - p.pos0); r < p.rows; ++r) {
      float* row = p.data + r * p.cols;
      for (int64_t i = 0; i < p.cols; ++i) row[i] += scale * v[static_cast<size_t>(i)];
    }
  };
  return hooks;
}

}  // namespace attn
