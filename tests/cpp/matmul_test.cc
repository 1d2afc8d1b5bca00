// MatMul (y = x W^T over ggml block formats) against the scalar reference, on every compiled SIMD
// target; block decoding against hand-computed values; errors; thread-count independence.
#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "attn/attention.h"
#include "attn/error.h"
#include "attn/tensor.h"
#include "core/thread_pool.h"
#include "kernels/quantize.h"
#include "test_util.h"

namespace attn {
namespace {

using gguf::TensorType;

constexpr TensorType kAllTypes[] = {TensorType::kF32,  TensorType::kF16,  TensorType::kBF16,
                                    TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ8_0,
                                    TensorType::kQ5_0, TensorType::kQ5_1, TensorType::kIQ4_NL};
constexpr double kEps = 1.0 / (1 << 24);  // unit roundoff of f32

// The 32-value formats of linear levels (IQ4_NL's are not: it is bounded as the K formats are).
bool IsQuantized(TensorType t) {
  return BlockSize(t) == 32 && t != TensorType::kIQ4_NL && t != TensorType::kMXFP4;
}

void PutU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v & 0xFF);
  p[1] = static_cast<uint8_t>(v >> 8);
}

// Random weights: f16 scales of varying size, random nibbles / int8 (including -128).
std::vector<uint8_t> RandomWeights(TensorType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  const size_t row_bytes = RowBytes(type, cols);
  std::vector<uint8_t> data(row_bytes * rows);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f), scale(0.001f, 0.05f);
  std::uniform_int_distribution<int> byte(0, 255);
  uint8_t* p = data.data();
  const int64_t count = rows * cols;
  switch (type) {
    case TensorType::kF32:
      for (int64_t k = 0; k < count; ++k) {
        const float v = unit(rng);
        std::memcpy(p + 4 * k, &v, 4);
      }
      break;
    case TensorType::kF16:
    case TensorType::kBF16:
      for (int64_t k = 0; k < count; ++k) {
        PutU16(p + 2 * k, type == TensorType::kF16 ? FloatToHalf(unit(rng)) : FloatToBF16(unit(rng)));
      }
      break;
    case TensorType::kQ4_0:
    case TensorType::kQ4_1:
    case TensorType::kQ8_0: {
      const size_t block_bytes = row_bytes / (cols / 32);
      for (int64_t b = 0; b < count / 32; ++b, p += block_bytes) {
        PutU16(p, FloatToHalf(scale(rng) * (byte(rng) < 128 ? 1.0f : -1.0f)));
        size_t q = 2;
        if (type == TensorType::kQ4_1) PutU16(p + 2, FloatToHalf(0.1f * unit(rng))), q = 4;
        for (size_t j = q; j < block_bytes; ++j) p[j] = static_cast<uint8_t>(byte(rng));
      }
      break;
    }
    case TensorType::kQ5_0:
    case TensorType::kQ5_1: {
      const size_t block_bytes = row_bytes / (cols / 32);
      for (int64_t b = 0; b < count / 32; ++b, p += block_bytes) {
        for (size_t j = 0; j < block_bytes; ++j) p[j] = static_cast<uint8_t>(byte(rng));
        PutU16(p, FloatToHalf(scale(rng) * (byte(rng) < 128 ? 1.0f : -1.0f)));
        if (type == TensorType::kQ5_1) PutU16(p + 2, FloatToHalf(0.1f * unit(rng)));
      }
      break;
    }
    case TensorType::kIQ4_NL: {
      for (int64_t b = 0; b < count / 32; ++b, p += 18) {
        PutU16(p, FloatToHalf(0.01f * scale(rng) * (byte(rng) < 128 ? 1.0f : -1.0f)));
        for (size_t j = 2; j < 18; ++j) p[j] = static_cast<uint8_t>(byte(rng));
      }
      break;
    }
    case TensorType::kMXFP4: {  // exponents 2^-10 .. 2^2 (e8m0 118..130), random nibbles
      for (int64_t b = 0; b < count / 32; ++b, p += 17) {
        p[0] = static_cast<uint8_t>(118 + byte(rng) % 13);
        for (size_t j = 1; j < 17; ++j) p[j] = static_cast<uint8_t>(byte(rng));
      }
      break;
    }
    case TensorType::kQ2_K:
    case TensorType::kQ3_K:
    case TensorType::kIQ4_XS:
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K: {  // random bytes with f16 scales of varying size where they belong
      const size_t block_bytes = row_bytes / (cols / 256);
      for (int64_t b = 0; b < count / 256; ++b, p += block_bytes) {
        for (size_t j = 0; j < block_bytes; ++j) p[j] = static_cast<uint8_t>(byte(rng));
        if (type == TensorType::kQ6_K) {
          PutU16(p + 208, FloatToHalf(0.02f * scale(rng)));
        } else if (type == TensorType::kQ2_K) {
          PutU16(p + 80, FloatToHalf(0.1f * scale(rng)));
          PutU16(p + 82, FloatToHalf(0.1f * scale(rng)));
        } else if (type == TensorType::kQ3_K) {
          PutU16(p + 108, FloatToHalf(0.05f * scale(rng)));
        } else if (type == TensorType::kIQ4_XS) {
          PutU16(p, FloatToHalf(0.01f * scale(rng)));
        } else {
          PutU16(p, FloatToHalf(0.05f * scale(rng)));
          PutU16(p + 2, FloatToHalf(0.1f * scale(rng)));
        }
      }
      break;
    }
    default:
      break;
  }
  return data;
}

