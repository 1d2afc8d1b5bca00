// AttentionBackward's entry point: validate the forward's arguments (MakeParams) and the
// gradient tensors, then dispatch the fused backward kernel to the best SIMD target.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>

#include "attn/attention.h"
#include "attn/error.h"
#include "kernels/attention_bwd_params.h"

namespace attn {
namespace kernels {
void BackwardDispatch(const BackwardParams& p);

namespace {

std::atomic<int64_t> max_split_bytes{kDefaultMaxSplitBytes};

template <typename... Args>
[[noreturn]] void Fail(Error::Kind kind, const Args&... args) {
  std::ostringstream s;
  s << "sdpa_backward: ";
  (s << ... << args);
  throw Error(s.str(), kind);
}

// The checks MakeParams makes of q, k, v and out, for the gradient tensors: sizes, addressable
// range, data pointer, dtype and shape against the tensor it must match.
void CheckLike(const char* name, const TensorView& t, const char* like_name, const TensorView& like) {
  if (t.dtype != like.dtype)
    Fail(Error::Kind::kType, name, ": dtype ", DTypeName(t.dtype), " differs from ", like_name, "'s ",
         DTypeName(like.dtype));
  for (int i = 0; i < 4; ++i) {
    if (t.shape[i] != like.shape[i])
      Fail(Error::Kind::kValue, name, ": shape ", t.ShapeString(), " != ", like_name, "'s shape ",
           like.ShapeString());
  }
  int64_t total = 0;
  for (int i = 0; i < 4; ++i) {
    if (t.shape[i] == 0) return;  // empty: nothing is addressed
    int64_t step;
    if (__builtin_mul_overflow(t.shape[i] - 1, std::abs(t.stride[i]), &step) ||
        __builtin_add_overflow(total, step, &total) || total > (int64_t{1} << 58)) {
      Fail(Error::Kind::kValue, name, ": shape ", t.ShapeString(), " with stride ", t.stride[i], " on axis ",
           i, " overflows the addressable size");
    }
  }
  if (t.data == nullptr) Fail(Error::Kind::kValue, name, ": data pointer is null");
}

}  // namespace

BackwardParams MakeBackwardParams(const TensorView& q, const TensorView& k, const TensorView& v,
                                  const TensorView& out, const float* lse, const TensorView& dout,
                                  const TensorView& dq, const TensorView& dk, const TensorView& dv,
                                  const AttentionOptions& options) {
  BackwardParams p{};
  try {
    p.fwd = MakeParams(q, k, v, out, options);
  } catch (const Error& e) {  // the same message, under this call's name
    std::string what = e.what();
    if (what.rfind("sdpa: ", 0) == 0) what = "sdpa_backward: " + what.substr(6);
    throw Error(what, e.kind());
  }
  if (k.dtype != q.dtype)  // the forward lets f32 queries read a half KV cache; training does not
    Fail(Error::Kind::kType, "k: dtype ", DTypeName(k.dtype), " differs from q's ", DTypeName(q.dtype));
  p.fwd.lse = nullptr;
  p.fwd.entropy = nullptr;
  CheckLike("dout", dout, "out", out);
  CheckLike("dq", dq, "q", q);
  CheckLike("dk", dk, "k", k);
  CheckLike("dv", dv, "v", v);
  if (lse == nullptr && q.shape[0] * q.shape[1] * q.shape[2] > 0)
    Fail(Error::Kind::kValue,
         "lse: pointer is null (the forward's float32 [B, Hq, Sq] log-sum-exp is required)");
  p.lse = lse;
  if (options.sinks_grad != nullptr && options.sinks == nullptr)
    Fail(Error::Kind::kValue, "sinks_grad: given without sinks (the gradient of which sinks?)");
  p.sinks_grad = options.sinks_grad;
  p.dout = dout.data, p.dq = dq.data, p.dk = dk.data, p.dv = dv.data;
  for (int i = 0; i < 4; ++i) {
    p.dout_stride[i] = dout.stride[i], p.dq_stride[i] = dq.stride[i];
    p.dk_stride[i] = dk.stride[i], p.dv_stride[i] = dv.stride[i];
  }
  p.max_split_bytes = max_split_bytes.load(std::memory_order_relaxed);
  return p;
}

int64_t SetBackwardMaxSplitBytesForTest(int64_t bytes) { return max_split_bytes.exchange(bytes); }

}  // namespace kernels

void AttentionBackward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                       const float* lse, const TensorView& dout, const TensorView& dq, const TensorView& dk,
                       const TensorView& dv, const AttentionOptions& options) {
  const kernels::BackwardParams p = kernels::MakeBackwardParams(q, k, v, out, lse, dout, dq, dk, dv, options);
  if (p.sinks_grad) std::fill(p.sinks_grad, p.sinks_grad + q.shape[2], 0.0f);  // also when B = 0
  kernels::BackwardDispatch(p);  // writes every element of dq, dk, dv (zeros where nothing flows)
}

}  // namespace attn
