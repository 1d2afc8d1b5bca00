// Training (attn/train.h): the f32 GEMM against its double reference, every op's backward pass
// against central finite differences of a float64 version of its forward, the whole model's
// gradients against finite differences of Trainer::Losses, AdamW / clipping / the schedule on
// hand-computed cases, determinism, and the errors.
//
// Tolerances: an op's f32 backward against the float64 derivative is off by f32 rounding of
// O(dim) terms, so 1e-5 relative to the gradient's scale. The model check differentiates the f32
// model itself (a 4-point stencil, h = 1e-2, truncation O(h^4)); the loss noise of f32 (~1e-7)
// divided by h bounds the stencil's error near 2e-5, hence atol 2e-4 plus 1% of the value.
#include "attn/train.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attn/attention.h"
#include "attn/error.h"
#include "core/thread_pool.h"
#include "kernels/gemm.h"
#include "test_util.h"
#include "train/train_ops.h"

namespace attn::testing {
namespace {

std::vector<float> RandomVector(std::mt19937& rng, int64_t n, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = normal(rng);
  return v;
}

// Central difference of f at x[i] (double function of a double vector).
double Derivative(const std::function<double(const std::vector<double>&)>& f, std::vector<double> x, size_t i,
                  double h = 1e-5) {
  const double x0 = x[i];
  x[i] = x0 + h;
  const double fp = f(x);
  x[i] = x0 - h;
  const double fm = f(x);
  return (fp - fm) / (2 * h);
}

std::vector<double> ToDouble(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

double MaxAbs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

// ---------------------------------------------------------------- GEMM

TEST(TrainGemm, MatchesReferenceForEveryTranspositionAndTarget) {
  ThreadPool pool(2);
  std::mt19937 rng(1);
  struct Shape {
    int64_t M, N, K;
  };
  for (const std::string& target : HighwayTargets()) {
    SetSimdTarget(target);
    for (Shape s :
         {Shape{1, 1, 1}, Shape{6, 16, 8}, Shape{13, 21, 7}, Shape{50, 70, 300}, Shape{97, 33, 513}}) {
      for (int trans = 0; trans < 4; ++trans) {
        const bool ta = trans & 1, tb = trans & 2;
        std::vector<float> a = RandomVector(rng, s.M * s.K), b = RandomVector(rng, s.K * s.N);
        const GemmOperand ga = ta ? GemmOperand{a.data(), 1, s.M} : GemmOperand{a.data(), s.K, 1};
        const GemmOperand gb = tb ? GemmOperand{b.data(), 1, s.K} : GemmOperand{b.data(), s.N, 1};
        for (bool acc : {false, true}) {
          const int64_t ldc = s.N + 3;
          std::vector<float> c0 = RandomVector(rng, s.M * ldc), c = c0, ref = c0;
          Gemm(s.M, s.N, s.K, ga, gb, c.data(), ldc, acc, pool);
          GemmReference(s.M, s.N, s.K, ga, gb, ref.data(), ldc, acc);
          for (int64_t m = 0; m < s.M; ++m) {
            for (int64_t n = 0; n < ldc; ++n) {
              const size_t i = static_cast<size_t>(m * ldc + n);
              if (n >= s.N) {
                ASSERT_EQ(c[i], c0[i]) << "wrote past N";
                continue;
              }
              // f32 accumulation of K products of N(0,1) values: error ~ sqrt(K) eps * |terms|.
              ASSERT_NEAR(c[i], ref[i], 2e-6 * s.K + 1e-5) << target << " M" << s.M << " N" << s.N << " K"
                                                           << s.K << " trans " << trans << " acc " << acc;
            }
          }
        }
      }
    }
  }
  SetSimdTarget("");
}

TEST(TrainGemm, BitIdenticalForEveryThreadCount) {
  std::mt19937 rng(2);
  const int64_t M = 300, N = 200, K = 700;
  std::vector<float> a = RandomVector(rng, M * K), b = RandomVector(rng, K * N);
  std::vector<float> c1(M * N), c2(M * N);
  ThreadPool p1(1), p3(3);
  Gemm(M, N, K, {a.data(), 1, M}, {b.data(), N, 1}, c1.data(), N, false, p1);
  Gemm(M, N, K, {a.data(), 1, M}, {b.data(), N, 1}, c2.data(), N, false, p3);
  EXPECT_EQ(0, std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)));
}

// ---------------------------------------------------------------- ops

TEST(TrainOps, LayerNormForwardAndBackwardMatchFiniteDifferences) {
  std::mt19937 rng(3);
  for (const std::string& target : HighwayTargets()) {
    SetSimdTarget(target);
    for (int64_t dim : {1, 5, 8, 19}) {
      const int64_t n = 3;
      const float eps = 1e-5f;
      std::vector<float> x = RandomVector(rng, n * dim), w = RandomVector(rng, dim),
                         b = RandomVector(rng, dim);
      std::vector<float> dy = RandomVector(rng, n * dim);
      for (int64_t i = 0; i < dim; ++i) x[i] += 3.0f;  // a row with a large mean
      // f64 forward of row r: (x - mean) / sqrt(var + eps) * w + b
      auto ln = [&](const std::vector<double>& xs, const std::vector<double>& ws,
                    const std::vector<double>& bs, std::vector<double>& y) {
        y.assign(xs.size(), 0.0);
        for (int64_t r = 0; r < n; ++r) {
          double mu = 0, var = 0;
          for (int64_t i = 0; i < dim; ++i) mu += xs[r * dim + i];
          mu /= dim;
          for (int64_t i = 0; i < dim; ++i) var += (xs[r * dim + i] - mu) * (xs[r * dim + i] - mu);
          var /= dim;
          for (int64_t i = 0; i < dim; ++i)
            y[r * dim + i] = (xs[r * dim + i] - mu) / std::sqrt(var + eps) * ws[i] + bs[i];
        }
      };
      std::vector<float> y(n * dim), mean(n), rstd(n);
      train::LayerNormForward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), n, dim, eps);
      std::vector<double> y64;
      ln(ToDouble(x), ToDouble(w), ToDouble(b), y64);
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_NEAR(y[i], y64[i], 1e-5 * (1 + std::fabs(y64[i]))) << target;

      // Backward: L = sum dy * y.
      std::vector<float> dx(n * dim, 0.5f), dw(dim, 0.25f), db(dim, -0.5f);
      train::LayerNormBackward(x.data(), w.data(), mean.data(), rstd.data(), dy.data(), dx.data(), true,
                               dw.data(), db.data(), n, dim);
      const std::vector<double> x64 = ToDouble(x), w64 = ToDouble(w), b64 = ToDouble(b), dy64 = ToDouble(dy);
      auto loss = [&](const std::vector<double>& xs, const std::vector<double>& ws,
                      const std::vector<double>& bs) {
        std::vector<double> out;
        ln(xs, ws, bs, out);
        double s = 0;
        for (size_t i = 0; i < out.size(); ++i) s += out[i] * dy64[i];
        return s;
      };
      for (size_t i = 0; i < x.size(); ++i) {
        const double fd = Derivative([&](const std::vector<double>& v) { return loss(v, w64, b64); }, x64, i);
        ASSERT_NEAR(dx[i] - 0.5f, fd, 2e-4 * (1 + std::fabs(fd))) << target << " dx " << i << " dim " << dim;
      }
      for (int64_t i = 0; i < dim; ++i) {
        const double fw = Derivative([&](const std::vector<double>& v) { return loss(x64, v, b64); }, w64, i);
        const double fb = Derivative([&](const std::vector<double>& v) { return loss(x64, w64, v); }, b64, i);
        ASSERT_NEAR(dw[i] - 0.25f, fw, 1e-4 * (1 + std::fabs(fw))) << target << " dw " << i;
        ASSERT_NEAR(db[i] + 0.5f, fb, 1e-4 * (1 + std::fabs(fb))) << target << " db " << i;
      }
    }
  }
  SetSimdTarget("");
}