// The error bound of one output of the integer path (see quantize.h): quantizing x moves each x[c]
// by at most d_x / 2 (times 1 + 2^-20 for the float rounding of x / d), so the exact product moves
// by at most sum_b d_x[b] / 2 sum_{c in b} |W[r, c]|. On top, float rounding: each block's scale
// product and its accumulation (at most nb + 8 roundings per lane and the lane sum), bounded by
// (nb + 16) eps times the sum of the magnitudes of every term the kernel adds, which is at most
// sum_b (qmax |d_w| + |offset|) 32 (amax_x + d_x / 2) per block (qmax 15 for Q4, 128 for Q8_0;
// the offset is m for Q4_1, 8 d for Q4_0), doubled for the offset term's own accumulation.
// One 32-value block b of x and of the decoded weight row: max |x|, sum |w|, x's quantization
// step d_x, and the quantization term d_x / 2 (1 + 2^-20) sum |w| of the bounds below.
struct BlockTerms {
  double amax = 0.0, wabs = 0.0, dx = 0.0, quant = 0.0;
};
BlockTerms ActivationBlock(const float* wdeq, const float* x, int64_t b) {
  BlockTerms t;
  for (int c = 0; c < 32; ++c) {
    t.amax = std::max(t.amax, std::fabs(static_cast<double>(x[b * 32 + c])));
    t.wabs += std::fabs(wdeq[b * 32 + c]);
  }
  t.dx = t.amax / 127.0;
  t.quant = t.dx / 2 * (1.0 + 1.0 / (1 << 20)) * t.wabs;
  return t;
}

double QuantizedBound(TensorType type, const uint8_t* wrow, const float* wdeq, const float* x, int64_t cols) {
  const int64_t nb = cols / 32;
  const size_t block_bytes = RowBytes(type, cols) / nb;
  double quant = 0.0, magnitude = 0.0;
  for (int64_t b = 0; b < nb; ++b) {
    const BlockTerms t = ActivationBlock(wdeq, x, b);
    quant += t.quant;
    const uint8_t* blk = wrow + b * block_bytes;
    const double dw = std::fabs(HalfToFloat(static_cast<uint16_t>(blk[0] | (blk[1] << 8))));
    double offset = 0.0;
    if (type == TensorType::kQ4_0) offset = 8 * dw;
    if (type == TensorType::kQ5_0) offset = 16 * dw;
    if (type == TensorType::kQ4_1 || type == TensorType::kQ5_1)
      offset = std::fabs(HalfToFloat(static_cast<uint16_t>(blk[2] | (blk[3] << 8))));
    const double qmax = type == TensorType::kQ8_0                                ? 128.0
                        : type == TensorType::kQ5_0 || type == TensorType::kQ5_1 ? 31.0
                                                                                 : 15.0;
    magnitude += (qmax * dw + offset) * 32 * (t.amax + t.dx / 2);
  }
  return quant + 2 * (nb + 16) * kEps * magnitude;
}

// |offset| of 32-value block b of a row: x = q d + offset (Q4_1, Q5_1: m; Q4_K, Q5_K: -dmin m_j),
// or the centre's q d - centre d (Q4_0: 8 d, Q5_0: 16 d, Q8_0: none).
double BlockOffset(TensorType type, const uint8_t* row, int64_t b) {
  const auto half = [](const uint8_t* p) {
    return std::fabs(HalfToFloat(static_cast<uint16_t>(p[0] | (p[1] << 8))));
  };
  switch (type) {
    case TensorType::kQ4_0:
      return 8 * half(row + b * 18);
    case TensorType::kQ5_0:
      return 16 * half(row + b * 22);
    case TensorType::kQ4_1:
      return half(row + b * 20 + 2);
    case TensorType::kQ5_1:
      return half(row + b * 24 + 2);
    case TensorType::kQ2_K: {  // the larger of the two 16-value sub-blocks' dmin m_k
      const uint8_t* blk = row + (b / 8) * 84;
      const int k = static_cast<int>(8 * (b % 8 / 4) + 2 * (b % 4));
      return half(blk + 82) * std::max(blk[k] >> 4, blk[k + 1] >> 4);
    }
    case TensorType::kQ4_K:
    case TensorType::kQ5_K: {
      const uint8_t* blk = row + (b / 8) * (type == TensorType::kQ4_K ? 144 : 176);
      const int j = static_cast<int>(b % 8);
      const uint8_t* sc = blk + 4;
      const int m = j < 4 ? (sc[j + 4] & 63) : ((sc[j + 4] >> 4) | ((sc[j] >> 6) << 4));
      return half(blk + 2) * m;
    }
    default:
      return 0.0;
  }
}

