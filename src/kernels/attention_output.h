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

// A row's normalization: out = o * inv and its LSE in log2 units (-inf when the row attends to
// nothing). With a sink (sinks[h] in natural-log units, gpt-oss), the softmax's denominator gets
// one more term 2^(sink2 - m), added in the frame of M = max(m, sink2) so that neither overflows.
struct RowNorm {
  float inv, lse2;
};

inline float Sink2(const AttentionParams& p, int64_t h) {
  return p.sinks ? p.sinks[h] * kLog2e : -std::numeric_limits<float>::infinity();
}

inline RowNorm Normalize(const AttentionParams& p, int64_t h, float m, float l) {
  const float sink2 = Sink2(p, h);
  if (!(l > 0.0f)) return {0.0f, sink2};  // no visible key: out = 0, lse = the sink (or -inf)
  if (!(sink2 > -std::numeric_limits<float>::infinity())) return {1.0f / l, m + std::log2(l)};
  const float M = std::max(m, sink2), a = std::exp2(m - M);
  const float L = l * a + std::exp2(sink2 - M);
  return {a / L, M + std::log2(L)};
}

// Entropy in nats of a row's attention distribution from the statistics-mode state (log2
// units: m, l, and t = sum_j 2^(s_j - m) (s_j - m)): log2 l - t / l bits, the sink (if any)
// being one more outcome.
inline float RowEntropy(const AttentionParams& p, int64_t h, float m, float l, float t) {
  const float sink2 = Sink2(p, h);
  if (!(l > 0.0f)) return 0.0f;
  if (sink2 > -std::numeric_limits<float>::infinity()) {
    const float M = std::max(m, sink2), a = std::exp2(m - M), e = std::exp2(sink2 - M);
    t = a * (t + l * (m - M)) + e * (sink2 - M);
    l = l * a + e;
  }
  return std::max(0.0f, std::log2(l) - t / l) * kLn2;
}

// out[b, qi, h, :] = o / l and lse = (m + log2 l) * ln 2 (with the head's sink, if any, in the
// denominator); no visible key: out = 0 and lse = -inf (or the sink).
inline void WriteRow(const AttentionParams& p, int64_t b, int64_t h, int64_t qi, const RowPartial& r) {
  const int64_t base = b * p.out_stride[0] + qi * p.out_stride[1] + h * p.out_stride[2];
  const RowNorm n = Normalize(p, h, r.m, r.l);
  const bool empty = !(r.l > 0.0f);
  const float inv = n.inv;
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
  if (p.lse) p.lse[(b * p.n_heads + h) * p.seq_q + qi] = n.lse2 * kLn2;
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
