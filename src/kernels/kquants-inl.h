// Decoders of the formats in kquants.h, one block at a time into floats, compiled per SIMD target
// (include after hwy/highway.h in a Highway foreach_target file): plain loops over 16 or 32
// values that the compiler vectorizes for each target.
#if defined(ATTN_KERNELS_KQUANTS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATTN_KERNELS_KQUANTS_INL_H_
#undef ATTN_KERNELS_KQUANTS_INL_H_
#else
#define ATTN_KERNELS_KQUANTS_INL_H_
#endif

#include <cmath>
#include <cstdint>
#include <cstring>

#include "attn/tensor.h"
#include "format/gguf.h"
#include "hwy/highway.h"
#include "kernels/kquants.h"

HWY_BEFORE_NAMESPACE();
namespace attn::kernels::HWY_NAMESPACE::kq {
namespace hn = hwy::HWY_NAMESPACE;

inline float HalfAt(const uint8_t* p) { return HalfToFloat(static_cast<uint16_t>(p[0] | (p[1] << 8))); }

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block.
inline void ScaleMin(const uint8_t* b, int j, float* sc, float* m) {
  if (j < 4) {
    *sc = static_cast<float>(b[j] & 63);
    *m = static_cast<float>(b[j + 4] & 63);
  } else {
    *sc = static_cast<float>((b[j + 4] & 15) | ((b[j - 4] >> 6) << 4));
    *m = static_cast<float>((b[j + 4] >> 4) | ((b[j] >> 6) << 4));
  }
}

// The signed 6-bit scale (sc - 32) of 16-value sub-block k (0..15) of a Q3_K block, from its 12
// scale bytes (kquants.h).
inline int Q3KScale(const uint8_t* sc, int k) {
  const int low = k < 8 ? sc[k] & 15 : sc[k - 8] >> 4;
  return (low | ((sc[8 + k % 4] >> (2 * (k / 4))) & 3) << 4) - 32;
}

// The signed 6-bit scale (ls - 32) of 32-value sub-block s (0..7) of an IQ4_XS block.
inline int Iq4XsScale(const uint8_t* block, int s) {
  const uint32_t high = static_cast<uint32_t>(block[2] | (block[3] << 8));
  return static_cast<int>(((block[4 + s / 2] >> (4 * (s % 2))) & 15) | ((high >> (2 * s)) & 3) << 4) - 32;
}

// out[l] = a * q[l] + b for `count` values (a multiple of 16), q[l] = (lo[l] >> lo_shift) & 15,
// or'ed with the fifth / sixth bits ((hi[l] >> hi_shift) & hi_mask) << 4 when hi is given, or with
// bit (bits0 + l) of `bits` << 4 when bits_used (Q5_0 / Q5_1). All in 32-bit SIMD lanes: left to
// the compiler, these byte loops stayed scalar (the byte pointers may alias the output).
// (Q2_K / Q3_K: lo_mask 3, and Q3_K's third bit lands at hi_pos 2.)
struct Unpack {
  const uint8_t* lo;
  int lo_shift;
  const uint8_t* hi = nullptr;
  int hi_shift = 0;
  uint32_t hi_mask = 0;
  bool bits_used = false;
  uint32_t bits = 0;
  int bits0 = 0;
  uint32_t lo_mask = 15;
  int hi_pos = 4;
};
inline void Scale(const Unpack& u, int count, float a, float b, float* HWY_RESTRICT out) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<uint32_t, decltype(d)> du;
  const hn::Rebind<int32_t, decltype(d)> di;
  const hn::Rebind<uint8_t, decltype(d)> d8;
  const int N = static_cast<int>(hn::Lanes(d));
  const auto va = hn::Set(d, a), vb = hn::Set(d, b);
  const auto lo_mask = hn::Set(du, u.lo_mask);
  for (int l = 0; l < count; l += N) {
    auto q = hn::And(hn::ShiftRightSame(hn::PromoteTo(du, hn::LoadU(d8, u.lo + l)), u.lo_shift), lo_mask);
    if (u.hi != nullptr) {
      const auto h = hn::ShiftRightSame(hn::PromoteTo(du, hn::LoadU(d8, u.hi + l)), u.hi_shift);
      q = hn::Or(q, hn::ShiftLeftSame(hn::And(h, hn::Set(du, u.hi_mask)), u.hi_pos));
    } else if (u.bits_used) {
      const auto idx = hn::Iota(du, static_cast<uint32_t>(u.bits0 + l));
      q = hn::Or(q, hn::ShiftLeft<4>(hn::And(hn::Shr(hn::Set(du, u.bits), idx), hn::Set(du, 1u))));
    }
    hn::StoreU(hn::MulAdd(va, hn::ConvertTo(d, hn::BitCast(di, q)), vb), d, out + l);
  }
}

