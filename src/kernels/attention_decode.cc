// Split-K decode: few query rows (generation: 1 query x the heads of a GQA group) over a long
// KV cache. Memory-bound, so the keys are split across threads and every K/V row is read once for
// all the query heads that share it; the partial results merge by their LSE.
//   s_r[j] = q_r . k_j (dot products, horizontal sums), softmax over key blocks of kKeyBlock,
//   acc_r += sum_j p_r[j] v_j.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/aligned.h"
#include "core/thread_pool.h"
#include "kernels/attention_output.h"
#include "kernels/attention_params.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/attention_decode.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attn::kernels::HWY_NAMESPACE {
namespace {

// 64 keys per block: the per-row softmax reductions and rescaling are spread over 4x more keys
// than with 16 (hot-cache decode 30% faster; 32 and 128 measured the same as 64).
constexpr int64_t kKeyBlock = 64;
constexpr int64_t kQKRows = 3, kQKKeys = 4;  // 12 independent accumulators
constexpr int64_t kPVRows = 4;
// Vectors of head dims per P V pass: 4 rows x 4 = 16 accumulators of AVX-512's 32 registers, 4 x 2
// of AVX2's 16.
#if HWY_TARGET <= HWY_AVX3
constexpr int kPVVecs = 4;
#else
constexpr int kPVVecs = 2;
#endif

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// One vector of float32 from K or V rows stored as float32, or as bf16 / f16 (widened on the fly,
// so half-precision caches are read once, without a converted copy).
HWY_INLINE VF LoadAsF32(DF d, const float* p) { return hn::LoadU(d, p); }
// q8_0 rows: the int8 values (their block scales are applied by the caller).
HWY_INLINE VF LoadAsF32(DF d, const int8_t* p) {
  return hn::ConvertTo(d, hn::PromoteTo(hn::Rebind<int32_t, DF>(), hn::LoadU(hn::Rebind<int8_t, DF>(), p)));
}
template <class T>
HWY_INLINE VF LoadAsF32(DF d, const T* p) {
  return hn::PromoteTo(d, hn::LoadU(hn::Rebind<T, DF>(), p));
}

// Elements of K or V rows at dd as float32: int8 rows of a q8_0 cache times their block's scale
// (`scales`: the row's scales as float32, one per 32 values), others as stored.
template <class T>
HWY_INLINE VF LoadRowVec(DF d, const T* row, const float* scales, int64_t dd) {
  if constexpr (std::is_same_v<T, int8_t>)
    return hn::Mul(LoadAsF32(d, row + dd), hn::Set(d, scales[dd / 32]));
  (void)scales;
  return LoadAsF32(d, row + dd);
}

#if HWY_TARGET <= HWY_AVX3 && HWY_ARCH_X86
// [sum of a0's lanes, sum of a1's, a2's, a3's]: one transposing tree (14 instructions) instead of
// four horizontal sums.
HWY_INLINE __m128 Sum4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  // 128-bit chunks 0-1: a0 (8 partial sums), 2-3: a1; likewise a2, a3.
  const __m512 b01 = _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(a0, a1, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 b23 = _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(a2, a3, _MM_SHUFFLE(3, 2, 3, 2)));
  // Chunk j: a_j's 4 partial sums.
  const __m512 c = _mm512_add_ps(_mm512_shuffle_f32x4(b01, b23, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_f32x4(b01, b23, _MM_SHUFFLE(3, 1, 3, 1)));
  // Within each chunk: lane 0 = the total.
  const __m512 e = _mm512_add_ps(c, _mm512_permute_ps(c, _MM_SHUFFLE(1, 0, 3, 2)));
  const __m512 f = _mm512_add_ps(e, _mm512_permute_ps(e, _MM_SHUFFLE(2, 3, 0, 1)));
  const __m512i lanes = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_castps512_ps128(_mm512_permutexvar_ps(lanes, f));
}
#endif

// scores[r * stride + i] = q_r . k_i for R rows and kQKKeys keys (rows of Dp elements of T). Separate
// accumulators per (row, key) keep the FMA pipes full instead of one latency-bound chain.
template <int R, class T>
HWY_INLINE void DotTile(DF d, const float* HWY_RESTRICT q, int64_t Dp, const T* const* k,
                        const float* const* ksc, float* HWY_RESTRICT scores, int64_t stride) {
  const int64_t N = hn::Lanes(d);
  VF a[R][kQKKeys];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < kQKKeys; ++i) a[r][i] = hn::Zero(d);
  for (int64_t dd = 0; dd < Dp; dd += N) {
    VF kv[kQKKeys];
    for (int i = 0; i < kQKKeys; ++i) kv[i] = LoadRowVec(d, k[i], ksc[i], dd);
    for (int r = 0; r < R; ++r) {
      const VF qv = hn::LoadU(d, q + r * Dp + dd);
      for (int i = 0; i < kQKKeys; ++i) a[r][i] = hn::MulAdd(qv, kv[i], a[r][i]);
    }
  }
#if HWY_TARGET <= HWY_AVX3 && HWY_ARCH_X86
  static_assert(kQKKeys == 4, "Sum4 reduces four accumulators");
  for (int r = 0; r < R; ++r)
    _mm_storeu_ps(scores + r * stride, Sum4(a[r][0].raw, a[r][1].raw, a[r][2].raw, a[r][3].raw));
#else
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < kQKKeys; ++i) scores[r * stride + i] = hn::GetLane(hn::SumOfLanes(d, a[r][i]));
#endif
}

