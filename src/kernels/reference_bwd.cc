// The scalar reference of the backward pass: the textbook gradients of attention, one
// (batch, query head) at a time, recomputing the forward. Kept for reading and for the tests.
//
// Forward, for query row i (as in reference.cc):
//   x[j]   = scale * (q_i . k_j)                               (1. scaled dot products)
//   s[j]   = softcap * tanh(x[j] / softcap)  (or x[j])         (2. softcap)
//   s[j]  += additive_mask;  s[j] = -inf where excluded       (3. masks)
//   p[j]   = exp(s[j] - lse_i),  lse_i = log sum_j exp(s[j])  (4. softmax; a sink adds
//                                                                exp(sink) inside the log)
//   out_i  = sum_j p[j] v_j                                    (5. weighted sum)
// Backward, given dout_i = dL/dout_i:
//   dv_j  += p[j] dout_i                                       (6. through the weighted sum)
//   dp[j]  = dout_i . v_j
//   D_i    = dout_i . out_i  (= sum_j p[j] dp[j])              (7. through the softmax:
//   ds[j]  = p[j] (dp[j] - D_i)                                     ds = dL/ds)
//   dx[j]  = ds[j] (1 - tanh^2(x[j] / softcap))  (or ds[j])    (8. through the softcap)
//   dq_i   = scale * sum_j dx[j] k_j                           (9. through the dot products)
//   dk_j  += scale * dx[j] q_i
//   dsink -= p_sink D_i,  p_sink = exp(sink - lse_i)          (10. the sink's logit)
// dk and dv of KV head kvh accumulate over the query heads h with h / (Hq / Hkv) == kvh.
#include <cmath>
#include <limits>
#include <vector>

#include "attn/attention.h"
#include "kernels/attention_bwd_params.h"
#include "kernels/reference_util.h"

