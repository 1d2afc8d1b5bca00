// Incremental decoding through the KV cache equals one causal attention over the whole sequence.
#include "attn/kv_cache.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "attn/error.h"
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

// Float32 K and V appended to an f16 / bf16 cache are rounded to nearest even (f16 saturating at
// +-65504), and f32 queries attend over them exactly as over the same half tensors.
TEST(KVCache, HalfCacheConvertsFloat32RowsAndAttendsFromFloat32Queries) {
  for (const std::string& target : testing::AttentionTargets())
    for (DType half : {DType::kF16, DType::kBF16}) {
      SetSimdTarget(target);
      SCOPED_TRACE(target + " " + DTypeName(half));
      const int64_t B = 1, S = 70, Hq = 4, Hkv = 2, D = 40;
      std::mt19937 rng(5);
      Tensor q(DType::kF32, B, S, Hq, D), k(DType::kF32, B, S, Hkv, D), v(DType::kF32, B, S, Hkv, D);
      q.Randomize(rng), k.Randomize(rng), v.Randomize(rng);
      // The same K and V rounded by the scalar conversions, as half tensors.
      Tensor kh(half, B, S, Hkv, D), vh(half, B, S, Hkv, D);
      for (int64_t s = 0; s < S; ++s)
        for (int64_t h = 0; h < Hkv; ++h)
          for (int64_t d = 0; d < D; ++d)
            kh.Set(0, s, h, d, k.Get(0, s, h, d)), vh.Set(0, s, h, d, v.Get(0, s, h, d));
      KVCache cache(B, Hkv, D, S, half);
      cache.Append(k.view, v.view);
      for (int64_t s = 0; s < S; ++s)
        for (int64_t h = 0; h < Hkv; ++h)
          for (int64_t d = 0; d < D; ++d) {
            const auto* kc = static_cast<const uint16_t*>(cache.keys().data);
            const TensorView kv = cache.keys();
            const uint16_t got = kc[s * kv.stride[1] + h * kv.stride[2] + d];
            const uint16_t want =
                static_cast<const uint16_t*>(kh.view.data)[s * kh.view.stride[1] + h * kh.view.stride[2] + d];
            ASSERT_EQ(got, want) << "s=" << s << " h=" << h << " d=" << d;
          }
      AttentionOptions o;
      o.causal = true;
      Tensor out(DType::kF32, B, S, Hq, D), ref(DType::kF32, B, S, Hq, D);
      cache.Attend(q.view, out.view, o);
      Attention(q.view, kh.view, vh.view, ref.view, o);
      EXPECT_EQ(out.MaxDiff(ref), 0.0);
    }
  SetSimdTarget("");
  // Beyond f16's range: saturated, never an infinity.
  KVCache cache(1, 1, 16, 2, DType::kF16);
  std::vector<float> big(16, 1e6f), v(16, -1e9f);
  cache.Append(TensorView::Contiguous(big.data(), DType::kF32, 1, 1, 1, 16),
               TensorView::Contiguous(v.data(), DType::kF32, 1, 1, 1, 16));
  for (int64_t d = 0; d < 16; ++d) {
    EXPECT_EQ(HalfToFloat(static_cast<const uint16_t*>(cache.keys().data)[d]), 65504.0f);
    EXPECT_EQ(HalfToFloat(static_cast<const uint16_t*>(cache.values().data)[d]), -65504.0f);
  }
}

// Reserve keeps what is cached (the result is bit-identical), Truncate forgets the tail so that
// new positions replace it exactly as in a cache that never held it.
TEST(KVCache, ReserveKeepsAndTruncateForgets) {
  const int64_t S = 30, Hq = 4, Hkv = 2, D = 16;
  std::mt19937 rng(8);
  Tensor q(DType::kF32, 1, 1, Hq, D), k(DType::kF32, 1, S, Hkv, D), v(DType::kF32, 1, S, Hkv, D);
  q.Randomize(rng), k.Randomize(rng), v.Randomize(rng);
  auto rows = [&](const Tensor& t, int64_t s0, int64_t n) {
    TensorView view = t.view;
    view.data = const_cast<uint8_t*>(t.bytes.data()) + s0 * view.stride[1] * sizeof(float);
    view.shape[1] = n;
    return view;
  };
  KVCache cache(1, Hkv, D, 20);
  cache.Append(rows(k, 0, 20), rows(v, 0, 20));
  Tensor before(DType::kF32, 1, 1, Hq, D), after(DType::kF32, 1, 1, Hq, D);
  cache.Attend(q.view, before.view);
  cache.Reserve(64);
  EXPECT_EQ(cache.capacity(), 64);
  EXPECT_EQ(cache.length(), 20);
  cache.Attend(q.view, after.view);
  EXPECT_EQ(after.MaxDiff(before), 0.0);
  cache.Reserve(10);  // never shrinks
  EXPECT_EQ(cache.capacity(), 64);

  // Positions 0..11 of k/v, then 12..29 of a second set: equal to a fresh cache holding the same.
  Tensor k2(DType::kF32, 1, S, Hkv, D), v2(DType::kF32, 1, S, Hkv, D);
  k2.Randomize(rng), v2.Randomize(rng);
  cache.Truncate(12);
  EXPECT_EQ(cache.length(), 12);
  cache.Append(rows(k2, 12, 18), rows(v2, 12, 18));
  KVCache fresh(1, Hkv, D, 30);
  fresh.Append(rows(k, 0, 12), rows(v, 0, 12));
  fresh.Append(rows(k2, 12, 18), rows(v2, 12, 18));
  Tensor a(DType::kF32, 1, 1, Hq, D), b(DType::kF32, 1, 1, Hq, D);
  cache.Attend(q.view, a.view);
  fresh.Attend(q.view, b.view);
  EXPECT_EQ(a.MaxDiff(b), 0.0);
  EXPECT_THROW(cache.Truncate(31), Error);
  EXPECT_THROW(cache.Truncate(-1), Error);
}

}  // namespace
}  // namespace attn::testing