// acc_r[dd..] += sum_j p_r[j] v_j[dd..] for R rows and C vectors of head dims, kept in registers
// across the block's keys (v_j = v + j * vs): each V row is read once, front to back.
template <int R, int C, class T>
HWY_INLINE void AccumulateTile(DF d, const float* HWY_RESTRICT p, int64_t p_stride, const T* v, int64_t vs,
                               const float* vsc, int64_t nk, int64_t dd, float* HWY_RESTRICT acc,
                               int64_t Dp) {
  const int64_t N = hn::Lanes(d);
  VF a[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) a[r][c] = hn::LoadU(d, acc + r * Dp + dd + c * N);
  for (int64_t j = 0; j < nk; ++j) {
    const T* row = v + j * vs;
    const float* row_sc = nullptr;  // q8_0 rows only (then Dp = D)
    if constexpr (std::is_same_v<T, int8_t>) row_sc = vsc + j * (Dp / 32);
    VF x[C];
    for (int c = 0; c < C; ++c) x[c] = LoadRowVec(d, row, row_sc, dd + c * N);
    for (int r = 0; r < R; ++r) {
      const VF pr = hn::Set(d, p[r * p_stride + j]);
      for (int c = 0; c < C; ++c) a[r][c] = hn::MulAdd(pr, x[c], a[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) hn::StoreU(a[r][c], d, acc + r * Dp + dd + c * N);
}

// AccumulateTile for R rows and c (1 .. kPVVecs) vectors.
template <int R, class T>
HWY_INLINE void AccumulateVecs(int c, DF d, const float* p, const T* v, int64_t vs, const float* vsc,
                               int64_t nk, int64_t dd, float* acc, int64_t Dp) {
  if constexpr (kPVVecs >= 4) {
    if (c == 4) return AccumulateTile<R, 4, T>(d, p, kKeyBlock, v, vs, vsc, nk, dd, acc, Dp);
    if (c == 3) return AccumulateTile<R, 3, T>(d, p, kKeyBlock, v, vs, vsc, nk, dd, acc, Dp);
  }
  if (c == 2) return AccumulateTile<R, 2, T>(d, p, kKeyBlock, v, vs, vsc, nk, dd, acc, Dp);
  AccumulateTile<R, 1, T>(d, p, kKeyBlock, v, vs, vsc, nk, dd, acc, Dp);
}

// Step 2 of a block: scores[r * kKeyBlock + j] = q_r . k_j (k_j = k + j * ks; for q8_0 rows, key j's
// float32 scales at ksc + j * Dp / 32), kQKRows rows x kQKKeys keys at a time (independent FMA
// chains); a last partial group repeats key nk - 1.
template <class T>
void BlockScores(DF d, const float* q, int64_t Dp, int64_t rows, const T* k, int64_t ks, const float* ksc,
                 int64_t nk, float* scores) {
  for (int64_t j = 0; j < nk; j += kQKKeys) {
    const T* kr[kQKKeys];
    const float* sc[kQKKeys];
    for (int64_t i = 0; i < kQKKeys; ++i) {
      kr[i] = k + std::min(j + i, nk - 1) * ks;
      sc[i] = nullptr;
      if constexpr (std::is_same_v<T, int8_t>) sc[i] = ksc + std::min(j + i, nk - 1) * (Dp / 32);
    }
    int64_t r = 0;
    for (; r + kQKRows <= rows; r += kQKRows)
      DotTile<kQKRows, T>(d, q + r * Dp, Dp, kr, sc, scores + r * kKeyBlock + j, kKeyBlock);
    if (rows - r == 2) DotTile<2, T>(d, q + r * Dp, Dp, kr, sc, scores + r * kKeyBlock + j, kKeyBlock);
    if (rows - r == 1) DotTile<1, T>(d, q + r * Dp, Dp, kr, sc, scores + r * kKeyBlock + j, kKeyBlock);
  }
}

// Step 5 of a block: acc_r += sum_j p_r[j] v_j (v_j = v + j * vs), kPVRows rows x kPVVecs vectors of
// head dims per pass.
template <class T>
void BlockAccumulate(DF d, const float* scores, int64_t rows, const T* v, int64_t vs, const float* vsc,
                     int64_t nk, int64_t Dp, float* acc) {
  const int64_t N = hn::Lanes(d);
  for (int64_t r = 0; r < rows; r += kPVRows) {
    const int n = static_cast<int>(std::min<int64_t>(kPVRows, rows - r));
    const float* pr = scores + r * kKeyBlock;
    float* ar = acc + r * Dp;
    for (int64_t dd = 0; dd < Dp; dd += kPVVecs * N) {
      const int c = static_cast<int>(std::min<int64_t>(kPVVecs, (Dp - dd) / N));
      if (n == 4)
        AccumulateVecs<4, T>(c, d, pr, v, vs, vsc, nk, dd, ar, Dp);
      else if (n == 3)
        AccumulateVecs<3, T>(c, d, pr, v, vs, vsc, nk, dd, ar, Dp);
      else if (n == 2)
        AccumulateVecs<2, T>(c, d, pr, v, vs, vsc, nk, dd, ar, Dp);
      else
        AccumulateVecs<1, T>(c, d, pr, v, vs, vsc, nk, dd, ar, Dp);
    }
  }
}

#if ATTN_HAVE_BF16_DOT
// The bf16 dot path (bf16 K and V, on a CPU with AVX512_BF16).
// Scores: q_r (bf16, unscaled, zero-padded to a multiple of 32) against K rows (in place, or copied
// where the head dim is strided), both with their head dims in natural pairs (lane i: dims 2i,
// 2i + 1), scaled in float32 afterwards.
// P V: each row's probabilities rounded to bf16 (as the prefill dot path does) in pairs of keys,
// against V rows interleaved in pairs of keys per 16 head dims.

// A mask of the first n of 32 words (none for n <= 0).
HWY_INLINE __mmask32 FirstWords(int64_t n) {
  return n >= 32 ? ~__mmask32{0} : n <= 0 ? __mmask32{0} : (__mmask32{1} << n) - 1;
}

template <int R>
ATTN_BF16_DOT HWY_INLINE void DotTileBf16(const uint16_t* HWY_RESTRICT q, int64_t Dq,
                                          const uint16_t* const* k, int64_t D, float scale,
                                          float* HWY_RESTRICT scores) {
  __m512 a[R][kQKKeys];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < kQKKeys; ++i) a[r][i] = _mm512_setzero_ps();
  for (int64_t dd = 0; dd < D; dd += 32) {
    const __mmask32 live = FirstWords(D - dd);
    __m512bh kv[kQKKeys];
    for (int i = 0; i < kQKKeys; ++i) kv[i] = AsPairs(_mm512_maskz_loadu_epi16(live, k[i] + dd));
    for (int r = 0; r < R; ++r) {
      const __m512bh qv = AsPairs(_mm512_loadu_si512(q + r * Dq + dd));
      for (int i = 0; i < kQKKeys; ++i) a[r][i] = _mm512_dpbf16_ps(a[r][i], qv, kv[i]);
    }
  }
  static_assert(kQKKeys == 4, "Sum4 reduces four accumulators");
  const __m128 vscale = _mm_set1_ps(scale);
  for (int r = 0; r < R; ++r)
    _mm_storeu_ps(scores + r * kKeyBlock, _mm_mul_ps(Sum4(a[r][0], a[r][1], a[r][2], a[r][3]), vscale));
}

// scores[r * kKeyBlock + j] = scale * (q_r . k_j), k_j = k + j * ks.
ATTN_BF16_DOT HWY_NOINLINE void DotBlockScores(const uint16_t* q, int64_t Dq, int64_t rows, const uint16_t* k,
                                               int64_t ks, int64_t nk, int64_t D, float scale,
                                               float* scores) {
  for (int64_t j = 0; j < nk; j += kQKKeys) {
    const uint16_t* kr[kQKKeys];
    for (int64_t i = 0; i < kQKKeys; ++i) kr[i] = k + std::min(j + i, nk - 1) * ks;
    int64_t r = 0;
    for (; r + kQKRows <= rows; r += kQKRows)
      DotTileBf16<kQKRows>(q + r * Dq, Dq, kr, D, scale, scores + r * kKeyBlock + j);
    if (rows - r == 2) DotTileBf16<2>(q + r * Dq, Dq, kr, D, scale, scores + r * kKeyBlock + j);
    if (rows - r == 1) DotTileBf16<1>(q + r * Dq, Dq, kr, D, scale, scores + r * kKeyBlock + j);
  }
}

// Rows of probabilities (float32, kKeyBlock per row) -> bf16, round to nearest even; word j = key
// j, so 32-bit word u holds the pair of keys 2u, 2u + 1.
ATTN_BF16_DOT HWY_NOINLINE void DotPackProbs(const float* scores, int64_t rows, uint16_t* pb) {
  static_assert(kKeyBlock % 32 == 0, "32 keys per conversion");
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < kKeyBlock; j += 32) {
      const float* s = scores + r * kKeyBlock + j;
      const __m512bh both = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + 16), _mm512_loadu_ps(s));
      _mm512_storeu_si512(pb + r * kKeyBlock + j, reinterpret_cast<__m512i>(both));
    }
}

