// The validated, plain-data description of one attention backward call.
#pragma once

#include <cstdint>

#include "attn/attention.h"
#include "attn/tensor.h"
#include "kernels/attention_params.h"

namespace attn::kernels {

struct BackwardParams {
  // The forward's description (q, k, v, out, sizes, strides, scale, masks, threads) as MakeParams
  // builds it; its lse and entropy outputs are cleared (unused here).
  AttentionParams fwd;
  const float* lse;   // [batch, n_heads, seq_q], natural log, from the forward
  const void* dout;   // like out
  void* dq;           // like q
  void* dk;           // like k
  void* dv;           // like v
  float* sinks_grad;  // [n_heads] dL/dsinks, or nullptr (needs fwd.sinks)
  // Strides in elements over the logical axes [batch, seq, head, dim].
  int64_t dout_stride[4], dq_stride[4], dk_stride[4], dv_stride[4];
  // Memory the one-pass schedule may take for its float32 dQ rows (one copy per key split);
  // beyond it the kernel runs two passes (dK, dV, then dQ), recomputing P and dS.
  int64_t max_split_bytes;
};

// The max_split_bytes of the next calls (default kDefaultMaxSplitBytes); tests set 0 to force the
// two-pass schedule. Returns the previous value.
inline constexpr int64_t kDefaultMaxSplitBytes = int64_t{512} << 20;
int64_t SetBackwardMaxSplitBytesForTest(int64_t bytes);

// Checks every argument (the forward's through MakeParams, then lse, dout, dq, dk, dv) and builds
// the params; throws attn::Error naming the argument.
BackwardParams MakeBackwardParams(const TensorView& q, const TensorView& k, const TensorView& v,
                                  const TensorView& out, const float* lse, const TensorView& dout,
                                  const TensorView& dq, const TensorView& dk, const TensorView& dv,
                                  const AttentionOptions& options);

}  // namespace attn::kernels
