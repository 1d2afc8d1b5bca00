// What `attn train` records while it trains: the in-context-learning score and each head's
// induction and previous-token scores on a repeated random sequence (Olsson et al. 2022).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace attn {

class Trainer;

// A probe: `count` sequences of `period` distinct tokens, each sequence followed by itself, so
// that in the second copy the token after the current token's earlier occurrence is known.
struct InductionProbe {
  int64_t period = 0;
  std::vector<std::vector<int32_t>> sequences;  // each of length 2 * period
};

// Draws the probe's tokens uniformly from `allowed` (tokens that occur in the corpus, so their
// embeddings were trained), without repeats inside a sequence. period = min(context / 2,
// allowed.size()); deterministic in seed. Throws attn::Error when fewer than 2 tokens are allowed.
InductionProbe MakeInductionProbe(std::span<const int32_t> allowed, int64_t context, int count,
                                  uint64_t seed);

// Per head, [layer * n_heads + head]: induction = mean attention from each query i of the
// second copy to key i - period + 1 (the token after the current one's earlier copy);
// previous_token = mean attention from i >= 1 to i - 1, over the whole probe.
struct TrainHeadScores {
  std::vector<double> induction, previous_token;
};
TrainHeadScores ScoreTrainerHeads(Trainer& trainer, const InductionProbe& probe);

// In-context-learning score of per-position losses [batch, context]: mean loss late in the
// context (positions [context - w, context)) minus mean loss early (a window of 2w centred on
// context / 8), w = max(1, context / 16). Negative when later tokens are predicted better, as
// they are once the model uses its context (Olsson et al.'s "loss at token 500 minus loss at
// token 50", scaled to the context).
double InContextLearningScore(std::span<const float> losses, int64_t batch, int64_t context);

}  // namespace attn