// Word indices for vpermt2w: pairs (a[i], b[i]) for i in [0, 16) and in [16, 32).
alignas(64) constexpr uint16_t kPairLow[32] = {0, 32, 1, 33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
                                               8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
alignas(64) constexpr uint16_t kPairHigh[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21,
                                                53, 22, 54, 23, 55, 24, 56, 25, 57, 26, 58,
                                                27, 59, 28, 60, 29, 61, 30, 62, 31, 63};

// acc_r[dd, dd + 64) += sum_j p_r[j] v_j for R rows, 64 head dims (4 registers) at a time.
template <int R>
ATTN_BF16_DOT HWY_INLINE void DotAccumulateTile(const uint16_t* HWY_RESTRICT pb, const uint16_t* v,
                                                int64_t vs, int64_t nk, int64_t D, int64_t dd,
                                                float* HWY_RESTRICT acc, int64_t Dp) {
  const __m512i lo_idx = _mm512_load_si512(kPairLow), hi_idx = _mm512_load_si512(kPairHigh);
  const int64_t n_vec = std::min<int64_t>(4, (D - dd + 15) / 16);
  __m512 a[R][4];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < 4; ++c)
      a[r][c] = c < n_vec ? _mm512_loadu_ps(acc + r * Dp + dd + 16 * c) : _mm512_setzero_ps();
  const __mmask32 live0 = FirstWords(D - dd), live1 = FirstWords(D - dd - 32);
  for (int64_t j = 0; j < nk; j += 2) {
    const uint16_t* even = v + j * vs + dd;
    const bool odd = j + 1 < nk;  // else paired with zeros (its probability is 0 too)
    const __m512i e0 = _mm512_maskz_loadu_epi16(live0, even);
    const __m512i e1 = _mm512_maskz_loadu_epi16(live1, even + 32);
    const __m512i o0 = odd ? _mm512_maskz_loadu_epi16(live0, even + vs) : _mm512_setzero_si512();
    const __m512i o1 = odd ? _mm512_maskz_loadu_epi16(live1, even + vs + 32) : _mm512_setzero_si512();
    const __m512bh vp[4] = {AsPairs(_mm512_permutex2var_epi16(e0, lo_idx, o0)),
                            AsPairs(_mm512_permutex2var_epi16(e0, hi_idx, o0)),
                            AsPairs(_mm512_permutex2var_epi16(e1, lo_idx, o1)),
                            AsPairs(_mm512_permutex2var_epi16(e1, hi_idx, o1))};
    for (int r = 0; r < R; ++r) {
      const __m512bh pr = BroadcastPair(pb + r * kKeyBlock + j);
      for (int c = 0; c < 4; ++c) a[r][c] = _mm512_dpbf16_ps(a[r][c], vp[c], pr);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < 4; ++c)  // a constant trip count keeps a[][] in registers
      if (c < n_vec) _mm512_storeu_ps(acc + r * Dp + dd + 16 * c, a[r][c]);
}

ATTN_BF16_DOT HWY_NOINLINE void DotBlockAccumulate(const uint16_t* pb, int64_t rows, const uint16_t* v,
                                                   int64_t vs, int64_t nk, int64_t D, int64_t Dp,
                                                   float* acc) {
  for (int64_t r = 0; r < rows; r += kPVRows) {
    const int64_t n = std::min<int64_t>(kPVRows, rows - r);
    for (int64_t dd = 0; dd < D; dd += 64) {
      const uint16_t* pr = pb + r * kKeyBlock;
      float* ar = acc + r * Dp;
      if (n == 4)
        DotAccumulateTile<4>(pr, v, vs, nk, D, dd, ar, Dp);
      else if (n == 3)
        DotAccumulateTile<3>(pr, v, vs, nk, D, dd, ar, Dp);
      else if (n == 2)
        DotAccumulateTile<2>(pr, v, vs, nk, D, dd, ar, Dp);
      else
        DotAccumulateTile<1>(pr, v, vs, nk, D, dd, ar, Dp);
    }
  }
}
#endif  // ATTN_HAVE_BF16_DOT

// Calls f(T()) with T the element type of a block's K or V rows: the half type when they are read
// in place from a bf16 / f16 tensor, else float (float32 tensors, or rows converted into a buffer).
template <class F>
void WithRowType(DType dtype, bool in_place, const F& f) {
  if (in_place && dtype == DType::kBF16) return f(hwy::bfloat16_t());
  if (in_place && dtype == DType::kF16) return f(hwy::float16_t());
  if (in_place && dtype == DType::kQ8_0) return f(int8_t());
  f(0.0f);
}

// Scratch of one decode task (rows = query rows of a KV head, Dp = D rounded up to a vector,
// Dq = D rounded up to 32).
struct DecodeWork {
  float* q;       // [rows][Dp] queries, float32, scaled
  float* kbuf;    // [kKeyBlock][Dp] K rows converted when not read in place (dot path: bf16, [kKeyBlock][Dq])
  float* vbuf;    // [kKeyBlock][Dp] likewise V
  float* scores;  // [rows][kKeyBlock]
  uint16_t* qb;   // [rows][Dq] queries, bf16, unscaled (dot path)
  uint16_t* pb;   // [rows][kKeyBlock] probabilities, bf16 (dot path)
  int64_t* lo;    // [rows] first visible key
  int64_t* hi;    // [rows] last visible key

  static size_t Floats(int64_t rows, int64_t Dp, int64_t Dq) {
    return rows * Dp + 2 * kKeyBlock * Dp + rows * kKeyBlock + (rows * Dq + rows * kKeyBlock) / 2 + 16;
  }
  DecodeWork(float* f, int64_t* ranges, int64_t rows, int64_t Dp, int64_t Dq) {
    q = f, f += rows * Dp;
    kbuf = f, f += kKeyBlock * Dp;
    vbuf = f, f += kKeyBlock * Dp;
    scores = f, f += rows * kKeyBlock;
    qb = reinterpret_cast<uint16_t*>(f), f += (rows * Dq + 1) / 2;
    pb = reinterpret_cast<uint16_t*>(f);
    lo = ranges, hi = ranges + rows;
  }
};

// n float16 values as float32 (a block of q8_0 rows' scales).
void WidenHalves(DF d, const uint16_t* src, int64_t n, float* dst) {
  const int64_t N = hn::Lanes(d);
  const hn::Rebind<hwy::float16_t, DF> dh;
  int64_t i = 0;
  for (; i + N <= n; i += N)
    hn::StoreU(hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(src) + i)), d, dst + i);
  for (; i < n; ++i) dst[i] = HalfToFloat(src[i]);
}

