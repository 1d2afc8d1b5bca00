// The scalar reference: attention exactly as the textbook writes it, one query row at a time.
// Kept for reading and for the tests; the fused kernels are checked against it.
//
// For one (batch b, query head h, query row i):
//   scores[j]  = sum_d q[i, d] * k[j, d]                      (1. dot products)
//   scores[j] *= scale                                        (2. scale, default 1/sqrt(D))
//   scores[j]  = softcap * tanh(scores[j] / softcap)          (3. softcap, when > 0)
//   scores[j] += additive_mask[b, h, i, j]                    (4. mask: additive, boolean,
//   scores[j]  = -inf if j is excluded                              causal, window, kv_lens)
//   p[j]       = exp(scores[j] - max) / sum_j exp(...)        (5. softmax; all excluded -> p = 0;
//                                                                a sink adds exp(sink - max) to
//                                                                the sum and carries no value)
//   out[i, :]  = sum_j p[j] * v[j, :]                          (6. weighted sum of values)
#include <cmath>
#include <limits>
#include <vector>

#include "attn/attention.h"
#include "kernels/attention_params.h"
#include "kernels/reference_util.h"

namespace attn {

using reference::Load;
using reference::Rounding;
using reference::Store;

void AttentionReference(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        const AttentionOptions& options, bool round_to_dtype, double* lse64, double* out64) {
  const kernels::AttentionParams p = kernels::MakeParams(q, k, v, out, options);
  const Rounding r{round_to_dtype, p.dtype};
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> scores(p.seq_k);

  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t h = 0; h < p.n_heads; ++h) {
      const int64_t kvh = h / p.group;  // GQA: query head h reads KV head h / (Hq / Hkv)
      for (int64_t i = 0; i < p.seq_q; ++i) {
        int64_t lo, hi;
        p.KeyRange(b, i, &lo, &hi);
        const int64_t q_row = b * p.q_stride[0] + i * p.q_stride[1] + h * p.q_stride[2];
        double row_max = -inf;
        for (int64_t j = 0; j < p.seq_k; ++j) {
          // 1. dot product q_i . k_j
          const int64_t k_row = b * p.k_stride[0] + j * p.k_stride[1] + kvh * p.k_stride[2];
          double dot = 0.0;
          for (int64_t d = 0; d < p.head_dim; ++d) {
            dot = r.Acc(dot + Load(p.q, p.dtype, q_row + d * p.q_stride[3]) *
                                  Load(p.k, p.kv_dtype, k_row + d * p.k_stride[3]));
          }
          // 2. scale
          double s = r.Tensor(r.Tensor(dot) * p.scale);
          // 3. softcap
          if (p.softcap > 0.0f) s = r.Tensor(p.softcap * std::tanh(s / p.softcap));
          // 4. masks
          bool visible = j >= lo && j <= hi;
          if (p.mask_kind == MaskKind::kBool) {
            visible = visible && static_cast<const uint8_t*>(p.mask)[p.MaskOffset(b, h, i, j)] != 0;
          } else if (p.mask_kind == MaskKind::kAdditive) {
            s = r.Tensor(s + static_cast<const float*>(p.mask)[p.MaskOffset(b, h, i, j)]);
          }
          scores[j] = visible ? s : -inf;
          row_max = std::max(row_max, scores[j]);
        }
        // 5. softmax (a row with no visible key gives p = 0 everywhere and lse = -inf, or the
        //    sink's logit: the sink takes all the weight)
        const double sink = p.sinks ? p.sinks[h] : -inf;
        const bool any_key = row_max > -inf;
        row_max = std::max(row_max, sink);
        double sum = 0.0;
        if (row_max > -inf) {
          for (int64_t j = 0; j < p.seq_k; ++j) {
            scores[j] = r.Acc(std::exp(scores[j] - row_max));
            sum = r.Acc(sum + scores[j]);
          }
          if (sink > -inf) sum = r.Acc(sum + std::exp(sink - row_max));
        }
        const double lse = row_max > -inf ? row_max + std::log(sum) : -inf;
        if (p.lse) p.lse[(b * p.n_heads + h) * p.seq_q + i] = static_cast<float>(lse);
        if (lse64) lse64[(b * p.n_heads + h) * p.seq_q + i] = lse;
        for (int64_t j = 0; j < p.seq_k; ++j) scores[j] = any_key ? r.Tensor(scores[j] / sum) : 0.0;
        if (p.entropy) {
          double entropy = 0.0;  // -sum p ln p, the sink's p included
          for (int64_t j = 0; j < p.seq_k; ++j)
            if (scores[j] > 0.0) entropy -= scores[j] * std::log(scores[j]);
          const double p_sink = any_key && sink > -inf ? std::exp(sink - row_max) / sum : 0.0;
          if (p_sink > 0.0) entropy -= p_sink * std::log(p_sink);
          p.entropy[(b * p.n_heads + h) * p.seq_q + i] = static_cast<float>(entropy);
        }
        // 6. weighted sum of values
        const int64_t o_row = b * p.out_stride[0] + i * p.out_stride[1] + h * p.out_stride[2];
        for (int64_t d = 0; d < p.head_dim; ++d) {
          double acc = 0.0;
          for (int64_t j = 0; j < p.seq_k; ++j) {
            if (scores[j] == 0.0) continue;
            const int64_t v_row = b * p.v_stride[0] + j * p.v_stride[1] + kvh * p.v_stride[2];
            acc = r.Acc(acc + scores[j] * Load(p.v, p.kv_dtype, v_row + d * p.v_stride[3]));
          }
          Store(p.out, p.dtype, o_row + d * p.out_stride[3], acc);
          if (out64) out64[((b * p.seq_q + i) * p.n_heads + h) * p.head_dim + d] = acc;
        }
      }
    }
  }
}

}  // namespace attn
