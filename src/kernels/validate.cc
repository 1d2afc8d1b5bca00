// Argument checking for Attention: every rejection names the argument and its value.
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>

#include "attn/error.h"
#include "kernels/attention_params.h"

namespace attn::kernels {
namespace {

template <typename... Args>
[[noreturn]] void Fail(Error::Kind kind, const Args&... args) {
  std::ostringstream s;
  s << "sdpa: ";
  (s << ... << args);
  throw Error(s.str(), kind);
}

// Largest element offset reachable through a view, or throws when a product overflows int64.
int64_t MaxOffset(const char* name, const TensorView& t) {
  int64_t total = 0;
  for (int i = 0; i < 4; ++i) {
    if (t.shape[i] == 0) return 0;
    int64_t step;
    if (__builtin_mul_overflow(t.shape[i] - 1, std::abs(t.stride[i]), &step) ||
        __builtin_add_overflow(total, step, &total) || total > (int64_t{1} << 58)) {
      Fail(Error::Kind::kValue, name, ": shape ", t.ShapeString(), " with stride ", t.stride[i], " on axis ",
           i, " overflows the addressable size");
    }
  }
  return total;
}

void CheckView(const char* name, const TensorView& t) {
  if (t.dtype == DType::kQ8_0)
    Fail(Error::Kind::kType, name, ": dtype q8_0 is a KV cache storage type, not a tensor dtype");
  for (int i = 0; i < 4; ++i) {
    if (t.shape[i] < 0) Fail(Error::Kind::kValue, name, ": negative size ", t.shape[i], " on axis ", i);
  }
  MaxOffset(name, t);
  if (t.data == nullptr && t.numel() > 0) Fail(Error::Kind::kValue, name, ": data pointer is null");
}

}  // namespace

AttentionParams MakeParams(const TensorView& q, const TensorView& k, const TensorView& v,
                           const TensorView& out, const AttentionOptions& o) {
  CheckView("q", q);
  CheckView("k", k);
  CheckView("v", v);
  CheckView("out", out);
  // K and V share a dtype: q's, or f16 / bf16 under f32 queries (a half-precision KV cache read
  // by float32 activations, as language models generate).
  if (k.dtype != q.dtype && !(q.dtype == DType::kF32 && k.dtype != DType::kF32))
    Fail(Error::Kind::kType, "k: dtype ", DTypeName(k.dtype), " differs from q's ", DTypeName(q.dtype),
         " (only f32 queries may read f16 or bf16 keys)");
  if (v.dtype != k.dtype)
    Fail(Error::Kind::kType, "v: dtype ", DTypeName(v.dtype), " differs from k's ", DTypeName(k.dtype));
  if (out.dtype != q.dtype)
    Fail(Error::Kind::kType, "out: dtype ", DTypeName(out.dtype), " differs from q's ", DTypeName(q.dtype));

  const int64_t B = q.shape[0], Sq = q.shape[1], Hq = q.shape[2], D = q.shape[3];
  const int64_t Sk = k.shape[1], Hkv = k.shape[2];
  if (D == 0) Fail(Error::Kind::kValue, "q: head_dim D = 0 (must be >= 1)");
  if (k.shape[0] != B) Fail(Error::Kind::kValue, "k: batch ", k.shape[0], " != q's batch ", B);
  if (k.shape[3] != D) Fail(Error::Kind::kValue, "k: head_dim ", k.shape[3], " != q's head_dim ", D);
  for (int i = 0; i < 4; ++i) {
    if (v.shape[i] != k.shape[i])
      Fail(Error::Kind::kValue, "v: shape ", v.ShapeString(), " != k's shape ", k.ShapeString());
    if (out.shape[i] != q.shape[i])
      Fail(Error::Kind::kValue, "out: shape ", out.ShapeString(), " != q's shape ", q.ShapeString());
  }
  if (Hkv == 0 && Hq > 0) Fail(Error::Kind::kValue, "k: number of KV heads Hkv = 0");
  if (Hkv > 0 && Hq % Hkv != 0)
    Fail(Error::Kind::kValue, "k: number of query heads Hq = ", Hq,
         " is not a multiple of the number of KV heads Hkv = ", Hkv);

  AttentionParams p{};
  p.dtype = q.dtype;
  p.kv_dtype = k.dtype;
  p.q = q.data, p.k = k.data, p.v = v.data, p.out = out.data;
  p.batch = B, p.seq_q = Sq, p.seq_k = Sk, p.n_heads = Hq, p.n_kv_heads = Hkv, p.head_dim = D;
  p.group = Hkv > 0 ? Hq / Hkv : 1;
  for (int i = 0; i < 4; ++i) {
    p.q_stride[i] = q.stride[i], p.k_stride[i] = k.stride[i];
    p.v_stride[i] = v.stride[i], p.out_stride[i] = out.stride[i];
  }

  if (o.scale.has_value() && !std::isfinite(*o.scale))
    Fail(Error::Kind::kValue, "scale = ", *o.scale, " is not finite");
  p.scale = o.scale.value_or(static_cast<float>(1.0 / std::sqrt(static_cast<double>(D))));
  if (!(o.softcap >= 0.0f) || !std::isfinite(o.softcap))
    Fail(Error::Kind::kValue, "softcap = ", o.softcap, " (must be finite and >= 0)");
  p.softcap = o.softcap;
  p.causal = o.causal;
  p.top_left = o.causal_align == CausalAlign::kTopLeft;
  if (o.window_left < -1) Fail(Error::Kind::kValue, "window.left = ", o.window_left, " (must be >= -1)");
  if (o.window_right < -1) Fail(Error::Kind::kValue, "window.right = ", o.window_right, " (must be >= -1)");
  p.window_left = o.window_left;
  p.window_right = o.window_right;

  p.kv_lens = nullptr;
  if (!o.kv_lens.empty()) {
    if (static_cast<int64_t>(o.kv_lens.size()) != B)
      Fail(Error::Kind::kValue, "kv_lens: length ", o.kv_lens.size(), " != batch ", B);
    for (int64_t b = 0; b < B; ++b) {
      if (o.kv_lens[b] < 0 || o.kv_lens[b] > Sk)
        Fail(Error::Kind::kValue, "kv_lens[", b, "] = ", o.kv_lens[b], " (must be in [0, ", Sk, "])");
    }
    p.kv_lens = o.kv_lens.data();
  }

  p.mask_kind = o.mask.kind;
  p.mask = o.mask.data;
  const int64_t full[4] = {B, Hq, Sq, Sk};
  for (int i = 0; i < 4; ++i) {
    p.mask_stride[i] = 0;
    if (o.mask.kind == MaskKind::kNone) continue;
    if (o.mask.shape[i] != 1 && o.mask.shape[i] != full[i])
      Fail(Error::Kind::kValue, "mask: size ", o.mask.shape[i], " on axis ", i, " is neither 1 nor ", full[i],
           " (mask must broadcast to [B, Hq, Sq, Sk] = [", B, ", ", Hq, ", ", Sq, ", ", Sk, "])");
    p.mask_stride[i] = o.mask.shape[i] == 1 ? 0 : o.mask.stride[i];
  }
  if (o.mask.kind != MaskKind::kNone) {
    if (o.mask.data == nullptr && B * Hq * Sq * Sk > 0)
      Fail(Error::Kind::kValue, "mask: data pointer is null");
    TensorView mv;
    for (int i = 0; i < 4; ++i) mv.shape[i] = o.mask.shape[i], mv.stride[i] = o.mask.stride[i];
    MaxOffset("mask", mv);
  }
  p.sinks = o.sinks;
  if (o.sinks) {
    for (int64_t h = 0; h < Hq; ++h) {
      if (std::isnan(o.sinks[h]) || o.sinks[h] == std::numeric_limits<float>::infinity())
        Fail(Error::Kind::kValue, "sinks[", h, "] = ", o.sinks[h], " (must be finite or -inf)");
    }
  }
  p.lse = o.lse;
  p.entropy = o.entropy;
  if (o.threads < 0)
    Fail(Error::Kind::kValue, "threads = ", o.threads, " (must be >= 1, or 0 for all cores)");
  p.threads = o.threads;
  return p;
}

}  // namespace attn::kernels
