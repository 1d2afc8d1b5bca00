// The fused backward kernel against the float64 scalar reference, for every compiled SIMD target,
// and the reference itself against central finite differences of the forward.
// Tolerance (FlashAttention's rule, applied to dq, dk and dv): max|grad - ref64| <=
// 2 * max|naive - ref64| + atol, where naive is the reference computed in the input dtype
// (float32 accumulation, rounded tensors), and the fused kernel gets the out and lse of the fused
// forward, as in training.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "attn/attention.h"
#include "attn/error.h"
#include "kernels/attention_bwd_params.h"
#include "test_util.h"

namespace attn::testing {
namespace {

// The absolute slack on top of the 2x rule. dS = P (dP - D_i) subtracts two float32 sums of D
// products of size |dout| |v| (about sqrt(D) here), which carry rounding of ~1e-6; where a row has
// one visible key the naive computation rounds dP and D_i identically and cancels exactly (its
// error is 0), while the fused kernel sums them in different orders.
double GradAtol(DType dtype) { return dtype == DType::kF32 ? 1e-5 : 1e-4; }

// Forces the kernel's two-pass schedule (dK, dV, then dQ) while alive, when `on`; otherwise
// the default (one pass with per-key-split dQ rows, for all but huge shapes).
class TwoPass {
 public:
  explicit TwoPass(bool on) : saved_(kernels::SetBackwardMaxSplitBytesForTest(on ? 0 : kDefault)) {}
  ~TwoPass() { kernels::SetBackwardMaxSplitBytesForTest(saved_); }

