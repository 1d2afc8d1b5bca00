// ops::LogSumExp (kernels/ops.h), compiled for every SIMD target by Highway: the exponentials in
// vectors (Highway's Exp, float32, within a few ulp of std::exp), summed in float64 lanes. A row of
// logits takes a few microseconds instead of a scalar std::exp per entry: what log-probabilities,
// perplexity and the logit lens pay per row.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/ops.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/logsumexp.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
// After highway.h (per target):
#include "hwy/contrib/math/math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attn::ops::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The textbook loop, for what the vectors leave out: a non-finite maximum. Any NaN gives NaN; else
// +inf when an entry is +inf, -inf when every entry is.
double LogSumExpScalar(const float* x, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(x[i])) return std::numeric_limits<double>::quiet_NaN();
    mx = std::max(mx, x[i]);
  }
  if (std::isinf(mx)) return static_cast<double>(mx);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(x[i] - mx);
  return static_cast<double>(mx) + std::log(sum);
}

double LogSumExpImpl(const float* x, int64_t n) {
#if HWY_TARGET == HWY_SCALAR
  return LogSumExpScalar(x, n);
#else
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  auto vmax = hn::Set(d, -std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + N <= n; i += N) vmax = hn::Max(vmax, hn::LoadU(d, x + i));
  float mx = hn::GetLane(hn::MaxOfLanes(d, vmax));
  for (int64_t j = i; j < n; ++j) mx = std::max(mx, x[j]);
  if (!std::isfinite(mx)) return LogSumExpScalar(x, n);
  const hn::Half<decltype(d)> dh;
  const hn::Rebind<double, decltype(dh)> dd;
  auto s0 = hn::Zero(dd), s1 = hn::Zero(dd);
  const auto vm = hn::Set(d, mx);
  for (i = 0; i + N <= n; i += N) {
    const auto e = hn::Exp(d, hn::Sub(hn::LoadU(d, x + i), vm));
    s0 = hn::Add(s0, hn::PromoteTo(dd, hn::LowerHalf(dh, e)));
    s1 = hn::Add(s1, hn::PromoteTo(dd, hn::UpperHalf(dh, e)));
  }
  double sum = hn::GetLane(hn::SumOfLanes(dd, hn::Add(s0, s1)));
  for (; i < n; ++i) sum += std::exp(x[i] - mx);
  return static_cast<double>(mx) + std::log(sum);
#endif
}

}  // namespace attn::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attn::ops {
HWY_EXPORT(LogSumExpImpl);
double LogSumExp(const float* x, int64_t n) { return HWY_DYNAMIC_DISPATCH(LogSumExpImpl)(x, n); }
}  // namespace attn::ops
#endif
