// Training metrics: the induction probe, head scores from the trainer's patterns, and the
// in-context-learning score. Definitions: metrics.h.
#include "train/metrics.h"

#include <algorithm>
#include <string>

#include "attn/error.h"
#include "attn/train.h"

namespace attn {
namespace {

// splitmix64: a small, well-mixed generator whose output does not depend on the library.
uint64_t NextRandom(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

InductionProbe MakeInductionProbe(std::span<const int32_t> allowed, int64_t context, int count,
                                  uint64_t seed) {
  if (allowed.size() < 2) {
    throw Error("induction probe: needs at least 2 distinct tokens, the corpus has " +
                std::to_string(allowed.size()));
  }
  if (context < 4) throw Error("induction probe: context " + std::to_string(context) + " is below 4");
  if (count < 1) throw Error("induction probe: count " + std::to_string(count) + " is below 1");
  InductionProbe probe;
  probe.period = std::min<int64_t>(context / 2, static_cast<int64_t>(allowed.size()));
  uint64_t state = seed ^ 0x1D0C7105ull;
  for (int s = 0; s < count; ++s) {
    // A partial Fisher-Yates shuffle picks `period` distinct tokens.
    std::vector<int32_t> pool(allowed.begin(), allowed.end());
    std::vector<int32_t> seq(static_cast<size_t>(2 * probe.period));
    for (int64_t i = 0; i < probe.period; ++i) {
      const uint64_t left = pool.size() - static_cast<size_t>(i);
      const size_t j = static_cast<size_t>(i) + static_cast<size_t>(NextRandom(state) % left);
      std::swap(pool[static_cast<size_t>(i)], pool[j]);
      seq[static_cast<size_t>(i)] = seq[static_cast<size_t>(i + probe.period)] = pool[static_cast<size_t>(i)];
    }
    probe.sequences.push_back(std::move(seq));
  }
  return probe;
}

TrainHeadScores ScoreTrainerHeads(Trainer& trainer, const InductionProbe& probe) {
  const TrainModelConfig& c = trainer.config();
  const size_t n_scores = static_cast<size_t>(c.n_layers * c.n_heads);
  TrainHeadScores out;
  out.induction.assign(n_scores, 0.0);
  out.previous_token.assign(n_scores, 0.0);
  if (probe.sequences.empty()) return out;
  const int64_t P = probe.period;
  for (const std::vector<int32_t>& seq : probe.sequences) {
    const int64_t n = static_cast<int64_t>(seq.size());
    // patterns: [layers][heads][n][n], row = query.
    const std::vector<float> patterns = trainer.Patterns(seq);
    for (size_t lh = 0; lh < n_scores; ++lh) {
      const float* a = patterns.data() + lh * static_cast<size_t>(n * n);
      double induction = 0.0, previous = 0.0;
      for (int64_t i = P; i < n; ++i) induction += a[i * n + (i - P + 1)];
      for (int64_t i = 1; i < n; ++i) previous += a[i * n + (i - 1)];
      out.induction[lh] += induction / static_cast<double>(n - P);
      out.previous_token[lh] += previous / static_cast<double>(n - 1);
    }
  }
  const double count = static_cast<double>(probe.sequences.size());
  for (size_t lh = 0; lh < n_scores; ++lh) {
    out.induction[lh] /= count;
    out.previous_token[lh] /= count;
  }
  return out;
}

double InContextLearningScore(std::span<const float> losses, int64_t batch, int64_t context) {
  if (batch < 1 || context < 8 || static_cast<int64_t>(losses.size()) != batch * context) {
    throw Error("in-context-learning score: needs losses [batch, context >= 8], got " +
                std::to_string(losses.size()) + " values for batch " + std::to_string(batch) + ", context " +
                std::to_string(context));
  }
  const int64_t w = std::max<int64_t>(1, context / 16);
  auto mean = [&](int64_t begin, int64_t end) {
    begin = std::max<int64_t>(begin, 0);
    end = std::min(end, context);
    double sum = 0.0;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t t = begin; t < end; ++t) sum += losses[static_cast<size_t>(b * context + t)];
    return sum / static_cast<double>(batch * (end - begin));
  };
  return mean(context - w, context) - mean(context / 8 - w, context / 8 + w);
}

}  // namespace attn
