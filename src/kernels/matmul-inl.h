// Per-target kernels of MatMul (included once per Highway target by matmul.cc).
//
// Register tiles: R rows of W x C rows of x, each pair (r, i) owning one vector accumulator whose
// lanes are summed once at the end. Every output runs the same sequence of operations whatever
// tile it falls in, so results depend neither on the tile shape at the edges nor on threads.
//
// Integer blocks (Q4_0, Q4_1, Q8_0) against activations quantized to 8 bits (quantize.h):
//   y[i, r] = sum_b dw[r, b] dx[i, b] sum_{c in b} qw[r, c] qx[i, c] + sum_b mw[r, b] s[i, b]
// with Q4 nibbles taken unsigned (0..15): Q4_1 has its own offset mw = m, and Q4_0's (q - 8) d is
// written as q d + mw with mw = -8 d, so both use one kernel. Q8_0 has no offset term. The integer
// sums are exact (int32); rounding enters only through the f32 scale products and accumulation.
//
// Kernels: TileQ (n > 1, compute-bound: scales converted per task, scale products per tile),
// RowsQX (n <= 24 on AVX2 and AVX-512, memory-bound: scales read from the streaming blocks,
// software prefetch into L2; Q4_0 / Q4_1 on AVX-512 use RowsQ4PairsX, two blocks per register),
// TileF (F32 / F16 / BF16 weights, f32 FMA). On AVX2 and AVX-512 targets the integer dot is
// vpmaddubsw + vpmaddwd (Highway 1.0.3 has no u8 x i8 pairwise op); other targets widen to i16
// and use Highway's ReorderWidenMulAccumulate on rows expanded to int8.
#if defined(ATTN_KERNELS_MATMUL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATTN_KERNELS_MATMUL_INL_H_
#undef ATTN_KERNELS_MATMUL_INL_H_
#else
#define ATTN_KERNELS_MATMUL_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "attn/tensor.h"
#include "format/gguf.h"
#include "hwy/highway.h"

// The AVX2 integer dot (vpmaddubsw + vpmaddwd) has no Highway 1.0.3 op; AVX-512 targets reuse
// the same 256-bit code.
#undef ATTN_MATMUL_X86_INT8
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
#define ATTN_MATMUL_X86_INT8 1
#include <immintrin.h>
#else
#define ATTN_MATMUL_X86_INT8 0
#endif

HWY_BEFORE_NAMESPACE();
namespace attn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using gguf::TensorType;

