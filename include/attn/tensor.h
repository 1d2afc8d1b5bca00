// Tensor views: a pointer, a dtype, a shape and strides (in elements). Views never own memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace attn {

// kQ8_0 is a storage type of the KV cache only (KVCache, Session), never a tensor's: blocks of 32
// signed 8-bit values along the head dimension, each with a float16 scale (ggml's Q8_0; llama.cpp's
// `-ctk q8_0 -ctv q8_0`). Attention rejects a view of that dtype.
enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2, kQ8_0 = 3 };

const char* DTypeName(DType dtype);
// Bytes per element (kQ8_0: 1, the 8-bit value; its scales are stored apart).
size_t DTypeSize(DType dtype);

// A view of a 4-D tensor. For attention inputs the logical axes are
// [batch, seq, heads, head_dim]; any strides work (so [B, H, S, D] memory is the
// same data passed with permuted strides, no copy).
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t shape[4] = {0, 0, 0, 0};
  int64_t stride[4] = {0, 0, 0, 0};  // in elements, may be 0 (broadcast) only where documented

  // A contiguous [d0, d1, d2, d3] view.
  static TensorView Contiguous(void* data, DType dtype, int64_t d0, int64_t d1, int64_t d2, int64_t d3);
  // The same memory seen with axes 1 and 2 swapped: turns a [B, H, S, D] view into the
  // logical [B, S, H, D] the API expects.
  TensorView SwapAxes12() const;
  int64_t numel() const { return shape[0] * shape[1] * shape[2] * shape[3]; }
  std::string ShapeString() const;
  // This view when it is float32, else a float32 copy with the same strides (so the same memory
  // order) kept in *storage. Strides must be non-negative.
  TensorView AsFloat32(std::vector<float>* storage) const;
};

// IEEE half and bfloat16 scalar conversions (round to nearest even).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
inline float BF16ToFloat(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}
inline uint16_t FloatToBF16(float f) {
  uint32_t x;
  __builtin_memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // NaN stays NaN
  x += 0x7fffu + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

}  // namespace attn
