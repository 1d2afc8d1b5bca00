// The training ops of train_ops.h. LayerNorm, GELU, cross-entropy and AdamW are Highway SIMD
// (one dispatch per call); tails shorter than a vector go through a zero-padded vector so every
// element takes the same arithmetic. Embeddings are plain loops (additions the compiler
// vectorizes).
#include "train/train_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "train/train_ops.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// The math functions must follow foreach_target.h.
// clang-format off
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
// clang-format on

HWY_BEFORE_NAMESPACE();
namespace attn::train::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
namespace {

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

// Loads count <= Lanes floats (zero past count) / stores the first count lanes.
HWY_INLINE VF LoadPart(DF d, const float* p, int64_t count) {
  HWY_ALIGN float buf[hn::MaxLanes(DF())] = {};
  std::memcpy(buf, p, static_cast<size_t>(count) * sizeof(float));
  return hn::Load(d, buf);
}
HWY_INLINE void StorePart(DF d, VF v, float* p, int64_t count) {
  HWY_ALIGN float buf[hn::MaxLanes(DF())];
  hn::Store(v, d, buf);
  std::memcpy(p, buf, static_cast<size_t>(count) * sizeof(float));
}

// Calls f(i, count) over [0, n) in vector steps; count < Lanes only for the last one.
template <class F>
HWY_INLINE void ForVectors(int64_t n, const F& f) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(DF()));
  int64_t i = 0;
  for (; i + N <= n; i += N) f(i, N);
  if (i < n) f(i, n - i);
}

HWY_INLINE VF Load(DF d, const float* p, int64_t count) {
  return count == static_cast<int64_t>(hn::Lanes(d)) ? hn::LoadU(d, p) : LoadPart(d, p, count);
}
HWY_INLINE void Store(DF d, VF v, float* p, int64_t count) {
  if (count == static_cast<int64_t>(hn::Lanes(d))) {
    hn::StoreU(v, d, p);
  } else {
    StorePart(d, v, p, count);
  }
}

HWY_INLINE float Sum(DF d, VF v) { return hn::GetLane(hn::SumOfLanes(d, v)); }

}  // namespace

void LayerNormForwardImpl(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                          int64_t n, int64_t dim, float eps) {
  const DF d;
  const float inv_dim = 1.0f / static_cast<float>(dim);
  for (int64_t r = 0; r < n; ++r, x += dim, y += dim) {
    VF acc = hn::Zero(d);
    ForVectors(dim, [&](int64_t i, int64_t c) { acc = hn::Add(acc, Load(d, x + i, c)); });
    const float mu = Sum(d, acc) * inv_dim;
    const VF vmu = hn::Set(d, mu);
    acc = hn::Zero(d);
    ForVectors(dim, [&](int64_t i, int64_t c) {
      // Padding lanes hold 0 - mu: mask them out of the variance.
      VF diff = hn::Sub(Load(d, x + i, c), vmu);
      if (c < static_cast<int64_t>(hn::Lanes(d))) diff = hn::IfThenElseZero(hn::FirstN(d, c), diff);
      acc = hn::MulAdd(diff, diff, acc);
    });
    const float rs = 1.0f / std::sqrt(Sum(d, acc) * inv_dim + eps);
    mean[r] = mu, rstd[r] = rs;
    const VF vrs = hn::Set(d, rs);
    ForVectors(dim, [&](int64_t i, int64_t c) {
      const VF xhat = hn::Mul(hn::Sub(Load(d, x + i, c), vmu), vrs);
      Store(d, hn::MulAdd(xhat, Load(d, w + i, c), Load(d, b + i, c)), y + i, c);
    });
  }
}