namespace matmul {

constexpr int64_t kQK = 32;  // values per block

template <TensorType kType>
constexpr int64_t BlockBytes() {
  switch (kType) {
    case TensorType::kQ4_0:
      return 18;
    case TensorType::kQ4_1:
      return 20;
    case TensorType::kQ5_0:
      return 22;
    case TensorType::kQ5_1:
      return 24;
    default:
      return 34;
  }
}
// Q5_0 / Q5_1: 4-bit nibbles as Q4_0 / Q4_1 plus a fifth bit per value (kquants.h).
template <TensorType kType>
constexpr bool kFiveBit = kType == TensorType::kQ5_0 || kType == TensorType::kQ5_1;
// Blocks with a min m (x = q d + m) rather than a centre (x = (q - c) d).
template <TensorType kType>
constexpr bool kWithMin = kType == TensorType::kQ4_1 || kType == TensorType::kQ5_1;
// The centre of the unsigned quants of Q4_0 / Q5_0.
template <TensorType kType>
constexpr float kCentre = kType == TensorType::kQ5_0 ? 16.0f : 8.0f;
// Byte offset of the fifth bits (Q5) and of the nibbles (or int8 quants) inside a block.
template <TensorType kType>
constexpr int64_t HighBitsOffset() {
  return kWithMin<kType> ? 4 : 2;
}
template <TensorType kType>
constexpr int64_t QuantOffset() {
  return HighBitsOffset<kType>() + (kFiveBit<kType> ? 4 : 0);
}

// ---------------------------------------------------------------- software prefetch

// Matrix-vector products request each block (or vector of a float row) into L2 (prefetcht1)
// about kPrefetchBytes ahead, at the same place of a later row. Measured on generation (attn bench -t 2 -p 16
// -n 256, medians of 6 alternating runs, 2026-12-03): no look-ahead 95 tokens/s; prefetcht0 (into L1) 4 rows
// ahead 147-159, 12 rows 151; prefetcht1 12 rows 185, 24 rows 186-194, 8 KB 194. The 30 MB Q8_0 output matrix
// went from 15 to 26-43 GB/s. Presumably an L1 prefetch holds one of the core's few L1 miss buffers until its
// line arrives, which caps the lines in flight; L2 has more.
constexpr int64_t kPrefetchBytes = 8192;
HWY_INLINE size_t PrefetchOffset(size_t row_bytes) {
  return (kPrefetchBytes + row_bytes - 1) / row_bytes * row_bytes;
}

// ---------------------------------------------------------------- activation quantization

// One row: see quantize.h for the definition of q, d, s.
HWY_INLINE void QuantizeRow(const float* HWY_RESTRICT x, int64_t cols, int8_t* HWY_RESTRICT q,
                            float* HWY_RESTRICT d, float* HWY_RESTRICT s) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<int8_t, decltype(di)> d8;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  for (int64_t b = 0; b < cols / kQK; ++b) {
    const float* xb = x + b * kQK;
    auto vmax = hn::Zero(df);
    for (int64_t k = 0; k < kQK; k += N) vmax = hn::Max(vmax, hn::Abs(hn::LoadU(df, xb + k)));
    const float amax = hn::GetLane(hn::MaxOfLanes(df, vmax));
    const float scale = amax / 127.0f;
    const auto inv = hn::Set(df, amax > 0.0f ? 127.0f / amax : 0.0f);
    auto vsum = hn::Zero(di);
    for (int64_t k = 0; k < kQK; k += N) {
      const auto qi = hn::NearestInt(hn::Mul(hn::LoadU(df, xb + k), inv));
      vsum = hn::Add(vsum, qi);
      hn::StoreU(hn::DemoteTo(d8, qi), d8, q + b * kQK + k);
    }
    d[b] = scale;
    s[b] = scale * static_cast<float>(hn::GetLane(hn::SumOfLanes(di, vsum)));
  }
}

// ---------------------------------------------------------------- weight scales

// Converts n f16 values to f32 (vectorized, scalar tail).
HWY_INLINE void HalfsToFloats(const uint16_t* HWY_RESTRICT src, int64_t n, float* HWY_RESTRICT dst) {
  const hn::ScalableTag<float> df;
  const hn::Rebind<hwy::float16_t, decltype(df)> dh;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const hwy::float16_t* h = reinterpret_cast<const hwy::float16_t*>(src);
  int64_t k = 0;
  for (; k + N <= n; k += N) hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, h + k)), df, dst + k);
  for (; k < n; ++k) dst[k] = HalfToFloat(src[k]);
}

// dw[r * nbp + b] = d of block b of row r; mw[r * nbp + b] = its offset (m for Q4_1, -8 d for
// Q4_0); both zero for b in [nb, nbp), so that loops over blocks can run over whole vectors.
template <TensorType kType>
HWY_INLINE void ExtractScales(const uint8_t* w, size_t row_bytes, int64_t rows, int64_t nb, int64_t nbp,
                              uint16_t* HWY_RESTRICT tmp, float* HWY_RESTRICT dw, float* HWY_RESTRICT mw) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = w + static_cast<size_t>(r) * row_bytes;
    float* dr = dw + r * nbp;
    for (int64_t b = 0; b < nb; ++b) std::memcpy(tmp + b, row + b * BlockBytes<kType>(), 2);
    HalfsToFloats(tmp, nb, dr);
    for (int64_t b = nb; b < nbp; ++b) dr[b] = 0.0f;
    if constexpr (kType != TensorType::kQ8_0) {
      float* mr = mw + r * nbp;
      if constexpr (kWithMin<kType>) {
        for (int64_t b = 0; b < nb; ++b) std::memcpy(tmp + b, row + b * BlockBytes<kType>() + 2, 2);
        HalfsToFloats(tmp, nb, mr);
      } else {
        for (int64_t b = 0; b < nb; ++b) mr[b] = -kCentre<kType> * dr[b];
      }
      for (int64_t b = nb; b < nbp; ++b) mr[b] = 0.0f;
    }
  }
}

