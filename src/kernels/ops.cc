#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

namespace attn::ops {

void RmsNorm(const float* x, const float* weight, float* y, int64_t n_rows, int64_t dim, float eps) {
  for (int64_t r = 0; r < n_rows; ++r, x += dim, y += dim) {
    double sum_sq = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
    const float inv_rms = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(dim) + eps));
    for (int64_t i = 0; i < dim; ++i) y[i] = x[i] * inv_rms * weight[i];
  }
}

void LayerNorm(const float* x, const float* weight, const float* bias, float* y, int64_t n_rows, int64_t dim,
               float eps) {
  for (int64_t r = 0; r < n_rows; ++r, x += dim, y += dim) {
    double sum = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum += x[i];
    const double mean = sum / static_cast<double>(dim);
    double var = 0.0;
    for (int64_t i = 0; i < dim; ++i) var += (x[i] - mean) * (x[i] - mean);
    var /= static_cast<double>(dim);
    const float inv_std = static_cast<float>(1.0 / std::sqrt(var + eps));
    const float m = static_cast<float>(mean);
    for (int64_t i = 0; i < dim; ++i)
      y[i] = (x[i] - m) * inv_std * weight[i] + (bias != nullptr ? bias[i] : 0.0f);
  }
}

void RopeAngles(int64_t n_rows, int64_t rope_dim, int64_t pos0, float base, float freq_scale,
                const float* factors, float* cos_out, float* sin_out, float magnitude) {
  const int64_t half = rope_dim / 2;
  for (int64_t r = 0; r < n_rows; ++r) {
    const double pos = static_cast<double>(pos0 + r) * freq_scale;
    for (int64_t i = 0; i < half; ++i) {
      double theta = pos * std::pow(static_cast<double>(base), -2.0 * static_cast<double>(i) / rope_dim);
      if (factors != nullptr) theta /= factors[i];
      cos_out[r * half + i] = static_cast<float>(std::cos(theta)) * magnitude;
      sin_out[r * half + i] = static_cast<float>(std::sin(theta)) * magnitude;
    }
  }
}

void YarnFactors(int64_t rope_dim, float base, float freq_scale, int64_t orig_context, float beta_fast,
                 float beta_slow, float* factors) {
  // The pair index at which a pair turns `rotations` times over the original context.
  const auto pair_of = [&](double rotations) {
    return static_cast<double>(rope_dim) *
           std::log(static_cast<double>(orig_context) / (rotations * 2.0 * std::numbers::pi)) /
           (2.0 * std::log(static_cast<double>(base)));
  };
  const double low = std::max(0.0, std::floor(pair_of(beta_fast)));
  const double high = std::min(static_cast<double>(rope_dim - 1), std::ceil(pair_of(beta_slow)));
  for (int64_t i = 0; i < rope_dim / 2; ++i) {
    const double ramp = (static_cast<double>(i) - low) / std::max(0.001, high - low);
    const double original = 1.0 - std::clamp(ramp, 0.0, 1.0);  // the original angle's share
    factors[i] = static_cast<float>(freq_scale / (freq_scale * (1.0 - original) + original));
  }
}

void ApplyRope(float* x, int64_t n_rows, int64_t n_heads, int64_t head_dim, int64_t rope_dim,
               const float* cos_t, const float* sin_t, RopeStyle style) {
  const int64_t half = rope_dim / 2;
  for (int64_t r = 0; r < n_rows; ++r) {
    float* row = x + r * n_heads * head_dim;
    const float* c = cos_t + r * half;
    const float* s = sin_t + r * half;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = row + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const int64_t a = style == RopeStyle::kNormal ? 2 * i : i;
        const int64_t b = style == RopeStyle::kNormal ? 2 * i + 1 : i + half;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * c[i] - x1 * s[i];
        v[b] = x0 * s[i] + x1 * c[i];
      }
    }
  }
}

void SwiGlu(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void SwiGluOai(float* gate, const float* up, int64_t n, float alpha, float limit) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = std::min(gate[i], limit), u = std::clamp(up[i], -limit, limit);
    gate[i] = g / (1.0f + std::exp(-alpha * g)) * (u + 1.0f);
  }
}

void GegluTanh(float* gate, const float* up, int64_t n) {
  GeluTanh(gate, n);
  for (int64_t i = 0; i < n; ++i) gate[i] *= up[i];
}

void GeluTanh(float* x, int64_t n) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
  }
}

void AddBias(float* y, const float* bias, int64_t n_rows, int64_t dim) {
  for (int64_t r = 0; r < n_rows; ++r, y += dim) {
    for (int64_t i = 0; i < dim; ++i) y[i] += bias[i];
  }
}

void Add(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void Scale(float* x, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

}  // namespace attn::ops