inline void DecodeQ4KOrQ5K(const uint8_t* HWY_RESTRICT block, bool five, float* HWY_RESTRICT out) {
  const float d = HalfAt(block), dmin = HalfAt(block + 2);
  const uint8_t* scales = block + 4;
  const uint8_t* qh = block + 16;
  const uint8_t* qs = block + (five ? 48 : 16);
  for (int g = 0; g < 4; ++g) {
    for (int h = 0; h < 2; ++h) {
      float sc, m;
      ScaleMin(scales, 2 * g + h, &sc, &m);
      Unpack u{qs + 32 * g, 4 * h};
      if (five) u.hi = qh, u.hi_shift = 2 * g + h, u.hi_mask = 1;
      Scale(u, 32, d * sc, -dmin * m, out + 64 * g + 32 * h);
    }
  }
}

inline void DecodeQ6K(const uint8_t* HWY_RESTRICT block, float* HWY_RESTRICT out) {
  const uint8_t* ql = block;
  const uint8_t* qh = block + 128;
  const auto* scales = reinterpret_cast<const int8_t*>(block + 192);
  const float d = HalfAt(block + 208);
  for (int h = 0; h < 2; ++h) {
    for (int s = 0; s < 4; ++s) {
      for (int half = 0; half < 2; ++half) {  // 16 values per scale; q - 32 as a * q - 32 a
        Unpack u{ql + 64 * h + 32 * (s % 2) + 16 * half, 4 * (s / 2)};
        u.hi = qh + 32 * h + 16 * half, u.hi_shift = 2 * s, u.hi_mask = 3;
        const float a = d * static_cast<float>(scales[8 * h + 2 * s + half]);
        Scale(u, 16, a, -32.0f * a, out + 128 * h + 32 * s + 16 * half);
      }
    }
  }
}

inline void DecodeQ5(const uint8_t* HWY_RESTRICT block, bool with_min, float* HWY_RESTRICT out) {
  const float d = HalfAt(block), m = with_min ? HalfAt(block + 2) : -16.0f * d;
  const uint8_t* qhp = block + (with_min ? 4 : 2);
  uint32_t qh;
  std::memcpy(&qh, qhp, 4);
  for (int half = 0; half < 2; ++half) {
    Unpack u{qhp + 4, 4 * half};
    u.bits_used = true, u.bits = qh, u.bits0 = 16 * half;
    Scale(u, 16, d, m, out + 16 * half);
  }
}

inline void DecodeQ2KOrQ3K(const uint8_t* HWY_RESTRICT block, bool three, float* HWY_RESTRICT out) {
  const uint8_t* qs = block + (three ? 32 : 16);
  const uint8_t* sc = block + (three ? 96 : 0);
  const float d = HalfAt(block + (three ? 108 : 80)), dmin = three ? 0.0f : HalfAt(block + 82);
  for (int c = 0; c < 2; ++c) {
    for (int j = 0; j < 4; ++j) {
      for (int half = 0; half < 2; ++half) {
        const int k = 8 * c + 2 * j + half;
        Unpack u{qs + 32 * c + 16 * half, 2 * j};
        u.lo_mask = 3;
        float a, b;
        if (three) {  // q - 4 as a * q - 4 a
          u.hi = block + 16 * half, u.hi_shift = 4 * c + j, u.hi_mask = 1, u.hi_pos = 2;
          a = d * static_cast<float>(Q3KScale(sc, k));
          b = -4.0f * a;
        } else {
          a = d * static_cast<float>(sc[k] & 15);
          b = -dmin * static_cast<float>(sc[k] >> 4);
        }
        Scale(u, 16, a, b, out + 128 * c + 32 * j + 16 * half);
      }
    }
  }
}

