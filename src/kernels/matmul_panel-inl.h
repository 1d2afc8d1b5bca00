// Panel matrix products for the integer block formats, n > 1 (prompt processing), on the x86
// targets (included once per Highway target by matmul.cc, after kquants-inl.h and matmul-inl.h;
// empty on other targets).
//
// Panels of 16 weight rows: 16 consecutive u32 hold the same four values of one 32-value block of
// 16 rows (lane r = row r), so that one multiply of four activation bytes broadcast to every lane
// adds the partial dot products of all those rows at once, and 8 of them cover the block:
//   panel q [nb][8][16] u32: lane r of vector (b, k) = u[4k .. 4k + 3] of row r's block b,
// u the block's quants made unsigned (the x86 byte products take u8 x s8): as they are for Q4
// (0..15), Q5 (0..31), Q3_K (0..7) and Q6_K (0..63), Q8_0 as q + 128, IQ4 as level + 128. Per block and row:
// dw (the scale) and mw (the min, for formats with one). Results land in lanes that are the output's
// consecutive columns: no horizontal sums.
//   AVX-512 with AVX512_VNNI: one vpdpbusd (u8 x s8 -> s32, four products per lane) with the x
//   bytes broadcast from memory serves the 16 rows: per block and x row 8 vpdpbusd, a conversion
//   and two FMAs for 16 rows x 32 values, against 16 x 4-6 instructions of the tiles of
//   matmul-inl.h (TileQ).
//   AVX2: two 8-row halves of the panel, vpmaddubsw (u8 x s8 pairs -> s16) on the x bytes
//   broadcast, several of those added in 16 bits as far as they cannot overflow (kSum16), then
//   vpmaddwd by 1 into 32 bits. vpmaddubsw saturates a pair above 32767, which 255 x 127 x 2 is:
//   Q8_0 (u up to 255) stays on TileQ there, and the IQ4 formats are decoded to float32.
//
// Exactness: the centre of unsigned formats (8 for Q4_0, 16 for Q5_0, 4 for Q3_K, 32 for Q6_K, 128
// for Q8_0 and IQ4)
// is taken out in integers: the dot of each half block starts from -centre * its sum of qx instead
// of 0, so the int32 result is exactly sum (q - centre) qx (|.| < 2^24, converted to float exactly). Formats
// with a min add mw * s, s the x block's sum (quantize.h), in float as TileQ does (Q2_K: a min per
// half block times x's sum over the half).
//
// Panels are built once per call (a pass over W, parallel over panels) and then serve every
// chunk of x rows. K formats go through the same kernel: each 32-value sub-block of Q4_K / Q5_K is
// a block with dw = d sc_j and mw = -dmin m_j; Q6_K's 32 values have a scale d sc per half and
// the centre 32, Q3_K's d (sc - 32) per half and the centre 4; IQ4_XS's sub-block of 32 is an IQ4_NL
// block with the scale d (ls - 32).
#if defined(ATTN_KERNELS_MATMUL_PANEL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATTN_KERNELS_MATMUL_PANEL_INL_H_
#undef ATTN_KERNELS_MATMUL_PANEL_INL_H_
#else
#define ATTN_KERNELS_MATMUL_PANEL_INL_H_
#endif

#include <cstdint>
#include <cstring>

#include "attn/tensor.h"
#include "format/gguf.h"
#include "hwy/highway.h"
#include "kernels/kquants.h"
#include "kernels/matmul.h"

#undef ATTN_MATMUL_PANELS
#if HWY_ARCH_X86 && (HWY_TARGET <= HWY_AVX3 || HWY_TARGET == HWY_AVX2)
#define ATTN_MATMUL_PANELS 1
#include <immintrin.h>
#else
#define ATTN_MATMUL_PANELS 0
#endif