// sum_k a[k] b[k] for n a multiple of the lanes (the padded offset arrays), fixed order.
HWY_INLINE float DotF32(const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, int64_t n) {
  const hn::ScalableTag<float> df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  auto acc = hn::Zero(df);
  for (int64_t k = 0; k < n; k += N) acc = hn::MulAdd(hn::LoadU(df, a + k), hn::LoadU(df, b + k), acc);
  return hn::GetLane(hn::SumOfLanes(df, acc));
}

// Offset arrays are padded to a multiple of this many blocks (>= every target's f32 lanes).
constexpr int64_t kScalePad = 16;

// The quantized activations and the output of one tile call.
struct QTileArgs {
  const float* dw;   // [R][nbp] weight scales of the tile's first row, zero-padded
  const float* mw;   // [R][nbp] weight offsets, zero-padded (unused for Q8_0)
  const int8_t* xq;  // [C][cols] activation quants of the tile's first row
  const float* xd;   // [C][nbp] activation scales, zero-padded
  const float* xs;   // [C][nbp] block sums, zero-padded
  int64_t cols, nb, nbp;
  float* y;  // y[i * ldy + r]
  int64_t ldy;
};

// The offset term sum_b mw[r, b] s[i, b] plus the accumulated sum, stored.
template <TensorType kType>
HWY_INLINE void StoreQ(const QTileArgs& a, int r, int i, float acc) {
  if constexpr (kType != TensorType::kQ8_0) acc += DotF32(a.mw + r * a.nbp, a.xs + i * a.nbp, a.nbp);
  a.y[i * a.ldy + r] = acc;
}

#if ATTN_MATMUL_X86_INT8
// ---------------------------------------------------------------- AVX2: vpmaddubsw tiles

// The 32 quants of a block as bytes in element order: Q4 nibbles unsigned (byte j holds element j
// low and j + 16 high, so the low half of the register is elements 0..15), Q8_0 signed.
template <TensorType kType>
HWY_INLINE __m256i LoadWeightBlock(const uint8_t* block) {
  if constexpr (kType == TensorType::kQ8_0) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
  } else {
    const __m128i nib = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + QuantOffset<kType>()));
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(nib, 4), nib);
    const __m256i q4 = _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
    if constexpr (kFiveBit<kType>) {
      // Bit e of the 32 fifth bits to byte e: byte e / 8 of them into byte e, then test bit e % 8.
      uint32_t bits;
      std::memcpy(&bits, block + HighBitsOffset<kType>(), 4);
      const __m256i spread =
          _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)),
                              _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2,
                                               2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
      const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
      const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
      return _mm256_or_si256(q4, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
    }
    return q4;
  }
}

