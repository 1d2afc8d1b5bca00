// The fused kernels against the float64 scalar reference, for every compiled SIMD target.
// Tolerance (FlashAttention's rule): max|out - ref64| <= 2 * max|naive - ref64| + atol, where
// naive is the same formula computed in the input dtype (float32 accumulation, rounded tensors).
#include "attn/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace attn::testing {
namespace {

// Runs one case on the current SIMD target and checks output and LSE against the reference.
void CheckCase(const Case& c, uint32_t seed) {
  SCOPED_TRACE(c.Name() + " target=" + CurrentSimdTarget());
  std::mt19937 rng(seed);
  Tensor q(c.dtype, c.B, c.Sq, c.Hq, c.D, c.bhsd), k(c.KvDtype(), c.B, c.Sk, c.Hkv, c.D, c.bhsd),
      v(c.KvDtype(), c.B, c.Sk, c.Hkv, c.D, c.bhsd);
  q.Randomize(rng), k.Randomize(rng), v.Randomize(rng);
  Tensor out(c.dtype, c.B, c.Sq, c.Hq, c.D), ref(c.dtype, c.B, c.Sq, c.Hq, c.D),
      naive(c.dtype, c.B, c.Sq, c.Hq, c.D);
  std::vector<double> ref64(c.B * c.Sq * c.Hq * c.D);

  std::vector<uint8_t> bool_mask;
  std::vector<float> add_mask, sinks;
  AttentionOptions o = MakeOptions(c, rng, bool_mask, add_mask, &sinks);
  const int64_t rows = c.B * c.Hq * c.Sq;
  std::vector<float> lse(rows), lse_naive(rows);
  std::vector<double> lse64(rows);

  // Reference in float64 (with the row entropy, for the statistics mode below).
  std::vector<float> entropy(rows, -1.0f), entropy_ref(rows, -1.0f);
  o.entropy = entropy_ref.data();
  AttentionReference(q.view, k.view, v.view, ref.view, o, false, lse64.data(), ref64.data());
  o.entropy = nullptr;
  o.lse = lse_naive.data();
  AttentionReference(q.view, k.view, v.view, naive.view, o, true);
  o.lse = lse.data();
  Attention(q.view, k.view, v.view, out.view, o);

  const double err = out.MaxDiff(ref64), naive_err = naive.MaxDiff(ref64);
  EXPECT_LE(err, 2 * naive_err + Atol(c.dtype)) << "naive error " << naive_err;
  double lse_err = 0, lse_naive_err = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (std::isinf(lse64[r])) {
      ASSERT_TRUE(std::isinf(lse[r]) && lse[r] < 0) << "row " << r << " lse " << lse[r];
      continue;
    }
    ASSERT_FALSE(std::isnan(lse[r]));
    lse_err = std::max(lse_err, std::abs(lse[r] - lse64[r]));
    lse_naive_err = std::max(lse_naive_err, std::abs(lse_naive[r] - lse64[r]));
  }
  EXPECT_LE(lse_err, 2 * lse_naive_err + 1e-4) << "lse naive error " << lse_naive_err;
  // Statistics mode: the row entropy accumulated inside the kernel, against the float64 reference
  // computed from the full probabilities; the output must not change beyond the tolerance.
  o.lse = nullptr;
  o.entropy = entropy.data();
  Tensor out_stats(c.dtype, c.B, c.Sq, c.Hq, c.D);
  Attention(q.view, k.view, v.view, out_stats.view, o);
  EXPECT_LE(out_stats.MaxDiff(ref64), 2 * naive_err + Atol(c.dtype));
  double entropy_err = 0;
  for (int64_t r = 0; r < rows; ++r) {
    ASSERT_TRUE(std::isfinite(entropy[r]) && entropy[r] >= 0.0f) << "row " << r << " entropy " << entropy[r];
    if (std::isinf(lse64[r])) {
      EXPECT_EQ(entropy[r], 0.0f) << "row " << r;
    }
    entropy_err = std::max(entropy_err, static_cast<double>(std::abs(entropy[r] - entropy_ref[r])));
  }
  EXPECT_LE(entropy_err, 2e-3) << "entropy";
  // Rows with no visible key are exactly 0.
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t i = 0; i < c.Sq; ++i) {
        if (!std::isinf(lse64[(b * c.Hq + h) * c.Sq + i])) continue;
        for (int64_t d = 0; d < c.D; ++d) ASSERT_EQ(out.Get(b, i, h, d), 0.0f);
      }
}