// K formats with 8-bit activations (Q4_K's matrix-vector path on x86, all three in the VNNI
// kernels for n > 1): the quantization term as above, and float rounding over terms of magnitude
// (|w| + 2 |dmin m_j|) (amax_x + d_x / 2), since the kernel adds d sc_j q (up to |w| + |dmin m_j|)
// and subtracts dmin m_j separately. m_j is unpacked from the block's 12 scale bytes b: b[4 + j] &
// 63 for j < 4, (b[4 + j] >> 4) | (b[j] >> 6) << 4 otherwise. Q6_K has no min (its centre is
// taken out in integers).
double KBound(TensorType type, const uint8_t* wrow, const float* wdeq, const float* x, int64_t cols) {
  const int64_t nb = cols / 32;
  double quant = 0.0, magnitude = 0.0;
  for (int64_t b = 0; b < nb; ++b) {
    const double bj = BlockOffset(type, wrow, b);  // |dmin m_j|; 0 for Q6_K
    const BlockTerms t = ActivationBlock(wdeq, x, b);
    quant += t.quant;
    magnitude += (t.wabs + 64 * bj) * (t.amax + t.dx / 2);
  }
  return quant + 2 * (nb + 16) * kEps * magnitude;
}

// Float weights: a dot product of `cols` terms, accumulated in at most cols lanes-worth of steps,
// is within (cols + 8) eps sum |x w| of the exact value (plus the reference's final rounding).
double FloatBound(const float* wdeq, const float* x, int64_t cols) {
  double mag = 0.0;
  for (int64_t c = 0; c < cols; ++c) mag += std::fabs(static_cast<double>(x[c]) * wdeq[c]);
  return (cols + 8) * kEps * mag + 1e-30;
}

struct Shape {
  int64_t rows, cols;
};

// Runs MatMul on random data with padded strides and compares each output with the reference.
void CheckMatMul(TensorType type, Shape s, int64_t n, uint32_t seed, ThreadPool& pool) {
  SCOPED_TRACE(std::string(gguf::TensorTypeName(type)) + " rows=" + std::to_string(s.rows) + " cols=" +
               std::to_string(s.cols) + " n=" + std::to_string(n) + " target=" + MatMulTargetName());
  std::mt19937 rng(seed);
  const std::vector<uint8_t> data = RandomWeights(type, s.rows, s.cols, rng);
  const WeightMatrix w = MakeWeightMatrix(type, data.data(), s.rows, s.cols, "w");
  const int64_t ldx = s.cols + 5, ldy = s.rows + 3;
  std::vector<float> x(n * ldx);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : x) v = normal(rng);
  constexpr float kSentinel = -12345.0f;
  std::vector<float> y(n * ldy, kSentinel), ref(n * ldy, kSentinel);
  MatMul(w, x.data(), n, ldx, y.data(), ldy, pool);
  MatMulReference(w, x.data(), n, ldx, ref.data(), ldy);

  std::vector<float> wdeq(s.cols);
  int failures = 0;
  for (int64_t r = 0; r < s.rows; ++r) {
    DequantizeRow(type, data.data() + r * w.row_bytes, wdeq.data(), s.cols);
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x.data() + i * ldx;
      const double bound =
          IsQuantized(type) ? QuantizedBound(type, data.data() + r * w.row_bytes, wdeq.data(), xi, s.cols)
          : type != TensorType::kF32 && type != TensorType::kF16 && type != TensorType::kBF16
              // decoded to float32 or against 8-bit activations, depending on n and the target
              ? std::max(KBound(type, data.data() + r * w.row_bytes, wdeq.data(), xi, s.cols),
                         FloatBound(wdeq.data(), xi, s.cols))
              : FloatBound(wdeq.data(), xi, s.cols);
      const double err = std::fabs(static_cast<double>(y[i * ldy + r]) - ref[i * ldy + r]);
      if (!(err <= bound) && ++failures <= 5) {
        ADD_FAILURE() << "y[" << i << ", " << r << "] = " << y[i * ldy + r] << ", reference "
                      << ref[i * ldy + r] << ", error " << err << " > bound " << bound;
      }
    }
  }
  EXPECT_EQ(failures, 0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t r = s.rows; r < ldy; ++r) ASSERT_EQ(y[i * ldy + r], kSentinel) << "wrote past rows";
  }
}

class MatMulTargetTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { SetSimdTarget(GetParam()); }
  void TearDown() override { SetSimdTarget(""); }
};

TEST_P(MatMulTargetTest, MatchesReference) {
  ASSERT_EQ(std::string(MatMulTargetName()), GetParam());
  ThreadPool pool(2);
  const Shape shapes[] = {{1, 32}, {7, 64}, {9, 160}, {192, 576}, {576, 1536}};  // 160: an odd block count
  uint32_t seed = 1;
  for (TensorType type : kAllTypes) {
    for (Shape s : shapes) {
      for (int64_t n : {1, 3, 17, 64}) {
        CheckMatMul(type, s, n, seed++, pool);
        if (HasFailure()) return;
      }
    }
  }
  // The formats decoded to float32 rows: K (256-value blocks) and IQ4.
  for (TensorType type : {TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K, TensorType::kQ2_K,
                          TensorType::kQ3_K, TensorType::kIQ4_XS}) {
    for (Shape s : {Shape{1, 256}, Shape{7, 512}, Shape{40, 768}}) {
      for (int64_t n : {1, 3, 17, 64}) {
        CheckMatMul(type, s, n, seed++, pool);
        if (HasFailure()) return;
      }
    }
  }
  // MXFP4: 8-bit activations for one row of x on x86, decoded to float32 rows otherwise.
  for (Shape s : shapes) {
    for (int64_t n : {1, 3, 17, 64}) {
      CheckMatMul(TensorType::kMXFP4, s, n, seed++, pool);
      if (HasFailure()) return;
    }
  }
  // Taller than one pass of the VNNI kernels' panels (4 MiB: 5280 rows of 576 columns).
  CheckMatMul(TensorType::kQ8_0, {5400, 576}, 17, seed++, pool);
  // Float rows whose length is not a multiple of any vector width (the scalar tail).
  for (TensorType type : {TensorType::kF32, TensorType::kF16, TensorType::kBF16}) {
    CheckMatMul(type, {5, 37}, 6, seed++, pool);
  }
}

// The integer kernels compute, exactly in integers and then in float, the product of W with x
// quantized to 8 bits (quantize.h): y = sum_b dx_b sum_c w_c qx_c. Against that, evaluated in
// double from the dequantized W and QuantizeRowsQ8's own qx, dx (the same per-target code the
// kernels run), only float rounding remains: the dequantization's (one rounding of q d + m per
// value), the kernels' scale products and sums (as in QuantizedBound), and the rounding of the
// block sums s that the min formats use. This sees errors far below the quantization bound of
// MatchesReference, such as a wrong centre. The extreme rounds put every quant at its largest
// (Q8_0: 127) and every x at 1 (all qx = 127): the largest partial sums any kernel adds in 8 or 16
// bits (AVX2's vpmaddubsw pairs and their 16-bit sums), where an overflow or a saturation shows.
void MakeExtreme(TensorType type, std::vector<uint8_t>& data, size_t row_bytes, int64_t cols) {
  const int64_t nblk = cols / BlockSize(type);
  const size_t block_bytes = row_bytes / static_cast<size_t>(nblk);
  // The f16 scale fields keep their random values: [first, last) bytes of each block.
  size_t first = 0, last = 2;
  if (type == TensorType::kQ4_1 || type == TensorType::kQ5_1 || type == TensorType::kQ4_K ||
      type == TensorType::kQ5_K)
    last = 4;
  if (type == TensorType::kQ6_K) first = 208, last = 210;
  if (type == TensorType::kQ2_K) first = 80, last = 84;
  if (type == TensorType::kQ3_K) first = 108, last = 110;
  if (type == TensorType::kMXFP4) last = 1;  // its exponent byte
  const uint8_t top = type == TensorType::kQ8_0 ? 0x7F : 0xFF;
  for (size_t blk = 0; blk < data.size() / block_bytes; ++blk) {
    for (size_t j = 0; j < block_bytes; ++j)
      if (j < first || j >= last) data[blk * block_bytes + j] = top;
  }
}