// 8 partial i32 sums of qw * qx over a block. vpmaddubsw takes u8 x s8 into saturating i16 pairs:
// Q4 pairs reach 2 * 15 * 127, Q5 2 * 31 * 127, and Q8_0 (|qw| with the sign moved onto qx)
// 2 * 128 * 127 < 32767, so nothing saturates.
//
// With kVnni (AVX-512 targets where CPUID reports AVX512_VNNI, kernels::VnniEnabled()), one
// vpdpbusd sums the four u8 x s8 products of each i32 lane at once: the same exact integers, one
// instruction instead of two. It is written as inline assembly so that the kernels need no
// function target attribute (the compiler may not use VNNI anywhere else in them).
#if HWY_TARGET <= HWY_AVX3
HWY_INLINE __m256i Dpbusd(__m256i u8, __m256i s8) {
  __m256i acc = _mm256_setzero_si256();
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
  return acc;
}
HWY_INLINE __m512i Dpbusd(__m512i u8, __m512i s8) {
  __m512i acc = _mm512_setzero_si512();
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
  return acc;
}
#endif
template <TensorType kType, bool kVnni = false>
HWY_INLINE __m256i BlockDot(__m256i w, __m256i x) {
  __m256i u = w, s = x;
  if constexpr (kType == TensorType::kQ8_0) u = _mm256_sign_epi8(w, w), s = _mm256_sign_epi8(x, w);
#if HWY_TARGET <= HWY_AVX3
  if constexpr (kVnni) return Dpbusd(u, s);
#endif
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

HWY_INLINE float HorizontalSum(__m256 v) {
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

// Blocks per pass of TileQ: its table of scale products stays within 4 KiB of stack.
constexpr int64_t kScaleChunk = 64;

// R rows of W (raw blocks at w, stride row_bytes) x C rows of x. Per pass of kScaleChunk blocks,
// the products dw[r, b] dx[i, b] are first formed 8 at a time into a table, so that the inner
// loop spends its FP ports on vpmaddubsw, vpmaddwd, vcvtdq2ps and one FMA per block pair (the
// scale arrives by a broadcast load).
template <TensorType kType, int R, int C>
HWY_NOINLINE void TileQ(const uint8_t* HWY_RESTRICT w, size_t row_bytes, const QTileArgs& a) {
  static_assert(kScaleChunk % 8 == 0 && kScalePad % 8 == 0);
  __m256 acc[R][C];
  _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) {
    _Pragma("GCC unroll 16") for (int i = 0; i < C; ++i) acc[r][i] = _mm256_setzero_ps();
  }
  alignas(32) float scale[R][C][kScaleChunk];
  for (int64_t b0 = 0; b0 < a.nb; b0 += kScaleChunk) {
    const int64_t b_end = std::min(a.nb, b0 + kScaleChunk);
    for (int64_t b = b0; b < b_end; b += 8) {  // within nbp: the arrays are padded
      _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) {
        const __m256 dw = _mm256_loadu_ps(a.dw + r * a.nbp + b);
        _Pragma("GCC unroll 16") for (int i = 0; i < C; ++i) {
          _mm256_store_ps(&scale[r][i][b - b0], _mm256_mul_ps(dw, _mm256_loadu_ps(a.xd + i * a.nbp + b)));
        }
      }
    }
    // One weight block in a register at a time, the x blocks as memory operands: R x C
    // accumulators plus four registers (weights, product, the two constants) fit 4 x 3.
    for (int64_t b = b0; b < b_end; ++b) {
      _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) {
        const __m256i wv = LoadWeightBlock<kType>(w + r * row_bytes + b * BlockBytes<kType>());
        _Pragma("GCC unroll 16") for (int i = 0; i < C; ++i) {
          const __m256i xv =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.xq + i * a.cols + b * kQK));
          acc[r][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(BlockDot<kType>(wv, xv)),
                                      _mm256_broadcast_ss(&scale[r][i][b - b0]), acc[r][i]);
        }
      }
    }
  }
  // The offset term, folded into the lanes: sum_b mw[r, b] s[i, b] over padded vectors of 8.
  if constexpr (kType != TensorType::kQ8_0) {
    for (int64_t b = 0; b < a.nbp; b += 8) {
      _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) {
        const __m256 mv = _mm256_loadu_ps(a.mw + r * a.nbp + b);
        _Pragma("GCC unroll 16") for (int i = 0; i < C; ++i) acc[r][i] =
            _mm256_fmadd_ps(mv, _mm256_loadu_ps(a.xs + i * a.nbp + b), acc[r][i]);
      }
    }
  }
  _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) {
    _Pragma("GCC unroll 16") for (int i = 0; i < C; ++i) a.y[i * a.ldy + r] = HorizontalSum(acc[r][i]);
  }
}