// Decode of rows [0, rows) for KV head kvh over keys [key_begin, key_end). Leaves per row r the
// unnormalized output acc + r * Dp, m[r] and l[r] (log2 units).
void DecodeBlock(const AttentionParams& p, int64_t b, int64_t kvh, int64_t key_begin, int64_t key_end,
                 int64_t Dp, int64_t Dq, const DecodeWork& w, float* acc, float* m, float* l) {
  float* q = w.q;
  float* kbuf = w.kbuf;
  float* vbuf = w.vbuf;
  float* scores = w.scores;
  int64_t* lo = w.lo;
  int64_t* hi = w.hi;
  const DF d;
  const int64_t N = hn::Lanes(d);
  const int64_t D = p.head_dim;
  const int64_t rows = p.group * p.seq_q;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const bool capped = p.softcap > 0.0f;
  const float q_scale = capped ? p.scale : p.scale * kLog2e;

  // The bf16 dot path: K and V in place, or copied (as bf16) where the head dim is strided.
#if ATTN_HAVE_BF16_DOT
  const bool dot = p.bf16_dot && p.dtype == DType::kBF16 && p.kv_dtype == DType::kBF16;
#else
  const bool dot = false;
#endif
  const bool q8 = p.kv_dtype == DType::kQ8_0;  // a q8_0 KV cache: int8 rows, a scale per 32 values
  const int64_t nb = D / 32;

  int64_t kmin = std::numeric_limits<int64_t>::max(), kmax = -1;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t qi = r / p.group, h = kvh * p.group + r % p.group;
    p.KeyRange(b, qi, &lo[r], &hi[r]);
    lo[r] = std::max(lo[r], key_begin);
    hi[r] = std::min(hi[r], key_end - 1);
    if (lo[r] <= hi[r]) kmin = std::min(kmin, lo[r]), kmax = std::max(kmax, hi[r]);
    float* qr = q + r * Dp;
    const int64_t q_off = b * p.q_stride[0] + qi * p.q_stride[1] + h * p.q_stride[2];
    if (dot) {  // bf16 as given (the scores are scaled afterwards)
      CopyRowsBf16(static_cast<const uint16_t*>(p.q) + q_off, 0, p.q_stride[3], 1, D, Dq, w.qb + r * Dq);
    } else {
      LoadRowF32(d, p.dtype, p.q, q_off, p.q_stride[3], D, qr);
      for (int64_t dd = 0; dd < D; ++dd) qr[dd] *= q_scale;
      for (int64_t dd = D; dd < Dp; ++dd) qr[dd] = 0.0f;
    }
    for (int64_t dd = 0; dd < Dp; ++dd) acc[r * Dp + dd] = 0.0f;
    m[r] = neg_inf, l[r] = 0.0f;
  }
  for (int64_t j = 0; j < kKeyBlock; ++j)
    for (int64_t dd = D; dd < Dp; ++dd) kbuf[j * Dp + dd] = vbuf[j * Dp + dd] = 0.0f;
  // Rows read in place when no padding is needed: float32 as is, bf16 / f16 widened on the fly,
  // q8_0's int8 values widened and scaled (a q8_0 cache's rows always qualify: unit stride, D a
  // multiple of 32).
  const bool k_direct = q8 || (p.k_stride[3] == 1 && D == Dp);
  const bool v_direct = q8 || (p.v_stride[3] == 1 && D == Dp);
  const Q8Rows* k8 = q8 ? static_cast<const Q8Rows*>(p.k) : nullptr;
  const Q8Rows* v8 = q8 ? static_cast<const Q8Rows*>(p.v) : nullptr;
  const float* ksc = nullptr;  // q8_0: the block's K scales as float32 (in kbuf), likewise V's
  const float* vsc = nullptr;
  const size_t es = DTypeSize(p.kv_dtype);

  for (int64_t k0 = kmin; k0 <= kmax; k0 += kKeyBlock) {
    const int64_t nk = std::min(kKeyBlock, kmax + 1 - k0);
    // 1. K and V rows of this block: in place (row j at base + j * stride), else converted
    //    into a buffer (zero-padded to Dp).
    const int64_t ko = b * p.k_stride[0] + k0 * p.k_stride[1] + kvh * p.k_stride[2];
    const int64_t vo = b * p.v_stride[0] + k0 * p.v_stride[1] + kvh * p.v_stride[2];
    const void* kbase =
        q8 ? static_cast<const void*>(k8->quants + ko) : static_cast<const char*>(p.k) + ko * es;
    const void* vbase =
        q8 ? static_cast<const void*>(v8->quants + vo) : static_cast<const char*>(p.v) + vo * es;
    int64_t ks = p.k_stride[1], vs = p.v_stride[1];
    if (q8) {  // the scales of rows k0 .. k0 + nk ([key][block], contiguous like the rows)
      WidenHalves(d, k8->scales + ko / 32, nk * nb, kbuf);
      WidenHalves(d, v8->scales + vo / 32, nk * nb, vbuf);
      ksc = kbuf, vsc = vbuf;
    } else if (dot) {
      // Strided head dim: the rows copied as bf16 into the (larger) float buffers, row stride Dq.
      if (p.k_stride[3] != 1) {
        uint16_t* rows_k = reinterpret_cast<uint16_t*>(kbuf);
        CopyRowsBf16(static_cast<const uint16_t*>(p.k) + ko, p.k_stride[1], p.k_stride[3], nk, D, Dq, rows_k);
        kbase = rows_k, ks = Dq;
      }
      if (p.v_stride[3] != 1) {
        uint16_t* rows_v = reinterpret_cast<uint16_t*>(vbuf);
        CopyRowsBf16(static_cast<const uint16_t*>(p.v) + vo, p.v_stride[1], p.v_stride[3], nk, D, Dq, rows_v);
        vbase = rows_v, vs = Dq;
      }
    } else {
      if (!k_direct) {
        for (int64_t j = 0; j < nk; ++j)
          LoadRowF32(d, p.kv_dtype, p.k, ko + j * p.k_stride[1], p.k_stride[3], D, kbuf + j * Dp);
        kbase = kbuf, ks = Dp;
      }
      if (!v_direct) {
        for (int64_t j = 0; j < nk; ++j)
          LoadRowF32(d, p.kv_dtype, p.v, vo + j * p.v_stride[1], p.v_stride[3], D, vbuf + j * Dp);
        vbase = vbuf, vs = Dp;
      }
    }
    // 2. Scores, by the rows' storage type.
    if (dot) {
#if ATTN_HAVE_BF16_DOT
      DotBlockScores(w.qb, Dq, rows, static_cast<const uint16_t*>(kbase), ks, nk, D, q_scale, scores);
#endif
    } else {
      WithRowType(p.kv_dtype, k_direct, [&](auto t) {
        using T = decltype(t);
        BlockScores<T>(d, q, Dp, rows, static_cast<const T*>(kbase), ks, ksc, nk, scores);
      });
    }
    // 3. Masks. Without softcap or an explicit mask only the key ranges apply: whole vectors of
    //    keys compared with each row's range. Otherwise per element.
    if (!capped && p.mask_kind == MaskKind::kNone) {
      const hn::RebindToSigned<DF> di;
      const auto last = static_cast<int32_t>(nk - 1);
      for (int64_t r = 0; r < rows; ++r) {
        // The row's visible keys relative to k0, clamped into [-1, kKeyBlock] (fits int32).
        const auto rel_lo = static_cast<int32_t>(std::clamp<int64_t>(lo[r] - k0, -1, kKeyBlock));
        const auto rel_hi = static_cast<int32_t>(std::clamp<int64_t>(hi[r] - k0, -1, kKeyBlock));
        const auto vlo = hn::Set(di, rel_lo), vhi = hn::Set(di, std::min(rel_hi, last));
        float* sr = scores + r * kKeyBlock;
        for (int64_t j = 0; j < kKeyBlock; j += N) {
          const auto key = hn::Iota(di, static_cast<int32_t>(j));
          const auto excluded = hn::RebindMask(d, hn::Or(hn::Lt(key, vlo), hn::Lt(vhi, key)));
          hn::StoreU(hn::IfThenElse(excluded, hn::Set(d, neg_inf), hn::LoadU(d, sr + j)), d, sr + j);
        }
      }
    }
    for (int64_t r = 0; r < rows && (capped || p.mask_kind != MaskKind::kNone); ++r) {
      const int64_t qi = r / p.group, h = kvh * p.group + r % p.group;
      float* sr = scores + r * kKeyBlock;
      for (int64_t j = 0; j < kKeyBlock; ++j) {
        const int64_t key = k0 + j;
        if (j >= nk || key < lo[r] || key > hi[r]) {
          sr[j] = neg_inf;
          continue;
        }
        if (capped) sr[j] = p.softcap * std::tanh(sr[j] / p.softcap) * kLog2e;
        if (p.mask_kind == MaskKind::kBool) {
          if (!static_cast<const uint8_t*>(p.mask)[p.MaskOffset(b, h, qi, key)]) sr[j] = neg_inf;
        } else if (p.mask_kind == MaskKind::kAdditive) {
          sr[j] += static_cast<const float*>(p.mask)[p.MaskOffset(b, h, qi, key)] * kLog2e;
        }
      }
    }
    // 4. Online softmax per row, vectorized over the block's keys.
    for (int64_t r = 0; r < rows; ++r) {
      float* sr = scores + r * kKeyBlock;
      VF mx = hn::Set(d, neg_inf);
      for (int64_t j = 0; j < kKeyBlock; j += N) mx = hn::Max(mx, hn::LoadU(d, sr + j));
      const float m_new = std::max(m[r], hn::GetLane(hn::MaxOfLanes(d, mx)));
      const float m_use = m_new == neg_inf ? 0.0f : m_new;
      VF sum = hn::Zero(d);
      for (int64_t j = 0; j < kKeyBlock; j += N) {
        const VF pr = Exp2(d, hn::Sub(hn::LoadU(d, sr + j), hn::Set(d, m_use)));
        hn::StoreU(pr, d, sr + j);
        sum = hn::Add(sum, pr);
      }
      const float alpha = hn::GetLane(Exp2(d, hn::Set(d, m[r] - m_use)));
      l[r] = l[r] * alpha + hn::GetLane(hn::SumOfLanes(d, sum));
      m[r] = m_new;
      if (alpha != 1.0f) {
        const VF va = hn::Set(d, alpha);
        for (int64_t dd = 0; dd < Dp; dd += N)
          hn::StoreU(hn::Mul(hn::LoadU(d, acc + r * Dp + dd), va), d, acc + r * Dp + dd);
      }
    }
    // 5. acc_r += sum_j p_r[j] v_j.
    if (dot) {
#if ATTN_HAVE_BF16_DOT
      DotPackProbs(scores, rows, w.pb);
      DotBlockAccumulate(w.pb, rows, static_cast<const uint16_t*>(vbase), vs, nk, D, Dp, acc);
#endif
    } else {
      WithRowType(p.kv_dtype, v_direct, [&](auto t) {
        using T = decltype(t);
        BlockAccumulate<T>(d, scores, rows, static_cast<const T*>(vbase), vs, vsc, nk, Dp, acc);
      });
    }
  }
}

}  // namespace