#if ATTN_MATMUL_PANELS
HWY_BEFORE_NAMESPACE();
namespace attn::kernels::HWY_NAMESPACE::panel {
using gguf::TensorType;

constexpr int kPanelRows = 16;
using matmul::kQK;

// Formats whose blocks carry a min (x = q d + m), added as mw * s.
template <TensorType kType>
constexpr bool kHasMin = matmul::kWithMin<kType> || kType == TensorType::kQ4_K || kType == TensorType::kQ5_K;
// Formats with a scale per 16 values (Q6_K): each half of a 32-value block has its own dw.
template <TensorType kType>
constexpr bool kHalves =
    kType == TensorType::kQ6_K || kType == TensorType::kQ3_K || kType == TensorType::kQ2_K;
// Formats with a min per 16 values (Q2_K): each half adds its own mw times x's sum over the half.
template <TensorType kType>
constexpr bool kHalfMins = kType == TensorType::kQ2_K;
// The IQ4 formats and MXFP4: levels looked up by nibble, stored as level + 128 (1..241) like Q8_0's
// quants.
template <TensorType kType>
constexpr bool kIq4 =
    kType == TensorType::kIQ4_NL || kType == TensorType::kIQ4_XS || kType == TensorType::kMXFP4;
// The centre subtracted from the unsigned quants (0 for formats with a min).
template <TensorType kType>
constexpr int32_t kCentre = kType == TensorType::kQ4_0                  ? 8
                            : kType == TensorType::kQ5_0                ? 16
                            : kType == TensorType::kQ6_K                ? 32
                            : kType == TensorType::kQ3_K                ? 4
                            : kType == TensorType::kQ8_0 || kIq4<kType> ? 128
                                                                        : 0;

// Block b (32 values) of a row: unsigned quants u in value order, the scales of its two halves
// d[0], d[1] (equal but for Q6_K, Q3_K, Q2_K) and the mins of its halves m[0], m[1] (equal but for
// Q2_K; 0 without).
template <TensorType kType>
HWY_INLINE void UnsignedBlock(const uint8_t* row, int64_t b, uint8_t* HWY_RESTRICT u, float* d, float* m) {
  m[0] = m[1] = 0.0f;
  if constexpr (kType == TensorType::kQ2_K) {  // value 128c + 32j + l: see kquants.h
    const uint8_t* blk = row + (b / 8) * kquants::kQ2KBytes;
    const int c = static_cast<int>(b % 8) / 4, j = static_cast<int>(b % 4);
    const float scale = kq::HalfAt(blk + 80), scale_min = kq::HalfAt(blk + 82);
    for (int half = 0; half < 2; ++half) {
      const int sc = blk[8 * c + 2 * j + half];
      d[half] = scale * static_cast<float>(sc & 15);
      m[half] = -scale_min * static_cast<float>(sc >> 4);
    }
    const uint8_t* qs = blk + 16 + 32 * c;
    for (int l = 0; l < 32; ++l) u[l] = static_cast<uint8_t>((qs[l] >> (2 * j)) & 3);
    return;
  } else if constexpr (kType == TensorType::kQ6_K) {  // value 32 s + l of half h: see kquants.h
    const uint8_t* blk = row + (b / 8) * kquants::kQ6KBytes;
    const int h = static_cast<int>(b % 8) / 4, s = static_cast<int>(b % 4);
    const float scale = kq::HalfAt(blk + 208);
    const auto* sc = reinterpret_cast<const int8_t*>(blk + 192) + 8 * h + 2 * s;
    d[0] = scale * static_cast<float>(sc[0]);
    d[1] = scale * static_cast<float>(sc[1]);
    const uint8_t* ql = blk + 64 * h + 32 * (s % 2);
    const uint8_t* qh = blk + 128 + 32 * h;
    for (int l = 0; l < 32; ++l)
      u[l] = static_cast<uint8_t>(((ql[l] >> (4 * (s / 2))) & 15) | (((qh[l] >> (2 * s)) & 3) << 4));
    return;
  } else if constexpr (kType == TensorType::kQ3_K) {  // value 128c + 32j + l: see kquants.h
    const uint8_t* blk = row + (b / 8) * kquants::kQ3KBytes;
    const int c = static_cast<int>(b % 8) / 4, j = static_cast<int>(b % 4);
    const float scale = kq::HalfAt(blk + 108);
    const uint8_t* sc = blk + 96;
    for (int half = 0; half < 2; ++half)
      d[half] = scale * static_cast<float>(kq::Q3KScale(sc, 8 * c + 2 * j + half));
    const uint8_t* qs = blk + 32 + 32 * c;
    for (int l = 0; l < 32; ++l)
      u[l] = static_cast<uint8_t>(((qs[l] >> (2 * j)) & 3) | ((blk[l] >> (4 * c + j)) & 1) << 2);
    return;
  } else if constexpr (kIq4<kType>) {
    const uint8_t* qs;
    const int8_t* levels = kquants::kIq4Levels;
    if constexpr (kType == TensorType::kMXFP4) {  // an E8M0 exponent, FP4 levels doubled: see kquants.h
      const uint8_t* blk = row + b * kquants::kMxfp4Bytes;
      d[0] = std::ldexp(1.0f, static_cast<int>(blk[0]) - 128);
      qs = blk + 1;
      levels = kquants::kMxfp4Levels;
    } else if constexpr (kType == TensorType::kIQ4_XS) {  // sub-block b % 8 of a 256-value block
      const uint8_t* blk = row + (b / 8) * kquants::kIq4XsBytes;
      const int s = static_cast<int>(b % 8);
      d[0] = kq::HalfAt(blk) * static_cast<float>(kq::Iq4XsScale(blk, s));
      qs = blk + 8 + 16 * s;
    } else {
      const uint8_t* blk = row + b * kquants::kIq4NlBytes;
      d[0] = kq::HalfAt(blk);
      qs = blk + 2;
    }
    for (int c = 0; c < 16; ++c) {
      u[c] = static_cast<uint8_t>(levels[qs[c] & 15] + 128);
      u[c + 16] = static_cast<uint8_t>(levels[qs[c] >> 4] + 128);
    }
  } else if constexpr (kType == TensorType::kQ8_0) {
    const uint8_t* blk = row + b * matmul::BlockBytes<kType>();
    d[0] = kq::HalfAt(blk);
    for (int c = 0; c < 32; ++c) u[c] = static_cast<uint8_t>(blk[2 + c] ^ 0x80);  // q + 128
  } else if constexpr (kType == TensorType::kQ4_K || kType == TensorType::kQ5_K) {
    constexpr bool five = kType == TensorType::kQ5_K;
    const uint8_t* blk = row + (b / 8) * (five ? kquants::kQ5KBytes : kquants::kQ4KBytes);
    const int j = static_cast<int>(b % 8), g = j / 2, h = j % 2;
    float sc, mn;
    kq::ScaleMin(blk + 4, j, &sc, &mn);
    d[0] = kq::HalfAt(blk) * sc;
    m[0] = m[1] = -kq::HalfAt(blk + 2) * mn;
    const uint8_t* qs = blk + (five ? 48 : 16) + 32 * g;
    for (int l = 0; l < 32; ++l) {
      uint8_t q = static_cast<uint8_t>((qs[l] >> (4 * h)) & 15);
      if constexpr (five) q = static_cast<uint8_t>(q | (((blk[16 + l] >> j) & 1) << 4));
      u[l] = q;
    }
  } else {  // Q4_0, Q4_1, Q5_0, Q5_1: [d][m][fifth bits] nibbles
    const uint8_t* blk = row + b * matmul::BlockBytes<kType>();
    d[0] = kq::HalfAt(blk);
    if constexpr (matmul::kWithMin<kType>) m[0] = m[1] = kq::HalfAt(blk + 2);
    uint32_t high = 0;
    if constexpr (matmul::kFiveBit<kType>) std::memcpy(&high, blk + matmul::HighBitsOffset<kType>(), 4);
    const uint8_t* qs = blk + matmul::QuantOffset<kType>();
    for (int c = 0; c < 16; ++c) {
      u[c] = static_cast<uint8_t>((qs[c] & 15) | (((high >> c) & 1) << 4));
      u[c + 16] = static_cast<uint8_t>((qs[c] >> 4) | (((high >> (c + 16)) & 1) << 4));
    }
  }
  d[1] = d[0];
}

// A panel of nb blocks: q [nb][8][16] u32, dw [nb][2][16] (the halves' scales), mw [nb][16] (the
// blocks' mins; with half_mins (Q2_K) [nb][2][16], the halves').
inline size_t PanelBytes(int64_t nb, bool half_mins) {
  return static_cast<size_t>(nb) *
         (8 * kPanelRows * 4 + (half_mins ? 4 : 3) * kPanelRows * 4);  // a multiple of 64
}
struct Panel {
  uint32_t* q;
  float *dw, *mw;
};
inline Panel PanelAt(uint8_t* base, int64_t nb) {
  auto* dw = reinterpret_cast<float*>(base + static_cast<size_t>(nb) * 8 * kPanelRows * 4);
  return {reinterpret_cast<uint32_t*>(base), dw, dw + 2 * nb * kPanelRows};
}

// Builds the panel of `rows` (<= 16) rows of W from w (stride row_bytes), nb blocks each; rows past
// `rows` are zero.
template <TensorType kType>
HWY_INLINE void BuildPanel(const uint8_t* w, size_t row_bytes, int rows, int64_t nb, const Panel& p) {
  if (rows < kPanelRows) std::memset(p.q, 0, PanelBytes(nb, kHalfMins<kType>));
  alignas(32) uint8_t u[32];
  float d[2], m[2];
  for (int r = 0; r < rows; ++r) {
    const uint8_t* row = w + static_cast<size_t>(r) * row_bytes;
    for (int64_t b = 0; b < nb; ++b) {
      UnsignedBlock<kType>(row, b, u, d, m);
      p.dw[2 * b * kPanelRows + r] = d[0];
      p.dw[(2 * b + 1) * kPanelRows + r] = d[1];
      if constexpr (kHalfMins<kType>) {
        p.mw[2 * b * kPanelRows + r] = m[0];
        p.mw[(2 * b + 1) * kPanelRows + r] = m[1];
      } else {
        p.mw[b * kPanelRows + r] = m[0];
      }
      for (int k = 0; k < 8; ++k) std::memcpy(p.q + (b * 8 + k) * kPanelRows + r, u + 4 * k, 4);
    }
  }
}

// The activations of a call: xq [n][cols] int8, xd / xs [n][ldd] (scale, block sum d * sum q),
// xc [n][ldd][2] the integer start of the dot of each half block, -centre * its sum of q, and
// xh [n][ldd][2] each half block's sum d * sum q.
struct XRows {
  const int8_t* xq;
  const float* xd;
  const float* xs;
  const int32_t* xc;
  const float* xh;
  int64_t cols, ldd;