// Matrix-vector (one x row): R rows of W, scales read from the blocks as they stream by (no
// scale pass, which would cost as much as the product here). xds holds (d, s) pairs per block,
// so one multiply gives [dw dx, mw s] for Q4_1 and [dw dx, dw s] for Q4_0 (whose offset -8 dw s
// is applied once at the end); lane 1 accumulates the offset term.

// A block's scales as floats in lanes 0 and 1: [dw, mw] (Q4_1), [dw, dw] (Q4_0), [dw, 0] (Q8_0).
template <TensorType kType>
HWY_INLINE __m128 BlockScales(const uint8_t* block) {
  if constexpr (kWithMin<kType>) {
    uint32_t bits;
    std::memcpy(&bits, block, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(bits)));
  } else {
    uint16_t bits;
    std::memcpy(&bits, block, 2);
    const __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
    return kType == TensorType::kQ4_0 || kType == TensorType::kQ5_0 ? _mm_moveldup_ps(d) : d;
  }
}

// R rows of W times C rows of x, one block at a time (C = 1: a matrix-vector product; more: a batch
// of sequences decoding together, each weight block loaded once and applied to every x row, with
// the same operations in the same order for each (weight row, x row), so each row's result is bit
// for bit its C = 1 result). xq[c]: x row c quantized; xds[c]: its (d, s) pairs per block; y[c][r]
// the outputs.
template <TensorType kType, int R, int C, bool kVnni = false>
HWY_NOINLINE void RowsQX(const uint8_t* HWY_RESTRICT w, size_t row_bytes, const int8_t* const* xq,
                         const float* const* xds, int64_t nb, float* const* y) {
  const size_t ahead = PrefetchOffset(row_bytes);
  __m256 acc[R][C];
  __m128 offset[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps(), offset[r][c] = _mm_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m256i xv[C];
    __m128 ds[C];
    for (int c = 0; c < C; ++c) {
      xv[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[c] + b * kQK));
      ds[c] = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(xds[c] + 2 * b)));
    }
    for (int r = 0; r < R; ++r) {
      const uint8_t* block = w + r * row_bytes + b * BlockBytes<kType>();
      _mm_prefetch(reinterpret_cast<const char*>(block + ahead), _MM_HINT_T1);
      const __m128 scales = BlockScales<kType>(block);
      const __m256i wv = LoadWeightBlock<kType>(block);
      for (int c = 0; c < C; ++c) {
        const __m128 prod = _mm_mul_ps(scales, ds[c]);
        const __m256i dot = BlockDot<kType, kVnni>(wv, xv[c]);
        acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_broadcastss_ps(prod), acc[r][c]);
        if constexpr (kType != TensorType::kQ8_0) offset[r][c] = _mm_add_ps(offset[r][c], prod);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      float sum = HorizontalSum(acc[r][c]);
      if constexpr (kType != TensorType::kQ8_0) {
        const float off = _mm_cvtss_f32(_mm_movehdup_ps(offset[r][c]));
        sum += kWithMin<kType> ? off : -kCentre<kType> * off;
      }
      y[c][r] = sum;
    }
  }
}

#if HWY_TARGET <= HWY_AVX3
// ---------------------------------------------------------------- AVX-512: two Q4 blocks per register