void LayerNormBackwardImpl(const float* x, const float* w, const float* mean, const float* rstd,
                           const float* dy, float* dx, bool accumulate_dx, float* dw, float* db, int64_t n,
                           int64_t dim) {
  const DF d;
  const float inv_dim = 1.0f / static_cast<float>(dim);
  for (int64_t r = 0; r < n; ++r, x += dim, dy += dim, dx += dim) {
    const VF vmu = hn::Set(d, mean[r]), vrs = hn::Set(d, rstd[r]);
    // Pass 1: sum g and sum g xhat (padding lanes have dy = 0, so g = 0); dw, db.
    VF sg = hn::Zero(d), sgx = hn::Zero(d);
    ForVectors(dim, [&](int64_t i, int64_t c) {
      const VF xhat = hn::Mul(hn::Sub(Load(d, x + i, c), vmu), vrs);
      const VF vdy = Load(d, dy + i, c);
      const VF g = hn::Mul(vdy, Load(d, w + i, c));
      sg = hn::Add(sg, g);
      sgx = hn::MulAdd(g, xhat, sgx);
      Store(d, hn::MulAdd(vdy, xhat, Load(d, dw + i, c)), dw + i, c);
      Store(d, hn::Add(vdy, Load(d, db + i, c)), db + i, c);
    });
    const VF mg = hn::Set(d, Sum(d, sg) * inv_dim), mgx = hn::Set(d, Sum(d, sgx) * inv_dim);
    // Pass 2: dx = rstd (g - mean(g) - xhat mean(g xhat)).
    ForVectors(dim, [&](int64_t i, int64_t c) {
      const VF xhat = hn::Mul(hn::Sub(Load(d, x + i, c), vmu), vrs);
      const VF g = hn::Mul(Load(d, dy + i, c), Load(d, w + i, c));
      VF v = hn::Mul(hn::Sub(hn::Sub(g, mg), hn::Mul(xhat, mgx)), vrs);
      if (accumulate_dx) v = hn::Add(v, Load(d, dx + i, c));
      Store(d, v, dx + i, c);
    });
  }
}

void GeluForwardImpl(const float* x, float* y, int64_t n) {
  const DF d;
  const VF half = hn::Set(d, 0.5f), one = hn::Set(d, 1.0f), k0 = hn::Set(d, kSqrt2OverPi),
           k1 = hn::Set(d, kGeluCubic);
  ForVectors(n, [&](int64_t i, int64_t c) {
    const VF v = Load(d, x + i, c);
    const VF u = hn::Mul(k0, hn::MulAdd(hn::Mul(k1, v), hn::Mul(v, v), v));  // s (x + 0.044715 x^3)
    Store(d, hn::Mul(hn::Mul(half, v), hn::Add(one, hn::Tanh(d, u))), y + i, c);
  });
}

void GeluBackwardImpl(const float* x, const float* dy, float* dx, int64_t n) {
  const DF d;
  const VF half = hn::Set(d, 0.5f), one = hn::Set(d, 1.0f), k0 = hn::Set(d, kSqrt2OverPi),
           k1 = hn::Set(d, kGeluCubic), k3 = hn::Set(d, 3.0f * kGeluCubic);
  ForVectors(n, [&](int64_t i, int64_t c) {
    const VF v = Load(d, x + i, c), v2 = hn::Mul(v, v);
    const VF t = hn::Tanh(d, hn::Mul(k0, hn::MulAdd(hn::Mul(k1, v), v2, v)));
    const VF du = hn::Mul(k0, hn::MulAdd(k3, v2, one));  // du/dx
    const VF sech2 = hn::NegMulAdd(t, t, one);           // 1 - t^2
    const VF grad = hn::Mul(half, hn::MulAdd(hn::Mul(v, sech2), du, hn::Add(one, t)));
    Store(d, hn::Mul(Load(d, dy + i, c), grad), dx + i, c);
  });
}

void CrossEntropyImpl(float* logits, const int32_t* targets, float* loss, int64_t n, int64_t vocab,
                      float grad_scale) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const bool grad = grad_scale > 0.0f;
  for (int64_t r = 0; r < n; ++r, logits += vocab) {
    VF vmax = hn::Set(d, -HUGE_VALF);
    ForVectors(vocab, [&](int64_t i, int64_t c) {
      const VF v = c == N
                       ? hn::LoadU(d, logits + i)
                       : hn::IfThenElse(hn::FirstN(d, c), LoadPart(d, logits + i, c), hn::Set(d, -HUGE_VALF));
      vmax = hn::Max(vmax, v);
    });
    const float mx = hn::GetLane(hn::MaxOfLanes(d, vmax));
    const VF vmx = hn::Set(d, mx);
    const float target_logit = logits[targets[r]];
    VF sum = hn::Zero(d);
    ForVectors(vocab, [&](int64_t i, int64_t c) {
      VF e = hn::Exp(d, hn::Sub(Load(d, logits + i, c), vmx));
      if (c < N) e = hn::IfThenElseZero(hn::FirstN(d, c), e);
      sum = hn::Add(sum, e);
      if (grad) Store(d, e, logits + i, c);
    });
    const float total = Sum(d, sum);
    loss[r] = static_cast<float>(std::log(static_cast<double>(total)) + mx - target_logit);
    if (!grad) continue;
    const VF scale = hn::Set(d, grad_scale / total);
    ForVectors(vocab, [&](int64_t i, int64_t c) {
      Store(d, hn::Mul(Load(d, logits + i, c), scale), logits + i, c);
    });
    logits[targets[r]] -= grad_scale;
  }
}

