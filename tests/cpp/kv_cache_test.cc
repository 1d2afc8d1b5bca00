// Incremental decoding through the KV cache equals one causal attention over the whole sequence.
#include "attn/kv_cache.h"

#include <gtest/gtest.h>

#include <random>

#include "test_util.h"

namespace attn::testing {
namespace {

TEST(KVCache, ChunkedDecodeEqualsFullCausalAttention) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const int64_t B = 2, S = 37, Hq = 6, Hkv = 2, D = 24;
    std::mt19937 rng(3);
    Tensor q(dtype, B, S, Hq, D), k(dtype, B, S, Hkv, D), v(dtype, B, S, Hkv, D), full(dtype, B, S, Hq, D);
    q.Randomize(rng), k.Randomize(rng), v.Randomize(rng);
    AttentionOptions o;
    o.causal = true;
    Attention(q.view, k.view, v.view, full.view, o);

    KVCache cache(B, Hkv, D, 64, dtype);
    Tensor step(dtype, B, S, Hq, D);
    // A prompt of 20 positions, then one position at a time.
    for (int64_t s0 = 0; s0 < S;) {
      const int64_t n = s0 == 0 ? 20 : 1;
      auto slice = [&](const Tensor& t) {
        TensorView view = t.view;
        view.data = const_cast<uint8_t*>(t.bytes.data()) + s0 * view.stride[1] * DTypeSize(dtype);
        view.shape[1] = n;
        return view;
      };
      cache.Append(slice(k), slice(v));
      cache.Attend(slice(q), slice(step), o);
      s0 += n;
    }
    EXPECT_EQ(cache.length(), S);
    // Same kernels, same keys per row: the result agrees to rounding (decode splits differ).
    EXPECT_LE(step.MaxDiff(full), dtype == DType::kF32 ? 1e-5 : 2e-2) << DTypeName(dtype);
    cache.Clear();
    EXPECT_EQ(cache.length(), 0);
  }
}

}  // namespace
}  // namespace attn::testing