// Matrix-vector products of Q4_0 / Q4_1 on AVX-512 take blocks in pairs: one 512-bit register
// holds both blocks' 64 quants, so every step of the dot and of the scale handling serves two
// blocks (the 256-bit RowsQX above: 14 instructions per block; here about 8). The activations are
// reordered once per call to match: per pair (b, b + 1), bytes [x_b 0..15 | x_b+1 0..15 |
// x_b 16..31 | x_b+1 16..31], the order of [low nibbles of b | of b + 1 | high nibbles of b |
// of b + 1]; an odd last block stays as it was.
HWY_INLINE void PairActivations(const int8_t* HWY_RESTRICT xq, int64_t nb, int8_t* HWY_RESTRICT xp) {
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    const int8_t* src = xq + b * kQK;
    int8_t* dst = xp + b * kQK;
    std::memcpy(dst, src, 16);
    std::memcpy(dst + 16, src + 32, 16);
    std::memcpy(dst + 32, src + 16, 16);
    std::memcpy(dst + 48, src + 48, 16);
  }
  if (b < nb) std::memcpy(xp + b * kQK, xq + b * kQK, kQK);
}

// R rows of a Q4_0 / Q4_1 matrix times C rows of x, two blocks per 512-bit step (xp[c]: x row c
// reordered by PairActivations; xds[c] as for RowsQX; y[c][r] the outputs). Lanes 0-3 and 8-11 of
// a step's integer dot belong to block b, lanes 4-7 and 12-15 to block b + 1. Each pair of weight
// blocks is loaded and unpacked once for all C rows, each row's operations are those of C = 1 in
// the same order: each row's result is bit for bit its C = 1 result.
template <TensorType kType, int R, int C, bool kVnni = false>
HWY_NOINLINE void RowsQ4PairsX(const uint8_t* HWY_RESTRICT w, size_t row_bytes, const int8_t* const* xp,
                               const float* const* xds, int64_t nb, float* const* y) {
  static_assert(kType == TensorType::kQ4_0 || kType == TensorType::kQ4_1);
  constexpr int64_t BB = BlockBytes<kType>(), QO = QuantOffset<kType>();
  const __m512i low4 = _mm512_set1_epi8(0x0F), ones = _mm512_set1_epi16(1);
  const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2);
  const size_t ahead = PrefetchOffset(row_bytes);
  __m512 acc[R][C];
  __m128 offset[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps(), offset[r][c] = _mm_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    __m512i xv[C];
    __m128 ds[C];
    for (int c = 0; c < C; ++c)
      xv[c] = _mm512_loadu_si512(xp[c] + b * kQK), ds[c] = _mm_loadu_ps(xds[c] + 2 * b);
    for (int r = 0; r < R; ++r) {
      const uint8_t* block = w + r * row_bytes + b * BB;
      _mm_prefetch(reinterpret_cast<const char*>(block + ahead), _MM_HINT_T1);
      __m128 dm;
      if constexpr (kType == TensorType::kQ4_1) {
        uint32_t b0, b1;
        std::memcpy(&b0, block, 4);
        std::memcpy(&b1, block + BB, 4);
        dm = _mm_cvtph_ps(_mm_insert_epi32(_mm_cvtsi32_si128(static_cast<int>(b0)), static_cast<int>(b1), 1));
      } else {
        uint16_t b0, b1;
        std::memcpy(&b0, block, 2);
        std::memcpy(&b1, block + BB, 2);
        const __m128 d2 = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(b0 | (uint32_t{b1} << 16))));
        dm = _mm_unpacklo_ps(d2, d2);
      }
      const __m256i nib = _mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + QO))),
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + BB + QO)), 1);
      const __m512i wv = _mm512_and_si512(
          _mm512_inserti64x4(_mm512_castsi256_si512(nib), _mm256_srli_epi16(nib, 4), 1), low4);
      for (int c = 0; c < C; ++c) {
        const __m128 prod = _mm_mul_ps(dm, ds[c]);
        __m512i dot;
        if constexpr (kVnni) {
          dot = Dpbusd(wv, xv[c]);
        } else {
          dot = _mm512_madd_epi16(_mm512_maddubs_epi16(wv, xv[c]), ones);
        }
        const __m512 scale = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(prod));
        acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[r][c]);
        offset[r][c] = _mm_add_ps(offset[r][c], prod);
      }
    }
  }
  __m256 tail[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) tail[r][c] = _mm256_setzero_ps();
  if (b < nb) {  // an odd last block, as RowsQX takes it
    for (int r = 0; r < R; ++r) {
      const uint8_t* block = w + r * row_bytes + b * BB;
      const __m128 scales = BlockScales<kType>(block);
      const __m256i wv = LoadWeightBlock<kType>(block);
      for (int c = 0; c < C; ++c) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp[c] + b * kQK));
        const __m128 ds = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(xds[c] + 2 * b)));
        const __m128 prod = _mm_mul_ps(scales, ds);
        const __m256i dot = BlockDot<kType, kVnni>(wv, xv);
        tail[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_broadcastss_ps(prod), tail[r][c]);
        offset[r][c] = _mm_add_ps(offset[r][c], prod);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      const __m256 halves =
          _mm256_add_ps(_mm512_castps512_ps256(acc[r][c]),
                        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[r][c]), 1)));
      float sum = HorizontalSum(_mm256_add_ps(halves, tail[r][c]));
      const float off =
          _mm_cvtss_f32(_mm_movehdup_ps(offset[r][c])) + _mm_cvtss_f32(_mm_permute_ps(offset[r][c], 3));
      sum += kType == TensorType::kQ4_0 ? -8.0f * off : off;
      y[c][r] = sum;
    }
  }
}
#endif  // HWY_TARGET <= HWY_AVX3

