// Element access and rounding shared by the readable scalar references of the forward
// (reference.cc) and backward (reference_bwd.cc) passes.
#pragma once

#include <cstdint>

#include "attn/tensor.h"

namespace attn::reference {

inline double Load(const void* base, DType dtype, int64_t offset) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(base)[offset];
    case DType::kF16:
      return HalfToFloat(static_cast<const uint16_t*>(base)[offset]);
    case DType::kBF16:
      return BF16ToFloat(static_cast<const uint16_t*>(base)[offset]);
    case DType::kQ8_0:  // never a tensor (MakeParams rejects it)
      break;
  }
  return 0.0;
}

inline void Store(void* base, DType dtype, int64_t offset, double x) {
  switch (dtype) {
    case DType::kF32:
      static_cast<float*>(base)[offset] = static_cast<float>(x);
      break;
    case DType::kF16:
      static_cast<uint16_t*>(base)[offset] = FloatToHalf(static_cast<float>(x));
      break;
    case DType::kBF16:
      static_cast<uint16_t*>(base)[offset] = FloatToBF16(static_cast<float>(x));
      break;
    case DType::kQ8_0:  // never a tensor (MakeParams rejects it)
      break;
  }
}

// Rounding of an intermediate: none for the float64 reference; for the "naive" computation,
// accumulations run in float32 and each materialized tensor is rounded to the input dtype.
struct Rounding {
  bool naive;
  DType dtype;
  double Acc(double x) const { return naive ? static_cast<float>(x) : x; }
  double Tensor(double x) const {
    if (!naive) return x;
    switch (dtype) {
      case DType::kF32:
        return static_cast<float>(x);
      case DType::kF16:
        return HalfToFloat(FloatToHalf(static_cast<float>(x)));
      case DType::kBF16:
        return BF16ToFloat(FloatToBF16(static_cast<float>(x)));
      case DType::kQ8_0:  // never a tensor (MakeParams rejects it)
        break;
    }
    return x;
  }
};

}  // namespace attn::reference
