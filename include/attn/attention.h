// Exact attention: out = softmax(Q K^T * scale + mask) V, fused (never materializes Sq x Sk).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "attn/tensor.h"

namespace attn {

// Where a causal mask is anchored when seq_q != seq_k.
//  kBottomRight (FlashAttention >= 2.1, what a KV cache needs): query i sees keys j <= i + Sk - Sq.
//  kTopLeft (PyTorch SDPA is_causal, tril(0)): query i sees keys j <= i.
enum class CausalAlign : uint8_t { kBottomRight, kTopLeft };

enum class MaskKind : uint8_t { kNone, kBool, kAdditive };

// An explicit mask broadcastable to [batch, n_heads, seq_q, seq_k]: shape entries are either the
// full size or 1 (stride ignored then). kBool: nonzero uint8 = attend. kAdditive: float32 added to
// the scaled (and soft-capped) scores; -inf excludes a key.
struct MaskView {
  MaskKind kind = MaskKind::kNone;
  const void* data = nullptr;
  int64_t shape[4] = {1, 1, 1, 1};   // [batch, n_heads, seq_q, seq_k]
  int64_t stride[4] = {0, 0, 0, 0};  // in elements
};

struct AttentionOptions {
  std::optional<float> scale;  // default 1/sqrt(head_dim)
  bool causal = false;
  CausalAlign causal_align = CausalAlign::kBottomRight;
  // Sliding window (FlashAttention window_size): query i sees keys in
  // [i + off - left, i + off + right], off = Sk_eff - Sq (bottom-right) or 0 (top-left); -1 = unbounded.
  int64_t window_left = -1;
  int64_t window_right = -1;
  // Per-sequence number of valid keys (padding / varlen), length = batch; Sk_eff = kv_lens[b].
  std::vector<int64_t> kv_lens;
  MaskView mask;
  float softcap = 0.0f;  // scores = softcap * tanh(scores / softcap) when > 0
  // Optional learned attention sinks (gpt-oss), float32 [n_heads], natural-log units, not scaled:
  // query head h's softmax gets one more logit sinks[h] that carries no value, so
  //   p_j = exp(s_j) / (exp(sinks[h]) + sum_k exp(s_k)),  out = sum_j p_j v_j
  // and the row may give weight to nothing (lse includes the sink's term). -inf = no sink for that
  // head; NaN and +inf are rejected. A row with every key excluded gets out = 0 and lse = sinks[h].
  const float* sinks = nullptr;
  // Backward only (AttentionBackward): when not null, receives dL/dsinks, float32 [n_heads],
  // summed over batch and query rows (overwritten, not accumulated). Needs `sinks`.
  float* sinks_grad = nullptr;
  // Optional output: natural-log LSE of each row, contiguous float32 [batch, n_heads, seq_q].
  // A row with every key excluded gets out = 0 and lse = -inf (never NaN).
  float* lse = nullptr;
  // Optional output: the entropy -sum_j p_j ln p_j of each row's attention distribution (nats; with
  // sinks, the sink's probability is one more outcome),
  // contiguous float32 [batch, n_heads, seq_q], accumulated inside the fused kernel alongside the
  // online softmax (the pattern is never materialized). A row with every key excluded gets 0.
  // Requesting it runs the prefill kernel without key splits.
  float* entropy = nullptr;
  int threads = 0;  // 0 = every core
};

// q: [B, Sq, Hq, D]; k, v: [B, Sk, Hkv, D]; out: [B, Sq, Hq, D] (logical axes, any strides).
// Hq % Hkv == 0; query head h reads KV head h / (Hq / Hkv). dtypes f32, f16, bf16: all equal, or
// f32 q and out over f16 or bf16 k and v (a half-precision KV cache); accumulation in f32. Throws
// attn::Error naming the argument on invalid input.
void Attention(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
               const AttentionOptions& options = {});

// The readable scalar reference (float64 accumulation, or the input dtype when
// `round_to_dtype`: every intermediate rounded to the input dtype, the "naive" computation of
// FlashAttention's tolerance rule). Same arguments and semantics as Attention; single-threaded.
// lse64 [B, Hq, Sq] and out64 [B, Sq, Hq, D] (contiguous), when given, receive unrounded copies.
void AttentionReference(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        const AttentionOptions& options = {}, bool round_to_dtype = false,
                        double* lse64 = nullptr, double* out64 = nullptr);

// SIMD targets compiled into this build and supported by this CPU, best first ("AVX3_BF16",
// "AVX3", "AVX2", "SSE4", "EMU128").
std::vector<std::string> SimdTargets();
// Restricts dispatch to one target by name (for tests and benchmarks); empty = best available.
// Throws attn::Error for an unknown or unsupported name.
void SetSimdTarget(const std::string& name);
// The target the next call will use.
std::string CurrentSimdTarget();

// ---- Backward pass (training): gradients of a loss L through Attention ----
//
// Given dout = dL/dout, computes dq = dL/dq, dk = dL/dk, dv = dL/dv for the same options as the
// forward (scale, causal either alignment, window, GQA/MQA, kv_lens, softcap, explicit masks).
// q, k, v: the forward's inputs; out: its output; lse: its natural-log LSE, contiguous float32
// [B, Hq, Sq] (AttentionOptions::lse of the forward call). dout, dq: like q/out; dk, dv: like k/v
// (logical axes [B, S, H, D], any strides); every tensor has q's dtype (f32, f16, bf16), math in
// f32. With P = exp(S - lse) recomputed per tile (S the scaled, capped, masked scores):
//   D_i = sum_d dout_i * out_i,  dS = P * (dout V^T - D),  dv = P^T dout,
//   dk = scale * dS^T q,  dq = scale * dS k       (dS times 1 - tanh^2 under softcap)
// dk and dv of a KV head sum over its query heads. Rows with lse = -inf (no visible key)
// contribute nothing; keys no query sees get 0. Results are bit-identical for every thread count
// (two passes, no atomics: dk, dv per key tile, then dq per query tile). options.lse and
// options.entropy are ignored. Throws attn::Error naming the argument on invalid input.
void AttentionBackward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                       const float* lse, const TensorView& dout, const TensorView& dq, const TensorView& dk,
                       const TensorView& dv, const AttentionOptions& options = {});

// The readable scalar reference of the backward pass: recomputes the forward row by row
// (softmax with its own max and sum, out), then the textbook gradients, in float64; or, when
// `round_to_dtype`, with float32 accumulation and every tensor rounded to the input dtype (the
// "naive" computation of FlashAttention's tolerance rule). Needs no out or lse. dq64 [B, Sq, Hq, D]
// and dk64, dv64 [B, Sk, Hkv, D] (contiguous), when given, receive unrounded copies.
void AttentionBackwardReference(const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& dout, const TensorView& dq, const TensorView& dk,
                                const TensorView& dv, const AttentionOptions& options = {},
                                bool round_to_dtype = false, double* dq64 = nullptr, double* dk64 = nullptr,
                                double* dv64 = nullptr);

}  // namespace attn