#else
// ---------------------------------------------------------------- portable: widening i16 products

// Weight rows expanded to one int8 per value (Q4 nibbles unsigned 0..15, Q8_0 as stored).
template <TensorType kType>
HWY_INLINE void ExpandRows(const uint8_t* w, size_t row_bytes, int64_t rows, int64_t cols,
                           int8_t* HWY_RESTRICT out) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = w + static_cast<size_t>(r) * row_bytes;
    int8_t* dst = out + r * cols;
    for (int64_t b = 0; b < cols / kQK; ++b, dst += kQK) {
      const uint8_t* qs = row + b * BlockBytes<kType>() + QuantOffset<kType>();
      if constexpr (kType == TensorType::kQ8_0) {
        std::memcpy(dst, qs, kQK);
      } else {
        uint32_t high = 0;  // fifth bits (Q5): bit e for value e
        if constexpr (kFiveBit<kType>)
          std::memcpy(&high, row + b * BlockBytes<kType>() + HighBitsOffset<kType>(), 4);
        for (int j = 0; j < 16; ++j) {
          dst[j] = static_cast<int8_t>((qs[j] & 0xF) | (((high >> j) & 1) << 4));
          dst[j + 16] = static_cast<int8_t>((qs[j] >> 4) | (((high >> (j + 16)) & 1) << 4));
        }
      }
    }
  }
}