  // From row i on: its quants, scales, block sums, integer starts and half-block sums.
  struct From {
    const int8_t* xq;
    const float *xd, *xs;
    const int32_t* xc;
    const float* xh;
  };
  From Row(int64_t i) const {
    return {xq + i * cols, xd + i * ldd, xs + i * ldd, xc + 2 * i * ldd, xh ? xh + 2 * i * ldd : nullptr};
  }
};

#if HWY_TARGET <= HWY_AVX3
// Functions marked ATTN_VNNI_FN add AVX512_VNNI to the target's instruction set: they may run
// only where CPUID reports it (kernels::VnniEnabled()).
#undef ATTN_VNNI_FN
#define ATTN_VNNI_FN __attribute__((target(HWY_TARGET_STR ",avx512vnni")))

// Whether the panels may take products of this type on this target, and whether they do now.
template <TensorType kType>
constexpr bool kTakes = true;
inline bool Enabled() { return VnniEnabled(); }

// acc += the 16-lane vpdpbusd of w (u8) with the four int8 at p broadcast to every lane, the
// broadcast folded into the instruction's memory operand ({1to16}: one instruction where GCC 12
// emits a separate vpbroadcastd for _mm512_set1_epi32).
ATTN_VNNI_FN HWY_INLINE void DpbusdBroadcast(__m512i& acc, __m512i w, const int8_t* p) {
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*reinterpret_cast<const int32_t*>(p)));
}

