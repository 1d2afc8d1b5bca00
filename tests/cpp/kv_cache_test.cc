// Incremental decoding through the KV cache equals one causal attention over the whole sequence.
#include "attn/kv_cache.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "attn/error.h"
#include "attn/tensor.h"
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

// A q8_0 cache stores ggml's Q8_0 blocks of float32 rows: per 32 values d = max |x| / 127, kept as
// float16, and round(x / d) to nearest even. Here the same quantization written out in scalars; the
// cache's widened rows must equal it exactly, and attention over the cache (a prompt through the
// prefill kernel, then decode steps through the split-K kernel) must equal float32 attention over
// the widened K and V on every target.
void QuantizeQ8Scalar(Tensor& t) {
  const int64_t D = t.view.shape[3];
  for (int64_t b = 0; b < t.view.shape[0]; ++b)
    for (int64_t s = 0; s < t.view.shape[1]; ++s)
      for (int64_t h = 0; h < t.view.shape[2]; ++h)
        for (int64_t d0 = 0; d0 < D; d0 += 32) {
          float amax = 0.0f;
          for (int64_t d = d0; d < d0 + 32; ++d) amax = std::max(amax, std::abs(t.Get(b, s, h, d)));
          const float scale = amax / 127.0f, inv = scale > 0.0f ? 1.0f / scale : 0.0f;
          const float stored = HalfToFloat(FloatToHalf(scale));
          for (int64_t d = d0; d < d0 + 32; ++d)
            t.Set(b, s, h, d, stored * static_cast<float>(std::nearbyint(t.Get(b, s, h, d) * inv)));
        }
}

TEST(KVCache, Q8CacheStoresGgmlBlocksAndAttendsOverThem) {
  struct Shape {
    int64_t B, S, Hq, Hkv, D;
  };
  // GQA groups of 3 (decode rows 3 and 6) and 8 (two groups of 4 rows), none; head dims of 2, 3
  // (a half chunk of 64 bytes) and 1 blocks; 1100 keys: two key splits.
  for (const Shape& shape : {Shape{2, 150, 6, 2, 64}, Shape{1, 1100, 8, 1, 96}, Shape{1, 90, 3, 3, 32}})
    for (const std::string& target : testing::AttentionTargets()) {
      SetSimdTarget(target);
      const auto [B, S, Hq, Hkv, D] = shape;
      SCOPED_TRACE(target + " D=" + std::to_string(D) + " S=" + std::to_string(S));
      std::mt19937 rng(11);
      Tensor q(DType::kF32, B, S, Hq, D), k(DType::kF32, B, S, Hkv, D), v(DType::kF32, B, S, Hkv, D);
      q.Randomize(rng), k.Randomize(rng), v.Randomize(rng);
      for (int64_t d = 0; d < 32; ++d) k.Set(B - 1, 7, Hkv - 1, d, 0.0f);  // an all-zero block: scale 0
      for (int64_t d = 0; d < D; ++d) v.Set(0, 3, 0, d, 1000.0f * v.Get(0, 3, 0, d));  // a wide row
      Tensor kq(DType::kF32, B, S, Hkv, D), vq(DType::kF32, B, S, Hkv, D);
      kq.bytes = k.bytes, vq.bytes = v.bytes;  // same sizes: the views keep pointing at their own bytes
      QuantizeQ8Scalar(kq), QuantizeQ8Scalar(vq);

      KVCache cache(B, Hkv, D, S < 128 ? S : 128, DType::kQ8_0);
      Tensor out(DType::kF32, B, S, Hq, D), ref(DType::kF32, B, S, Hq, D);
      auto rows = [](const Tensor& t, int64_t s0, int64_t n) {
        TensorView view = t.view;
        view.data = const_cast<uint8_t*>(t.bytes.data()) + s0 * view.stride[1] * sizeof(float);
        view.shape[1] = n;
        return view;
      };
      // A prompt (> 16 query rows: the prefill kernel), a step of 2 positions and single ones (<= 16
      // rows: decode), growing the cache past its first capacity.
      const int64_t prompt = std::min<int64_t>(S - 40, 1000);
      for (int64_t s0 = 0; s0 < S;) {
        const int64_t n = s0 == 0 ? prompt : s0 == prompt ? 2 : 1;
        if (s0 + n > cache.capacity()) cache.Reserve(std::max(2 * cache.capacity(), s0 + n));
        cache.Append(rows(k, s0, n), rows(v, s0, n));
        AttentionOptions o;
        o.causal = true;
        cache.Attend(rows(q, s0, n), rows(out, s0, n), o);
        s0 += n;
      }
      std::vector<float> k32, v32;
      const TensorView kw = cache.KeysF32(&k32), vw = cache.ValuesF32(&v32);
      double k_diff = 0.0, v_diff = 0.0;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t s = 0; s < S; ++s)
          for (int64_t h = 0; h < Hkv; ++h)
            for (int64_t d = 0; d < D; ++d) {
              const int64_t o = b * kw.stride[0] + s * kw.stride[1] + h * kw.stride[2] + d;
              k_diff = std::max(k_diff, std::abs(static_cast<double>(k32[o]) - kq.Get(b, s, h, d)));
              v_diff = std::max(v_diff, std::abs(static_cast<double>(v32[o]) - vq.Get(b, s, h, d)));
            }
      EXPECT_EQ(k_diff, 0.0);
      EXPECT_EQ(v_diff, 0.0);
      EXPECT_EQ(vw.dtype, DType::kF32);
      EXPECT_EQ(kq.Get(B - 1, 7, Hkv - 1, 5), 0.0f);
      // 8 bits keep about 2-3 significant digits: the widened keys are near, not equal to, the inputs.
      EXPECT_GT(kq.MaxDiff(k), 1e-3);
      EXPECT_LT(kq.MaxDiff(k), 0.05);
      AttentionOptions o;
      o.causal = true;
      Attention(q.view, kq.view, vq.view, ref.view, o);
      // float32 rounding relative to the largest value (the wide row is ~1000x the others).
      double v_max = 0.0;
      for (int64_t s = 0; s < S; ++s)
        for (int64_t d = 0; d < D; ++d)
          v_max = std::max(v_max, std::abs(static_cast<double>(vq.Get(0, s, 0, d))));
      EXPECT_LE(out.MaxDiff(ref), 1e-5 + 1e-7 * v_max);
    }
  SetSimdTarget("");
}

