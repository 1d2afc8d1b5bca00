// The fused attention forward kernel (prefill: many query rows per KV head).
//
// Layout trick: query rows live in SIMD lanes. A task owns one KV head and a block of
// BQ = 4 x lanes query rows (rows are (query position, query head of the GQA group) pairs, so the
// heads sharing a KV head share every K/V tile). Per key tile of kKeyTile keys:
//   S^T[j, r] = sum_d K[j, d] * Q^T[d, r]       (broadcast K[j, d], FMA with a Q^T lane vector)
//   online softmax down each lane (column max and sum are plain vertical SIMD ops)
//   O^T[d, r] = alpha[r] O^T[d, r] + sum_j V[j, d] * P^T[j, r]
// K and V are read in place (float32) or converted per tile, Q is transposed once per task, and
// nothing of size Sq x Sk exists beyond one BQ x kKeyTile tile.
//
// bf16 inputs on a CPU with AVX512_BF16 take the same path with the two products done by
// vdpbf16ps (two bf16 products summed into each float32 lane, twice the FMA's work per
// instruction): Q^T in pairs along the head dimension against K's pairs broadcast in place for the
// scores, and P^T rounded to bf16 in pairs of keys against V repacked in pairs of keys for O^T.
// Scores, softmax and O^T stay float32; P is rounded to bf16 as FlashAttention does on GPUs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "core/aligned.h"
#include "core/thread_pool.h"
#include "kernels/attention_output.h"
#include "kernels/attention_params.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/attention_fwd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attn::kernels::HWY_NAMESPACE {
namespace {

constexpr int64_t kKeyTile = 128;  // keys per tile
// Register tile: kRows keys (QK) or head dims (PV) x kLaneVecs vectors of accumulators, plus
// kLaneVecs operand registers and one broadcast, within the target's vector registers.
#if HWY_TARGET <= HWY_AVX3
#ifndef ATTN_AVX3_LANE_VECS
// 24 accumulators of 32 zmm registers. 2 x 12, 3 x 8 and 2 x 10 were no faster (BENCHMARKS.md).
#define ATTN_AVX3_LANE_VECS 4
#define ATTN_AVX3_ROWS 6
#endif
constexpr int64_t kLaneVecs = ATTN_AVX3_LANE_VECS;
constexpr int kRows = ATTN_AVX3_ROWS;
#else
#ifndef ATTN_LANE_VECS
#define ATTN_LANE_VECS 3
#define ATTN_ROWS 4
#endif
constexpr int64_t kLaneVecs = ATTN_LANE_VECS;  // BQ = kLaneVecs * lanes query rows per task
constexpr int kRows = ATTN_ROWS;
#endif

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

using Scratch = GrowBuffer<float>;

// The state of one task after its key range: O^T (unnormalized) [D][BQ], m and l per row.
struct BlockState {
  float* qt;   // [D][BQ] scaled queries, transposed
  float* st;   // [kKeyTile][BQ] scores, then probabilities
  float* ot;   // [D][BQ]
  float* kc;   // [kKeyTile][D] converted keys (non-f32 or strided)
  float* vc;   // [kKeyTile][D]
  float* row;  // [D] staging for one row
  float* m;    // [BQ]
  float* l;    // [BQ]
  float* t;    // [BQ] sum_j p_j (s_j - m), for the entropy (statistics mode only)
  float* alpha;
  int32_t* lo;  // [BQ] visible key range per row, clamped to the task's keys
  int32_t* hi;
  // bf16 dot path: 32-bit words holding two bf16 values (low half first).
  uint32_t* qp;  // [D/2][BQ] Q^T, pairs of head dims (unscaled)
  uint16_t* kb;  // [kKeyTile][D rounded up to even] K copied and zero-padded (odd D or strided K)
  uint32_t* pp;  // [kKeyTile/2][BQ] P^T, pairs of keys
  uint32_t* vp;  // [kKeyTile/2][D] V, pairs of keys
};

// S^T[j0 + i, :] = K[j0 + i, :] . Q^T for R keys.
template <int R>
HWY_INLINE void ScoreRows(DF d, const float* HWY_RESTRICT qt, int64_t BQ, const float* k, int64_t k_stride,
                          int64_t D, float* HWY_RESTRICT st) {
  const int64_t N = hn::Lanes(d);
  VF acc[R][kLaneVecs];
  for (int i = 0; i < R; ++i)
    for (int c = 0; c < kLaneVecs; ++c) acc[i][c] = hn::Zero(d);
  for (int64_t dd = 0; dd < D; ++dd) {
    VF q[kLaneVecs];
    for (int c = 0; c < kLaneVecs; ++c) q[c] = hn::Load(d, qt + dd * BQ + c * N);
    for (int i = 0; i < R; ++i) {
      const VF kb = hn::Set(d, k[i * k_stride + dd]);
      for (int c = 0; c < kLaneVecs; ++c) acc[i][c] = hn::MulAdd(kb, q[c], acc[i][c]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int c = 0; c < kLaneVecs; ++c) hn::Store(acc[i][c], d, st + i * BQ + c * N);
}

// O^T[d0 + i, :] = alpha * O^T[d0 + i, :] + sum_j V[j, d0 + i] P^T[j, :] for R head dims.
template <int R>
HWY_INLINE void AccumulateRows(DF d, const float* HWY_RESTRICT st, int64_t BQ, int64_t nk, const float* v,
                               int64_t v_stride, const float* HWY_RESTRICT alpha, float* HWY_RESTRICT ot) {
  const int64_t N = hn::Lanes(d);
  VF acc[R][kLaneVecs];
  for (int c = 0; c < kLaneVecs; ++c) {
    const VF a = hn::Load(d, alpha + c * N);
    for (int i = 0; i < R; ++i) acc[i][c] = hn::Mul(hn::Load(d, ot + i * BQ + c * N), a);
  }
  for (int64_t j = 0; j < nk; ++j) {
    VF pr[kLaneVecs];
    for (int c = 0; c < kLaneVecs; ++c) pr[c] = hn::Load(d, st + j * BQ + c * N);
    for (int i = 0; i < R; ++i) {
      const VF vb = hn::Set(d, v[j * v_stride + i]);
      for (int c = 0; c < kLaneVecs; ++c) acc[i][c] = hn::MulAdd(vb, pr[c], acc[i][c]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int c = 0; c < kLaneVecs; ++c) hn::Store(acc[i][c], d, ot + i * BQ + c * N);
}

template <int R>
HWY_INLINE void ScoreTail(int n, DF d, const float* qt, int64_t BQ, const float* k, int64_t ks, int64_t D,
                          float* st) {
  if constexpr (R > 0) {
    if (n == R) return ScoreRows<R>(d, qt, BQ, k, ks, D, st);
    ScoreTail<R - 1>(n, d, qt, BQ, k, ks, D, st);
  }
}

template <int R>
HWY_INLINE void AccumulateTail(int n, DF d, const float* st, int64_t BQ, int64_t nk, const float* v,
                               int64_t vs, const float* alpha, float* ot) {
  if constexpr (R > 0) {
    if (n == R) return AccumulateRows<R>(d, st, BQ, nk, v, vs, alpha, ot);
    AccumulateTail<R - 1>(n, d, st, BQ, nk, v, vs, alpha, ot);
  }
}

#if ATTN_HAVE_BF16_DOT
// The bf16 dot path (ATTN_BF16_DOT: see simd_common-inl.h).

static_assert(kKeyTile % 2 == 0, "keys are paired");

// Word permutation that interleaves the two 256-bit halves of a register: word 2i = low half's
// word i, word 2i + 1 = high half's word i (two rows of bf16 -> one row of pairs).
alignas(64) constexpr uint16_t kInterleave[32] = {0,  16, 1,  17, 2,  18, 3,  19, 4,  20, 5,
                                                  21, 6,  22, 7,  23, 8,  24, 9,  25, 10, 26,
                                                  11, 27, 12, 28, 13, 29, 14, 30, 15, 31};

// S^T[i, :] = scale * (K[i, :] . Q^T) for R keys; K rows hold D2 pairs of bf16.
template <int R>
ATTN_BF16_DOT HWY_INLINE void DotScoreRows(const uint32_t* HWY_RESTRICT qp, int64_t BQ, const uint16_t* k,
                                           int64_t k_stride, int64_t D2, float scale,
                                           float* HWY_RESTRICT st) {
  __m512 acc[R][kLaneVecs];
  for (int i = 0; i < R; ++i)
    for (int c = 0; c < kLaneVecs; ++c) acc[i][c] = _mm512_setzero_ps();
  for (int64_t t = 0; t < D2; ++t) {
    __m512bh q[kLaneVecs];
    for (int c = 0; c < kLaneVecs; ++c) q[c] = AsPairs(_mm512_loadu_si512(qp + t * BQ + c * 16));
    for (int i = 0; i < R; ++i) {
      const __m512bh kb = BroadcastPair(k + i * k_stride + 2 * t);
      for (int c = 0; c < kLaneVecs; ++c) acc[i][c] = _mm512_dpbf16_ps(acc[i][c], q[c], kb);
    }
  }
  // Broadcast only now: a scale register live through the loop made GCC spill an operand.
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int i = 0; i < R; ++i)
    for (int c = 0; c < kLaneVecs; ++c)
      _mm512_storeu_ps(st + i * BQ + c * 16, _mm512_mul_ps(acc[i][c], vscale));
}

template <int R>
ATTN_BF16_DOT HWY_INLINE void DotScoreTail(int n, const uint32_t* qp, int64_t BQ, const uint16_t* k,
                                           int64_t ks, int64_t D2, float scale, float* st) {
  if constexpr (R > 0) {
    if (n == R) return DotScoreRows<R>(qp, BQ, k, ks, D2, scale, st);
    DotScoreTail<R - 1>(n, qp, BQ, k, ks, D2, scale, st);
  }
}

// Scores of a tile of nk keys.
ATTN_BF16_DOT HWY_NOINLINE void DotScores(const uint32_t* qp, int64_t BQ, const uint16_t* k, int64_t ks,
                                          int64_t D2, int64_t nk, float scale, float* st) {
  int64_t j = 0;
  for (; j + kRows <= nk; j += kRows) DotScoreRows<kRows>(qp, BQ, k + j * ks, ks, D2, scale, st + j * BQ);
  if (j < nk)
    DotScoreTail<kRows - 1>(static_cast<int>(nk - j), qp, BQ, k + j * ks, ks, D2, scale, st + j * BQ);
}

// P^T (float32 [nk][BQ]) -> pairs of keys in bf16, round to nearest even; an odd last key is
// paired with a zero.
ATTN_BF16_DOT HWY_NOINLINE void DotPackP(const float* st, int64_t BQ, int64_t nk, uint32_t* pp) {
  // cvtne2ps puts the even key's 16 lanes in the low half and the odd key's in the high half.
  const __m512i idx = _mm512_load_si512(kInterleave);
  for (int64_t u = 0; u < (nk + 1) / 2; ++u) {
    const bool has_odd = 2 * u + 1 < nk;
    for (int64_t c = 0; c < BQ; c += 16) {
      const __m512 even = _mm512_loadu_ps(st + 2 * u * BQ + c);
      const __m512 odd = has_odd ? _mm512_loadu_ps(st + (2 * u + 1) * BQ + c) : _mm512_setzero_ps();
      const __m512i both = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(odd, even));
      _mm512_storeu_si512(pp + u * BQ + c, _mm512_permutexvar_epi16(idx, both));
    }
  }
}

// V rows j0..j0+nk (bf16, element stride vs_d within a row) -> pairs of keys [nk/2][D]; an odd last
// key is paired with zeros.
ATTN_BF16_DOT HWY_NOINLINE void DotPackV(const uint16_t* v, int64_t vs_row, int64_t vs_d, int64_t D,
                                         int64_t nk, uint32_t* vp) {
  const __m512i idx = _mm512_load_si512(kInterleave);
  for (int64_t u = 0; u < (nk + 1) / 2; ++u) {
    const uint16_t* even = v + 2 * u * vs_row;
    const uint16_t* odd = 2 * u + 1 < nk ? even + vs_row : nullptr;
    uint32_t* out = vp + u * D;
    int64_t d = 0;
    if (vs_d == 1 && odd) {
      // 16 head dims of both keys in one register, then interleaved per lane.
      for (; d + 16 <= D; d += 16) {
        const __m512i both = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(even + d))),
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(odd + d)), 1);
        _mm512_storeu_si512(out + d, _mm512_permutexvar_epi16(idx, both));
      }
    }
    for (; d < D; ++d) out[d] = even[d * vs_d] | (odd ? static_cast<uint32_t>(odd[d * vs_d]) << 16 : 0u);
  }
}