// C rows of x (from row i of `x`) against one panel: y[i * ldy + r] for r < rows.
template <bool kMin, bool kHalf, bool kHalfMin, int C>
ATTN_VNNI_FN HWY_INLINE void PanelTile(const Panel& p, int64_t nb, const XRows& x, int64_t i, int rows,
                                       float* HWY_RESTRICT y, int64_t ldy) {
  __m512 acc[C];
  for (int c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps();
  const auto [xq, xd, xs, xc, xh] = x.Row(i);
  _Pragma("GCC unroll 1") for (int64_t b = 0; b < nb; ++b) {
    __m512i wv[8];
    for (int k = 0; k < 8; ++k) wv[k] = _mm512_load_si512(p.q + (b * 8 + k) * kPanelRows);
    const __m512 dw0 = _mm512_load_ps(p.dw + 2 * b * kPanelRows);
    for (int c = 0; c < C; ++c) {
      const int8_t* xb = xq + c * x.cols + b * kQK;
      const int32_t* start = xc + 2 * (c * x.ldd + b);
      // One chain per half block (values 0-15, 16-31), so that their latencies overlap.
      __m512i dot0 = _mm512_set1_epi32(start[0]), dot1 = _mm512_set1_epi32(start[1]);
      for (int k = 0; k < 4; ++k) {
        DpbusdBroadcast(dot0, wv[k], xb + 4 * k);
        DpbusdBroadcast(dot1, wv[k + 4], xb + 16 + 4 * k);
      }
      const __m512 d = _mm512_set1_ps(xd[c * x.ldd + b]);
      if constexpr (kHalf) {
        const __m512 dw1 = _mm512_load_ps(p.dw + (2 * b + 1) * kPanelRows);
        acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot0), _mm512_mul_ps(dw0, d), acc[c]);
        acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot1), _mm512_mul_ps(dw1, d), acc[c]);
      } else {
        acc[c] =
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(dot0, dot1)), _mm512_mul_ps(dw0, d), acc[c]);
      }
      if constexpr (kMin) {
        acc[c] =
            _mm512_fmadd_ps(_mm512_load_ps(p.mw + b * kPanelRows), _mm512_set1_ps(xs[c * x.ldd + b]), acc[c]);
      }
      if constexpr (kHalfMin) {
        const float* h = xh + 2 * (c * x.ldd + b);
        acc[c] = _mm512_fmadd_ps(_mm512_load_ps(p.mw + 2 * b * kPanelRows), _mm512_set1_ps(h[0]), acc[c]);
        acc[c] =
            _mm512_fmadd_ps(_mm512_load_ps(p.mw + (2 * b + 1) * kPanelRows), _mm512_set1_ps(h[1]), acc[c]);
      }
    }
  }
  const __mmask16 mask = static_cast<__mmask16>(rows >= kPanelRows ? 0xFFFFu : (1u << rows) - 1u);
  for (int c = 0; c < C; ++c) _mm512_mask_storeu_ps(y + (i + c) * ldy, mask, acc[c]);
}