TEST_P(MatMulTargetTest, IntegerKernelsEqualTheQuantizedProduct) {
  ThreadPool pool(2);
  const std::string target = GetParam();
  const bool x86_int8 = target == "AVX2" || target == "AVX3" || target == "AVX3_VNNI";
  uint32_t seed = 500;
  const TensorType types[] = {TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ5_0,   TensorType::kQ5_1,
                              TensorType::kQ8_0, TensorType::kQ4_K, TensorType::kQ5_K,   TensorType::kQ6_K,
                              TensorType::kQ2_K, TensorType::kQ3_K, TensorType::kIQ4_NL, TensorType::kIQ4_XS,
                              TensorType::kMXFP4};
  for (const bool extreme : {false, true}) {
    for (TensorType type : types) {
      for (int64_t n : {1, 3, 9, 70}) {
        // K formats run on 8-bit activations in the x86 matrix-vector kernels and in the panel
        // kernels (AVX3_VNNI, AVX2); elsewhere they are decoded to float32.
        // The IQ4 formats have no AVX2 panels (their 16-bit pair sums would saturate).
        const bool k_type = BlockSize(type) == 256;
        const bool iq4 = type == TensorType::kIQ4_NL || type == TensorType::kIQ4_XS;
        // MXFP4 goes where the IQ4 formats go.
        const bool integer = n == 1                              ? x86_int8
                             : iq4 || type == TensorType::kMXFP4 ? target == "AVX3_VNNI"
                             : k_type                            ? target == "AVX3_VNNI" || target == "AVX2"
                                                                 : true;
        if (!integer) continue;
        const int64_t rows = 37, cols = k_type ? 768 : 576, nb = cols / 32;
        SCOPED_TRACE(std::string(gguf::TensorTypeName(type)) + " n=" + std::to_string(n) +
                     (extreme ? " extreme" : ""));
        std::mt19937 rng(seed++);
        std::vector<uint8_t> data = RandomWeights(type, rows, cols, rng);
        if (extreme) MakeExtreme(type, data, RowBytes(type, cols), cols);
        const WeightMatrix w = MakeWeightMatrix(type, data.data(), rows, cols, "w");
        std::vector<float> x(n * cols);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        for (float& v : x) v = extreme ? 1.0f : normal(rng);
        std::vector<float> y(n * rows);
        MatMul(w, x.data(), n, cols, y.data(), rows, pool);
        std::vector<int8_t> q(n * cols);
        std::vector<float> d(n * nb), sums(n * nb);
        QuantizeRowsQ8(x.data(), n, cols, cols, q.data(), d.data(), sums.data());
        std::vector<float> wdeq(cols);
        int failures = 0;
        for (int64_t r = 0; r < rows; ++r) {
          DequantizeRow(type, data.data() + r * w.row_bytes, wdeq.data(), cols);
          for (int64_t i = 0; i < n; ++i) {
            double expected = 0.0, magnitude = 0.0;
            for (int64_t b = 0; b < nb; ++b) {
              double dot = 0.0, mag = 0.0;
              for (int64_t c = b * 32; c < b * 32 + 32; ++c) {
                dot += static_cast<double>(wdeq[c]) * q[i * cols + c];
                mag += std::fabs(static_cast<double>(wdeq[c]) * q[i * cols + c]);
              }
              expected += d[i * nb + b] * dot;
              // The kernels' terms: up to |w| + |offset| per value, and the offset once more.
              const double offset = BlockOffset(type, data.data() + r * w.row_bytes, b);
              double qabs = 0.0;
              for (int64_t c = b * 32; c < b * 32 + 32; ++c) qabs += std::abs(q[i * cols + c]);
              magnitude += d[i * nb + b] * (mag + 2 * offset * qabs);
            }
            const double bound = 2 * (2 * nb + 34) * kEps * magnitude;
            const double err = std::fabs(y[i * rows + r] - expected);
            if (!(err <= bound) && ++failures <= 5) {
              ADD_FAILURE() << "y[" << i << ", " << r << "] = " << y[i * rows + r] << ", expected "
                            << expected << ", error " << err << " > bound " << bound;
            }
          }
        }
        EXPECT_EQ(failures, 0);
        if (HasFailure()) return;
      }
    }
  }
}

