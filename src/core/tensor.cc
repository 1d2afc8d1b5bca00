#include "attn/tensor.h"

#include <cstring>
#include <sstream>

#include "attn/error.h"

namespace attn {

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "float32";
    case DType::kF16:
      return "float16";
    case DType::kBF16:
      return "bfloat16";
    case DType::kQ8_0:
      return "q8_0";
  }
  return "unknown";
}

size_t DTypeSize(DType dtype) { return dtype == DType::kF32 ? 4 : dtype == DType::kQ8_0 ? 1 : 2; }

TensorView TensorView::Contiguous(void* data, DType dtype, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.shape[0] = d0, t.shape[1] = d1, t.shape[2] = d2, t.shape[3] = d3;
  t.stride[3] = 1;
  t.stride[2] = d3;
  t.stride[1] = d2 * d3;
  t.stride[0] = d1 * d2 * d3;
  return t;
}

TensorView TensorView::SwapAxes12() const {
  TensorView t = *this;
  std::swap(t.shape[1], t.shape[2]);
  std::swap(t.stride[1], t.stride[2]);
  return t;
}

std::string TensorView::ShapeString() const {
  std::ostringstream s;
  s << "[" << shape[0] << ", " << shape[1] << ", " << shape[2] << ", " << shape[3] << "]";
  return s.str();
}

TensorView TensorView::AsFloat32(std::vector<float>* storage) const {
  if (dtype == DType::kF32) return *this;
  if (dtype == DType::kQ8_0)
    throw Error("AsFloat32: a q8_0 view has no scales (KVCache::KeysF32 widens a q8_0 cache)");
  // The same strides over a float32 buffer, so the copy keeps the view's memory order (a KV cache's
  // rows of one head stay adjacent). Strides of views are non-negative here.
  int64_t extent = 1;
  for (int i = 0; i < 4; ++i) {
    if (shape[i] == 0) return Contiguous(nullptr, DType::kF32, shape[0], shape[1], shape[2], shape[3]);
    extent += (shape[i] - 1) * stride[i];
  }
  storage->assign(static_cast<size_t>(extent), 0.0f);
  TensorView t = *this;
  t.dtype = DType::kF32;
  t.data = storage->data();
  const auto* src = static_cast<const uint16_t*>(data);
  for (int64_t a = 0; a < shape[0]; ++a)
    for (int64_t b = 0; b < shape[1]; ++b)
      for (int64_t c = 0; c < shape[2]; ++c)
        for (int64_t d = 0; d < shape[3]; ++d) {
          const int64_t o = a * stride[0] + b * stride[1] + c * stride[2] + d * stride[3];
          (*storage)[static_cast<size_t>(o)] =
              dtype == DType::kF16 ? HalfToFloat(src[o]) : BF16ToFloat(src[o]);
        }
  return t;
}

float HalfToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      int e = -1;
      do {
        mant <<= 1;
        ++e;
      } while ((mant & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 112) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {                                               // subnormal or zero in half
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);
    uint32_t exp = abs >> 23;
    uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - exp;  // 14 + (113 - exp) - 1
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t bits = abs - 0x38000000u;  // rebias exponent 127 -> 15
  uint32_t half = bits >> 13;
  uint32_t rem = bits & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) ++half;
  return static_cast<uint16_t>(sign | half);
}

}  // namespace attn