// Rows [i0, i1) of x against one panel, kPanelTileCols rows of x at a time (single-thread GOP/s at
// n = 512, alternating builds, 2026-12-03: 8 rows 216-317, 6 rows 198-277, 4 rows 196-258; the
// kernel called per tile rather than per chunk 195-242).
constexpr int kPanelTileCols = 8;
template <TensorType kType>
ATTN_VNNI_FN HWY_NOINLINE void PanelRows(const Panel& p, int64_t nb, const XRows& x, int64_t i0, int64_t i1,
                                         int rows, float* HWY_RESTRICT y, int64_t ldy) {
  constexpr bool kMin = kHasMin<kType>, kHalf = kHalves<kType>, kHalfMin = kHalfMins<kType>;
  int64_t i = i0;
  for (; i + kPanelTileCols <= i1; i += kPanelTileCols)
    PanelTile<kMin, kHalf, kHalfMin, kPanelTileCols>(p, nb, x, i, rows, y, ldy);
  for (; i < i1; ++i) PanelTile<kMin, kHalf, kHalfMin, 1>(p, nb, x, i, rows, y, ldy);
}

#else   // AVX2
// vpmaddubsw outputs of one weight type that may be added in 16 bits: each lane is at most
// 2 x umax x 127 in magnitude (x in [-127, 127], quantize.h). Q4: 8, Q5: 4, Q6_K: 2, Q8_0: 0.
template <TensorType kType>
constexpr int kUnsignedMax = kType == TensorType::kQ8_0 || kIq4<kType>               ? 255
                             : kType == TensorType::kQ2_K                            ? 3
                             : kType == TensorType::kQ3_K                            ? 7
                             : kType == TensorType::kQ6_K                            ? 63
                             : matmul::kFiveBit<kType> || kType == TensorType::kQ5_K ? 31
                                                                                     : 15;
template <TensorType kType>
constexpr int kSum16 = 32767 / (2 * kUnsignedMax<kType> * 127);

template <TensorType kType>
constexpr bool kTakes = kSum16<kType> >= 1;
inline bool Enabled() { return true; }

// The 32-bit dot, from the integer start `start`, of kSteps groups of 4 x bytes (from xb) with
// 8 rows of the panel (w: the vector of the first group, lanes from the 8 rows' first).
template <TensorType kType, int kSteps>
HWY_INLINE __m256i Dot(const uint32_t* HWY_RESTRICT w, const int8_t* xb, int32_t start) {
  constexpr int kGroup = kSum16<kType> < kSteps ? kSum16<kType> : kSteps;
  static_assert(kGroup >= 1, "vpmaddubsw saturates on this type (kTakes keeps it out)");
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i dot = _mm256_set1_epi32(start);
  for (int k0 = 0; k0 < kSteps; k0 += kGroup) {
    __m256i sum16 = _mm256_setzero_si256();
    for (int k = k0; k < k0 + kGroup; ++k) {
      int32_t x4;
      std::memcpy(&x4, xb + 4 * k, 4);
      const __m256i wk = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + k * kPanelRows));
      sum16 = _mm256_add_epi16(sum16, _mm256_maddubs_epi16(wk, _mm256_set1_epi32(x4)));
    }
    dot = _mm256_add_epi32(dot, _mm256_madd_epi16(sum16, ones));
  }
  return dot;
}

