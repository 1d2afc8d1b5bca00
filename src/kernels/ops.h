// The small per-token operations of a decoder block: normalization, rotary position embedding,
// activations. Rows are contiguous float32; each call handles `n_rows` rows of `dim` values.
// These are memory-light next to the matrix products, so they are written as plain loops that
// the compiler vectorizes; the formulas are cited beside each.
#pragma once

#include <cstdint>

namespace attn::ops {

// RMSNorm (Zhang & Sennrich 2019): y = x / sqrt(mean(x^2) + eps) * weight.
void RmsNorm(const float* x, const float* weight, float* y, int64_t n_rows, int64_t dim, float eps);

// LayerNorm (Ba et al. 2016): y = (x - mean) / sqrt(var + eps) * weight + bias (bias may be null: none).
void LayerNorm(const float* x, const float* weight, const float* bias, float* y, int64_t n_rows, int64_t dim,
               float eps);

// Which pairs of dimensions a rotary embedding rotates together (REFERENCE.md, RoPE):
//  kNormal: (x[2i], x[2i+1])     -- GGUF llama files (the converter permuted Q and K rows)
//  kNeox:   (x[i], x[i + d/2])   -- GPT-NeoX / Hugging Face order
enum class RopeStyle : uint8_t { kNormal, kNeox };

// The rotation angles of rows at positions pos0 .. pos0 + n_rows - 1: cos/sin [n_rows][rope_dim / 2],
// angle of pair i at position p = p * freq_scale * base^(-2i / rope_dim) / factors[i] (computed in
// double, so long positions keep their precision), both scaled by `magnitude`. freq_scale is 1 / the
// linear scaling factor; factors (may be null: all 1) are per-pair frequency divisors: a file's
// rope_freqs (Llama 3.1), Phi-3's LongRoPE set, or YarnFactors. Computed once per forward pass,
// shared by every layer.
void RopeAngles(int64_t n_rows, int64_t rope_dim, int64_t pos0, float base, float freq_scale,
                const float* factors, float* cos_out, float* sin_out, float magnitude = 1.0f);

// YaRN (Peng et al. 2023) as llama.cpp and transformers compute it, as RopeAngles' divisors on top of
// linear scaling by freq_scale: pair i's angle blends the interpolated one (the linear-scaled angle)
// with the original (extrapolated) one, all original for the fast pairs that turn more than
// beta_fast times over orig_context positions, all interpolated for those turning fewer than
// beta_slow times, a linear ramp between (over pairs floor(low) .. ceil(high) of the correction
// range). factors[i] = freq_scale / (freq_scale (1 - e_i) + e_i), e_i the original's share. The
// magnitude 1 + 0.1 ln(1 / freq_scale) is left to the caller (ModelConfig::rope_attn_factor).
void YarnFactors(int64_t rope_dim, float base, float freq_scale, int64_t orig_context, float beta_fast,
                 float beta_slow, float* factors);

// Rotates the first `rope_dim` dimensions of each head of x [n_rows][n_heads * head_dim] by the
// angles of RopeAngles.
void ApplyRope(float* x, int64_t n_rows, int64_t n_heads, int64_t head_dim, int64_t rope_dim,
               const float* cos_t, const float* sin_t, RopeStyle style);

// SwiGLU (Shazeer 2020): gate[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + e^-g).
void SwiGlu(float* gate, const float* up, int64_t n);

// gpt-oss's clamped SwiGLU (llama.cpp's swiglu_oai): with g = min(gate, limit) and
// u = clamp(up, -limit, limit), gate[i] = g sigmoid(alpha g) (u + 1).
void SwiGluOai(float* gate, const float* up, int64_t n, float alpha, float limit);

// GeGLU with the tanh GELU (Gemma): gate[i] = gelu_tanh(gate[i]) * up[i].
void GegluTanh(float* gate, const float* up, int64_t n);

// GELU, tanh approximation (GPT-2's "gelu_new"):
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
void GeluTanh(float* x, int64_t n);

// y[r][i] += bias[i] for every row.
void AddBias(float* y, const float* bias, int64_t n_rows, int64_t dim);

// y[i] += x[i].
void Add(float* y, const float* x, int64_t n);

// x[i] *= s.
void Scale(float* x, float s, int64_t n);

// log(sum(exp(x))) over n values, the maximum taken out first: float exponentials summed in double
// (the normalizer of a logit row's log-softmax). -inf when every value is -inf, +inf when one is
// +inf, NaN when one is NaN.
double LogSumExp(const float* x, int64_t n);

}  // namespace attn::ops