void ForwardDecode(const AttentionParams& p, int64_t n_splits) {
  const DF d;
  const int64_t N = hn::Lanes(d);
  const int64_t D = p.head_dim, Dp = (D + N - 1) / N * N, Dq = (D + 31) / 32 * 32;
  const int64_t rows = p.group * p.seq_q;
  const int64_t heads = p.batch * p.n_kv_heads;
  const int64_t keys_per_split = (p.seq_k + n_splits - 1) / n_splits;
  // Per (head, split): acc [rows][Dp], m [rows], l [rows].
  const int64_t slot = rows * Dp + 2 * rows;
  AlignedPtr<float> partial = AllocateAligned<float>(heads * n_splits * slot);
  ThreadPool& pool = ThreadPool::Global();
  pool.RunContiguous(heads * n_splits, p.threads, [&](int64_t t, int) {
    thread_local std::vector<float> work;
    thread_local std::vector<int64_t> ranges;
    work.resize(DecodeWork::Floats(rows, Dp, Dq));
    ranges.resize(2 * rows);
    const int64_t bh = t / n_splits, split = t % n_splits;
    const int64_t kb = split * keys_per_split, ke = std::min(p.seq_k, kb + keys_per_split);
    float* out = partial.get() + t * slot;
    DecodeBlock(p, bh / p.n_kv_heads, bh % p.n_kv_heads, kb, ke, Dp, Dq,
                DecodeWork(work.data(), ranges.data(), rows, Dp, Dq), out, out + rows * Dp,
                out + rows * Dp + rows);
  });
  // Merge the splits of every row in split order.
  std::vector<RowPartial> parts(n_splits);
  std::vector<float> merged(D);
  for (int64_t bh = 0; bh < heads; ++bh) {
    const int64_t b = bh / p.n_kv_heads, kvh = bh % p.n_kv_heads;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t split = 0; split < n_splits; ++split) {
        const float* base = partial.get() + (bh * n_splits + split) * slot;
        parts[split] = RowPartial{base + r * Dp, 1, base[rows * Dp + r], base[rows * Dp + rows + r]};
      }
      MergeAndWriteRow(p, b, kvh * p.group + r % p.group, r / p.group, parts.data(),
                       static_cast<int>(n_splits), merged.data());
    }
  }
}

}  // namespace attn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attn::kernels {
HWY_EXPORT(ForwardDecode);
void ForwardDecodeDispatch(const AttentionParams& p, int64_t n_splits) {
  HWY_DYNAMIC_DISPATCH(ForwardDecode)(p, n_splits);
}
}  // namespace attn::kernels
#endif