double Gelu64(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
}

TEST(TrainOps, GeluMatchesFormulaAndFiniteDifferences) {
  std::mt19937 rng(4);
  for (const std::string& target : HighwayTargets()) {
    SetSimdTarget(target);
    std::vector<float> x = RandomVector(rng, 37, 2.5f), dy = RandomVector(rng, 37);
    x[0] = 0.0f, x[1] = 12.0f, x[2] = -12.0f;
    std::vector<float> y(x.size()), dx(x.size());
    train::GeluForward(x.data(), y.data(), static_cast<int64_t>(x.size()));
    train::GeluBackward(x.data(), dy.data(), dx.data(), static_cast<int64_t>(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_NEAR(y[i], Gelu64(x[i]), 2e-6 * (1 + std::fabs(x[i]))) << target << " x = " << x[i];
      const double fd = (Gelu64(x[i] + 1e-6) - Gelu64(x[i] - 1e-6)) / 2e-6;
      ASSERT_NEAR(dx[i], dy[i] * fd, 2e-5 * (1 + std::fabs(dy[i]))) << target << " x = " << x[i];
    }
  }
  SetSimdTarget("");
}

TEST(TrainOps, CrossEntropyLossAndGradient) {
  std::mt19937 rng(5);
  for (const std::string& target : HighwayTargets()) {
    SetSimdTarget(target);
    for (int64_t vocab : {1, 3, 13, 40}) {
      const int64_t n = 4;
      std::vector<float> logits = RandomVector(rng, n * vocab, 3.0f);
      logits[0] += 80.0f;  // a large logit must not overflow
      std::vector<int32_t> targets(n);
      for (int64_t r = 0; r < n; ++r) targets[r] = static_cast<int32_t>((r * 7) % vocab);
      auto mean_loss = [&](const std::vector<double>& z) {
        double total = 0;
        for (int64_t r = 0; r < n; ++r) {
          double mx = -1e300, s = 0;
          for (int64_t j = 0; j < vocab; ++j) mx = std::max(mx, z[r * vocab + j]);
          for (int64_t j = 0; j < vocab; ++j) s += std::exp(z[r * vocab + j] - mx);
          total += std::log(s) + mx - z[r * vocab + targets[r]];
        }
        return total / n;
      };
      std::vector<float> loss(n), unchanged = logits;
      train::CrossEntropy(unchanged.data(), targets.data(), loss.data(), n, vocab, 0.0f);
      EXPECT_EQ(unchanged, logits);
      double mean = 0;
      for (float l : loss) mean += l;
      EXPECT_NEAR(mean / n, mean_loss(ToDouble(logits)), 1e-5) << target;
      std::vector<float> grad = logits;
      train::CrossEntropy(grad.data(), targets.data(), loss.data(), n, vocab, 1.0f / n);
      const std::vector<double> z = ToDouble(logits);
      for (size_t i = 0; i < grad.size(); ++i) {
        const double fd = Derivative(mean_loss, z, i);
        ASSERT_NEAR(grad[i], fd, 1e-6 + 1e-5 * std::fabs(fd)) << target << " vocab " << vocab << " i " << i;
      }
    }
  }
  SetSimdTarget("");
}

TEST(TrainOps, EmbeddingForwardAndScatterAdd) {
  const int64_t batch = 2, seq = 3, dim = 5, vocab = 4;
  std::mt19937 rng(6);
  std::vector<float> wte = RandomVector(rng, vocab * dim), wpe = RandomVector(rng, seq * dim);
  const std::vector<int32_t> tokens = {1, 3, 1, 0, 1, 2};
  std::vector<float> out(batch * seq * dim);
  train::EmbeddingForward(tokens.data(), wte.data(), wpe.data(), out.data(), 0, 4, seq, dim);
  train::EmbeddingForward(tokens.data(), wte.data(), wpe.data(), out.data(), 4, 6, seq, dim);
  for (int64_t r = 0; r < batch * seq; ++r) {
    for (int64_t i = 0; i < dim; ++i)
      EXPECT_EQ(out[r * dim + i], wte[tokens[r] * dim + i] + wpe[(r % seq) * dim + i]);
  }
  std::vector<float> dout = RandomVector(rng, batch * seq * dim), dwte(vocab * dim, 0.0f),
                     dwpe(seq * dim, 0.0f);
  train::EmbeddingBackwardTokens(tokens.data(), dout.data(), dwte.data(), batch * seq, dim);
  train::EmbeddingBackwardPositions(dout.data(), dwpe.data(), batch, seq, 0, seq, dim);
  for (int64_t i = 0; i < dim; ++i) {
    EXPECT_EQ(dwte[1 * dim + i], (dout[0 * dim + i] + dout[2 * dim + i]) + dout[4 * dim + i]);
    EXPECT_EQ(dwte[2 * dim + i], dout[5 * dim + i]);
    EXPECT_EQ(dwpe[1 * dim + i], dout[1 * dim + i] + dout[4 * dim + i]);
  }
}

TEST(TrainOps, AdamWOneStepByHand) {
  // p = 1, g = 0.5, m = v = 0, t = 1: m = 0.05, v = 0.05 * 0.25 = 0.0125 (beta2 0.95),
  // update = lr * (m / 0.1) / (sqrt(v) / sqrt(0.05) + eps) = lr * 0.5 / (0.5 + eps).
  float p[9], g[9], m[9], v[9];
  for (int i = 0; i < 9; ++i) p[i] = 1.0f, g[i] = 0.5f, m[i] = 0.0f, v[i] = 0.0f;
  const double lr = 0.01, wd = 0.1;
  train::AdamWArgs a{static_cast<float>(1 - lr * wd),        0.9f, 0.95f, 1e-8f, static_cast<float>(lr / 0.1),
                     static_cast<float>(std::sqrt(1 - 0.95))};
  train::AdamW(p, g, m, v, 9, a);
  const double expect = 1.0 * (1 - lr * wd) - lr * 0.5 / (0.5 + 1e-8);
  for (int i = 0; i < 9; ++i) {
    EXPECT_NEAR(p[i], expect, 1e-7);
    EXPECT_NEAR(m[i], 0.05, 1e-7);  // f32 rounding of 0.1 * 0.5
    EXPECT_NEAR(v[i], 0.0125, 1e-8);
  }
}

// ---------------------------------------------------------------- the model

TrainModelConfig TinyConfig(int64_t d_ff) {
  TrainModelConfig c;
  c.vocab_size = 11, c.context = 7, c.n_layers = 2, c.d_model = 8, c.n_heads = 2, c.d_ff = d_ff;
  return c;
}

std::vector<int32_t> RandomTokens(std::mt19937& rng, int64_t batch, const TrainModelConfig& c) {
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(c.vocab_size - 1));
  std::vector<int32_t> t(static_cast<size_t>(batch * (c.context + 1)));
  for (auto& x : t) x = dist(rng);
  return t;
}

