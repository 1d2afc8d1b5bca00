// The validated, plain-data description of one attention call that every kernel reads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "attn/attention.h"
#include "attn/tensor.h"

namespace attn::kernels {

inline constexpr float kLog2e = 1.4426950408889634f;  // the kernels work in log2 units
inline constexpr float kLn2 = 0.6931471805599453f;

// K or V of a q8_0 KV cache (KVCache): where kv_dtype is kQ8_0, AttentionParams::k and ::v point to
// one of these. Element offsets (strides) address `quants` as an int8 tensor with unit stride along
// the head dim; the float16 scale of the 32 values at offset o is scales[o / 32] (rows start at
// multiples of 32).
struct Q8Rows {
  const int8_t* quants;
  const uint16_t* scales;
};

struct AttentionParams {
  DType dtype;     // q and out
  DType kv_dtype;  // k and v: dtype, or under float32 queries a half type or kQ8_0 (a KV cache's)
  const void* q;
  const void* k;
  const void* v;
  void* out;
  int64_t batch, seq_q, seq_k, n_heads, n_kv_heads, head_dim;
  int64_t group;  // n_heads / n_kv_heads: query heads per KV head
  // Strides in elements over the logical axes [batch, seq, head, dim].
  int64_t q_stride[4], k_stride[4], v_stride[4], out_stride[4];
  float scale;
  float softcap;  // 0 = off
  bool causal;
  bool top_left;
  int64_t window_left, window_right;  // -1 = unbounded
  const int64_t* kv_lens;             // nullptr = seq_k for every batch
  MaskKind mask_kind;
  const void* mask;
  int64_t mask_stride[4];  // [batch, head, q, k]; 0 on broadcast axes
  const float* sinks;      // [n_heads] natural-log sink logits, or nullptr
  float* lse;              // [batch, n_heads, seq_q] or nullptr
  float* entropy;          // [batch, n_heads, seq_q] or nullptr (nats)
  int threads;
  // bf16 inputs may use the AVX512_BF16 dot-product kernel (set by Attention() after a CPUID check;
  // only the AVX3 build of the prefill kernel reads it).
  bool bf16_dot = false;

  int64_t KeyCount(int64_t b) const { return kv_lens ? kv_lens[b] : seq_k; }

  // Inclusive range [lo, hi] of keys query row `qi` of batch `b` may see from causal, window and
  // kv_lens; empty when lo > hi. Explicit masks are applied on top.
  void KeyRange(int64_t b, int64_t qi, int64_t* lo, int64_t* hi) const {
    const int64_t keys = KeyCount(b);
    const int64_t diag = top_left ? qi : qi + keys - seq_q;
    int64_t l = 0, h = keys - 1;
    if (causal) h = std::min(h, diag);
    if (window_left >= 0) l = std::max(l, diag - window_left);
    if (window_right >= 0) h = std::min(h, diag + window_right);
    *lo = l;
    *hi = h;
  }

  // Element offset of the explicit mask entry (b, h, qi, j).
  int64_t MaskOffset(int64_t b, int64_t h, int64_t qi, int64_t j) const {
    return b * mask_stride[0] + h * mask_stride[1] + qi * mask_stride[2] + j * mask_stride[3];
  }
};

// Checks every argument and builds the params; throws attn::Error naming the argument.
AttentionParams MakeParams(const TensorView& q, const TensorView& k, const TensorView& v,
                           const TensorView& out, const AttentionOptions& options);

// Runs validated params: the split-K decode kernel for few rows, else the prefill kernel.
void RunAttention(AttentionParams& p);

}  // namespace attn::kernels