TEST(KVCache, Q8CacheRejectsWhatItCannotHold) {
  try {
    KVCache bad(1, 2, 40, 8, DType::kQ8_0);
    ADD_FAILURE() << "head_dim 40 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim = 40 is not a multiple of 32"), std::string::npos)
        << e.what();
  }
  KVCache cache(1, 1, 32, 4, DType::kQ8_0);
  Tensor half(DType::kF16, 1, 1, 1, 32), f(DType::kF32, 1, 1, 1, 32), bq(DType::kBF16, 1, 1, 1, 32);
  EXPECT_THROW(cache.Append(half.view, half.view), Error);
  cache.Append(f.view, f.view);
  EXPECT_THROW(cache.keys(), Error);
  EXPECT_THROW(cache.values(), Error);
  EXPECT_THROW(cache.Attend(bq.view, bq.view), Error);
  // A q8_0 view is not a tensor attention takes.
  TensorView q8 = f.view;
  q8.dtype = DType::kQ8_0;
  try {
    Attention(f.view, q8, q8, f.view);
    ADD_FAILURE() << "a q8_0 view accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("k: dtype q8_0 is a KV cache storage type"), std::string::npos)
        << e.what();
  }
}

// Shift forgets a span of positions and moves the later ones down, bit for bit in every storage
// type; UpdateKeys hands each key row over as float32 and stores the result back (an identity
// leaves a q8_0 cache unchanged: its rows requantize to the same blocks).
TEST(KVCache, ShiftMovesRowsAndUpdateKeysRewritesThem) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0}) {
    SCOPED_TRACE(DTypeName(dtype));
    const int64_t S = 20, Hkv = 2, D = 32;
    std::mt19937 rng(4);
    Tensor k(DType::kF32, 1, S, Hkv, D), v(DType::kF32, 1, S, Hkv, D);
    k.Randomize(rng), v.Randomize(rng);
    KVCache cache(1, Hkv, D, 24, dtype);
    cache.Append(k.view, v.view);
    std::vector<float> k0, v0, k1, v1;
    const TensorView kb = cache.KeysF32(&k0), vbv = cache.ValuesF32(&v0);
    const std::vector<float> keys(static_cast<const float*>(kb.data),
                                  static_cast<const float*>(kb.data) + kb.stride[2] * Hkv);
    const std::vector<float> values(static_cast<const float*>(vbv.data),
                                    static_cast<const float*>(vbv.data) + vbv.stride[2] * Hkv);
    cache.Shift(3, 5);
    ASSERT_EQ(cache.length(), 15);
    const TensorView ka = cache.KeysF32(&k1), va = cache.ValuesF32(&v1);
    auto at = [](const TensorView& t, int64_t p, int64_t h, int64_t d) {
      return h * t.stride[2] + p * t.stride[1] + d;
    };
    for (int64_t h = 0; h < Hkv; ++h)
      for (int64_t p = 0; p < 15; ++p)
        for (int64_t d = 0; d < D; ++d) {
          const int64_t old = p < 3 ? p : p + 5;
          ASSERT_EQ(static_cast<const float*>(ka.data)[at(ka, p, h, d)], keys[at(kb, old, h, d)]);
          ASSERT_EQ(static_cast<const float*>(va.data)[at(va, p, h, d)], values[at(vbv, old, h, d)]);
        }
    int64_t rows = 0;
    cache.UpdateKeys(0, 15, [&](float*) { ++rows; });
    EXPECT_EQ(rows, 15 * Hkv);
    std::vector<float> k2;
    const TensorView kc = cache.KeysF32(&k2);
    for (int64_t h = 0; h < Hkv; ++h)
      for (int64_t p = 0; p < 15; ++p)
        for (int64_t d = 0; d < D; ++d)
          ASSERT_EQ(static_cast<const float*>(kc.data)[at(kc, p, h, d)],
                    keys[at(kb, p < 3 ? p : p + 5, h, d)]);
    cache.UpdateKeys(3, 15, [&](float* row) {
      for (int64_t d = 0; d < D; ++d) row[d] = -row[d];
    });
    std::vector<float> k3;
    const TensorView kn = cache.KeysF32(&k3);
    EXPECT_EQ(static_cast<const float*>(kn.data)[at(kn, 3, 1, 7)], -keys[at(kb, 8, 1, 7)]);
    EXPECT_EQ(static_cast<const float*>(kn.data)[at(kn, 2, 1, 7)], keys[at(kb, 2, 1, 7)]);
    EXPECT_THROW(cache.Shift(10, 6), Error);
    EXPECT_THROW(cache.Shift(-1, 2), Error);
    EXPECT_THROW(cache.UpdateKeys(4, 16, [](float*) {}), Error);
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
