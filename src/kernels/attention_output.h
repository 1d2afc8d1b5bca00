// Finishing a row of attention: normalization by the softmax denominator, the LSE, and the merge
// of partial results when keys were split across threads (split-K). Scalar: O(rows x head_dim).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "attn/tensor.h"
#include "kernels/attention_params.h"

namespace attn::kernels {

// Online-softmax state of one row after some keys: o = sum_j 2^(s_j - m) v_j (unnormalized),
// m = max score in log2 units, l = sum_j 2^(s_j - m). A row that saw no key has l = 0.
struct RowPartial {
  const float* o;  // head_dim values, element stride o_stride
  int64_t o_stride;
  float m, l;
};

inline void StoreOut(DType dtype, void* base, int64_t offset, float x) {
  switch (dtype) {
    case DType::kF32:
      static_cast<float*>(base)[offset] = x;
      break;
    case DType::kF16:
      static_cast<uint16_t*>(base)[offset] = FloatToHalf(x);
      break;
    case DType::kBF16:
      static_cast<uint16_t*>(base)[offset] = FloatToBF16(x);
      break;
    case DType::kQ8_0:  // a KV cache storage type, never an output (MakeParams rejects it)
      break;
  }
}

// out[b, qi, h, :] = o / l and lse = (m + log2 l) * ln 2; no visible key: 0 and -inf.
inline void WriteRow(const AttentionParams& p, int64_t b, int64_t h, int64_t qi, const RowPartial& r) {
  const int64_t base = b * p.out_stride[0] + qi * p.out_stride[1] + h * p.out_stride[2];
  const bool empty = !(r.l > 0.0f);
  const float inv = empty ? 0.0f : 1.0f / r.l;
  const int64_t D = p.head_dim, os = p.out_stride[3], rs = r.o_stride;
  // One loop per dtype with typed pointers (no per-element switch, no reload of p.out).
  if (p.dtype == DType::kF32) {
    float* out = static_cast<float*>(p.out) + base;
    for (int64_t d = 0; d < D; ++d) out[d * os] = empty ? 0.0f : r.o[d * rs] * inv;
  } else if (p.dtype == DType::kBF16) {
    uint16_t* out = static_cast<uint16_t*>(p.out) + base;
    for (int64_t d = 0; d < D; ++d) out[d * os] = FloatToBF16(empty ? 0.0f : r.o[d * rs] * inv);
  } else {
    for (int64_t d = 0; d < D; ++d) StoreOut(p.dtype, p.out, base + d * os, empty ? 0.0f : r.o[d * rs] * inv);
  }
  if (p.lse) {
    p.lse[(b * p.n_heads + h) * p.seq_q + qi] =
        empty ? -std::numeric_limits<float>::infinity() : (r.m + std::log2(r.l)) * 0.6931471805599453f;
  }
}

// Merges the partials of one row computed over disjoint key ranges (in a fixed order, so the
// result does not depend on thread timing) and writes it:
//   M = max_s m_s,  L = sum_s l_s 2^(m_s - M),  o = sum_s o_s 2^(m_s - M).
inline void MergeAndWriteRow(const AttentionParams& p, int64_t b, int64_t h, int64_t qi,
                             const RowPartial* parts, int n_parts, float* scratch) {
  float M = -std::numeric_limits<float>::infinity();
  for (int s = 0; s < n_parts; ++s)
    if (parts[s].l > 0.0f) M = std::max(M, parts[s].m);
  float L = 0.0f;
  for (int64_t d = 0; d < p.head_dim; ++d) scratch[d] = 0.0f;
  for (int s = 0; s < n_parts; ++s) {
    if (!(parts[s].l > 0.0f)) continue;
    const float w = std::exp2(parts[s].m - M);
    L += parts[s].l * w;
    for (int64_t d = 0; d < p.head_dim; ++d) scratch[d] += parts[s].o[d * parts[s].o_stride] * w;
  }
  WriteRow(p, b, h, qi, RowPartial{scratch, 1, M, L});
}

}  // namespace attn::kernels