 private:
  static constexpr int64_t kDefault = kernels::kDefaultMaxSplitBytes;
  int64_t saved_;
};

// Runs one case: the references once, then the fused kernel on every SIMD target.
void CheckCase(const Case& c, uint32_t seed) {
  SCOPED_TRACE(c.Name());
  std::mt19937 rng(seed);
  Tensor q(c.dtype, c.B, c.Sq, c.Hq, c.D, c.bhsd), k(c.dtype, c.B, c.Sk, c.Hkv, c.D, c.bhsd),
      v(c.dtype, c.B, c.Sk, c.Hkv, c.D, c.bhsd), dout(c.dtype, c.B, c.Sq, c.Hq, c.D, c.bhsd);
  q.Randomize(rng), k.Randomize(rng), v.Randomize(rng), dout.Randomize(rng);
  std::vector<uint8_t> bool_mask;
  std::vector<float> add_mask, sinks, dsinks_ref(c.Hq), dsinks(c.Hq);
  AttentionOptions o = MakeOptions(c, rng, bool_mask, add_mask, &sinks);
  if (c.sinks) o.sinks_grad = dsinks_ref.data();

  // References: float64, and the naive computation in the input dtype.
  const int64_t nq = c.B * c.Sq * c.Hq * c.D, nk = c.B * c.Sk * c.Hkv * c.D;
  std::vector<double> dq64(nq), dk64(nk), dv64(nk);
  Tensor dq(c.dtype, c.B, c.Sq, c.Hq, c.D, c.bhsd), dk(c.dtype, c.B, c.Sk, c.Hkv, c.D, c.bhsd),
      dv(c.dtype, c.B, c.Sk, c.Hkv, c.D, c.bhsd);
  Tensor nq_(c.dtype, c.B, c.Sq, c.Hq, c.D), nk_(c.dtype, c.B, c.Sk, c.Hkv, c.D),
      nv_(c.dtype, c.B, c.Sk, c.Hkv, c.D);
  AttentionBackwardReference(q.view, k.view, v.view, dout.view, dq.view, dk.view, dv.view, o, false,
                             dq64.data(), dk64.data(), dv64.data());
  std::vector<float> dsinks_naive(c.Hq);
  if (c.sinks) o.sinks_grad = dsinks_naive.data();
  AttentionBackwardReference(q.view, k.view, v.view, dout.view, nq_.view, nk_.view, nv_.view, o, true);
  o.sinks_grad = nullptr;
  double dsinks_scale = 0.0, naive_s = 0.0;
  for (int64_t h = 0; h < c.Hq; ++h) {
    dsinks_scale = std::max(dsinks_scale, static_cast<double>(std::abs(dsinks_ref[h])));
    naive_s = std::max(naive_s, static_cast<double>(std::abs(dsinks_naive[h] - dsinks_ref[h])));
  }
  if (c.sinks && !c.kv_lens) {  // (kv_lens may leave every row without keys: out = 0, no gradient)
    EXPECT_GT(dsinks_scale, 0.01) << "the sinks' gradient is (almost) zero: nothing tested";
  }
  const double naive_q = nq_.MaxDiff(dq64), naive_k = nk_.MaxDiff(dk64), naive_v = nv_.MaxDiff(dv64);

  // The forward's out and lse, as training has them.
  Tensor out(c.dtype, c.B, c.Sq, c.Hq, c.D, c.bhsd);
  std::vector<float> lse(c.B * c.Hq * c.Sq);
  o.lse = lse.data();
  Attention(q.view, k.view, v.view, out.view, o);
  o.lse = nullptr;

  const double atol = GradAtol(c.dtype);
  for (const std::string& target : HighwayTargets()) {
    SetSimdTarget(target);
    for (const char* schedule : {"one-pass", "two-pass"}) {
      SCOPED_TRACE("target=" + target + " " + schedule);
      const TwoPass two_pass(schedule[0] == 't');
      // Poison the outputs: every element must be written.
      for (Tensor* g : {&dq, &dk, &dv}) std::fill(g->bytes.begin(), g->bytes.end(), 0xff);
      std::fill(dsinks.begin(), dsinks.end(), std::numeric_limits<float>::quiet_NaN());
      if (c.sinks) o.sinks_grad = dsinks.data();
      AttentionBackward(q.view, k.view, v.view, out.view, lse.data(), dout.view, dq.view, dk.view, dv.view,
                        o);
      o.sinks_grad = nullptr;
      for (int64_t h = 0; c.sinks && h < c.Hq; ++h)
        EXPECT_NEAR(dsinks[h], dsinks_ref[h], 2 * naive_s + atol)
            << "dsinks[" << h << "], naive error " << naive_s;
      EXPECT_LE(dq.MaxDiff(dq64), 2 * naive_q + atol) << "dq, naive error " << naive_q;
      EXPECT_LE(dk.MaxDiff(dk64), 2 * naive_k + atol) << "dk, naive error " << naive_k;
      EXPECT_LE(dv.MaxDiff(dv64), 2 * naive_v + atol) << "dv, naive error " << naive_v;
    }
  }
  SetSimdTarget("");
}

std::vector<Case> Grid() {
  std::vector<Case> cases;
  const std::pair<int64_t, int64_t> seqs[] = {{1, 1}, {17, 3}, {113, 203}, {203, 113}, {256, 512}};
  const std::pair<int64_t, int64_t> heads[] = {{8, 2}, {8, 1}, {3, 3}};
  const int64_t dims[] = {8, 59, 64, 128};
  // Every sequence pair x head grouping, with head dims, dtypes and masking kinds rotating.
  int n = 0;
  for (auto [sq, sk] : seqs)
    for (auto [hq, hkv] : heads) {
      Case c{1 + n % 2, sq, sk, hq, hkv, dims[n % 4]};
      if (sq * sk > 100000) c.B = 1, c.Hq = hq / 2, c.Hkv = std::max<int64_t>(1, hkv / 2), c.D = 64;
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
          c.kv_lens = true, c.causal = true, c.B = 2;
          break;
        case 5:
          c.mask = MaskKind::kBool, c.bhsd = true;
          break;
        case 6:
          c.mask = MaskKind::kAdditive, c.wl = 7;
          break;
        case 7:
          c.softcap = 5.0f, c.causal = true, c.wl = 50, c.bhsd = true;
          break;
      }
      c.sinks = n % 3 == 1;
      cases.push_back(c);
      ++n;
    }
  // Half-precision inputs (float32 accumulation), and softcap with top-left causal.
  cases.push_back({2, 113, 203, 8, 2, 64, DType::kBF16, true});
  // Many heads: one key split per KV head, so several key tiles accumulate together (KeyTiles).
  cases.push_back({2, 113, 403, 8, 8, 32, DType::kF32, true, CausalAlign::kBottomRight, 150, -1});
  cases.push_back({1, 203, 113, 8, 1, 59, DType::kF16, false, CausalAlign::kBottomRight, 20, 3});
  cases.push_back({1, 113, 203, 4, 2, 128, DType::kF32, true, CausalAlign::kTopLeft, -1, -1, true,
                   MaskKind::kNone, 3.0f});
  return cases;
}

TEST(AttentionBackward, MatchesReferenceOnEveryTarget) {
  const std::vector<Case> cases = Grid();
  for (size_t i = 0; i < cases.size(); ++i) CheckCase(cases[i], 1000 + static_cast<uint32_t>(i));
}

// L(x) = sum(out(x) * dout) in float64, through the forward reference.
double Loss(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
            const AttentionOptions& o) {
  const auto& s = q.view.shape;
  Tensor out(DType::kF32, s[0], s[1], s[2], s[3]);
  std::vector<double> out64(q.view.numel());
  AttentionReference(q.view, k.view, v.view, out.view, o, false, nullptr, out64.data());
  double loss = 0.0;
  int64_t i = 0;
  for (int64_t b = 0; b < s[0]; ++b)
    for (int64_t t = 0; t < s[1]; ++t)
      for (int64_t h = 0; h < s[2]; ++h)
        for (int64_t d = 0; d < s[3]; ++d, ++i) loss += out64[i] * dout.Get(b, t, h, d);
  return loss;
}

// The reference's gradients against central differences (L(x + h) - L(x - h)) / 2h. Inputs are
// multiples of 2^-8 and h = 2^-10, so x +- h is exact in float32; the O(h^2) truncation error is
// far below the tolerance.
TEST(AttentionBackward, ReferenceMatchesFiniteDifferences) {
  struct Opt {
    const char* name;
    bool causal;
    CausalAlign align;
    int64_t wl, wr;
    bool kv_lens;
    MaskKind mask;
    float softcap;
    bool sinks = false;
  };
  const Opt opts[] = {
      {"plain", false, CausalAlign::kBottomRight, -1, -1, false, MaskKind::kNone, 0.0f},
      {"causalBR_window", true, CausalAlign::kBottomRight, 2, -1, false, MaskKind::kNone, 0.0f},
      {"causalTL_kvlens", true, CausalAlign::kTopLeft, -1, -1, true, MaskKind::kNone, 0.0f},
      {"softcap_addmask", false, CausalAlign::kBottomRight, -1, 1, false, MaskKind::kAdditive, 2.0f},
      {"causalBR_kvlens_sinks", true, CausalAlign::kBottomRight, -1, -1, true, MaskKind::kNone, 0.0f, true},
  };
  const double h = 1.0 / 1024;
  for (const Opt& op : opts) {
    SCOPED_TRACE(op.name);
    Case c{2, 5, 7, 4, 2, 6};
    c.causal = op.causal, c.align = op.align, c.wl = op.wl, c.wr = op.wr, c.kv_lens = op.kv_lens;
    c.mask = op.mask, c.softcap = op.softcap, c.sinks = op.sinks;
    std::mt19937 rng(7);
    Tensor q(DType::kF32, c.B, c.Sq, c.Hq, c.D), k(DType::kF32, c.B, c.Sk, c.Hkv, c.D),
        v(DType::kF32, c.B, c.Sk, c.Hkv, c.D), dout(DType::kF32, c.B, c.Sq, c.Hq, c.D);
    for (Tensor* t : {&q, &k, &v, &dout}) {
      t->Randomize(rng);
      float* x = reinterpret_cast<float*>(t->bytes.data());
      for (size_t i = 0; i < t->bytes.size() / 4; ++i) x[i] = std::round(x[i] * 256.0f) / 256.0f;
    }
    std::vector<uint8_t> bool_mask;
    std::vector<float> add_mask, sinks;
    AttentionOptions o = MakeOptions(c, rng, bool_mask, add_mask, &sinks);
    for (float& x : sinks) x = std::isinf(x) ? x : std::round(x * 256.0f) / 256.0f;
    if (op.kv_lens) {
      EXPECT_EQ(o.kv_lens[0], 0);  // B = 2: batch 0 has no keys
    }

    Tensor dq(DType::kF32, c.B, c.Sq, c.Hq, c.D), dk(DType::kF32, c.B, c.Sk, c.Hkv, c.D),
        dv(DType::kF32, c.B, c.Sk, c.Hkv, c.D);
    std::vector<double> dq64(q.view.numel()), dk64(k.view.numel()), dv64(v.view.numel());
    std::vector<float> dsinks(c.Hq);
    if (op.sinks) o.sinks_grad = dsinks.data();
    AttentionBackwardReference(q.view, k.view, v.view, dout.view, dq.view, dk.view, dv.view, o, false,
                               dq64.data(), dk64.data(), dv64.data());
    o.sinks_grad = nullptr;
    // (L(x + h) - L(x - h)) / 2h for one input value x, left as it was.
    auto central = [&](float& x) {
      const float x0 = x;
      x = static_cast<float>(x0 + h);
      const double up = Loss(q, k, v, dout, o);
      x = static_cast<float>(x0 - h);
      const double down = Loss(q, k, v, dout, o);
      x = x0;
      return (up - down) / (2 * h);
    };
    for (int64_t hd = 0; op.sinks && hd < c.Hq; ++hd) {  // the sinks' gradient (head 0 has none: -inf)
      const double fd = std::isinf(sinks[hd]) ? 0.0 : central(sinks[hd]);
      EXPECT_NEAR(dsinks[hd], fd, 1e-5 * std::max(1.0, std::abs(fd))) << "dsinks[" << hd << "]";
      if (hd > 0) {
        EXPECT_GT(std::abs(fd), 1e-3) << "dsinks[" << hd << "] is (almost) zero: nothing tested";
      }
    }
    const std::pair<Tensor*, std::vector<double>*> inputs[] = {{&q, &dq64}, {&k, &dk64}, {&v, &dv64}};
    const char* names[] = {"q", "k", "v"};
    for (int w = 0; w < 3; ++w) {
      Tensor& x = *inputs[w].first;
      const std::vector<double>& grad = *inputs[w].second;
      float* data = reinterpret_cast<float*>(x.bytes.data());
      double max_err = 0.0, max_grad = 0.0;
      for (int64_t i = 0; i < x.view.numel(); ++i) {
        const double fd = central(data[i]);
        max_err = std::max(max_err, std::abs(fd - grad[i]));
        max_grad = std::max(max_grad, std::abs(grad[i]));
      }
      EXPECT_LE(max_err, 1e-5 * std::max(1.0, max_grad)) << "d" << names[w] << ", max |grad| " << max_grad;
      EXPECT_GT(max_grad, 0.01) << "d" << names[w] << " is (almost) zero: the case tests nothing";
    }
  }
}

TEST(AttentionBackward, ThreadCountDoesNotChangeBits) {
  const Case c{2, 203, 113, 8, 2, 59, DType::kF32, true};
  std::mt19937 rng(3);
  Tensor q(c.dtype, c.B, c.Sq, c.Hq, c.D), k(c.dtype, c.B, c.Sk, c.Hkv, c.D),
      v(c.dtype, c.B, c.Sk, c.Hkv, c.D), dout(c.dtype, c.B, c.Sq, c.Hq, c.D),
      out(c.dtype, c.B, c.Sq, c.Hq, c.D);
  q.Randomize(rng), k.Randomize(rng), v.Randomize(rng), dout.Randomize(rng);
  AttentionOptions o;
  o.causal = true;
  o.window_left = 40;
  std::vector<float> lse(c.B * c.Hq * c.Sq);
  o.lse = lse.data();
  Attention(q.view, k.view, v.view, out.view, o);
  o.lse = nullptr;
  for (bool two_pass : {false, true}) {
    const TwoPass schedule(two_pass);
    std::vector<std::vector<uint8_t>> first;
    for (int threads : {1, 2, 3, 0}) {
      SCOPED_TRACE("threads=" + std::to_string(threads) + (two_pass ? " two-pass" : " one-pass"));
      o.threads = threads;
      Tensor dq(c.dtype, c.B, c.Sq, c.Hq, c.D), dk(c.dtype, c.B, c.Sk, c.Hkv, c.D),
          dv(c.dtype, c.B, c.Sk, c.Hkv, c.D);
      AttentionBackward(q.view, k.view, v.view, out.view, lse.data(), dout.view, dq.view, dk.view, dv.view,
                        o);
      if (first.empty()) {
        first = {dq.bytes, dk.bytes, dv.bytes};
        continue;
      }
      EXPECT_TRUE(dq.bytes == first[0]) << "dq";
      EXPECT_TRUE(dk.bytes == first[1]) << "dk";
      EXPECT_TRUE(dv.bytes == first[2]) << "dv";
    }
  }
}

TEST(AttentionBackward, EmptyShapesWriteZeros) {
  // Sk = 0 (every row sees nothing), kv_lens all 0, Sq = 0 (no query sees any key).
  const std::array<std::array<int64_t, 3>, 3> shapes{{{4, 0, 0}, {4, 6, 1}, {0, 6, 0}}};
  for (const auto& [sq, sk, use_lens] : shapes) {
    SCOPED_TRACE("Sq=" + std::to_string(sq) + " Sk=" + std::to_string(sk));
    Tensor q(DType::kF32, 1, sq, 2, 8), k(DType::kF32, 1, sk, 1, 8), v(DType::kF32, 1, sk, 1, 8),
        out(DType::kF32, 1, sq, 2, 8), dout(DType::kF32, 1, sq, 2, 8);
    std::mt19937 rng(1);
    q.Randomize(rng), k.Randomize(rng), v.Randomize(rng), dout.Randomize(rng);
    AttentionOptions o;
    if (use_lens) o.kv_lens = {0};
    const float sinks[2] = {0.5f, -1.0f};
    o.sinks = sinks;
    std::vector<float> lse(2 * sq + 1);
    o.lse = lse.data();
    Attention(q.view, k.view, v.view, out.view, o);
    o.lse = nullptr;
    for (bool two_pass : {false, true}) {
      const TwoPass schedule(two_pass);
      Tensor dq(DType::kF32, 1, sq, 2, 8), dk(DType::kF32, 1, sk, 1, 8), dv(DType::kF32, 1, sk, 1, 8);
      for (Tensor* g : {&dq, &dk, &dv}) std::fill(g->bytes.begin(), g->bytes.end(), 0xff);
      std::vector<float> dsinks(2, std::numeric_limits<float>::quiet_NaN());
      o.sinks_grad = dsinks.data();
      AttentionBackward(q.view, k.view, v.view, out.view, lse.data(), dout.view, dq.view, dk.view, dv.view,
                        o);
      o.sinks_grad = nullptr;
      EXPECT_EQ(dsinks, std::vector<float>(2, 0.0f));  // out = 0 on every row: nothing flows to the sinks
      for (const Tensor* g : {&dq, &dk, &dv})
        for (size_t i = 0; i < g->bytes.size(); ++i)
          ASSERT_EQ(g->bytes[i], 0) << "byte " << i << " " << two_pass;
    }
  }
}

TEST(AttentionBackward, BadArgumentsNameTheArgument) {
  Tensor q(DType::kF32, 1, 4, 2, 8), k(DType::kF32, 1, 5, 1, 8), v(DType::kF32, 1, 5, 1, 8),
      out(DType::kF32, 1, 4, 2, 8), dout(DType::kF32, 1, 4, 2, 8), dq(DType::kF32, 1, 4, 2, 8),
      dk(DType::kF32, 1, 5, 1, 8), dv(DType::kF32, 1, 5, 1, 8);
  Tensor wrong_q(DType::kF32, 1, 3, 2, 8), wrong_k(DType::kF32, 1, 5, 2, 8), half_k(DType::kF16, 1, 5, 1, 8);
  std::vector<float> lse(8, 0.0f);
  auto message = [&](const TensorView& q_, const TensorView& k_, const TensorView& out_, const float* lse_,
                     const TensorView& dout_, const TensorView& dq_, const TensorView& dk_,
                     const TensorView& dv_, AttentionOptions o = {}) -> std::string {
    try {
      AttentionBackward(q_, k_, v.view, out_, lse_, dout_, dq_, dk_, dv_, o);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  auto expect = [](const std::string& msg, const std::string& want) {
    EXPECT_NE(msg.find(want), std::string::npos) << "message: " << msg << "\nwanted: " << want;
    EXPECT_EQ(msg.rfind("sdpa_backward: ", 0), 0u) << msg;
  };
  expect(message(q.view, k.view, out.view, lse.data(), dout.view, wrong_q.view, dk.view, dv.view),
         "dq: shape");
  expect(message(q.view, k.view, out.view, lse.data(), dout.view, dq.view, wrong_k.view, dv.view),
         "dk: shape");
  expect(message(q.view, k.view, out.view, lse.data(), dout.view, dq.view, dk.view, wrong_k.view),
         "dv: shape");
  expect(message(q.view, k.view, out.view, lse.data(), wrong_q.view, dq.view, dk.view, dv.view),
         "dout: shape");
  expect(message(q.view, k.view, out.view, lse.data(), dout.view, dq.view, half_k.view, dv.view),
         "dk: dtype");
  expect(message(q.view, k.view, out.view, nullptr, dout.view, dq.view, dk.view, dv.view),
         "lse: pointer is null");
  {  // a gradient of sinks the forward did not have
    float grad[2];
    AttentionOptions o;
    o.sinks_grad = grad;
    expect(message(q.view, k.view, out.view, lse.data(), dout.view, dq.view, dk.view, dv.view, o),
           "sinks_grad: given without sinks");
  }
  {  // the forward lets f32 queries read half K and V; the backward does not
    Tensor half_v(DType::kF16, 1, 5, 1, 8);
    std::string msg = "no error";
    try {
      AttentionBackward(q.view, half_k.view, half_v.view, out.view, lse.data(), dout.view, dq.view, dk.view,
                        dv.view);
    } catch (const Error& e) {
      msg = e.what();
    }
    expect(msg, "k: dtype float16 differs from q's float32");
  }
  expect(message(q.view, k.view, wrong_q.view, lse.data(), dout.view, dq.view, dk.view, dv.view),
         "out: shape");
  expect(message(q.view, wrong_k.view, out.view, lse.data(), dout.view, dq.view, dk.view, dv.view),
         "v: shape");
  AttentionOptions o;
  o.window_left = -2;
  expect(message(q.view, k.view, out.view, lse.data(), dout.view, dq.view, dk.view, dv.view, o),
         "window.left = -2");
  o = {};
  o.kv_lens = {9};
  expect(message(q.view, k.view, out.view, lse.data(), dout.view, dq.view, dk.view, dv.view, o),
         "kv_lens[0] = 9");
  TensorView null_dq = dq.view;
  null_dq.data = nullptr;
  expect(message(q.view, k.view, out.view, lse.data(), dout.view, null_dq, dk.view, dv.view),
         "dq: data pointer");
}

}  // namespace
}  // namespace attn::testing