// C rows of x (from row i of `x`) against the 8 panel rows from lane g: y[i * ldy + g + r] for
// r < rows (<= 8).
template <TensorType kType, int C>
HWY_INLINE void PanelTile(const Panel& p, int64_t nb, const XRows& x, int64_t i, int g, int rows,
                          float* HWY_RESTRICT y, int64_t ldy) {
  __m256 acc[C];
  for (int c = 0; c < C; ++c) acc[c] = _mm256_setzero_ps();
  const auto [xq, xd, xs, xc, xh] = x.Row(i);
  _Pragma("GCC unroll 1") for (int64_t b = 0; b < nb; ++b) {
    const uint32_t* w = p.q + b * 8 * kPanelRows + g;
    const __m256 dw0 = _mm256_load_ps(p.dw + 2 * b * kPanelRows + g);
    for (int c = 0; c < C; ++c) {
      const int8_t* xb = xq + c * x.cols + b * kQK;
      const int32_t* start = xc + 2 * (c * x.ldd + b);
      const __m256 d = _mm256_set1_ps(xd[c * x.ldd + b]);
      if constexpr (kHalves<kType>) {
        const __m256i dot0 = Dot<kType, 4>(w, xb, start[0]);
        const __m256i dot1 = Dot<kType, 4>(w + 4 * kPanelRows, xb + 16, start[1]);
        const __m256 dw1 = _mm256_load_ps(p.dw + (2 * b + 1) * kPanelRows + g);
        acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot0), _mm256_mul_ps(dw0, d), acc[c]);
        acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot1), _mm256_mul_ps(dw1, d), acc[c]);
      } else {  // the whole block in one chain: Q4 formats sum all 8 products in 16 bits
        const __m256i dot = Dot<kType, 8>(w, xb, start[0] + start[1]);
        acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dw0, d), acc[c]);
      }
      if constexpr (kHasMin<kType>) {
        acc[c] = _mm256_fmadd_ps(_mm256_load_ps(p.mw + b * kPanelRows + g), _mm256_set1_ps(xs[c * x.ldd + b]),
                                 acc[c]);
      }
      if constexpr (kHalfMins<kType>) {
        const float* h = xh + 2 * (c * x.ldd + b);
        acc[c] = _mm256_fmadd_ps(_mm256_load_ps(p.mw + 2 * b * kPanelRows + g), _mm256_set1_ps(h[0]), acc[c]);
        acc[c] = _mm256_fmadd_ps(_mm256_load_ps(p.mw + (2 * b + 1) * kPanelRows + g), _mm256_set1_ps(h[1]),
                                 acc[c]);
      }
    }
  }
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(rows), lane);
  for (int c = 0; c < C; ++c) _mm256_maskstore_ps(y + (i + c) * ldy + g, mask, acc[c]);
}

// Rows [i0, i1) of x against one panel, each 8-row half of it in turn, kPanelTileCols rows of x
// at a time (4 accumulators leave room in the 16 registers for the weight vectors and temporaries;
// other widths not measured).
constexpr int kPanelTileCols = 4;
template <TensorType kType>
HWY_NOINLINE void PanelRows(const Panel& p, int64_t nb, const XRows& x, int64_t i0, int64_t i1, int rows,
                            float* HWY_RESTRICT y, int64_t ldy) {
  for (int g = 0; g < rows; g += 8) {
    const int group_rows = rows - g < 8 ? rows - g : 8;
    int64_t i = i0;
    for (; i + kPanelTileCols <= i1; i += kPanelTileCols)
      PanelTile<kType, kPanelTileCols>(p, nb, x, i, g, group_rows, y, ldy);
    for (; i < i1; ++i) PanelTile<kType, 1>(p, nb, x, i, g, group_rows, y, ldy);
  }
}
#endif  // HWY_TARGET

}  // namespace attn::kernels::HWY_NAMESPACE::panel
HWY_AFTER_NAMESPACE();
#endif  // ATTN_MATMUL_PANELS

#endif  // ATTN_KERNELS_MATMUL_PANEL_INL_H_ toggle