TEST_P(MatMulTargetTest, SharedProductsEqualSeparateOnesBitForBit) {
  ThreadPool pool(2);
  std::mt19937 rng(99);
  for (TensorType type : kAllTypes) {
    // Q, K, V of SmolLM2's shapes (576 -> 576, 192, 192).
    const int64_t cols = 576, rows[] = {576, 192, 192};
    std::vector<std::vector<uint8_t>> data;
    std::vector<WeightMatrix> w;
    for (int64_t r : rows) {
      data.push_back(RandomWeights(type, r, cols, rng));
      w.push_back(MakeWeightMatrix(type, data.back().data(), r, cols, "w"));
    }
    for (int64_t n : {1, 3, 11, 30}) {  // 30: the separate products
      std::normal_distribution<float> normal;
      std::vector<float> x(static_cast<size_t>(n * cols));
      for (float& v : x) v = normal(rng);
      std::vector<std::vector<float>> shared(3), separate(3);
      for (int k = 0; k < 3; ++k) {
        shared[k].assign(static_cast<size_t>(n * rows[k]), -1.0f);
        separate[k].assign(static_cast<size_t>(n * rows[k]), -2.0f);
        MatMul(w[k], x.data(), n, cols, separate[k].data(), rows[k], pool, 2);
      }
      const WeightMatrix* ws[] = {&w[0], &w[1], &w[2]};
      float* ys[] = {shared[0].data(), shared[1].data(), shared[2].data()};
      MatMulShared(ws, x.data(), n, cols, ys, pool, 2);
      for (int k = 0; k < 3; ++k) {
        ASSERT_EQ(shared[k], separate[k]) << gguf::TensorTypeName(type) << " n=" << n << " product " << k;
      }
    }
  }
  EXPECT_THROW(
      MatMulShared(std::span<const WeightMatrix* const>(), nullptr, 1, 1, std::span<float* const>(), pool),
      Error);
}

// A few x rows (a batch of sequences decoding together) go through the matrix-vector kernels on
// x86: each row's result is then its one-row result bit for bit, whatever else shares the call.
TEST_P(MatMulTargetTest, FewRowsEqualOneRowAtATimeBitForBit) {
  const std::string target = GetParam();
  if (target.rfind("AVX", 0) != 0) GTEST_SKIP() << "the grouped rows are the x86 integer kernels'";
  ThreadPool pool(2);
  std::mt19937 rng(7);
  for (TensorType type :
       {TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ8_0, TensorType::kQ5_0, TensorType::kQ5_1,
        TensorType::kIQ4_NL, TensorType::kMXFP4, TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K,
        TensorType::kQ2_K, TensorType::kQ3_K, TensorType::kIQ4_XS}) {
    const int64_t rows = 70, cols = 512, ldx = cols + 3, ldy = rows + 5;  // 70: an edge tile of 2 rows
    const std::vector<uint8_t> data = RandomWeights(type, rows, cols, rng);
    const WeightMatrix w = MakeWeightMatrix(type, data.data(), rows, cols, "w");
    for (int64_t n : {2, 5, 8, 21}) {  // 21: most of the grouped kernels' 24 rows
      std::normal_distribution<float> normal;
      std::vector<float> x(static_cast<size_t>(n * ldx));
      for (float& v : x) v = normal(rng);
      std::vector<float> together(static_cast<size_t>(n * ldy), -1.0f), alone(together.size(), -1.0f);
      MatMul(w, x.data(), n, ldx, together.data(), ldy, pool, 2);
      for (int64_t i = 0; i < n; ++i)
        MatMul(w, x.data() + i * ldx, 1, ldx, alone.data() + i * ldy, ldy, pool, 1);
      ASSERT_EQ(together, alone) << gguf::TensorTypeName(type) << " n=" << n;
    }
  }
}

// The matrix-vector kernels' vpdpbusd (AVX3_VNNI) sums the same integers as vpmaddubsw + vpmaddwd
// (AVX3): the results are equal bit for bit, for one x row and for grouped ones.
TEST(MatMul, VnniMatrixVectorEqualsAvx3BitForBit) {
  const std::vector<std::string> targets = testing::MatMulTargets();
  if (std::find(targets.begin(), targets.end(), "AVX3_VNNI") == targets.end() ||
      std::find(targets.begin(), targets.end(), "AVX3") == targets.end()) {
    GTEST_SKIP() << "needs a CPU with AVX-512 and AVX512_VNNI";
  }
  ThreadPool pool(2);
  std::mt19937 rng(11);
  for (TensorType type :
       {TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ8_0, TensorType::kQ5_0, TensorType::kQ5_1}) {
    const int64_t rows = 70, cols = 544;  // 17 blocks: an odd last block for the paired kernels
    const std::vector<uint8_t> data = RandomWeights(type, rows, cols, rng);
    const WeightMatrix w = MakeWeightMatrix(type, data.data(), rows, cols, "w");
    for (int64_t n : {1, 2, 5}) {
      std::normal_distribution<float> normal;
      std::vector<float> x(static_cast<size_t>(n * cols));
      for (float& v : x) v = normal(rng);
      std::vector<float> y[2];
      for (int k = 0; k < 2; ++k) {
        SetSimdTarget(k == 0 ? "AVX3" : "AVX3_VNNI");
        y[k].assign(static_cast<size_t>(n * rows), -1.0f);
        MatMul(w, x.data(), n, cols, y[k].data(), rows, pool, 2);
      }
      SetSimdTarget("");
      ASSERT_EQ(y[0], y[1]) << gguf::TensorTypeName(type) << " n=" << n;
    }
  }
}