// R expanded rows of W (stride cols) x C rows of x.
template <TensorType kType, int R, int C>
HWY_NOINLINE void TileQ(const int8_t* HWY_RESTRICT wq, const QTileArgs& a) {
  const hn::ScalableTag<int16_t> d16;
  const hn::Rebind<int8_t, decltype(d16)> d8;
  const hn::Repartition<int32_t, decltype(d16)> d32;
  const hn::Rebind<float, decltype(d32)> df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d16));
  using VF = hn::Vec<decltype(df)>;
  VF acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < C; ++i) acc[r][i] = hn::Zero(df);
  }
  for (int64_t b = 0; b < a.nb; ++b) {
    for (int i = 0; i < C; ++i) {
      const int8_t* xb = a.xq + i * a.cols + b * kQK;
      for (int r = 0; r < R; ++r) {
        const int8_t* wb = wq + r * a.cols + b * kQK;
        auto sum0 = hn::Zero(d32), sum1 = hn::Zero(d32);
        for (int64_t k = 0; k < kQK; k += N) {
          const auto wv = hn::PromoteTo(d16, hn::LoadU(d8, wb + k));
          const auto xv = hn::PromoteTo(d16, hn::LoadU(d8, xb + k));
          sum0 = hn::ReorderWidenMulAccumulate(d32, wv, xv, sum0, sum1);
        }
        const auto dot = hn::ConvertTo(df, hn::Add(sum0, sum1));
        const VF scale = hn::Set(df, a.dw[r * a.nbp + b] * a.xd[i * a.nbp + b]);
        acc[r][i] = hn::MulAdd(dot, scale, acc[r][i]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < C; ++i) StoreQ<kType>(a, r, i, hn::GetLane(hn::SumOfLanes(df, acc[r][i])));
  }
}
#endif  // ATTN_MATMUL_X86_INT8

// ---------------------------------------------------------------- float weights

template <TensorType kType>
HWY_INLINE float WeightValue(const uint8_t* row, int64_t c) {
  if constexpr (kType == TensorType::kF32) {
    float v;
    std::memcpy(&v, row + 4 * c, 4);
    return v;
  } else {
    const uint16_t h = static_cast<uint16_t>(row[2 * c] | (row[2 * c + 1] << 8));
    return kType == TensorType::kF16 ? HalfToFloat(h) : BF16ToFloat(h);
  }
}

template <TensorType kType, class DF>
HWY_INLINE hn::Vec<DF> LoadWeights(DF df, const uint8_t* row, int64_t c) {
  if constexpr (kType == TensorType::kF32) {
    return hn::LoadU(df, reinterpret_cast<const float*>(row) + c);
  } else if constexpr (kType == TensorType::kF16) {
    const hn::Rebind<hwy::float16_t, DF> dh;
    return hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(row) + c));
  } else {
    const hn::Rebind<hwy::bfloat16_t, DF> dh;
    return hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::bfloat16_t*>(row) + c));
  }
}

// R rows of W (stride row_bytes) x C rows of x (stride ldx): y[i * ldy + r] = <x_i, w_r>.
template <TensorType kType, int R, int C>
HWY_NOINLINE void TileF(const uint8_t* HWY_RESTRICT w, size_t row_bytes, const float* HWY_RESTRICT x,
                        int64_t ldx, int64_t cols, float* HWY_RESTRICT y, int64_t ldy) {
  const hn::ScalableTag<float> df;
  using VF = hn::Vec<decltype(df)>;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  VF acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < C; ++i) acc[r][i] = hn::Zero(df);
  }
  int64_t c = 0;
  constexpr int64_t kElemBytes = kType == TensorType::kF32 ? 4 : 2;
  const size_t ahead = PrefetchOffset(row_bytes);
  for (; c + N <= cols; c += N) {
    VF wv[R];
    for (int r = 0; r < R; ++r) {
      const uint8_t* row = w + r * row_bytes;
      // One x row: memory-bound (float rows from DRAM at 15-21 GB/s on 2 threads without this).
      if constexpr (C == 1) __builtin_prefetch(row + ahead + c * kElemBytes, 0, 2);  // 2: prefetcht1
      wv[r] = LoadWeights<kType>(df, row, c);
    }
    for (int i = 0; i < C; ++i) {
      const VF xv = hn::LoadU(df, x + i * ldx + c);
      for (int r = 0; r < R; ++r) acc[r][i] = hn::MulAdd(wv[r], xv, acc[r][i]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < C; ++i) {
      float sum = hn::GetLane(hn::SumOfLanes(df, acc[r][i]));
      for (int64_t k = c; k < cols; ++k) sum += WeightValue<kType>(w + r * row_bytes, k) * x[i * ldx + k];
      y[i * ldy + r] = sum;
    }
  }
}

}  // namespace matmul
}  // namespace attn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // ATTN_KERNELS_MATMUL_INL_H_ toggle
