// The attention weight that one query row puts on a few chosen keys, from the row's LSE:
// sum_j exp(scale * q . k_j - lse). Used by the head statistics (src/model/heads.cc) to score a
// row's target keys (previous token, earlier copies, ...) without the full pattern.
#pragma once

#include <cstdint>

#include "attn/tensor.h"

namespace attn::kernels {

// Sum over i < n_keys of exp(s_i - lse), s_i = scale * dot(q, k + (keys[i] + offset) * k_stride)
// (with softcap > 0: softcap * tanh(s_i / softcap), as the kernel caps scores); q has `dim` floats,
// each key row `dim` values of k_dtype (float32, or f16 / bf16 widened as they are read: a half KV
// cache). SIMD over the head dimension, four keys at a time.
double SumKeyWeights(const float* q, const void* k, DType k_dtype, int64_t k_stride, int64_t dim,
                     const int64_t* keys, int64_t n_keys, int64_t offset, float scale, float lse,
                     float softcap = 0.0f);

}  // namespace attn::kernels
