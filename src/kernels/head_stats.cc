// SumKeyWeights (kernels/head_stats.h), compiled for every SIMD target by Highway.
#include "kernels/head_stats.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/head_stats.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
// After highway.h (per target):
#include "hwy/contrib/math/math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// One vector of a key row as float32: float32 as is, f16 / bf16 widened.
template <class D>
HWY_INLINE hn::Vec<D> LoadKey(D d, const float* p) {
  return hn::LoadU(d, p);
}
template <class D, class T>
HWY_INLINE hn::Vec<D> LoadKey(D d, const T* p) {
  return hn::PromoteTo(d, hn::LoadU(hn::Rebind<T, D>(), p));
}
inline float KeyValue(float x) { return x; }
inline float KeyValue(hwy::float16_t x) {
  uint16_t bits;
  std::memcpy(&bits, &x, 2);
  return HalfToFloat(bits);
}
inline float KeyValue(hwy::bfloat16_t x) {
  uint16_t bits;
  std::memcpy(&bits, &x, 2);
  return BF16ToFloat(bits);
}

// Dot products of four (or fewer) keys at a time, then the weights exp(scale * dot - lse) of up to
// kChunk keys in vectors (the scalar exp per key had cost as much as the dot products).
template <class T>
double SumKeyWeightsT(const float* q, const T* k, int64_t k_stride, int64_t dim, const int64_t* keys,
                      int64_t n_keys, int64_t offset, float scale, float lse, float softcap) {
  constexpr int64_t kChunk = 64;
  const hn::ScalableTag<float> d;
  const int64_t N = hn::Lanes(d), body = dim / N * N;
  auto tail = [&](const T* kr) {
    float s = 0.0f;
    for (int64_t x = body; x < dim; ++x) s += q[x] * KeyValue(kr[x]);
    return s;
  };
  HWY_ALIGN float dots[kChunk];
  auto sum = hn::Zero(d);
  for (int64_t c0 = 0; c0 < n_keys; c0 += kChunk) {
    const int64_t cn = std::min(kChunk, n_keys - c0);
    int64_t i = 0;
    for (; i + 4 <= cn; i += 4) {
      const T* k0 = k + (keys[c0 + i] + offset) * k_stride;
      const T* k1 = k + (keys[c0 + i + 1] + offset) * k_stride;
      const T* k2 = k + (keys[c0 + i + 2] + offset) * k_stride;
      const T* k3 = k + (keys[c0 + i + 3] + offset) * k_stride;
      auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
      for (int64_t x = 0; x < body; x += N) {
        const auto qv = hn::LoadU(d, q + x);
        a0 = hn::MulAdd(qv, LoadKey(d, k0 + x), a0);
        a1 = hn::MulAdd(qv, LoadKey(d, k1 + x), a1);
        a2 = hn::MulAdd(qv, LoadKey(d, k2 + x), a2);
        a3 = hn::MulAdd(qv, LoadKey(d, k3 + x), a3);
      }
      dots[i] = hn::GetLane(hn::SumOfLanes(d, a0)) + tail(k0);
      dots[i + 1] = hn::GetLane(hn::SumOfLanes(d, a1)) + tail(k1);
      dots[i + 2] = hn::GetLane(hn::SumOfLanes(d, a2)) + tail(k2);
      dots[i + 3] = hn::GetLane(hn::SumOfLanes(d, a3)) + tail(k3);
    }
    for (; i < cn; ++i) {
      const T* kr = k + (keys[c0 + i] + offset) * k_stride;
      auto a = hn::Zero(d);
      for (int64_t x = 0; x < body; x += N) a = hn::MulAdd(hn::LoadU(d, q + x), LoadKey(d, kr + x), a);
      dots[i] = hn::GetLane(hn::SumOfLanes(d, a)) + tail(kr);
    }
    const auto vs = hn::Set(d, scale), vl = hn::Set(d, lse);
    const auto cap = hn::Set(d, softcap), inv_cap = hn::Set(d, softcap > 0.0f ? 1.0f / softcap : 0.0f);
    for (int64_t j = 0; j < cn; j += N) {
      const auto live = hn::FirstN(d, static_cast<size_t>(cn - j));
      const auto x = hn::IfThenElseZero(live, hn::LoadU(d, dots + j));  // dots past cn are stale
      auto s = hn::Mul(x, vs);
      if (softcap > 0.0f) s = hn::Mul(cap, hn::Tanh(d, hn::Mul(s, inv_cap)));
      sum = hn::Add(sum, hn::IfThenElseZero(live, hn::Exp(d, hn::Sub(s, vl))));
    }
  }
  return static_cast<double>(hn::GetLane(hn::SumOfLanes(d, sum)));
}

double SumKeyWeightsImpl(const float* q, const void* k, DType k_dtype, int64_t k_stride, int64_t dim,
                         const int64_t* keys, int64_t n_keys, int64_t offset, float scale, float lse,
                         float softcap) {
  switch (k_dtype) {
    case DType::kF16:
      return SumKeyWeightsT(q, static_cast<const hwy::float16_t*>(k), k_stride, dim, keys, n_keys, offset,
                            scale, lse, softcap);
    case DType::kBF16:
      return SumKeyWeightsT(q, static_cast<const hwy::bfloat16_t*>(k), k_stride, dim, keys, n_keys, offset,
                            scale, lse, softcap);
    default:
      return SumKeyWeightsT(q, static_cast<const float*>(k), k_stride, dim, keys, n_keys, offset, scale, lse,
                            softcap);
  }
}

}  // namespace attn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attn::kernels {
HWY_EXPORT(SumKeyWeightsImpl);

double SumKeyWeights(const float* q, const void* k, DType k_dtype, int64_t k_stride, int64_t dim,
                     const int64_t* keys, int64_t n_keys, int64_t offset, float scale, float lse,
                     float softcap) {
  return HWY_DYNAMIC_DISPATCH(SumKeyWeightsImpl)(q, k, k_dtype, k_stride, dim, keys, n_keys, offset, scale,
                                                 lse, softcap);
}
}  // namespace attn::kernels
#endif