// O^T[i, :] = alpha * O^T[i, :] + sum_u V2[u, i] . P2^T[u, :] for R head dims (pairs of keys).
template <int R>
ATTN_BF16_DOT HWY_INLINE void DotAccumulateRows(const uint32_t* HWY_RESTRICT pp, int64_t BQ, int64_t n_pairs,
                                                const uint32_t* vp, int64_t D,
                                                const float* HWY_RESTRICT alpha, float* HWY_RESTRICT ot) {
  __m512 acc[R][kLaneVecs];
  for (int c = 0; c < kLaneVecs; ++c) {
    const __m512 a = _mm512_loadu_ps(alpha + c * 16);
    for (int i = 0; i < R; ++i) acc[i][c] = _mm512_mul_ps(_mm512_loadu_ps(ot + i * BQ + c * 16), a);
  }
  for (int64_t u = 0; u < n_pairs; ++u) {
    __m512bh pr[kLaneVecs];
    for (int c = 0; c < kLaneVecs; ++c) pr[c] = AsPairs(_mm512_loadu_si512(pp + u * BQ + c * 16));
    for (int i = 0; i < R; ++i) {
      const __m512bh vb = AsPairs(_mm512_set1_epi32(static_cast<int>(vp[u * D + i])));
      for (int c = 0; c < kLaneVecs; ++c) acc[i][c] = _mm512_dpbf16_ps(acc[i][c], pr[c], vb);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int c = 0; c < kLaneVecs; ++c) _mm512_storeu_ps(ot + i * BQ + c * 16, acc[i][c]);
}

template <int R>
ATTN_BF16_DOT HWY_INLINE void DotAccumulateTail(int n, const uint32_t* pp, int64_t BQ, int64_t n_pairs,
                                                const uint32_t* vp, int64_t D, const float* alpha,
                                                float* ot) {
  if constexpr (R > 0) {
    if (n == R) return DotAccumulateRows<R>(pp, BQ, n_pairs, vp, D, alpha, ot);
    DotAccumulateTail<R - 1>(n, pp, BQ, n_pairs, vp, D, alpha, ot);
  }
}

ATTN_BF16_DOT HWY_NOINLINE void DotAccumulate(const uint32_t* pp, int64_t BQ, int64_t nk, const uint32_t* vp,
                                              int64_t D, const float* alpha, float* ot) {
  const int64_t n_pairs = (nk + 1) / 2;
  int64_t dd = 0;
  for (; dd + kRows <= D; dd += kRows)
    DotAccumulateRows<kRows>(pp, BQ, n_pairs, vp + dd, D, alpha, ot + dd * BQ);
  if (dd < D)
    DotAccumulateTail<kRows - 1>(static_cast<int>(D - dd), pp, BQ, n_pairs, vp + dd, D, alpha, ot + dd * BQ);
}
#endif  // ATTN_HAVE_BF16_DOT

// Rows k0 .. k0 + nk of K or V ([B, S, Hkv, D] with `stride`) for KV head kvh of batch b as
// float32: in place when stored as float32 with unit stride (row stride in *row_stride), else
// converted into buf (row stride D).
const float* TileRowsF32(DF d, DType dtype, const void* data, const int64_t* stride, int64_t b, int64_t kvh,
                         int64_t k0, int64_t nk, int64_t D, float* buf, int64_t* row_stride) {
  const int64_t base = b * stride[0] + k0 * stride[1] + kvh * stride[2];
  if (dtype == DType::kF32 && stride[3] == 1) {
    *row_stride = stride[1];
    return static_cast<const float*>(data) + base;
  }
  for (int64_t j = 0; j < nk; ++j)
    LoadRowF32(d, dtype, data, base + j * stride[1], stride[3], D, buf + j * D);
  *row_stride = D;
  return buf;
}

// Runs the rows [r0, r0 + n_rows) of KV head `kvh` in batch `b` over keys [key_begin, key_end).
// Leaves O^T, m, l in `s`. kDot: the bf16 dot path (bf16 inputs, AVX512_BF16 checked by the caller).
template <bool kDot>
void RunBlock(const AttentionParams& p, int64_t b, int64_t kvh, int64_t r0, int64_t n_rows, int64_t key_begin,
              int64_t key_end, const BlockState& s) {
  const DF d;
  const hn::RebindToSigned<DF> di;
  const int64_t N = hn::Lanes(d);
  const int64_t BQ = kLaneVecs * N;
  const int64_t D = p.head_dim;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const bool capped = p.softcap > 0.0f;
  // Without softcap, fold log2(e) into Q so that softmax is 2^(s - m). (The dot path keeps Q exact
  // in bf16 and scales the float32 scores instead.)
  const float q_scale = capped ? p.scale : p.scale * kLog2e;
  const int64_t D2 = (D + 1) / 2;

  // Rows -> (query position, head) and their visible key ranges.
  int64_t kmin = std::numeric_limits<int64_t>::max(), kmax = -1;
  int64_t max_lo = 0, min_hi = std::numeric_limits<int64_t>::max();
  for (int64_t r = 0; r < BQ; ++r) {
    if (r >= n_rows) {
      s.lo[r] = 1, s.hi[r] = 0;  // empty
      if constexpr (kDot) {
        for (int64_t t = 0; t < D2; ++t) s.qp[t * BQ + r] = 0;
      } else {
        for (int64_t dd = 0; dd < D; ++dd) s.qt[dd * BQ + r] = 0.0f;
      }
      continue;
    }
    const int64_t row = r0 + r, qi = row / p.group, h = kvh * p.group + row % p.group;
    int64_t lo, hi;
    p.KeyRange(b, qi, &lo, &hi);
    lo = std::max(lo, key_begin);
    hi = std::min(hi, key_end - 1);
    if (lo > hi) lo = 1, hi = 0;
    s.lo[r] = static_cast<int32_t>(lo), s.hi[r] = static_cast<int32_t>(hi);
    if (lo <= hi) kmin = std::min(kmin, lo), kmax = std::max(kmax, hi);
    max_lo = std::max(max_lo, lo);
    min_hi = std::min(min_hi, hi);
    const int64_t q_off = b * p.q_stride[0] + qi * p.q_stride[1] + h * p.q_stride[2];
    if constexpr (kDot) {
      const uint16_t* qb = static_cast<const uint16_t*>(p.q) + q_off;
      if (p.q_stride[3] == 1 && D % 2 == 0) {  // the pairs are already in memory, in order
        for (int64_t t = 0; t < D2; ++t) std::memcpy(&s.qp[t * BQ + r], qb + 2 * t, sizeof(uint32_t));
      } else {
        for (int64_t t = 0; t < D2; ++t) {
          const uint32_t hi = 2 * t + 1 < D ? qb[(2 * t + 1) * p.q_stride[3]] : 0;
          s.qp[t * BQ + r] = qb[2 * t * p.q_stride[3]] | hi << 16;
        }
      }
    } else {
      LoadRowF32(d, p.dtype, p.q, q_off, p.q_stride[3], D, s.row);
      for (int64_t dd = 0; dd < D; ++dd) s.qt[dd * BQ + r] = s.row[dd] * q_scale;
    }
  }
  for (int64_t r = 0; r < BQ; ++r) s.m[r] = neg_inf, s.l[r] = 0.0f, s.t[r] = 0.0f;
  const bool track_entropy = p.entropy != nullptr;
  std::memset(s.ot, 0, sizeof(float) * D * BQ);

  for (int64_t k0 = kmin; k0 <= kmax; k0 += kKeyTile) {
    const int64_t nk = std::min(kKeyTile, kmax + 1 - k0);
    bool any = false;
    for (int64_t r = 0; r < n_rows && !any; ++r)
      any = s.lo[r] <= k0 + nk - 1 && s.hi[r] >= k0 && s.lo[r] <= s.hi[r];
    if (!any) continue;  // a gap between the rows' windows
    const bool full = max_lo <= k0 && min_hi >= k0 + nk - 1;

    // 1. K and V rows of this tile: in place for float32, else converted. 2. Scores S^T = K Q^T
    //    (already scaled through Q).
    // The bf16 dot path: K in place when its pairs are whole rows, else copied with a zero pad;
    // V repacked in pairs of keys; the scores scaled in float32.
    const float* vp = nullptr;
    int64_t vs = 0;
    if constexpr (kDot) {
#if ATTN_HAVE_BF16_DOT
      const uint16_t* kraw =
          static_cast<const uint16_t*>(p.k) + b * p.k_stride[0] + k0 * p.k_stride[1] + kvh * p.k_stride[2];
      const uint16_t* kp = kraw;
      int64_t ks = p.k_stride[1];
      if (D % 2 != 0 || p.k_stride[3] != 1) {
        CopyRowsBf16(kraw, p.k_stride[1], p.k_stride[3], nk, D, 2 * D2, s.kb);
        kp = s.kb, ks = 2 * D2;
      }
      DotPackV(
          static_cast<const uint16_t*>(p.v) + b * p.v_stride[0] + k0 * p.v_stride[1] + kvh * p.v_stride[2],
          p.v_stride[1], p.v_stride[3], D, nk, s.vp);
      DotScores(s.qp, BQ, kp, ks, D2, nk, q_scale, s.st);
#endif
    } else {
      int64_t ks;
      const float* kp = TileRowsF32(d, p.kv_dtype, p.k, p.k_stride, b, kvh, k0, nk, D, s.kc, &ks);
      vp = TileRowsF32(d, p.kv_dtype, p.v, p.v_stride, b, kvh, k0, nk, D, s.vc, &vs);
      int64_t j = 0;
      for (; j + kRows <= nk; j += kRows) ScoreRows<kRows>(d, s.qt, BQ, kp + j * ks, ks, D, s.st + j * BQ);
      if (j < nk)
        ScoreTail<kRows - 1>(static_cast<int>(nk - j), d, s.qt, BQ, kp + j * ks, ks, D, s.st + j * BQ);
    }

    // 3. Softcap: s = cap * tanh(s / cap), then into log2 units.
    if (capped) {
      const VF inv_cap = hn::Set(d, 1.0f / p.softcap), cap_log2e = hn::Set(d, p.softcap * kLog2e);
      for (int64_t i = 0; i < nk * BQ; i += N)
        hn::Store(hn::Mul(hn::Tanh(d, hn::Mul(hn::Load(d, s.st + i), inv_cap)), cap_log2e), d, s.st + i);
    }
    // 4. Masks: explicit (per element), then the causal / window / kv_lens ranges on partial tiles.
    if (p.mask_kind != MaskKind::kNone) {
      for (int64_t r = 0; r < n_rows; ++r) {
        const int64_t row = r0 + r, qi = row / p.group, h = kvh * p.group + row % p.group;
        const int64_t off = p.MaskOffset(b, h, qi, k0);
        if (p.mask_kind == MaskKind::kBool) {
          const uint8_t* mk = static_cast<const uint8_t*>(p.mask) + off;
          for (int64_t jj = 0; jj < nk; ++jj)
            if (!mk[jj * p.mask_stride[3]]) s.st[jj * BQ + r] = neg_inf;
        } else {
          const float* mk = static_cast<const float*>(p.mask) + off;
          for (int64_t jj = 0; jj < nk; ++jj) s.st[jj * BQ + r] += mk[jj * p.mask_stride[3]] * kLog2e;
        }
      }
    }
    if (!full) {
      for (int64_t c = 0; c < kLaneVecs; ++c) {
        const auto lo = hn::Load(di, s.lo + c * N), hi = hn::Load(di, s.hi + c * N);
        for (int64_t jj = 0; jj < nk; ++jj) {
          const auto key = hn::Set(di, static_cast<int32_t>(k0 + jj));
          const auto excluded = hn::RebindMask(d, hn::Or(hn::Lt(key, lo), hn::Lt(hi, key)));
          float* row = s.st + jj * BQ + c * N;
          hn::Store(hn::IfThenElse(excluded, hn::Set(d, neg_inf), hn::Load(d, row)), d, row);
        }
      }
    }

    // 5. Online softmax down each lane: m' = max(m, max_j s), p = 2^(s - m'),
    //    l' = 2^(m - m') l + sum_j p; alpha = 2^(m - m') rescales O below.
    //    Statistics mode also carries t = sum_j p_j (s_j - m), rescaled as
    //    t' = alpha (t + l (m - m')) + sum_j p_j (s_j - m'); the entropy is then log2 l - t / l bits.
    const VF zero = hn::Zero(d);
    for (int64_t c = 0; c < kLaneVecs; ++c) {
      VF mx = hn::Set(d, neg_inf);
      for (int64_t jj = 0; jj < nk; ++jj) mx = hn::Max(mx, hn::Load(d, s.st + jj * BQ + c * N));
      const VF m_old = hn::Load(d, s.m + c * N);
      const VF m_new = hn::Max(m_old, mx);
      const VF m_use = hn::IfThenZeroElse(hn::Eq(m_new, hn::Set(d, neg_inf)), m_new);  // no NaN
      VF sum = zero, tsum = zero;
      for (int64_t jj = 0; jj < nk; ++jj) {
        float* row = s.st + jj * BQ + c * N;
        const VF u = hn::Sub(hn::Load(d, row), m_use);
        const VF pr = Exp2(d, u);
        hn::Store(pr, d, row);
        sum = hn::Add(sum, pr);
        // Excluded keys have p = 0 and u = -inf: their term is 0, not NaN.
        if (track_entropy) tsum = hn::Add(tsum, hn::IfThenZeroElse(hn::Eq(pr, zero), hn::Mul(pr, u)));
      }
      const VF alpha = Exp2(d, hn::Sub(m_old, m_use));
      const VF l_old = hn::Load(d, s.l + c * N);
      hn::Store(alpha, d, s.alpha + c * N);
      hn::Store(hn::MulAdd(l_old, alpha, sum), d, s.l + c * N);
      hn::Store(m_new, d, s.m + c * N);
      if (track_entropy) {
        const VF shift = hn::IfThenZeroElse(hn::Eq(l_old, zero), hn::Mul(l_old, hn::Sub(m_old, m_use)));
        const VF t_old = hn::Load(d, s.t + c * N);
        hn::Store(hn::MulAdd(alpha, hn::Add(t_old, shift), tsum), d, s.t + c * N);
      }
    }

    // 6. O^T = alpha O^T + V^T P^T (the dot path: P^T rounded to bf16 pairs first).
    if constexpr (kDot) {
#if ATTN_HAVE_BF16_DOT
      DotPackP(s.st, BQ, nk, s.pp);
      DotAccumulate(s.pp, BQ, nk, s.vp, D, s.alpha, s.ot);
#endif
    } else {
      int64_t dd = 0;
      for (; dd + kRows <= D; dd += kRows)
        AccumulateRows<kRows>(d, s.st, BQ, nk, vp + dd, vs, s.alpha, s.ot + dd * BQ);
      if (dd < D)
        AccumulateTail<kRows - 1>(static_cast<int>(D - dd), d, s.st, BQ, nk, vp + dd, vs, s.alpha,
                                  s.ot + dd * BQ);
    }
  }
}

BlockState MakeState(Scratch& scratch, int64_t D, int64_t BQ) {
  const int64_t D2 = (D + 1) / 2;
  // The bf16 dot buffers (32-bit words, or 16-bit for kb) counted in floats.
  const int64_t n_dot = D2 * BQ + kKeyTile * D2 + kKeyTile / 2 * BQ + kKeyTile / 2 * D;
  const size_t n = D * BQ * 2 + kKeyTile * BQ + kKeyTile * D * 2 + D + BQ * 6 + n_dot + 64;
  float* f = scratch.Get(n);
  BlockState s;
  s.qt = f, f += D * BQ;
  s.ot = f, f += D * BQ;
  s.st = f, f += kKeyTile * BQ;
  s.kc = f, f += kKeyTile * D;
  s.vc = f, f += kKeyTile * D;
  s.m = f, f += BQ;
  s.l = f, f += BQ;
  s.t = f, f += BQ;
  s.alpha = f, f += BQ;
  s.lo = reinterpret_cast<int32_t*>(f), f += BQ;
  s.hi = reinterpret_cast<int32_t*>(f), f += BQ;
  s.qp = reinterpret_cast<uint32_t*>(f), f += D2 * BQ;
  s.kb = reinterpret_cast<uint16_t*>(f), f += kKeyTile * D2;
  s.pp = reinterpret_cast<uint32_t*>(f), f += kKeyTile / 2 * BQ;
  s.vp = reinterpret_cast<uint32_t*>(f), f += kKeyTile / 2 * D;
  s.row = f;
  return s;
}

}  // namespace