std::vector<Case> Grid() {
  std::vector<Case> cases;
  const DType dtypes[] = {DType::kF32, DType::kF16, DType::kBF16};
  const std::pair<int64_t, int64_t> heads[] = {{9, 9}, {9, 3}, {9, 1}};
  const std::pair<int64_t, int64_t> seqs[] = {{1, 1}, {1, 4096}, {17, 3}, {113, 203}, {203, 113}, {256, 512}};
  const int64_t dims[] = {1, 8, 32, 59, 64, 80, 96, 128, 256};
  int n = 0;
  // Every dtype x head grouping x sequence pair, with head dims and mask kinds rotating.
  for (DType dt : dtypes)
    for (auto [hq, hkv] : heads)
      for (auto [sq, sk] : seqs) {
        Case c{1 + n % 3, sq, sk, hq, hkv, dims[n % 9], dt};
        if (sq * sk >= 4096 && c.D >= 128) c.B = 1;
        switch (n % 8) {
          case 0:
            break;
          case 1:
            c.causal = true;
            break;
          case 2:
            c.causal = true, c.align = CausalAlign::kTopLeft;
            break;
          case 3:
            c.wl = 1 + n % 37, c.wr = n % 5;
            break;
          case 4:
            c.kv_lens = true, c.causal = true;
            break;
          case 5:
            c.mask = MaskKind::kBool;
            break;
          case 6:
            c.mask = MaskKind::kAdditive, c.wl = 7;
            break;
          case 7:
            c.softcap = 5.0f, c.causal = true, c.wl = 50, c.wr = -1, c.bhsd = true;
            break;
        }
        c.sinks = n % 3 == 2;
        cases.push_back(c);
        ++n;
      }
  // The large shapes of the grid, once per dtype, causal both ways.
  cases.push_back({1, 1023, 1024, 3, 1, 64, DType::kF32, true});
  cases.push_back({1, 1024, 1023, 2, 2, 128, DType::kBF16, true, CausalAlign::kTopLeft});
  cases.push_back({1, 1023, 1024, 3, 3, 256, DType::kF16, false, CausalAlign::kBottomRight, 100, 0});
  return cases;
}

class AttentionGridTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { SetSimdTarget(GetParam()); }
  void TearDown() override { SetSimdTarget(""); }
};

