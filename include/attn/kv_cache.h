// A key/value cache for incremental decoding: append K/V for new positions, then attend from the
// new queries to everything cached.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "attn/attention.h"
#include "attn/tensor.h"

namespace attn {

// Storage is one contiguous [batch, n_kv_heads, capacity, head_dim] buffer per K and V, so every
// head's keys are rows of stride head_dim for the kernel. The public API speaks only of positions,
// so a paged layout (blocks of positions plus a block table) can replace it without changing callers.
class KVCache {
 public:
  KVCache(int64_t batch, int64_t n_kv_heads, int64_t head_dim, int64_t capacity, DType dtype = DType::kF32);
  ~KVCache();
  KVCache(const KVCache&) = delete;
  KVCache& operator=(const KVCache&) = delete;

  // Appends k, v of logical shape [batch, n_new, n_kv_heads, head_dim] (any strides) at positions
  // [length, length + n_new). They are of the cache's dtype, or float32 converted into an f16 / bf16
  // cache (round to nearest even; f16 saturates at +-65504) or quantized into a q8_0 cache (which
  // needs head_dim a multiple of 32). Throws attn::Error when it would overflow or for any other dtype.
  void Append(const TensorView& k, const TensorView& v);
  // Attention of q [batch, n_q, n_heads, head_dim] over every cached position, with the causal
  // mask (when options.causal) aligned bottom-right: the queries are the last n_q positions. q (and
  // out) have the cache's dtype, or are float32 over an f16 / bf16 / q8_0 cache (the rows are widened
  // to float32 as they are read, so a half cache halves the bytes each generated token reads and a
  // q8_0 cache takes 34 bytes per 32 values).
  void Attend(const TensorView& q, const TensorView& out, AttentionOptions options = {}) const;
  // The same over the first n_keys cached positions only (1 <= n_keys <= length()), as Attend did
  // when the cache held n_keys: speculative decoding checks several new tokens in one pass, each
  // query attending as it would have alone (bit for bit).
  void AttendFirst(const TensorView& q, const TensorView& out, AttentionOptions options,
                   int64_t n_keys) const;
  // Forgets every position (keeps the memory).
  void Clear() { length_ = 0; }
  // Keeps positions [0, length) and forgets the rest (a shared prefix reused by the next request).
  void Truncate(int64_t length);
  // Grows the capacity to at least `capacity` positions, keeping what is cached (a new buffer; the
  // old one is copied and freed). Never shrinks.
  void Reserve(int64_t capacity);
  // Forgets positions [keep, keep + discard) and moves the later ones down to `keep` (the length
  // shrinks by `discard`): a context shift. Their keys still carry their old positions' rotation;
  // Model::ShiftContext rotates them with UpdateKeys.
  void Shift(int64_t keep, int64_t discard);
  // Calls fn on every cached key row of positions [begin, end) (each batch and head: head_dim
  // float32 values, widened from the cache's dtype) and stores the row back (rounded or quantized
  // again as Append does).
  void UpdateKeys(int64_t begin, int64_t end, const std::function<void(float* row)>& fn);

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  DType dtype() const { return dtype_; }
  // Views of the cached keys / values as [batch, length, n_kv_heads, head_dim] (not for a q8_0
  // cache: throws attn::Error).
  TensorView keys() const;
  TensorView values() const;
  // The same as float32: the cache's own memory when it is float32, else widened into *storage.
  TensorView KeysF32(std::vector<float>* storage) const;
  TensorView ValuesF32(std::vector<float>* storage) const;

 private:
  struct Buffer;
  TensorView View(void* base, int64_t len) const;
  TensorView WidenedView(const Buffer& buf, std::vector<float>* storage) const;
  int64_t batch_, n_kv_heads_, head_dim_, capacity_, length_ = 0;
  DType dtype_;
  std::unique_ptr<Buffer> k_, v_;
};

}  // namespace attn