// Tasks are (batch, KV head, block of rows), each over all of its keys: a row's result depends
// only on its own query and keys, never on how many other rows share the call, so a prompt run
// in chunks gives the same bits as in one pass (the split-K decode kernel is for <= 16 rows).
void ForwardPrefill(const AttentionParams& p) {
  const DF d;
  const int64_t BQ = kLaneVecs * hn::Lanes(d);
  const int64_t D = p.head_dim;
  const int64_t rows = p.group * p.seq_q;
  const int64_t n_blocks = (rows + BQ - 1) / BQ;
  const int64_t groups = p.batch * p.n_kv_heads * n_blocks;
  ThreadPool& pool = ThreadPool::Global();

  pool.Run(groups, p.threads, [&](int64_t g, int) {
    thread_local Scratch scratch;
    const BlockState s = MakeState(scratch, D, BQ);
    // Later row blocks first (they see the most keys under a causal mask), so the dynamic
    // schedule ends balanced.
    const int64_t blk = n_blocks - 1 - g % n_blocks, bh = g / n_blocks;
    const int64_t b = bh / p.n_kv_heads, kvh = bh % p.n_kv_heads, r0 = blk * BQ;
    const int64_t n = std::min(BQ, rows - r0);
#if ATTN_HAVE_BF16_DOT
    if (p.bf16_dot && p.dtype == DType::kBF16 && p.kv_dtype == DType::kBF16) {
      RunBlock<true>(p, b, kvh, r0, n, 0, p.seq_k, s);
    } else {
      RunBlock<false>(p, b, kvh, r0, n, 0, p.seq_k, s);
    }
#else
    RunBlock<false>(p, b, kvh, r0, n, 0, p.seq_k, s);
#endif
    for (int64_t r = 0; r < n; ++r) {
      const int64_t row = r0 + r, h = kvh * p.group + row % p.group, qi = row / p.group;
      WriteRow(p, b, h, qi, RowPartial{s.ot + r, BQ, s.m[r], s.l[r]});
      if (p.entropy) p.entropy[(b * p.n_heads + h) * p.seq_q + qi] = RowEntropy(p, h, s.m[r], s.l[r], s.t[r]);
    }
  });
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace attn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attn::kernels {
HWY_EXPORT(ForwardPrefill);
HWY_EXPORT(TargetName);

void ForwardPrefillDispatch(const AttentionParams& p) { HWY_DYNAMIC_DISPATCH(ForwardPrefill)(p); }
const char* TargetNameDispatch() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }
}  // namespace attn::kernels
#endif