class TrainModelGrad : public ::testing::TestWithParam<int64_t> {};

TEST_P(TrainModelGrad, EveryParameterMatchesFiniteDifferences) {
  const TrainModelConfig c = TinyConfig(GetParam());
  TrainOptions o;
  o.batch = 2, o.init_std = 0.4f, o.seed = 7, o.threads = 1;  // tiny products: one thread is fastest
  Trainer trainer(c, o);
  // Norm parameters away from 1 / 0 so their gradients are generic.
  std::mt19937 rng(8);
  for (TrainParam& p : trainer.params()) {
    if (p.rows == 1) {
      for (float& x : p.value) x += 0.3f * std::normal_distribution<float>()(rng);
    }
  }
  const std::vector<int32_t> tokens = RandomTokens(rng, o.batch, c);
  trainer.ForwardBackward(tokens, o.batch);
  std::vector<float> losses(static_cast<size_t>(o.batch * c.context));
  auto loss = [&]() {
    trainer.Losses(tokens, o.batch, losses.data());
    double s = 0;
    for (float l : losses) s += l;
    return s / static_cast<double>(losses.size());
  };
  int checked = 0;
  for (TrainParam& p : trainer.params()) {
    const std::vector<float> grad = p.grad;
    const double scale = std::max(1e-3, MaxAbs(grad));
    std::uniform_int_distribution<size_t> pick(0, p.value.size() - 1);
    for (int s = 0; s < 6; ++s) {
      const size_t i = s == 0 ? 0 : pick(rng);
      const float x0 = p.value[i];
      const float h = 1e-2f;
      double f[4];
      const float offsets[4] = {-2 * h, -h, h, 2 * h};
      for (int k = 0; k < 4; ++k) {
        p.value[i] = x0 + offsets[k];
        f[k] = loss();
      }
      p.value[i] = x0;
      const double fd = (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h);
      EXPECT_NEAR(grad[i], fd, 2e-4 + 1e-2 * scale) << p.name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

INSTANTIATE_TEST_SUITE_P(Train, TrainModelGrad, ::testing::Values(0, 12),
                         [](const ::testing::TestParamInfo<int64_t>& info) {
                           return info.param == 0 ? std::string("AttentionOnly") : std::string("WithFfn");
                         });

TEST(TrainModel, ParameterLayoutInitAndDecay) {
  TrainModelConfig c = TinyConfig(12);
  TrainOptions o;
  o.init_std = 0.02f;
  Trainer t(c, o);
  std::vector<std::string> names;
  for (const TrainParam& p : t.params()) names.push_back(p.name);
  ASSERT_EQ(names.size(), 2u + 2 * 12 + 3);
  EXPECT_EQ(names[0], "token_embd.weight");
  EXPECT_EQ(names[1], "position_embd.weight");
  EXPECT_EQ(names[2], "blk.0.attn_norm.weight");
  EXPECT_EQ(names[4], "blk.0.attn_qkv.weight");
  EXPECT_EQ(names[13], "blk.0.ffn_down.bias");
  EXPECT_EQ(names.back(), "output.weight");
  EXPECT_EQ(t.param("blk.1.attn_qkv.weight").rows, 24);
  EXPECT_EQ(t.param("blk.1.ffn_down.weight").cols, 12);
  EXPECT_TRUE(t.param("token_embd.weight").decay);
  EXPECT_FALSE(t.param("blk.0.attn_qkv.bias").decay);
  EXPECT_FALSE(t.param("output_norm.weight").decay);
  for (float x : t.param("blk.0.attn_norm.weight").value) EXPECT_EQ(x, 1.0f);
  for (float x : t.param("blk.0.attn_qkv.bias").value) EXPECT_EQ(x, 0.0f);
  // Standard deviations: 0.02 and 0.02 / sqrt(4) for the residual projections.
  auto stddev = [](const std::vector<float>& v) {
    double s = 0;
    for (float x : v) s += static_cast<double>(x) * x;
    return std::sqrt(s / static_cast<double>(v.size()));
  };
  TrainModelConfig big = c;
  big.d_model = 64, big.n_heads = 4, big.d_ff = 256;
  Trainer tb(big, o);
  EXPECT_NEAR(stddev(tb.param("blk.0.ffn_up.weight").value), 0.02, 0.001);
  EXPECT_NEAR(stddev(tb.param("blk.0.ffn_down.weight").value), 0.01, 0.0005);
  EXPECT_THROW(t.param("nope"), Error);
}

TEST(TrainModel, LogitsAndPatternsAgreeWithLosses) {
  const TrainModelConfig c = TinyConfig(12);
  TrainOptions o;
  o.init_std = 0.5f;
  Trainer t(c, o);
  std::mt19937 rng(9);
  const std::vector<int32_t> tokens = RandomTokens(rng, 1, c);
  std::vector<float> losses(c.context);
  t.Losses(tokens, 1, losses.data());
  const std::vector<float> logits = t.Logits(std::span<const int32_t>(tokens.data(), c.context));
  for (int64_t i = 0; i < c.context; ++i) {
    double mx = -1e300, s = 0;
    for (int64_t j = 0; j < c.vocab_size; ++j)
      mx = std::max(mx, static_cast<double>(logits[i * c.vocab_size + j]));
    for (int64_t j = 0; j < c.vocab_size; ++j) s += std::exp(logits[i * c.vocab_size + j] - mx);
    EXPECT_NEAR(losses[i], std::log(s) + mx - logits[i * c.vocab_size + tokens[i + 1]], 1e-5);
  }
  // A shorter prefix gives the same logits for its positions (causality).
  const std::vector<float> prefix = t.Logits(std::span<const int32_t>(tokens.data(), 3));
  for (int64_t i = 0; i < 3 * c.vocab_size; ++i) EXPECT_NEAR(prefix[i], logits[i], 1e-5);

  const int64_t n = 5;
  const std::vector<float> pat = t.Patterns(std::span<const int32_t>(tokens.data(), n));
  ASSERT_EQ(pat.size(), static_cast<size_t>(c.n_layers * c.n_heads * n * n));
  for (int64_t row = 0; row < c.n_layers * c.n_heads * n; ++row) {
    const int64_t i = row % n;
    double s = 0;
    for (int64_t j = 0; j < n; ++j) {
      const float p = pat[row * n + j];
      if (j > i) {
        EXPECT_EQ(p, 0.0f);
      }
      s += p;
    }
    EXPECT_NEAR(s, 1.0, 1e-5);
  }
  EXPECT_THROW(t.Logits({}), Error);
  std::vector<int32_t> too_long(c.context + 1, 0);
  EXPECT_THROW(t.Patterns(too_long), Error);
}

std::vector<float> TrainAndDump(const TrainModelConfig& c, TrainOptions o, int steps) {
  Trainer t(c, o);
  std::mt19937 rng(10);
  for (int s = 0; s < steps; ++s) {
    const std::vector<int32_t> tokens = RandomTokens(rng, o.batch, c);
    t.ForwardBackward(tokens, o.batch);
    t.Update();
  }
  std::vector<float> all;
  for (const TrainParam& p : t.params()) {
    all.insert(all.end(), p.value.begin(), p.value.end());
    all.insert(all.end(), p.adam_m.begin(), p.adam_m.end());
    all.insert(all.end(), p.adam_v.begin(), p.adam_v.end());
  }
  return all;
}

TEST(TrainModel, BitIdenticalRunToRunAndAcrossThreadCounts) {
  TrainModelConfig c;
  c.vocab_size = 37, c.context = 40, c.n_layers = 2, c.d_model = 32, c.n_heads = 4, c.d_ff = 48;
  TrainOptions o;
  o.batch = 3, o.lr = 3e-3f, o.warmup = 1, o.steps = 10, o.seed = 11, o.threads = 2;
  const std::vector<float> a = TrainAndDump(c, o, 3), b = TrainAndDump(c, o, 3);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  o.threads = 1;
  const std::vector<float> one = TrainAndDump(c, o, 3);
  EXPECT_EQ(0, std::memcmp(a.data(), one.data(), a.size() * sizeof(float))) << "1 thread differs from 2";
  o.seed = 12;
  o.threads = 2;
  EXPECT_NE(0, std::memcmp(a.data(), TrainAndDump(c, o, 3).data(), a.size() * sizeof(float)));
}

TEST(TrainModel, SeenTokensAreTheBatchesTokens) {
  TrainModelConfig c;
  c.context = 8, c.n_layers = 1, c.d_model = 16, c.n_heads = 2;
  TrainOptions o;
  o.batch = 1, o.threads = 1;
  Trainer t(c, o);
  EXPECT_EQ(t.seen_tokens(), std::vector<uint8_t>(256, 0));
  const std::vector<int32_t> a = {'a', 'b', 'c', 'a', 'b',
                                  'c', 'a', 'b', 'z'};  // 'z' only as a target: seen too
  t.ForwardBackward(a, 1);
  std::vector<uint8_t> want(256, 0);
  for (int b : {'a', 'b', 'c', 'z'}) want[static_cast<size_t>(b)] = 1;
  EXPECT_EQ(t.seen_tokens(), want);
  // Losses (evaluation) and Logits do not count as training.
  std::vector<float> losses(8);
  t.Losses(std::vector<int32_t>(9, 'q'), 1, losses.data());
  t.Logits(std::vector<int32_t>{'r', 's'});
  EXPECT_EQ(t.seen_tokens(), want);
}

TEST(TrainModel, LossFallsOnARepeatingSequence) {
  TrainModelConfig c;
  c.vocab_size = 16, c.context = 16, c.n_layers = 1, c.d_model = 32, c.n_heads = 2;
  TrainOptions o;
  o.batch = 4, o.lr = 1e-2f, o.warmup = 5, o.steps = 60, o.threads = 1;
  Trainer t(c, o);
  std::vector<int32_t> tokens(o.batch * (c.context + 1));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 5 + i / 17) % 16);
  const float first = t.ForwardBackward(tokens, o.batch);
  float last = first;
  for (int s = 0; s < 60; ++s) {
    t.Update();
    last = t.ForwardBackward(tokens, o.batch);
  }
  EXPECT_NEAR(first, std::log(16.0f), 0.1f);
  EXPECT_LT(last, 0.5f * first);
  EXPECT_EQ(t.step(), 60);
}

// ---------------------------------------------------------------- optimizer and schedule

TEST(TrainOptimizer, ScheduleWarmupThenCosine) {
  TrainOptions o;
  o.lr = 1e-3f, o.warmup = 10, o.steps = 110, o.min_lr_ratio = 0.1f;
  Trainer t(TinyConfig(0), o);
  EXPECT_FLOAT_EQ(t.LearningRate(0), 1e-4f);
  EXPECT_FLOAT_EQ(t.LearningRate(4), 5e-4f);
  EXPECT_FLOAT_EQ(t.LearningRate(9), 1e-3f);
  EXPECT_FLOAT_EQ(t.LearningRate(10), 1e-3f);
  EXPECT_FLOAT_EQ(t.LearningRate(60), 1e-3f * (0.1f + 0.9f * 0.5f));  // halfway: cos = 0
  EXPECT_FLOAT_EQ(t.LearningRate(110), 1e-4f);
  EXPECT_FLOAT_EQ(t.LearningRate(500), 1e-4f);
  o.warmup = 0;
  Trainer t0(TinyConfig(0), o);
  EXPECT_FLOAT_EQ(t0.LearningRate(0), 1e-3f);
}

TEST(TrainOptimizer, ClipAndAdamWByHand) {
  TrainOptions o;
  o.lr = 1e-2f, o.warmup = 0, o.steps = 1, o.clip = 1.0f, o.weight_decay = 0.5f, o.beta1 = 0.9f,
  o.beta2 = 0.99f;
  Trainer t(TinyConfig(0), o);
  // Every gradient 0.1: total norm = 0.1 sqrt(#params); clipped to norm 1.
  int64_t count = 0;
  for (TrainParam& p : t.params()) {
    std::fill(p.grad.begin(), p.grad.end(), 0.1f);
    count += static_cast<int64_t>(p.grad.size());
  }
  const std::vector<TrainParam> before = t.params();
  const double total = 0.1 * std::sqrt(static_cast<double>(count));
  EXPECT_NEAR(t.Update(), total, 1e-5 * total);
  const double g = 0.1 * 1.0 / (total + 1e-6);  // the clipped gradient
  // t = 1: m = 0.1 g / 0.1 = g after correction, v-hat = g^2 -> update = lr g / (|g| + eps).
  const double step = 1e-2 * g / (g + 1e-8);
  for (size_t k = 0; k < before.size(); ++k) {
    const TrainParam& p = t.params()[k];
    const double decay = p.decay ? 1.0 - 1e-2 * 0.5 : 1.0;
    for (size_t i = 0; i < p.value.size(); i += 7) {
      EXPECT_NEAR(p.value[i], before[k].value[i] * decay - step, 1e-6) << p.name;
      EXPECT_NEAR(p.adam_m[i], 0.1 * g, 1e-7);
      EXPECT_NEAR(p.adam_v[i], 0.01 * g * g, 1e-9);
      EXPECT_NEAR(p.grad[i], g, 1e-7);
    }
  }
  EXPECT_EQ(t.step(), 1);
}

TEST(TrainOptimizer, NonFiniteGradientChangesNothing) {
  TrainOptions o;
  Trainer t(TinyConfig(0), o);
  std::mt19937 rng(12);
  t.ForwardBackward(RandomTokens(rng, o.batch, t.config()), o.batch);
  t.Update();
  t.ForwardBackward(RandomTokens(rng, o.batch, t.config()), o.batch);
  t.params()[3].grad[1] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<TrainParam> before = t.params();
  try {
    t.Update();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "train: gradient norm is not finite at step 1");
  }
  EXPECT_EQ(t.step(), 1);
  for (size_t k = 0; k < before.size(); ++k) {
    EXPECT_EQ(t.params()[k].value, before[k].value);
    EXPECT_EQ(t.params()[k].adam_m, before[k].adam_m);
    EXPECT_EQ(t.params()[k].adam_v, before[k].adam_v);
  }
  t.params()[3].grad[1] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(t.Update(), Error);
}

