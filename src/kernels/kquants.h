// Block formats of the Q2_K ... Q6_K and IQ4_XS files most GGUF models are distributed in: ggml's
// "K" formats, super-blocks of 256 values with 8 or 16 sub-block scales, the 4-bit non-linear
// IQ4 formats, and the 32-value formats those files fall back to for rows whose length is not a
// multiple of 256 (Q5_0 / Q5_1, which the integer kernels of matmul-inl.h take like Q4_0 / Q4_1
// with a fifth bit per value, and IQ4_NL). Products with
// more than one x row run the K formats in the panel integer kernels (matmul_panel-inl.h: AVX-512
// with VNNI, AVX2), matrix-vector products in integer kernels on x86 (matmul.cc); otherwise rows are
// decoded to float32 before the float32 product. The decoders (kquants-inl.h, compiled per SIMD
// target) serve those and DequantizeRow for all five.
//
//   Q5_0, 22 bytes: f16 d, 32 fifth bits (little-endian u32: bit e for value e), 16 bytes of
//        nibbles (byte j: value j low, value j + 16 high); x = (q - 16) * d, q in [0, 31].
//   Q5_1, 24 bytes: f16 d, f16 m, then as Q5_0; x = q * d + m.
//   Q4_K, 144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins for 8 sub-blocks of 32,
//        128 bytes of nibbles. Sub-block j: x = d * sc_j * q - dmin * m_j, q in [0, 15].
//        Bytes [32g, 32g + 32) of the nibbles hold sub-block 2g (low nibbles) and 2g + 1 (high).
//   Q5_K, 176 bytes: as Q4_K, then 32 bytes of fifth bits before the nibbles: value l of
//        sub-block j has bit j of byte l; q in [0, 31].
//   Q6_K, 210 bytes: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales (one
//        per 16 values), f16 d last. x = d * scale_(i / 16) * (q - 32), q in [0, 63]. In each half
//        h of the block, value 32s + l (s in [0, 4), l in [0, 32)) takes nibble s / 2 of low byte
//        64h + 32 (s % 2) + l and bits [2s, 2s + 2) of high byte 32h + l.
//   Q2_K, 84 bytes: 16 bytes of scales (low nibble sc, high nibble m, one byte per 16 values),
//        64 bytes of 2-bit quants, f16 d, f16 dmin. Value 128c + 32j + l (c < 2, j < 4, l < 32)
//        has q = bits [2j, 2j + 2) of quant byte 32c + l and scale byte k = 8c + 2j + l / 16:
//        x = d * sc_k * q - dmin * m_k, q in [0, 3].
//   Q3_K, 110 bytes: 32 bytes of high bits, 64 bytes of 2-bit quants laid out as Q2_K's, 12 bytes
//        of 6-bit scales, f16 d. Value 128c + 32j + l takes its third bit from bit 4c + j of high
//        byte l: x = d * (sc_k - 32) * (q - 4), q in [0, 7]. Scale k (0..15) has low bits
//        b[k] & 15 (k < 8) or b[k - 8] >> 4 (k >= 8) and high bits (b[8 + k % 4] >> 2 (k / 4)) & 3.
//   IQ4_NL, 18 bytes: f16 d, 16 bytes of nibbles as Q4_0's; x = d * kIq4Levels[q].
//   IQ4_XS, 136 bytes: f16 d, u16 high scale bits, 4 bytes of low scale nibbles, 128 bytes of
//        nibbles (16 per sub-block of 32, as IQ4_NL's). Sub-block s (0..7) has the 6-bit scale
//        ls = (low byte s / 2 >> 4 (s % 2)) & 15 | ((high >> 2 s) & 3) << 4:
//        x = d * (ls - 32) * kIq4Levels[q].
// The 6-bit scales of Q4_K / Q5_K: for j < 4, sc_j = b[j] & 63 and m_j = b[j + 4] & 63; for j >= 4,
// sc_j = (b[j + 4] & 15) | (b[j - 4] >> 6) << 4 and m_j = (b[j + 4] >> 4) | (b[j] >> 6) << 4.
#pragma once

#include <cstdint>

namespace attn::kquants {

constexpr int64_t kBlock = 256;
constexpr int64_t kQ4KBytes = 144, kQ5KBytes = 176, kQ6KBytes = 210, kQ5_0Bytes = 22, kQ5_1Bytes = 24;
constexpr int64_t kQ2KBytes = 84, kQ3KBytes = 110, kIq4NlBytes = 18, kIq4XsBytes = 136, kMxfp4Bytes = 17;

// The 16 levels of the IQ4 formats (ggml's non-linear 4-bit grid), as integers to scale by d.
inline constexpr int8_t kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                          1,    13,   25,  38,  53,  69,  89,  113};

// MXFP4 (OCP microscaling, gpt-oss's experts and llama.cpp's MXFP4_MOE files), 17 bytes per 32
// values: an E8M0 exponent byte e, then 16 bytes of nibbles as Q4_0's (value j low, j + 16 high);
// each nibble is an FP4 E2M1 number, here doubled to integers, so x = kMxfp4Levels[q] * 2^(e - 128).
inline constexpr int8_t kMxfp4Levels[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

}  // namespace attn::kquants