TEST_P(AttentionGridTest, MatchesReference) {
  ASSERT_EQ(CurrentSimdTarget(), GetParam());
  const std::vector<Case> cases = Grid();
  for (size_t i = 0; i < cases.size(); ++i) {
    // The slowest shapes run on the best target only; the others cover every branch already.
    if (cases[i].Sq >= 1023 && GetParam() != SimdTargets().front()) continue;
    CheckCase(cases[i], 1000 + static_cast<uint32_t>(i));
    if (HasFatalFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(EveryTarget, AttentionGridTest, ::testing::ValuesIn(testing::AttentionTargets()),
                         [](const auto& info) { return info.param; });

TEST(Attention, ThreadCountDoesNotChangeBits) {
  std::mt19937 rng(5);
  for (DType dt : {DType::kF32, DType::kBF16})
    for (auto [sq, sk] : {std::pair<int64_t, int64_t>{1, 5000}, {300, 700}, {40, 2000}}) {
      Tensor q(dt, 2, sq, 6, 64), k(dt, 2, sk, 2, 64), v(dt, 2, sk, 2, 64);
      q.Randomize(rng), k.Randomize(rng), v.Randomize(rng);
      Tensor o1(dt, 2, sq, 6, 64), o2(dt, 2, sq, 6, 64);
      AttentionOptions o;
      o.causal = true;
      o.threads = 1;
      Attention(q.view, k.view, v.view, o1.view, o);
      o.threads = 2;
      Attention(q.view, k.view, v.view, o2.view, o);
      EXPECT_EQ(o1.bytes, o2.bytes) << DTypeName(dt) << " Sq=" << sq << " Sk=" << sk;
    }
}

// Rows [s0, s0 + n) of a [B, S, H, D] view.
TensorView Rows(const TensorView& v, int64_t s0, int64_t n) {
  TensorView r = v;
  r.data = static_cast<uint8_t*>(v.data) + s0 * v.stride[1] * static_cast<int64_t>(DTypeSize(v.dtype));
  r.shape[1] = n;
  return r;
}

// A prompt run in chunks (each chunk's queries against every key so far, causal bottom-right, as
// a model with a KV cache runs it) gives the same bits as one pass, on every target and for
// chunk tails of every size: a row's result never depends on the other rows in the call.
TEST(Attention, ChunkedQueriesGiveTheSameBitsAsOnePass) {
  for (const std::string& target : testing::AttentionTargets()) {
    SetSimdTarget(target);
    for (DType dt : {DType::kF32, DType::kBF16}) {
      std::mt19937 rng(8);
      const int64_t S = 601;
      Tensor q(dt, 1, S, 9, 64), k(dt, 1, S, 3, 64), v(dt, 1, S, 3, 64);
      q.Randomize(rng), k.Randomize(rng), v.Randomize(rng);
      AttentionOptions o;
      o.causal = true;
      o.threads = 2;
      Tensor whole(dt, 1, S, 9, 64);
      Attention(q.view, k.view, v.view, whole.view, o);
      for (int64_t chunk : {512, 100, 7}) {
        Tensor parts(dt, 1, S, 9, 64);
        for (int64_t s0 = 0; s0 < S; s0 += chunk) {
          const int64_t n = std::min(chunk, S - s0);
          if (9 * n <= 16) continue;  // <= 16 rows go to the split-K decode kernel, by design
          Attention(Rows(q.view, s0, n), Rows(k.view, 0, s0 + n), Rows(v.view, 0, s0 + n),
                    Rows(parts.view, s0, n), o);
        }
        for (int64_t s0 = 0; s0 < S; s0 += chunk) {
          const int64_t n = std::min(chunk, S - s0);
          if (9 * n <= 16) continue;
          for (int64_t i = s0; i < s0 + n; ++i)
            for (int64_t h = 0; h < 9; ++h)
              for (int64_t d = 0; d < 64; ++d)
                ASSERT_EQ(parts.Get(0, i, h, d), whole.Get(0, i, h, d))
                    << target << " " << DTypeName(dt) << " chunk " << chunk << " row " << i << " head " << h
                    << " dim " << d;
        }
      }
    }
  }
  SetSimdTarget("");
}

// The split-K decode kernel takes up to 16 query rows per KV head: every row count, on every target
// (its bf16 dot path included), with head dims that leave partial vectors and key counts that leave
// partial blocks and an odd last key.
TEST(Attention, DecodeEveryRowCountMatchesReferenceOnEveryTarget) {
  const int64_t dims[] = {8, 33, 64, 72, 130};
  const int64_t keys[] = {1, 63, 65, 131, 200};
  for (const std::string& target : testing::AttentionTargets()) {
    SetSimdTarget(target);
    int n = 0;
    for (int64_t rows = 1; rows <= 16; ++rows)
      for (DType dt : {DType::kBF16, DType::kF32, DType::kF16}) {
        const int64_t sq = rows % 2 == 0 && n % 2 == 0 ? 2 : 1, group = rows / sq;
        Case c{1 + n % 2, sq, keys[n % 5], group, 1, dims[(n + n / 5) % 5], dt};
        if (n % 3 == 1) c.causal = true;
        if (n % 3 == 2) c.kv_lens = true;
        c.sinks = n % 4 == 1;
        CheckCase(c, static_cast<uint32_t>(100 + n));
        ++n;
      }
  }
  SetSimdTarget("");
}

// f32 queries over f16 / bf16 keys and values (a half KV cache, as the models generate with): the
// decode kernel for every row count and the prefill kernel, on every target, against the float64
// reference reading the same half values (so the tolerance is float32's).
TEST(Attention, HalfKeysUnderF32QueriesMatchReferenceOnEveryTarget) {
  const int64_t dims[] = {8, 33, 64, 72, 130};
  for (const std::string& target : testing::AttentionTargets()) {
    SetSimdTarget(target);
    int n = 0;
    for (DType kv : {DType::kF16, DType::kBF16}) {
      for (int64_t rows : {1, 3, 7, 16}) {  // decode: 1 query x `rows` heads of a group
        Case c{1 + n % 2, 1, 131 + 64 * n, rows, 1, dims[n % 5], DType::kF32, n % 2 == 1};
        c.kv_dtype = kv;
        CheckCase(c, static_cast<uint32_t>(300 + n));
        ++n;
      }
      for (auto [sq, sk] : {std::pair<int64_t, int64_t>{113, 203}, {256, 512}}) {  // prefill
        Case c{1, sq, sk, 9, 3, dims[n % 5], DType::kF32, true};
        c.kv_dtype = kv, c.bhsd = n % 2 == 0;
        CheckCase(c, static_cast<uint32_t>(300 + n));
        ++n;
      }
    }
  }
  SetSimdTarget("");
}

// Views whose head dimension is strided (every other element of a wider tensor) take the copying
// branches of the prefill and decode kernels (the bf16 dot path copies K and V in pairs instead of reading K
// in place); with odd head dims and odd key counts they also exercise the zero padding of the pairs.
TEST(Attention, StridedHeadDimMatchesReferenceOnEveryTarget) {
  for (const std::string& target : testing::AttentionTargets()) {
    SetSimdTarget(target);
    for (DType dt : {DType::kBF16, DType::kF32, DType::kF16})
      for (auto [sk, dim] : {std::pair<int64_t, int64_t>{131, 64}, {77, 33}, {200, 7}}) {
        SCOPED_TRACE(target + " " + DTypeName(dt) + " Sk=" + std::to_string(sk) +
                     " D=" + std::to_string(dim));
        for (int64_t sq : {40, 3}) {  // 3 query rows x 2 heads per KV head: the decode kernel
          std::mt19937 rng(static_cast<uint32_t>(sk + dim + sq));
          Tensor q(dt, 1, sq, 4, 2 * dim), k(dt, 1, sk, 2, 2 * dim), v(dt, 1, sk, 2, 2 * dim);
          q.Randomize(rng), k.Randomize(rng), v.Randomize(rng);
          for (Tensor* t : {&q, &k, &v}) t->view.stride[3] = 2, t->view.shape[3] = dim;
          Tensor out(dt, 1, sq, 4, dim), naive(dt, 1, sq, 4, dim), ref(dt, 1, sq, 4, dim);
          std::vector<double> ref64(sq * 4 * dim);
          AttentionOptions o;
          o.causal = true;
          AttentionReference(q.view, k.view, v.view, ref.view, o, false, nullptr, ref64.data());
          AttentionReference(q.view, k.view, v.view, naive.view, o, true);
          Attention(q.view, k.view, v.view, out.view, o);
          EXPECT_LE(out.MaxDiff(ref64), 2 * naive.MaxDiff(ref64) + Atol(dt)) << "Sq=" << sq;
        }
      }
  }
  SetSimdTarget("");
}

TEST(Attention, LayoutsGiveTheSameResult) {
  std::mt19937 rng(6);
  Tensor q(DType::kF32, 2, 70, 4, 32), k(DType::kF32, 2, 90, 2, 32), v(DType::kF32, 2, 90, 2, 32);
  q.Randomize(rng), k.Randomize(rng), v.Randomize(rng);
  Tensor qb(DType::kF32, 2, 70, 4, 32, true), kb(DType::kF32, 2, 90, 2, 32, true),
      vb(DType::kF32, 2, 90, 2, 32, true);
  for (auto [src, dst] : {std::pair{&q, &qb}, {&k, &kb}, {&v, &vb}})
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t s = 0; s < src->view.shape[1]; ++s)
        for (int64_t h = 0; h < src->view.shape[2]; ++h)
          for (int64_t d = 0; d < 32; ++d) dst->Set(b, s, h, d, src->Get(b, s, h, d));
  Tensor o1(DType::kF32, 2, 70, 4, 32), o2(DType::kF32, 2, 70, 4, 32, true);
  AttentionOptions o;
  o.causal = true;
  Attention(q.view, k.view, v.view, o1.view, o);
  Attention(qb.view, kb.view, vb.view, o2.view, o);
  EXPECT_EQ(o1.MaxDiff(o2), 0.0);
}

TEST(Attention, EmptyKeysGiveZerosAndMinusInfinity) {
  Tensor q(DType::kF32, 1, 20, 2, 8), k(DType::kF32, 1, 0, 2, 8), v(DType::kF32, 1, 0, 2, 8),
      out(DType::kF32, 1, 20, 2, 8);
  std::mt19937 rng(1);
  q.Randomize(rng);
  std::vector<float> lse(40, 1.0f);
  AttentionOptions o;
  o.lse = lse.data();
  Attention(q.view, k.view, v.view, out.view, o);
  for (float x : lse) EXPECT_TRUE(std::isinf(x) && x < 0);
  for (int64_t i = 0; i < 20; ++i)
    for (int64_t d = 0; d < 8; ++d) EXPECT_EQ(out.Get(0, i, 1, d), 0.0f);
}

TEST(Attention, BroadcastMaskMatchesFullMask) {
  std::mt19937 rng(9);
  Tensor q(DType::kF32, 2, 40, 4, 16), k(DType::kF32, 2, 50, 4, 16), v(DType::kF32, 2, 50, 4, 16);
  q.Randomize(rng), k.Randomize(rng), v.Randomize(rng);
  // A [1, 1, 40, 50] additive mask, broadcast over batch and heads, against the full copy.
  std::vector<float> small(40 * 50), full(2 * 4 * 40 * 50);
  std::normal_distribution<float> normal;
  for (auto& x : small) x = normal(rng);
  for (size_t i = 0; i < full.size(); ++i) full[i] = small[i % small.size()];
  AttentionOptions o;
  o.mask.kind = MaskKind::kAdditive;
  o.mask.data = small.data();
  o.mask.shape[2] = 40, o.mask.shape[3] = 50, o.mask.stride[2] = 50, o.mask.stride[3] = 1;
  Tensor o1(DType::kF32, 2, 40, 4, 16), o2(DType::kF32, 2, 40, 4, 16);
  Attention(q.view, k.view, v.view, o1.view, o);
  AttentionOptions f;
  f.mask.kind = MaskKind::kAdditive;
  f.mask.data = full.data();
  f.mask.shape[0] = 2, f.mask.shape[1] = 4, f.mask.shape[2] = 40, f.mask.shape[3] = 50;
  f.mask.stride[0] = 4 * 40 * 50, f.mask.stride[1] = 40 * 50, f.mask.stride[2] = 50, f.mask.stride[3] = 1;
  Attention(q.view, k.view, v.view, o2.view, f);
  EXPECT_EQ(o1.MaxDiff(o2), 0.0);
}

}  // namespace
}  // namespace attn::testing
