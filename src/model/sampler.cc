// The sampling chain (see attn/generate.h for the order and the rules).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <unordered_map>

#include "attn/error.h"
#include "attn/generate.h"

namespace attn {

Sampler::Sampler(const SamplerOptions& options) : options_(options), rng_(options.seed) {
  if (!(options.temperature >= 0.0f) || !std::isfinite(options.temperature)) {
    throw Error("sampler: temperature = " + std::to_string(options.temperature) + " (must be >= 0)");
  }
  if (options.top_k < 0) throw Error("sampler: top_k = " + std::to_string(options.top_k) + " (must be >= 0)");
  if (!(options.top_p > 0.0f && options.top_p <= 1.0f)) {
    throw Error("sampler: top_p = " + std::to_string(options.top_p) + " (must be in (0, 1])");
  }
  if (!(options.min_p >= 0.0f && options.min_p <= 1.0f)) {
    throw Error("sampler: min_p = " + std::to_string(options.min_p) + " (must be in [0, 1])");
  }
  if (!(options.repetition_penalty > 0.0f) || !std::isfinite(options.repetition_penalty)) {
    throw Error("sampler: repetition_penalty = " + std::to_string(options.repetition_penalty) +
                " (must be > 0)");
  }
  for (const auto& [name, value] :
       {std::pair<const char*, float>{"frequency_penalty", options.frequency_penalty},
        {"presence_penalty", options.presence_penalty}}) {
    if (!std::isfinite(value)) throw Error(std::string("sampler: ") + name + " = " + std::to_string(value));
  }
  for (const auto& [id, bias] : options.logit_bias) {
    if (std::isnan(bias) || bias == std::numeric_limits<float>::infinity())
      throw Error("sampler: logit_bias of token " + std::to_string(id) + " = " + std::to_string(bias) +
                  " (must be a number or -inf)");
  }
}

int32_t Sampler::Sample(std::span<const float> logits, std::span<const int32_t> history,
                        std::span<const uint8_t> allowed) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  if (vocab == 0) throw Error("sampler: empty logits");
  if (!allowed.empty() && allowed.size() != logits.size())
    throw Error("sampler: " + std::to_string(allowed.size()) + " allowed flags for " + std::to_string(vocab) +
                " logits");
  for (int32_t i = 0; i < vocab; ++i) {
    if (!std::isfinite(logits[i])) {
      throw Error("sampler: logit " + std::to_string(i) + " is " + std::to_string(logits[i]) +
                  " (the model produced a non-finite value)");
    }
  }
  candidates_.resize(static_cast<size_t>(vocab));
  for (int32_t i = 0; i < vocab; ++i) candidates_[i] = {logits[i], i};
  for (const auto& [id, bias] : options_.logit_bias) {
    if (id < 0 || id >= vocab)
      throw Error("sampler: logit_bias names token " + std::to_string(id) + ", not in the vocabulary of " +
                  std::to_string(vocab));
    candidates_[static_cast<size_t>(id)].first += bias;
  }

  // The penalties over the recent window: each distinct token once, with its count.
  const bool penalize = options_.repetition_penalty != 1.0f || options_.frequency_penalty != 0.0f ||
                        options_.presence_penalty != 0.0f;
  if (penalize && options_.repetition_window > 0) {
    const size_t from = history.size() > static_cast<size_t>(options_.repetition_window)
                            ? history.size() - static_cast<size_t>(options_.repetition_window)
                            : 0;
    std::unordered_map<int32_t, int> counts;
    for (size_t i = from; i < history.size(); ++i) ++counts[history[i]];
    for (const auto& [id, count] : counts) {
      if (id < 0 || id >= vocab) continue;
      float& l = candidates_[static_cast<size_t>(id)].first;
      l = l > 0.0f ? l / options_.repetition_penalty : l * options_.repetition_penalty;
      l -= static_cast<float>(count) * options_.frequency_penalty + options_.presence_penalty;
    }
  }
  if (!allowed.empty()) {
    for (int32_t i = 0; i < vocab; ++i)
      if (!allowed[static_cast<size_t>(i)])
        candidates_[static_cast<size_t>(i)].first = -std::numeric_limits<float>::infinity();
  }
  if (std::all_of(candidates_.begin(), candidates_.end(),
                  [](const auto& c) { return c.first == -std::numeric_limits<float>::infinity(); }))
    throw Error(allowed.empty() ? "sampler: logit_bias bans every token"
                                : "sampler: no token is allowed (the constraint and logit_bias leave none)");

  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  if (options_.temperature == 0.0f) {
    return std::min_element(candidates_.begin(), candidates_.end(), by_logit)->second;
  }

  // top-k: keep the k largest (sorted, descending).
  size_t n = candidates_.size();
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < n) n = static_cast<size_t>(options_.top_k);
  std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(n),
                    candidates_.end(), by_logit);
  candidates_.resize(n);

  // Probabilities at temperature 1 for the top-p and min-p filters (as llama.cpp does).
  auto softmax = [&](float temperature) {
    std::vector<double> p(candidates_.size());
    const double max_l = candidates_[0].first;
    double sum = 0.0;
    for (size_t i = 0; i < p.size(); ++i)
      sum += p[i] = std::exp((candidates_[i].first - max_l) / temperature);
    for (double& x : p) x /= sum;
    return p;
  };
  std::vector<double> p = softmax(1.0f);
  if (options_.top_p < 1.0f) {
    double cum = 0.0;
    size_t keep = p.size();
    for (size_t i = 0; i < p.size(); ++i) {
      cum += p[i];
      if (cum >= options_.top_p) {
        keep = i + 1;
        break;
      }
    }
    candidates_.resize(keep);
    p.resize(keep);
  }
  if (options_.min_p > 0.0f) {
    const double threshold = p[0] * options_.min_p;
    size_t keep = 1;
    while (keep < p.size() && p[keep] >= threshold) ++keep;
    candidates_.resize(keep);
  }

  p = softmax(options_.temperature);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  double r = uniform(rng_), cum = 0.0;
  for (size_t i = 0; i < p.size(); ++i) {
    cum += p[i];
    if (r < cum) return candidates_[i].second;
  }
  return candidates_.back().second;
}

}  // namespace attn