namespace attn {
namespace {

using reference::Load;
using reference::Rounding;
using reference::Store;

// A logical [B, S, H, D] tensor read through its strides.
struct Strided {
  const void* data;
  DType dtype;
  const int64_t* stride;
  double operator()(int64_t b, int64_t s, int64_t h, int64_t d) const {
    return Load(data, dtype, b * stride[0] + s * stride[1] + h * stride[2] + d * stride[3]);
  }
};

}  // namespace

void AttentionBackwardReference(const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& dout, const TensorView& dq, const TensorView& dk,
                                const TensorView& dv, const AttentionOptions& options, bool round_to_dtype,
                                double* dq64, double* dk64, double* dv64) {
  // The fused kernel's argument checks; dout stands in for out (same shape), and the lse pointer
  // is only checked for null: the reference recomputes the forward and reads neither.
  const float unused_lse = 0.0f;
  const kernels::AttentionParams p =
      kernels::MakeBackwardParams(q, k, v, dout, &unused_lse, dout, dq, dk, dv, options).fwd;
  const Rounding r{round_to_dtype, p.dtype};
  const double inf = std::numeric_limits<double>::infinity();
  const int64_t B = p.batch, Sq = p.seq_q, Sk = p.seq_k, Hq = p.n_heads, Hkv = p.n_kv_heads, D = p.head_dim;
  const Strided Q{q.data, p.dtype, q.stride}, K{k.data, p.dtype, k.stride}, V{v.data, p.dtype, v.stride},
      dO{dout.data, p.dtype, dout.stride};

  // dk, dv accumulate over query heads and rows: [B, Sk, Hkv, D] in float64 (or rounded).
  std::vector<double> dk_acc(B * Sk * Hkv * D, 0.0), dv_acc(B * Sk * Hkv * D, 0.0);
  auto kv_index = [&](int64_t b, int64_t j, int64_t kvh, int64_t d) {
    return ((b * Sk + j) * Hkv + kvh) * D + d;
  };
  std::vector<double> x(Sk), s(Sk), prob(Sk), dp(Sk), out(D), dq_row(D), dsink(Hq, 0.0);

  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t kvh = h / p.group;
      for (int64_t i = 0; i < Sq; ++i) {
        int64_t lo, hi;
        p.KeyRange(b, i, &lo, &hi);
        // 1.-3. scores
        double row_max = -inf;
        for (int64_t j = 0; j < Sk; ++j) {
          double dot = 0.0;
          for (int64_t d = 0; d < D; ++d) dot = r.Acc(dot + Q(b, i, h, d) * K(b, j, kvh, d));
          x[j] = r.Tensor(r.Tensor(dot) * p.scale);
          s[j] = p.softcap > 0.0f ? r.Tensor(p.softcap * std::tanh(x[j] / p.softcap)) : x[j];
          bool visible = j >= lo && j <= hi;
          if (p.mask_kind == MaskKind::kBool) {
            visible = visible && static_cast<const uint8_t*>(p.mask)[p.MaskOffset(b, h, i, j)] != 0;
          } else if (p.mask_kind == MaskKind::kAdditive) {
            s[j] = r.Tensor(s[j] + static_cast<const float*>(p.mask)[p.MaskOffset(b, h, i, j)]);
          }
          if (!visible) s[j] = -inf;
          row_max = std::max(row_max, s[j]);
        }
        // 4. softmax; a row with no visible key has p = 0 and passes no gradient
        const double sink = p.sinks ? p.sinks[h] : -inf;
        row_max = std::max(row_max, sink);
        double sum = 0.0;
        for (int64_t j = 0; j < Sk; ++j) {
          prob[j] = row_max > -inf ? r.Acc(std::exp(s[j] - row_max)) : 0.0;
          sum = r.Acc(sum + prob[j]);
        }
        const double p_sink_unnormalized = sink > -inf ? r.Acc(std::exp(sink - row_max)) : 0.0;
        sum = r.Acc(sum + p_sink_unnormalized);
        for (int64_t j = 0; j < Sk; ++j) prob[j] = sum > 0.0 ? r.Tensor(prob[j] / sum) : 0.0;
        // 5. out_i
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0.0;
          for (int64_t j = 0; j < Sk; ++j) acc = r.Acc(acc + prob[j] * V(b, j, kvh, d));
          out[d] = r.Tensor(acc);
        }
        // 6. dv_j += p[j] dout_i;  dp[j] = dout_i . v_j
        for (int64_t j = 0; j < Sk; ++j) {
          double dot = 0.0;
          for (int64_t d = 0; d < D; ++d) {
            dot = r.Acc(dot + dO(b, i, h, d) * V(b, j, kvh, d));
            if (prob[j] != 0.0) {
              double& acc = dv_acc[kv_index(b, j, kvh, d)];
              acc = r.Acc(acc + prob[j] * dO(b, i, h, d));
            }
          }
          dp[j] = r.Tensor(dot);
        }
        // 7. D_i = dout_i . out_i;  ds = p (dp - D_i)   8. softcap: dx = ds (1 - tanh^2)
        double d_i = 0.0;
        for (int64_t d = 0; d < D; ++d) d_i = r.Acc(d_i + dO(b, i, h, d) * out[d]);
        // 10. the sink: dL/dsink = -p_sink D_i (out moves toward 0 as the sink grows)
        if (sink > -inf) dsink[h] -= p_sink_unnormalized / sum * d_i;
        for (int64_t j = 0; j < Sk; ++j) {
          double ds = r.Tensor(prob[j] * (dp[j] - d_i));
          if (p.softcap > 0.0f) {
            const double t = std::tanh(x[j] / p.softcap);
            ds = r.Tensor(ds * (1.0 - t * t));
          }
          x[j] = ds;  // x now holds dx
        }
        // 9. dq_i = scale sum_j dx[j] k_j;  dk_j += scale dx[j] q_i
        for (int64_t d = 0; d < D; ++d) dq_row[d] = 0.0;
        for (int64_t j = 0; j < Sk; ++j) {
          if (x[j] == 0.0) continue;
          for (int64_t d = 0; d < D; ++d) {
            dq_row[d] = r.Acc(dq_row[d] + x[j] * K(b, j, kvh, d));
            double& acc = dk_acc[kv_index(b, j, kvh, d)];
            acc = r.Acc(acc + r.Tensor(x[j] * p.scale) * Q(b, i, h, d));
          }
        }
        for (int64_t d = 0; d < D; ++d) {
          const double g = r.Acc(dq_row[d] * p.scale);
          Store(dq.data, p.dtype, b * dq.stride[0] + i * dq.stride[1] + h * dq.stride[2] + d * dq.stride[3],
                g);
          if (dq64) dq64[((b * Sq + i) * Hq + h) * D + d] = g;
        }
      }
    }
  }
  if (options.sinks_grad)
    for (int64_t h = 0; h < Hq; ++h) options.sinks_grad[h] = static_cast<float>(dsink[h]);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < Sk; ++j)
      for (int64_t kvh = 0; kvh < Hkv; ++kvh)
        for (int64_t d = 0; d < D; ++d) {
          const int64_t idx = kv_index(b, j, kvh, d);
          Store(dk.data, p.dtype, b * dk.stride[0] + j * dk.stride[1] + kvh * dk.stride[2] + d * dk.stride[3],
                dk_acc[idx]);
          Store(dv.data, p.dtype, b * dv.stride[0] + j * dv.stride[1] + kvh * dv.stride[2] + d * dv.stride[3],
                dv_acc[idx]);
          if (dk64) dk64[idx] = dk_acc[idx];
          if (dv64) dv64[idx] = dv_acc[idx];
        }
}

}  // namespace attn