// ---------------------------------------------------------------- errors

void ExpectError(const TrainModelConfig& c, const TrainOptions& o, const std::string& needle) {
  try {
    Trainer t(c, o);
    ADD_FAILURE() << "no error for " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TrainErrors, BadConfigNamesTheSetting) {
  const TrainModelConfig good = TinyConfig(0);
  const TrainOptions ok;
  TrainModelConfig c = good;
  c.d_model = 9;
  ExpectError(c, ok, "d_model = 9 is not divisible by n_heads = 2");
  c = good, c.vocab_size = (1 << 20) + 1;
  ExpectError(c, ok, "vocab_size = 1048577");
  c = good, c.vocab_size = 0;
  ExpectError(c, ok, "vocab_size = 0");
  c = good, c.context = 0;
  ExpectError(c, ok, "context = 0");
  c = good, c.n_layers = 0;
  ExpectError(c, ok, "n_layers = 0");
  c = good, c.n_heads = 0;
  ExpectError(c, ok, "n_heads = 0");
  c = good, c.d_ff = -1;
  ExpectError(c, ok, "d_ff = -1");
  c = good, c.norm_eps = 0.0f;
  ExpectError(c, ok, "norm_eps");
  TrainOptions o = ok;
  o.batch = 0;
  ExpectError(good, o, "batch = 0");
  o = ok, o.lr = std::numeric_limits<float>::infinity();
  ExpectError(good, o, "lr = inf");
  o = ok, o.lr = 0.0f;
  ExpectError(good, o, "lr = 0");
  o = ok, o.beta2 = 1.0f;
  ExpectError(good, o, "beta2");
  o = ok, o.clip = -1.0f;
  ExpectError(good, o, "clip");
  o = ok, o.threads = -1;
  ExpectError(good, o, "threads = -1");
  o = ok, o.warmup = -1;
  ExpectError(good, o, "warmup = -1");
}

TEST(TrainErrors, TokensOutOfRangeOrWrongCount) {
  const TrainModelConfig c = TinyConfig(0);
  TrainOptions o;
  o.batch = 2;
  Trainer t(c, o);
  std::vector<int32_t> tokens(2 * (c.context + 1), 1);
  tokens[c.context + 3] = 11;
  try {
    t.ForwardBackward(tokens, 2);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "train: tokens[1][2] = 11 (must be in [0, vocab_size = 11))");
  }
  tokens[c.context + 3] = -1;
  EXPECT_THROW(t.Losses(tokens, 2, nullptr), Error);
  tokens[c.context + 3] = 0;
  EXPECT_THROW(t.ForwardBackward(tokens, 3), Error);
  EXPECT_THROW(t.ForwardBackward(tokens, 0), Error);
  EXPECT_NO_THROW(t.ForwardBackward(tokens, 2));
  EXPECT_NO_THROW(t.ForwardBackward(std::span<const int32_t>(tokens.data(), c.context + 1), 1));
}

}  // namespace
}  // namespace attn::testing