// 32 values of an IQ4 block: d times the levels its 16 nibble bytes pick.
inline void DecodeIq4(const uint8_t* HWY_RESTRICT nibbles, float d, float* HWY_RESTRICT out) {
  for (int j = 0; j < 16; ++j) {
    out[j] = d * static_cast<float>(kquants::kIq4Levels[nibbles[j] & 15]);
    out[j + 16] = d * static_cast<float>(kquants::kIq4Levels[nibbles[j] >> 4]);
  }
}

inline void DecodeIq4Xs(const uint8_t* HWY_RESTRICT block, float* HWY_RESTRICT out) {
  const float d = HalfAt(block);
  for (int s = 0; s < 8; ++s)
    DecodeIq4(block + 8 + 16 * s, d * static_cast<float>(Iq4XsScale(block, s)), out + 32 * s);
}

// Decodes n values (a multiple of the block size) of one row; false for a type not decoded here.
inline bool DecodeRow(gguf::TensorType type, const uint8_t* src, float* dst, int64_t n) {
  switch (type) {
    case gguf::TensorType::kQ4_K:
    case gguf::TensorType::kQ5_K: {
      const bool five = type == gguf::TensorType::kQ5_K;
      const int64_t bytes = five ? kquants::kQ5KBytes : kquants::kQ4KBytes;
      for (int64_t b = 0; b < n / kquants::kBlock; ++b)
        DecodeQ4KOrQ5K(src + b * bytes, five, dst + b * kquants::kBlock);
      return true;
    }
    case gguf::TensorType::kQ6_K:
      for (int64_t b = 0; b < n / kquants::kBlock; ++b)
        DecodeQ6K(src + b * kquants::kQ6KBytes, dst + b * kquants::kBlock);
      return true;
    case gguf::TensorType::kQ5_0:
    case gguf::TensorType::kQ5_1: {
      const bool with_min = type == gguf::TensorType::kQ5_1;
      const int64_t bytes = with_min ? kquants::kQ5_1Bytes : kquants::kQ5_0Bytes;
      for (int64_t b = 0; b < n / 32; ++b) DecodeQ5(src + b * bytes, with_min, dst + b * 32);
      return true;
    }
    case gguf::TensorType::kQ2_K:
    case gguf::TensorType::kQ3_K: {
      const bool three = type == gguf::TensorType::kQ3_K;
      const int64_t bytes = three ? kquants::kQ3KBytes : kquants::kQ2KBytes;
      for (int64_t b = 0; b < n / kquants::kBlock; ++b)
        DecodeQ2KOrQ3K(src + b * bytes, three, dst + b * kquants::kBlock);
      return true;
    }
    case gguf::TensorType::kIQ4_NL:
      for (int64_t b = 0; b < n / 32; ++b)
        DecodeIq4(src + b * kquants::kIq4NlBytes + 2, HalfAt(src + b * kquants::kIq4NlBytes), dst + b * 32);
      return true;
    case gguf::TensorType::kIQ4_XS:
      for (int64_t b = 0; b < n / kquants::kBlock; ++b)
        DecodeIq4Xs(src + b * kquants::kIq4XsBytes, dst + b * kquants::kBlock);
      return true;
    case gguf::TensorType::kMXFP4:
      for (int64_t b = 0; b < n / 32; ++b) {
        const uint8_t* blk = src + b * kquants::kMxfp4Bytes;
        const float d = std::ldexp(1.0f, static_cast<int>(blk[0]) - 128);  // E8M0, halved
        for (int j = 0; j < 16; ++j) {
          dst[b * 32 + j] = d * static_cast<float>(kquants::kMxfp4Levels[blk[1 + j] & 15]);
          dst[b * 32 + j + 16] = d * static_cast<float>(kquants::kMxfp4Levels[blk[1 + j] >> 4]);
        }
      }
      return true;
    default:
      return false;
  }
}

}  // namespace attn::kernels::HWY_NAMESPACE::kq
HWY_AFTER_NAMESPACE();

#endif  // ATTN_KERNELS_KQUANTS_INL_H_
