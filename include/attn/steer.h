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

// The same difference at every block's output at once (blocks.{l}.hook_resid_post, l = 1 ..
// n_layers - 1; out[0] stays empty, since a control vector has no direction for block 0): the
// directions of a control vector (llama.cpp's llama-cvector-generator with its mean method, without
// normalizing: scale 1 adds one average difference). out[l] equals SteeringVector at layer l + 1.
std::vector<std::vector<float>> ControlVectorFromPairs(const Model& model,
                                                       std::span<const std::vector<int32_t>> adds,
                                                       std::span<const std::vector<int32_t>> subs,
                                                       int threads = 0);

// Hooks that add scale x vector to blocks.{layer}.hook_resid_pre at every position >= from (on every
// pass: give them to GenerateOptions::hooks or RunWithHooks). from = 1 leaves position 0 alone:
// models park unused attention there (the attention sink), and moving its activations breaks them.
Hooks SteeringHooks(int layer, std::vector<float> vector, float scale, int64_t from = 1);

// llama.cpp's control vectors (--control-vector, --control-vector-scaled, the files repeng and
// llama-cvector-generator write): a GGUF file of F32 [d_model] tensors "direction.N", N >= 1, each
// added to block N's output at every position (Model::SetControlVector). As llama.cpp: several
// files add up, each times its scale; blocks outside [layer_start, layer_end] (--control-vector-
// layer-range; -1: no bound) are left alone; there is no direction for block 0. Unlike
// llama.cpp, a direction for a block the model does not have is an error, not ignored.
struct ControlVectorFile {
  std::string path;
  float scale = 1.0f;
};
// The directions for Model::SetControlVector; attn::Error naming the file and tensor for a bad one
// (not a GGUF file, a direction that is not F32 [d_model], direction.0 or beyond the last block,
// a file without directions).
std::vector<std::vector<float>> LoadControlVectors(std::span<const ControlVectorFile> files,
                                                   const ModelConfig& config, int layer_start = -1,
                                                   int layer_end = -1);
// Writes `directions` (per block; empty ones and block 0's are not written) as a control vector
// file llama.cpp loads: general.architecture "controlvector", controlvector.model_hint and
// controlvector.layer_count, tensors direction.N. attn::Error when block 0 has one.
void SaveControlVector(const std::string& path, const std::vector<std::vector<float>>& directions,
                       const std::string& model_hint);

}  // namespace attn