void AdamWImpl(float* p, const float* g, float* m, float* v, int64_t n, const AdamWArgs& a) {
  const DF d;
  const VF decay = hn::Set(d, a.decay_factor), w1 = hn::Set(d, 1.0f - a.beta1), b2 = hn::Set(d, a.beta2),
           w2 = hn::Set(d, 1.0f - a.beta2), eps = hn::Set(d, a.eps), step = hn::Set(d, a.step_size),
           bc2 = hn::Set(d, a.bc2_sqrt);
  ForVectors(n, [&](int64_t i, int64_t c) {
    const VF vg = Load(d, g + i, c);
    VF vm = Load(d, m + i, c);
    vm = hn::Add(vm, hn::Mul(w1, hn::Sub(vg, vm)));  // torch lerp(m, g, 1 - beta1)
    const VF vv = hn::Add(hn::Mul(Load(d, v + i, c), b2), hn::Mul(w2, hn::Mul(vg, vg)));
    const VF denom = hn::Add(hn::Div(hn::Sqrt(vv), bc2), eps);
    const VF vp = hn::Mul(Load(d, p + i, c), decay);
    Store(d, hn::Sub(vp, hn::Mul(step, hn::Div(vm, denom))), p + i, c);
    Store(d, vm, m + i, c);
    Store(d, vv, v + i, c);
  });
}

}  // namespace attn::train::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attn::train {

HWY_EXPORT(LayerNormForwardImpl);
HWY_EXPORT(LayerNormBackwardImpl);
HWY_EXPORT(GeluForwardImpl);
HWY_EXPORT(GeluBackwardImpl);
HWY_EXPORT(CrossEntropyImpl);
HWY_EXPORT(AdamWImpl);

void LayerNormForward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                      int64_t n, int64_t dim, float eps) {
  HWY_DYNAMIC_DISPATCH(LayerNormForwardImpl)(x, w, b, y, mean, rstd, n, dim, eps);
}

void LayerNormBackward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                       float* dx, bool accumulate_dx, float* dw, float* db, int64_t n, int64_t dim) {
  HWY_DYNAMIC_DISPATCH(LayerNormBackwardImpl)(x, w, mean, rstd, dy, dx, accumulate_dx, dw, db, n, dim);
}

void GeluForward(const float* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(GeluForwardImpl)(x, y, n); }

void GeluBackward(const float* x, const float* dy, float* dx, int64_t n) {
  HWY_DYNAMIC_DISPATCH(GeluBackwardImpl)(x, dy, dx, n);
}

void EmbeddingForward(const int32_t* tokens, const float* wte, const float* wpe, float* out, int64_t r0,
                      int64_t r1, int64_t seq, int64_t dim) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* e = wte + static_cast<int64_t>(tokens[r]) * dim;
    const float* p = wpe + (r % seq) * dim;
    float* o = out + r * dim;
    for (int64_t i = 0; i < dim; ++i) o[i] = e[i] + p[i];
  }
}

void EmbeddingBackwardTokens(const int32_t* tokens, const float* dout, float* dwte, int64_t n, int64_t dim) {
  for (int64_t r = 0; r < n; ++r, dout += dim) {
    float* e = dwte + static_cast<int64_t>(tokens[r]) * dim;
    for (int64_t i = 0; i < dim; ++i) e[i] += dout[i];
  }
}

void EmbeddingBackwardPositions(const float* dout, float* dwpe, int64_t batch, int64_t seq, int64_t t0,
                                int64_t t1, int64_t dim) {
  for (int64_t t = t0; t < t1; ++t) {
    float* p = dwpe + t * dim;
    for (int64_t b = 0; b < batch; ++b) {
      const float* g = dout + (b * seq + t) * dim;
      for (int64_t i = 0; i < dim; ++i) p[i] += g[i];
    }
  }
}

void CrossEntropy(float* logits, const int32_t* targets, float* loss, int64_t n, int64_t vocab,
                  float grad_scale) {
  HWY_DYNAMIC_DISPATCH(CrossEntropyImpl)(logits, targets, loss, n, vocab, grad_scale);
}

void AdamW(float* p, const float* g, float* m, float* v, int64_t n, const AdamWArgs& a) {
  HWY_DYNAMIC_DISPATCH(AdamWImpl)(p, g, m, v, n, a);
}

double SumSquares(const float* g, int64_t n) {
  double acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; ++j) acc[j] += static_cast<double>(g[i + j]) * g[i + j];
  }
  for (; i < n; ++i) acc[0] += static_cast<double>(g[i]) * g[i];
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

}  // namespace attn::train
#endif