TEST_P(MatMulTargetTest, QuantizeRowsWithinHalfAStep) {
  ASSERT_EQ(std::string(MatMulTargetName()), GetParam());
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const int64_t n = 3, cols = 96, nb = cols / 32;
  std::vector<float> x(n * cols);
  for (float& v : x) v = normal(rng);
  for (int c = 32; c < 64; ++c) x[c] = 0.0f;  // an all-zero block: d = 0, q = 0
  std::vector<int8_t> q(n * cols);
  std::vector<float> d(n * nb), s(n * nb);
  QuantizeRowsQ8(x.data(), n, cols, cols, q.data(), d.data(), s.data());
  for (int64_t b = 0; b < n * nb; ++b) {
    float amax = 0.0f;
    int sum = 0;
    for (int c = 0; c < 32; ++c) amax = std::max(amax, std::fabs(x[b * 32 + c]));
    EXPECT_FLOAT_EQ(d[b], amax / 127.0f);
    for (int c = 0; c < 32; ++c) {
      EXPECT_GE(q[b * 32 + c], -127);
      EXPECT_LE(std::fabs(x[b * 32 + c] - q[b * 32 + c] * d[b]), d[b] / 2 * (1 + 1e-6)) << b * 32 + c;
      sum += q[b * 32 + c];
    }
    EXPECT_FLOAT_EQ(s[b], d[b] * sum);
  }
  EXPECT_EQ(d[1], 0.0f);
}

INSTANTIATE_TEST_SUITE_P(EveryTarget, MatMulTargetTest, ::testing::ValuesIn(testing::MatMulTargets()),
                         [](const auto& info) { return info.param; });

// One block of each type, built by hand, decoded value by value. The nibble bytes put distinct
// values in the low (element j) and high (element j + 16) halves, so swapped halves or an
// interleaved order (element 2j / 2j + 1) fail.
TEST(MatMul, DequantizeRowMatchesHandComputedBlocks) {
  uint8_t nibbles[16];
  for (int j = 0; j < 16; ++j) nibbles[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float out[32];

  uint8_t q4_0[18];
  PutU16(q4_0, FloatToHalf(0.5f));
  std::memcpy(q4_0 + 2, nibbles, 16);
  DequantizeRow(TensorType::kQ4_0, q4_0, out, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], (j - 8) * 0.5f) << j;
    EXPECT_EQ(out[j + 16], (7 - j) * 0.5f) << j + 16;  // (15 - j) - 8
  }

  uint8_t q4_1[20];
  PutU16(q4_1, FloatToHalf(0.25f));
  PutU16(q4_1 + 2, FloatToHalf(-1.0f));
  std::memcpy(q4_1 + 4, nibbles, 16);
  DequantizeRow(TensorType::kQ4_1, q4_1, out, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], j * 0.25f - 1.0f) << j;
    EXPECT_EQ(out[j + 16], (15 - j) * 0.25f - 1.0f) << j + 16;
  }

  uint8_t q8_0[34];
  PutU16(q8_0, FloatToHalf(2.0f));
  for (int j = 0; j < 32; ++j) q8_0[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j * 8 - 128));
  DequantizeRow(TensorType::kQ8_0, q8_0, out, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], (j * 8 - 128) * 2.0f) << j;

  const float values[3] = {1.5f, -0.375f, 65504.0f};
  uint8_t f32[12], f16[6], bf16[6];
  std::memcpy(f32, values, 12);
  for (int j = 0; j < 3; ++j) PutU16(f16 + 2 * j, FloatToHalf(values[j]));
  PutU16(bf16, 0x3FC0);      // 1.5
  PutU16(bf16 + 2, 0xBEC0);  // -0.375
  PutU16(bf16 + 4, 0x4780);  // 65536
  DequantizeRow(TensorType::kF32, f32, out, 3);
  for (int j = 0; j < 3; ++j) EXPECT_EQ(out[j], values[j]);
  DequantizeRow(TensorType::kF16, f16, out, 3);
  for (int j = 0; j < 3; ++j) EXPECT_EQ(out[j], values[j]);
  DequantizeRow(TensorType::kBF16, bf16, out, 3);
  EXPECT_EQ(out[0], 1.5f);
  EXPECT_EQ(out[1], -0.375f);
  EXPECT_EQ(out[2], 65536.0f);
}

