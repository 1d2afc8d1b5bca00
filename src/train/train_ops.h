// The element-wise and per-row operations of training, each with its backward pass: LayerNorm,
// GELU (tanh), token + position embedding, softmax cross-entropy, and the AdamW update. The
// matrix products live in kernels/gemm.h and attention in attn/attention.h.
//
// Every call handles a range of rows (or elements) on the calling thread; the trainer splits the
// work over its thread pool in chunks that depend only on the shapes, and these functions never
// reduce across chunks themselves, so results do not depend on the thread count. The SIMD ones
// dispatch once per call to the best Highway target.
#pragma once

#include <cstdint>

namespace attn::train {

// LayerNorm (Ba et al. 2016) over rows x[n][dim]: y = (x - mean) * rstd * w + b with the biased
// variance, rstd = 1 / sqrt(var + eps). Saves mean[n] and rstd[n] for the backward pass.
void LayerNormForward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                      int64_t n, int64_t dim, float eps);

// With xhat = (x - mean) rstd and g = dy w:
//   dx = rstd (g - mean(g) - xhat mean(g xhat))     (stored, or added to dx when accumulate_dx)
//   dw += sum over rows of dy xhat,   db += sum over rows of dy
void LayerNormBackward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                       float* dx, bool accumulate_dx, float* dw, float* db, int64_t n, int64_t dim);

// GELU, tanh approximation (GPT-2's gelu_new, the formula of kernels/ops.cc GeluTanh):
//   y = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3).
void GeluForward(const float* x, float* y, int64_t n);
// dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)), t = tanh(u).
void GeluBackward(const float* x, const float* dy, float* dx, int64_t n);

// out[r] = wte[tokens[r]] + wpe[r % seq] for rows r in [r0, r1) of batch * seq tokens; out is
// [batch * seq][dim]. Tokens must already be checked against the vocabulary.
void EmbeddingForward(const int32_t* tokens, const float* wte, const float* wpe, float* out, int64_t r0,
                      int64_t r1, int64_t seq, int64_t dim);
// dwte[tokens[r]] += dout[r] for rows in order (a scatter-add: call it on one thread).
void EmbeddingBackwardTokens(const int32_t* tokens, const float* dout, float* dwte, int64_t n, int64_t dim);
// dwpe[t] += sum over b of dout[b * seq + t] for positions t in [t0, t1) (b in order).
void EmbeddingBackwardPositions(const float* dout, float* dwpe, int64_t batch, int64_t seq, int64_t t0,
                                int64_t t1, int64_t dim);

// Softmax cross-entropy of rows logits[n][vocab] against targets[n]:
//   loss[r] = log sum_j exp(logits[r][j]) - logits[r][targets[r]]
// With grad_scale > 0, logits is overwritten by its gradient (softmax - onehot) * grad_scale
// (grad_scale = 1 / N for a mean over N positions); otherwise it is left unchanged.
void CrossEntropy(float* logits, const int32_t* targets, float* loss, int64_t n, int64_t vocab,
                  float grad_scale);

// One AdamW step on n elements, in torch.optim.AdamW's order of operations:
//   p *= decay_factor (1 - lr wd for decayed tensors, else 1)
//   m = lerp(m, g, 1 - beta1);  v = beta2 v + (1 - beta2) g^2
//   p -= step_size m / (sqrt(v) / bc2_sqrt + eps),  step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 -
//   beta2^t)
struct AdamWArgs {
  float decay_factor, beta1, beta2, eps, step_size, bc2_sqrt;
};
void AdamW(float* p, const float* g, float* m, float* v, int64_t n, const AdamWArgs& a);

// sum of g[i]^2 in double, in index order within SIMD lanes (a fixed order).
double SumSquares(const float* g, int64_t n);

}  // namespace attn::train
