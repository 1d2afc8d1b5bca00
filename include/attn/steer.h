// Activation steering: generation pushed toward a concept by adding a vector to the residual
// stream at one layer, the vector being the difference of the residual streams of two texts
// (ActAdd, Turner et al. 2023: "Love" minus "Hate"; averaged over pairs of texts, contrastive
// activation addition, Rimsky et al. 2024).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "attn/model.h"

namespace attn {

// blocks.{layer}.hook_resid_pre at the last token of `add`'s tokens minus the same of `sub`'s,
// [d_model]; several pairs (adds[i], subs[i]) give the mean of their differences. attn::Error for
// a layer out of range, empty token lists or unequal counts of pairs.
std::vector<float> SteeringVector(const Model& model, std::span<const std::vector<int32_t>> adds,
                                  std::span<const std::vector<int32_t>> subs, int layer, int threads = 0);

// Hooks that add scale x vector to blocks.{layer}.hook_resid_pre at every position >= from (on every
// pass: give them to GenerateOptions::hooks or RunWithHooks). from = 1 leaves position 0 alone:
// models park unused attention there (the attention sink), and moving its activations breaks them.
Hooks SteeringHooks(int layer, std::vector<float> vector, float scale, int64_t from = 1);

}  // namespace attn