// A product whose exact value is known: W = the hand-made blocks, x = one-hot, through MatMul
// (quantization of a one-hot row is exact up to the float rounding of 127 * (1 / 127)).
TEST(MatMul, OneHotPicksOutEachElement) {
  ThreadPool pool(2);
  uint8_t q4_1[20];
  PutU16(q4_1, FloatToHalf(0.25f));
  PutU16(q4_1 + 2, FloatToHalf(-1.0f));
  for (int j = 0; j < 16; ++j) q4_1[4 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const WeightMatrix w = MakeWeightMatrix(TensorType::kQ4_1, q4_1, 1, 32, "w");
  std::vector<float> x(32 * 32, 0.0f), y(32);
  for (int j = 0; j < 32; ++j) x[j * 32 + j] = 1.0f;
  MatMul(w, x.data(), 32, 32, y.data(), 1, pool);
  for (int j = 0; j < 16; ++j) {
    EXPECT_NEAR(y[j], j * 0.25f - 1.0f, 1e-6) << j;
    EXPECT_NEAR(y[j + 16], (15 - j) * 0.25f - 1.0f, 1e-6) << j + 16;
  }
}

void ExpectErrorContaining(const std::function<void()>& fn, const std::string& text) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing '" << text << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

TEST(MatMul, ErrorsNameTheProblem) {
  ThreadPool pool(1);
  std::vector<uint8_t> data(4096);
  std::vector<float> x(64), y(64);
  ExpectErrorContaining([&] { MakeWeightMatrix(TensorType::kIQ2_XXS, data.data(), 2, 256, "blk.0.ffn_up"); },
                        "IQ2_XXS");
  ExpectErrorContaining([&] { MakeWeightMatrix(TensorType::kQ4_K, data.data(), 2, 288, "w"); },
                        "multiple of 256");
  ExpectErrorContaining([&] { MakeWeightMatrix(TensorType::kQ4_0, data.data(), 2, 48, "w"); },
                        "multiple of 32");
  ExpectErrorContaining([&] { MakeWeightMatrix(TensorType::kQ4_0, nullptr, 2, 32, "w"); }, "null");

  WeightMatrix w;  // built by hand, bypassing MakeWeightMatrix's checks
  w.type = TensorType::kIQ2_XXS;
  w.data = data.data();
  w.rows = 2;
  w.cols = 32;
  w.row_bytes = 22;
  ExpectErrorContaining([&] { MatMul(w, x.data(), 1, 32, y.data(), 2, pool); }, "IQ2_XXS");
  w.type = TensorType::kQ8_0;
  w.cols = 40;
  ExpectErrorContaining([&] { MatMul(w, x.data(), 1, 40, y.data(), 2, pool); }, "multiple of 32");
  w.cols = 32;
  w.row_bytes = 34;
  w.data = nullptr;
  ExpectErrorContaining([&] { MatMul(w, x.data(), 1, 32, y.data(), 2, pool); }, "null");
  w.data = data.data();
  ExpectErrorContaining([&] { MatMul(w, nullptr, 1, 32, y.data(), 2, pool); }, "x is null");
  ExpectErrorContaining([&] { MatMul(w, x.data(), 1, 16, y.data(), 2, pool); }, "ldx");
  ExpectErrorContaining([&] { MatMul(w, x.data(), 1, 32, y.data(), 1, pool); }, "ldy");
  w.row_bytes = 36;
  ExpectErrorContaining([&] { MatMul(w, x.data(), 1, 32, y.data(), 2, pool); }, "row_bytes");
  ExpectErrorContaining([&] { QuantizeRowsQ8(x.data(), 1, 32, 33, nullptr, nullptr, nullptr); }, "cols");
}

TEST(MatMul, ThreadCountDoesNotChangeBits) {
  ThreadPool pool(2);
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (TensorType type : kAllTypes) {
    for (int64_t n : {1, 5, 70}) {
      // Big enough that MatMul wakes the second thread (it stays on one for tiny products).
      const int64_t rows = 4100, cols = 576;
      const std::vector<uint8_t> data = RandomWeights(type, rows, cols, rng);
      const WeightMatrix w = MakeWeightMatrix(type, data.data(), rows, cols, "w");
      std::vector<float> x(n * cols), y1(n * rows), y2(n * rows);
      for (float& v : x) v = normal(rng);
      MatMul(w, x.data(), n, cols, y1.data(), rows, pool, 1);
      MatMul(w, x.data(), n, cols, y2.data(), rows, pool, 2);
      EXPECT_EQ(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)), 0)
          << gguf::TensorTypeName(type) << " n=" << n;
    }
  }
}

}  // namespace
}  // namespace attn
