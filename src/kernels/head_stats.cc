// SumKeyWeights (kernels/head_stats.h), compiled for every SIMD target by Highway.
#include "kernels/head_stats.h"

#include <cmath>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/head_stats.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace attn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

double SumKeyWeightsImpl(const float* q, const float* k, int64_t k_stride, int64_t dim, const int64_t* keys,
                         int64_t n_keys, int64_t offset, float scale, float lse) {
  const hn::ScalableTag<float> d;
  const int64_t N = hn::Lanes(d), body = dim / N * N;
  auto weight = [&](float dot) { return static_cast<double>(std::exp(dot * scale - lse)); };
  auto tail = [&](const float* kr) {
    float s = 0.0f;
    for (int64_t x = body; x < dim; ++x) s += q[x] * kr[x];
    return s;
  };
  double total = 0.0;
  int64_t i = 0;
  for (; i + 4 <= n_keys; i += 4) {
    const float* k0 = k + (keys[i] + offset) * k_stride;
    const float* k1 = k + (keys[i + 1] + offset) * k_stride;
    const float* k2 = k + (keys[i + 2] + offset) * k_stride;
    const float* k3 = k + (keys[i + 3] + offset) * k_stride;
    auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
    for (int64_t x = 0; x < body; x += N) {
      const auto qv = hn::LoadU(d, q + x);
      a0 = hn::MulAdd(qv, hn::LoadU(d, k0 + x), a0);
      a1 = hn::MulAdd(qv, hn::LoadU(d, k1 + x), a1);
      a2 = hn::MulAdd(qv, hn::LoadU(d, k2 + x), a2);
      a3 = hn::MulAdd(qv, hn::LoadU(d, k3 + x), a3);
    }
    total += weight(hn::GetLane(hn::SumOfLanes(d, a0)) + tail(k0));
    total += weight(hn::GetLane(hn::SumOfLanes(d, a1)) + tail(k1));
    total += weight(hn::GetLane(hn::SumOfLanes(d, a2)) + tail(k2));
    total += weight(hn::GetLane(hn::SumOfLanes(d, a3)) + tail(k3));
  }
  for (; i < n_keys; ++i) {
    const float* kr = k + (keys[i] + offset) * k_stride;
    auto a = hn::Zero(d);
    for (int64_t x = 0; x < body; x += N) a = hn::MulAdd(hn::LoadU(d, q + x), hn::LoadU(d, kr + x), a);
    total += weight(hn::GetLane(hn::SumOfLanes(d, a)) + tail(kr));
  }
  return total;
}

}  // namespace attn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attn::kernels {
HWY_EXPORT(SumKeyWeightsImpl);

double SumKeyWeights(const float* q, const float* k, int64_t k_stride, int64_t dim, const int64_t* keys,
                     int64_t n_keys, int64_t offset, float scale, float lse) {
  return HWY_DYNAMIC_DISPATCH(SumKeyWeightsImpl)(q, k, k_stride, dim, keys, n_keys, offset, scale, lse);
}
}  // namespace attn::kernels
#endif
