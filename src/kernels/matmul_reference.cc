// Block decoding and the scalar reference product (see matmul.h for the formats).
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "attn/error.h"
#include "attn/tensor.h"
#include "kernels/matmul.h"

namespace attn {
namespace kernels {
bool DecodeRow(gguf::TensorType type, const uint8_t* src, float* dst, int64_t n);  // matmul.cc
}  // namespace kernels
namespace {

constexpr int64_t kQK = 32;  // values per quantized block

uint16_t ReadU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

}  // namespace

// Block sizes come from the GGUF reader's table of formats (gguf::Layout).
int64_t BlockSize(TensorType type) {
  return IsSupportedWeightType(type) ? static_cast<int64_t>(gguf::Layout(type).elements) : 1;
}

bool IsSupportedWeightType(TensorType type) {
  switch (type) {
    case TensorType::kF32:
    case TensorType::kF16:
    case TensorType::kBF16:
    case TensorType::kQ4_0:
    case TensorType::kQ4_1:
    case TensorType::kQ8_0:
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
    case TensorType::kQ5_0:
    case TensorType::kQ5_1:
    case TensorType::kQ2_K:
    case TensorType::kQ3_K:
    case TensorType::kIQ4_NL:
    case TensorType::kIQ4_XS:
    case TensorType::kMXFP4:
      return true;
    default:
      return false;
  }
}

size_t RowBytes(TensorType type, int64_t cols) {
  if (!IsSupportedWeightType(type)) {
    throw Error(std::string("weight type ") + gguf::TensorTypeName(type) + " is not supported (" +
                    kSupportedWeightTypes + " are)",
                Error::Kind::kType);
  }
  if (cols <= 0 || cols % BlockSize(type) != 0) {
    throw Error("weight row of " + std::to_string(cols) + " values is not a positive multiple of " +
                std::to_string(BlockSize(type)) + " (the block size of " + gguf::TensorTypeName(type) + ")");
  }
  const gguf::BlockLayout layout = gguf::Layout(type);
  return static_cast<size_t>(cols) / layout.elements * layout.bytes;
}

WeightMatrix MakeWeightMatrix(TensorType type, const uint8_t* data, int64_t rows, int64_t cols,
                              const char* what) {
  if (data == nullptr) throw Error(std::string(what) + ": data is null");
  if (rows <= 0) throw Error(std::string(what) + ": rows = " + std::to_string(rows) + " (must be > 0)");
  WeightMatrix w;
  w.type = type;
  w.data = data;
  w.rows = rows;
  w.cols = cols;
  try {
    w.row_bytes = RowBytes(type, cols);
  } catch (const Error& e) {
    throw Error(std::string(what) + ": " + e.what(), e.kind());
  }
  return w;
}

void DequantizeRow(TensorType type, const uint8_t* src, float* dst, int64_t n) {
  switch (type) {
    case TensorType::kF32:
      for (int64_t i = 0; i < n; ++i) {
        float v;
        std::memcpy(&v, src + 4 * i, 4);
        dst[i] = v;
      }
      return;
    case TensorType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(ReadU16(src + 2 * i));
      return;
    case TensorType::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = BF16ToFloat(ReadU16(src + 2 * i));
      return;
    case TensorType::kQ4_0:
      for (int64_t b = 0; b < n / kQK; ++b, src += 18, dst += kQK) {
        const float d = HalfToFloat(ReadU16(src));
        for (int j = 0; j < 16; ++j) {
          dst[j] = static_cast<float>((src[2 + j] & 0xF) - 8) * d;
          dst[j + 16] = static_cast<float>((src[2 + j] >> 4) - 8) * d;
        }
      }
      return;
    case TensorType::kQ4_1:
      for (int64_t b = 0; b < n / kQK; ++b, src += 20, dst += kQK) {
        const float d = HalfToFloat(ReadU16(src));
        const float m = HalfToFloat(ReadU16(src + 2));
        for (int j = 0; j < 16; ++j) {
          dst[j] = static_cast<float>(src[4 + j] & 0xF) * d + m;
          dst[j + 16] = static_cast<float>(src[4 + j] >> 4) * d + m;
        }
      }
      return;
    case TensorType::kQ8_0:
      for (int64_t b = 0; b < n / kQK; ++b, src += 34, dst += kQK) {
        const float d = HalfToFloat(ReadU16(src));
        for (int j = 0; j < kQK; ++j) dst[j] = static_cast<float>(static_cast<int8_t>(src[2 + j])) * d;
      }
      return;
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
    case TensorType::kQ5_0:
    case TensorType::kQ5_1:
    case TensorType::kQ2_K:
    case TensorType::kQ3_K:
    case TensorType::kIQ4_NL:
    case TensorType::kIQ4_XS:
      kernels::DecodeRow(type, src, dst, n);  // kquants-inl.h, the kernels' own decoding
      return;
    case TensorType::kMXFP4:  // written out here: the e8m0 exponent halved, FP4 E2M1 levels doubled
      for (int64_t b = 0; b < n / kQK; ++b, src += 17, dst += kQK) {
        static constexpr float kFp4[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
        const float scale = std::ldexp(1.0f, static_cast<int>(src[0]) - 127);
        for (int j = 0; j < 32; ++j) {
          const int q = j < 16 ? src[1 + j] & 15 : src[1 + j - 16] >> 4;
          dst[j] = (q & 8 ? -kFp4[q & 7] : kFp4[q & 7]) * scale;
        }
      }
      return;
    default:
      RowBytes(type, n);  // throws the unsupported-type error
  }
}

void MatMulReference(const WeightMatrix& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    // row = dequantized W[r, :]
    DequantizeRow(w.type, w.data + static_cast<size_t>(r) * w.row_bytes, row.data(), w.cols);
    for (int64_t i = 0; i < n; ++i) {
      double acc = 0.0;  // y[i, r] = <x[i, :], W[r, :]>
      for (int64_t c = 0; c < w.cols; ++c) acc += static_cast<double>(x[i * ldx + c]) * row[c];
      y[i * ldy + r] = static_cast<float>(acc);
    }
  }
}

}  // namespace attn
