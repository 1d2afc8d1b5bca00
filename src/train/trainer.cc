// The Trainer of attn/train.h: parameters, the forward pass with saved activations, the backward
// pass, gradient clipping and AdamW.
//
// Activations are [rows = batch * seq][features], row-major, kept for the backward pass:
//   resid[0] = wte[x] + wpe                                    (the residual stream entering layer 0)
//   per layer: ln1 = LN(resid[l]), qkv = ln1 Wqkv^T + b (q | k | v), z = attention(q, k, v), lse
//              mid = resid[l] + z Wo^T + bo                     (= resid[l + 1] when d_ff = 0)
//              ln2 = LN(mid), up = ln2 Wup^T + bup, act = GELU(up), resid[l + 1] = mid + act Wdown^T + bdown
//   lnf = LN(resid[L]), logits = lnf Wout^T, loss = CE(logits, targets)
// q, k and v are strided views into qkv ([B, T, H, dh] with row stride 3d), as are their gradients
// into dqkv, so attention reads and writes them in place.
//
// Determinism: every product is kernels/gemm.h (one fixed summation order per element), every
// reduction over rows (bias and norm gradients) adds fixed chunks of rows in chunk order, and
// the attention kernels are bit-identical for every thread count. Row chunks depend only on the
// shapes, so results are bit-identical from run to run.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <string>
#include <thread>
#include <vector>

#include "attn/attention.h"
#include "attn/error.h"
#include "attn/train.h"
#include "core/thread_pool.h"
#include "kernels/gemm.h"
#include "train/train_ops.h"

namespace attn {
namespace {

constexpr int64_t kRowChunk = 32;         // rows per task of the per-row ops
constexpr int64_t kColChunk = 64;         // columns per task of a bias gradient
constexpr int64_t kElementChunk = 16384;  // elements per task of AdamW and GELU

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Threads worth waking for an element-wise pass over n floats (~64K per thread, ~20 us): a tiny
// model's passes stay on the calling thread. Results never depend on it (fixed chunks).
int PassThreads(int64_t n) { return static_cast<int>(std::clamp<int64_t>(n / 65536, 1, 255)); }

// splitmix64 (Steele et al. 2014) and Box-Muller normals: the same numbers on every platform
// (the standard library's distributions are implementation-defined).
class NormalSampler {
 public:
  explicit NormalSampler(uint64_t seed) : state_(seed) {}
  double Next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1;
    do u1 = Uniform();
    while (u1 <= 0.0);
    const double u2 = Uniform();
    const double r = std::sqrt(-2.0 * std::log(u1)), theta = 2.0 * std::numbers::pi * u2;
    spare_ = r * std::sin(theta);
    has_spare_ = true;
    return r * std::cos(theta);
  }

 private:
  uint64_t Bits() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double Uniform() { return static_cast<double>(Bits() >> 11) * 0x1.0p-53; }  // [0, 1)
  uint64_t state_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

[[noreturn]] void Fail(const std::string& what) { throw Error("train: " + what); }

template <typename T>
void Require(bool ok, const char* name, T value, const char* rule) {
  if (!ok) Fail(std::string(name) + " = " + std::to_string(value) + " (" + rule + ")");
}

void Validate(const TrainModelConfig& c, const TrainOptions& o) {
  Require(c.vocab_size >= 1 && c.vocab_size <= (int64_t{1} << 20), "vocab_size", c.vocab_size,
          "must be in [1, 1048576]");
  Require(c.context >= 1 && c.context <= (int64_t{1} << 20), "context", c.context, "must be in [1, 1048576]");
  Require(c.n_layers >= 1 && c.n_layers <= 1024, "n_layers", c.n_layers, "must be in [1, 1024]");
  Require(c.d_model >= 1 && c.d_model <= 65536, "d_model", c.d_model, "must be in [1, 65536]");
  Require(c.n_heads >= 1 && c.n_heads <= c.d_model, "n_heads", c.n_heads, "must be in [1, d_model]");
  if (c.d_model % c.n_heads != 0) {
    Fail("d_model = " + std::to_string(c.d_model) +
         " is not divisible by n_heads = " + std::to_string(c.n_heads));
  }
  Require(c.d_ff >= 0 && c.d_ff <= (int64_t{1} << 18), "d_ff", c.d_ff,
          "must be in [0, 262144]; 0 = attention-only");
  Require(std::isfinite(c.norm_eps) && c.norm_eps > 0.0f, "norm_eps", c.norm_eps, "must be finite and > 0");
  Require(o.batch >= 1 && o.batch <= (int64_t{1} << 20), "batch", o.batch, "must be in [1, 1048576]");
  Require(o.steps >= 1, "steps", o.steps, "must be >= 1");
  Require(std::isfinite(o.lr) && o.lr > 0.0f, "lr", o.lr, "must be finite and > 0");
  Require(o.warmup >= 0, "warmup", o.warmup, "must be >= 0");
  Require(o.min_lr_ratio >= 0.0f && o.min_lr_ratio <= 1.0f, "min_lr_ratio", o.min_lr_ratio,
          "must be in [0, 1]");
  Require(o.beta1 >= 0.0f && o.beta1 < 1.0f, "beta1", o.beta1, "must be in [0, 1)");
  Require(o.beta2 >= 0.0f && o.beta2 < 1.0f, "beta2", o.beta2, "must be in [0, 1)");
  Require(std::isfinite(o.adam_eps) && o.adam_eps > 0.0f, "adam_eps", o.adam_eps, "must be finite and > 0");
  Require(std::isfinite(o.weight_decay) && o.weight_decay >= 0.0f, "weight_decay", o.weight_decay,
          "must be finite and >= 0");
  Require(std::isfinite(o.clip) && o.clip >= 0.0f, "clip", o.clip, "must be finite and >= 0; 0 = off");
  Require(std::isfinite(o.init_std) && o.init_std >= 0.0f, "init_std", o.init_std, "must be finite and >= 0");
  Require(o.threads >= 0 && o.threads <= 255, "threads", o.threads, "must be in [0, 255]; 0 = all cores");
  // Activations of one layer must stay addressable with 64-bit element counts.
  const double rows = static_cast<double>(o.batch) * static_cast<double>(c.context);
  const double width = static_cast<double>(std::max({3 * c.d_model, c.d_ff, c.vocab_size}));
  if (rows * width > 0x1.0p40) {
    Fail("batch * context * max(3 d_model, d_ff, vocab_size) = " + std::to_string(rows * width) +
         " floats (too large)");
  }
}

// The parameters of one block.
struct LayerParams {
  TrainParam *ln1_w, *ln1_b, *qkv_w, *qkv_b, *out_w, *out_b;
  TrainParam* sinks = nullptr;  // attn_sinks only
  TrainParam *ln2_w = nullptr, *ln2_b = nullptr, *up_w = nullptr, *up_b = nullptr, *down_w = nullptr,
             *down_b = nullptr;
};

// The activations of one block for `rows` tokens.
struct LayerActs {
  std::vector<float> ln1, ln1_mean, ln1_rstd, qkv, z, lse, mid;
  std::vector<float> ln2, ln2_mean, ln2_rstd, up, act;
};

void Grow(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

}  // namespace

struct Trainer::Impl {
  explicit Impl(int threads) : pool(threads), threads(threads) {}

  ThreadPool pool;
  int threads;
  TrainParam *wte = nullptr, *wpe = nullptr, *lnf_w = nullptr, *lnf_b = nullptr, *out_w = nullptr;
  std::vector<LayerParams> layers;

  // The shape of the last forward pass.
  int64_t batch = 0, seq = 0;
  std::vector<int32_t> inputs, targets;   // [rows]
  std::vector<std::vector<float>> resid;  // n_layers + 1 of [rows][d]
  std::vector<LayerActs> acts;
  std::vector<float> lnf, lnf_mean, lnf_rstd, logits, losses;
  // Backward scratch.
  std::vector<float> g_res, g_ln, g_z, g_qkv, g_ff, partials;

  // The forward pass over batch rows of seq tokens (from `inputs`): every activation and the
  // logits; with `patterns` ([L][H][seq][seq], batch 1), the attention patterns too.
  void Forward(const TrainModelConfig& c, int64_t batch, int64_t seq, float* patterns);
  // Cross-entropy of `logits` against `targets` into `losses`; with `grad`, logits become the
  // gradient of the mean loss. Returns the mean (summed in row order, in double).
  double CrossEntropyRows(int64_t rows, int64_t V, bool grad);
  // The backward pass of the last Forward from the dlogits in `logits`: every parameter gradient.
  void Backward(const TrainModelConfig& c);
};

Trainer::Trainer(const TrainModelConfig& config, const TrainOptions& options)
    : config_(config), options_(options) {
  Validate(config_, options_);
  const int threads = options_.threads > 0
                          ? options_.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  impl_ = std::make_unique<Impl>(threads);
  seen_tokens_.assign(static_cast<size_t>(config_.vocab_size), 0);

  const int64_t V = config_.vocab_size, T = config_.context, d = config_.d_model, F = config_.d_ff;
  auto add = [&](std::string name, int64_t rows, int64_t cols) {
    TrainParam p;
    p.name = std::move(name), p.rows = rows, p.cols = cols, p.decay = rows > 1;
    const size_t n = static_cast<size_t>(rows * cols);
    p.value.assign(n, 0.0f), p.grad.assign(n, 0.0f), p.adam_m.assign(n, 0.0f), p.adam_v.assign(n, 0.0f);
    params_.push_back(std::move(p));
  };
  add("token_embd.weight", V, d);
  add("position_embd.weight", T, d);
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add(b + "attn_norm.weight", 1, d);
    add(b + "attn_norm.bias", 1, d);
    add(b + "attn_qkv.weight", 3 * d, d);
    add(b + "attn_qkv.bias", 1, 3 * d);
    add(b + "attn_output.weight", d, d);
    add(b + "attn_output.bias", 1, d);
    if (config_.attn_sinks) add(b + "attn_sinks.weight", 1, config_.n_heads);
    if (F > 0) {
      add(b + "ffn_norm.weight", 1, d);
      add(b + "ffn_norm.bias", 1, d);
      add(b + "ffn_up.weight", F, d);
      add(b + "ffn_up.bias", 1, F);
      add(b + "ffn_down.weight", d, F);
      add(b + "ffn_down.bias", 1, d);
    }
  }
  add("output_norm.weight", 1, d);
  add("output_norm.bias", 1, d);
  add("output.weight", V, d);

  // Pointers into params_ (its size never changes after this).
  Impl& im = *impl_;
  size_t i = 0;
  im.wte = &params_[i++];
  im.wpe = &params_[i++];
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    LayerParams lp{};
    lp.ln1_w = &params_[i++], lp.ln1_b = &params_[i++], lp.qkv_w = &params_[i++], lp.qkv_b = &params_[i++];
    lp.out_w = &params_[i++], lp.out_b = &params_[i++];
    if (config_.attn_sinks) lp.sinks = &params_[i++];
    if (F > 0) {
      lp.ln2_w = &params_[i++], lp.ln2_b = &params_[i++], lp.up_w = &params_[i++], lp.up_b = &params_[i++];
      lp.down_w = &params_[i++], lp.down_b = &params_[i++];
    }
    im.layers.push_back(lp);
  }
  im.lnf_w = &params_[i++];
  im.lnf_b = &params_[i++];
  im.out_w = &params_[i++];

  // Init (GPT-2): matrices N(0, init_std), the projections into the residual stream
  // N(0, init_std / sqrt(2 n_layers)); biases 0; norm weights 1. One stream, in parameter order.
  NormalSampler rng(options_.seed);
  const double proj_std = options_.init_std / std::sqrt(2.0 * static_cast<double>(config_.n_layers));
  for (TrainParam& p : params_) {
    const bool norm = p.name.find("norm.weight") != std::string::npos;
    if (p.rows == 1) {
      std::fill(p.value.begin(), p.value.end(), norm ? 1.0f : 0.0f);
      continue;
    }
    const bool proj = p.name.ends_with("attn_output.weight") || p.name.ends_with("ffn_down.weight");
    const double std = proj ? proj_std : options_.init_std;
    for (float& x : p.value) x = static_cast<float>(std * rng.Next());
  }
}

Trainer::~Trainer() = default;

TrainParam& Trainer::param(const std::string& name) {
  for (TrainParam& p : params_) {
    if (p.name == name) return p;
  }
  throw Error("train: no parameter named '" + name + "'");
}

float Trainer::LearningRate(int64_t s) const {
  const TrainOptions& o = options_;
  if (s < o.warmup)
    return static_cast<float>(static_cast<double>(o.lr) * static_cast<double>(s + 1) / o.warmup);
  const double p = std::clamp(
      static_cast<double>(s - o.warmup) / static_cast<double>(std::max<int64_t>(1, o.steps - o.warmup)), 0.0,
      1.0);
  const double ratio = o.min_lr_ratio;
  return static_cast<float>(o.lr * (ratio + (1.0 - ratio) * 0.5 * (1.0 + std::cos(std::numbers::pi * p))));
}

namespace {

// The products of a linear layer (kernels/gemm.h), W [n_out][n_in] row-major.
// y[rows][n_out] (+)= x W^T
void LinearForward(const float* x, int64_t rows, int64_t n_in, const float* w, int64_t n_out, float* y,
                   bool accumulate, ThreadPool& pool) {
  Gemm(rows, n_out, n_in, GemmOperand{x, n_in, 1}, GemmOperand{w, 1, n_in}, y, n_out, accumulate, pool);
}
// dx[rows][n_in] = dy W
void LinearBackwardInput(const float* dy, int64_t rows, int64_t n_out, const float* w, int64_t n_in,
                         float* dx, ThreadPool& pool) {
  Gemm(rows, n_in, n_out, GemmOperand{dy, n_out, 1}, GemmOperand{w, n_in, 1}, dx, n_in, false, pool);
}
// dw[n_out][n_in] = dy^T x
void LinearBackwardWeight(const float* dy, int64_t rows, int64_t n_out, const float* x, int64_t n_in,
                          float* dw, ThreadPool& pool) {
  Gemm(n_out, n_in, rows, GemmOperand{dy, 1, n_out}, GemmOperand{x, n_in, 1}, dw, n_in, false, pool);
}

// y[r] = (base ? base[r] : 0) + bias for rows of width n: the starting value of a product that
// accumulates onto it.
void FillRows(float* y, const float* base, const float* bias, int64_t rows, int64_t n, ThreadPool& pool) {
  pool.Run(CeilDiv(rows, kRowChunk), PassThreads(rows * n), [&](int64_t task, int) {
    const int64_t r1 = std::min(rows, (task + 1) * kRowChunk);
    for (int64_t r = task * kRowChunk; r < r1; ++r) {
      float* yr = y + r * n;
      const float* br = base != nullptr ? base + r * n : nullptr;
      for (int64_t i = 0; i < n; ++i)
        yr[i] = (br != nullptr ? br[i] : 0.0f) + (bias != nullptr ? bias[i] : 0.0f);
    }
  });
}

// db[i] = sum over rows of dy[r][i], each column summed in row order in double.
void BiasGrad(const float* dy, int64_t rows, int64_t n, float* db, ThreadPool& pool) {
  pool.Run(CeilDiv(n, kColChunk), PassThreads(rows * n), [&](int64_t task, int) {
    const int64_t i0 = task * kColChunk, cols = std::min(kColChunk, n - i0);
    double acc[kColChunk] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = dy + r * n + i0;
      for (int64_t i = 0; i < cols; ++i) acc[i] += row[i];
    }
    for (int64_t i = 0; i < cols; ++i) db[i0 + i] = static_cast<float>(acc[i]);
  });
}

void LayerNormForwardRows(const float* x, const TrainParam& w, const TrainParam& b, float* y, float* mean,
                          float* rstd, int64_t rows, int64_t d, float eps, ThreadPool& pool) {
  pool.Run(CeilDiv(rows, kRowChunk), PassThreads(rows * d), [&](int64_t task, int) {
    const int64_t r0 = task * kRowChunk, n = std::min(kRowChunk, rows - r0);
    train::LayerNormForward(x + r0 * d, w.value.data(), b.value.data(), y + r0 * d, mean + r0, rstd + r0, n,
                            d, eps);
  });
}

// dx (+)= LN backward; w.grad and b.grad = the norm's parameter gradients (per-chunk partial sums
// added in chunk order, in double).
void LayerNormBackwardRows(const float* x, TrainParam& w, TrainParam& b, const float* mean, const float* rstd,
                           const float* dy, float* dx, bool accumulate_dx, int64_t rows, int64_t d,
                           std::vector<float>& partials, ThreadPool& pool) {
  const int64_t chunks = CeilDiv(rows, kRowChunk);
  Grow(partials, chunks * 2 * d);
  std::fill(partials.begin(), partials.begin() + chunks * 2 * d, 0.0f);
  pool.Run(chunks, PassThreads(2 * rows * d), [&](int64_t task, int) {
    const int64_t r0 = task * kRowChunk, n = std::min(kRowChunk, rows - r0);
    float* pw = partials.data() + task * 2 * d;
    train::LayerNormBackward(x + r0 * d, w.value.data(), mean + r0, rstd + r0, dy + r0 * d, dx + r0 * d,
                             accumulate_dx, pw, pw + d, n, d);
  });
  for (int64_t i = 0; i < d; ++i) {
    double sw = 0.0, sb = 0.0;
    for (int64_t c = 0; c < chunks; ++c) sw += partials[c * 2 * d + i], sb += partials[c * 2 * d + d + i];
    w.grad[i] = static_cast<float>(sw), b.grad[i] = static_cast<float>(sb);
  }
}

// q, k or v (part = 0, 1, 2) of a qkv buffer [batch * seq][3 d] as a [B, T, H, dh] view.
TensorView QkvView(float* qkv, int part, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim) {
  const int64_t d = heads * head_dim;
  TensorView t;
  t.data = qkv + part * d;
  t.dtype = DType::kF32;
  t.shape[0] = batch, t.shape[1] = seq, t.shape[2] = heads, t.shape[3] = head_dim;
  t.stride[0] = seq * 3 * d, t.stride[1] = 3 * d, t.stride[2] = head_dim, t.stride[3] = 1;
  return t;
}

}  // namespace

void Trainer::Impl::Forward(const TrainModelConfig& c, int64_t batch, int64_t seq, float* patterns) {
  Impl& im = *this;
  const int64_t rows = batch * seq, d = c.d_model, F = c.d_ff, H = c.n_heads, dh = d / H, V = c.vocab_size;
  const int64_t L = c.n_layers;
  ThreadPool& pool = im.pool;
  im.batch = batch, im.seq = seq;
  im.resid.resize(static_cast<size_t>(L + 1));
  im.acts.resize(static_cast<size_t>(L));
  for (auto& r : im.resid) Grow(r, rows * d);
  for (LayerActs& a : im.acts) {
    Grow(a.ln1, rows * d), Grow(a.ln1_mean, rows), Grow(a.ln1_rstd, rows), Grow(a.qkv, rows * 3 * d);
    Grow(a.z, rows * d), Grow(a.lse, rows * H);
    if (F > 0) {
      Grow(a.mid, rows * d), Grow(a.ln2, rows * d), Grow(a.ln2_mean, rows), Grow(a.ln2_rstd, rows);
      Grow(a.up, rows * F), Grow(a.act, rows * F);
    }
  }
  Grow(im.lnf, rows * d), Grow(im.lnf_mean, rows), Grow(im.lnf_rstd, rows), Grow(im.logits, rows * V);

  pool.Run(CeilDiv(rows, kRowChunk), PassThreads(rows * d), [&](int64_t task, int) {
    const int64_t r0 = task * kRowChunk;
    train::EmbeddingForward(im.inputs.data(), im.wte->value.data(), im.wpe->value.data(), im.resid[0].data(),
                            r0, std::min(rows, r0 + kRowChunk), seq, d);
  });

  for (int64_t l = 0; l < L; ++l) {
    const LayerParams& p = im.layers[l];
    LayerActs& a = im.acts[l];
    const float* x = im.resid[l].data();
    LayerNormForwardRows(x, *p.ln1_w, *p.ln1_b, a.ln1.data(), a.ln1_mean.data(), a.ln1_rstd.data(), rows, d,
                         c.norm_eps, pool);
    FillRows(a.qkv.data(), nullptr, p.qkv_b->value.data(), rows, 3 * d, pool);
    LinearForward(a.ln1.data(), rows, d, p.qkv_w->value.data(), 3 * d, a.qkv.data(), true, pool);

    AttentionOptions opts;
    opts.causal = true;
    opts.lse = a.lse.data();  // [B, H, T]
    opts.sinks = p.sinks != nullptr ? p.sinks->value.data() : nullptr;
    opts.threads = im.threads;
    const TensorView out = TensorView::Contiguous(a.z.data(), DType::kF32, batch, seq, H, dh);
    Attention(QkvView(a.qkv.data(), 0, batch, seq, H, dh), QkvView(a.qkv.data(), 1, batch, seq, H, dh),
              QkvView(a.qkv.data(), 2, batch, seq, H, dh), out, opts);
    if (patterns != nullptr) {
      // P[h][i][j] = exp(scale q_i . k_j - lse[h][i]) for j <= i (batch 1).
      const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
      float* pl = patterns + l * H * seq * seq;
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t i = 0; i < seq; ++i) {
          const float* q = a.qkv.data() + i * 3 * d + h * dh;
          float* row = pl + (h * seq + i) * seq;
          for (int64_t j = 0; j < seq; ++j) {
            if (j > i) {
              row[j] = 0.0f;
              continue;
            }
            const float* k = a.qkv.data() + j * 3 * d + d + h * dh;
            float s = 0.0f;
            for (int64_t e = 0; e < dh; ++e) s += q[e] * k[e];
            row[j] = std::exp(s * scale - a.lse[h * seq + i]);
          }
        }
      }
    }

    float* mid = F > 0 ? a.mid.data() : im.resid[l + 1].data();
    FillRows(mid, x, p.out_b->value.data(), rows, d, pool);
    LinearForward(a.z.data(), rows, d, p.out_w->value.data(), d, mid, true, pool);
    if (F > 0) {
      LayerNormForwardRows(mid, *p.ln2_w, *p.ln2_b, a.ln2.data(), a.ln2_mean.data(), a.ln2_rstd.data(), rows,
                           d, c.norm_eps, pool);
      FillRows(a.up.data(), nullptr, p.up_b->value.data(), rows, F, pool);
      LinearForward(a.ln2.data(), rows, d, p.up_w->value.data(), F, a.up.data(), true, pool);
      const int64_t n = rows * F;
      pool.Run(CeilDiv(n, kElementChunk), PassThreads(4 * n), [&](int64_t task, int) {
        const int64_t i0 = task * kElementChunk;
        train::GeluForward(a.up.data() + i0, a.act.data() + i0, std::min(kElementChunk, n - i0));
      });
      float* next = im.resid[l + 1].data();
      FillRows(next, mid, p.down_b->value.data(), rows, d, pool);
      LinearForward(a.act.data(), rows, F, p.down_w->value.data(), d, next, true, pool);
    }
  }
  LayerNormForwardRows(im.resid[L].data(), *im.lnf_w, *im.lnf_b, im.lnf.data(), im.lnf_mean.data(),
                       im.lnf_rstd.data(), rows, d, c.norm_eps, pool);
  LinearForward(im.lnf.data(), rows, d, im.out_w->value.data(), V, im.logits.data(), false, pool);
}

void Trainer::Impl::Backward(const TrainModelConfig& c) {
  Impl& im = *this;
  const int64_t batch = im.batch, seq = im.seq, rows = batch * seq;
  const int64_t d = c.d_model, F = c.d_ff, H = c.n_heads, dh = d / H, V = c.vocab_size, L = c.n_layers;
  ThreadPool& pool = im.pool;
  Grow(im.g_res, rows * d), Grow(im.g_ln, rows * d), Grow(im.g_z, rows * d), Grow(im.g_qkv, rows * 3 * d);
  if (F > 0) Grow(im.g_ff, rows * F);
  const float* dlogits = im.logits.data();

  // logits = lnf Wout^T
  LinearBackwardWeight(dlogits, rows, V, im.lnf.data(), d, im.out_w->grad.data(), pool);
  LinearBackwardInput(dlogits, rows, V, im.out_w->value.data(), d, im.g_ln.data(), pool);
  LayerNormBackwardRows(im.resid[L].data(), *im.lnf_w, *im.lnf_b, im.lnf_mean.data(), im.lnf_rstd.data(),
                        im.g_ln.data(), im.g_res.data(), false, rows, d, im.partials, pool);
  float* g = im.g_res.data();  // d loss / d resid[l + 1]

  for (int64_t l = L - 1; l >= 0; --l) {
    const LayerParams& p = im.layers[l];
    LayerActs& a = im.acts[l];
    if (F > 0) {
      // resid[l + 1] = mid + act Wdown^T + bdown; act = GELU(up); up = ln2 Wup^T + bup
      float* g_ff = im.g_ff.data();
      LinearBackwardWeight(g, rows, d, a.act.data(), F, p.down_w->grad.data(), pool);
      BiasGrad(g, rows, d, p.down_b->grad.data(), pool);
      LinearBackwardInput(g, rows, d, p.down_w->value.data(), F, g_ff, pool);
      const int64_t n = rows * F;
      pool.Run(CeilDiv(n, kElementChunk), PassThreads(4 * n), [&](int64_t task, int) {
        const int64_t i0 = task * kElementChunk;
        train::GeluBackward(a.up.data() + i0, g_ff + i0, g_ff + i0, std::min(kElementChunk, n - i0));
      });
      LinearBackwardWeight(g_ff, rows, F, a.ln2.data(), d, p.up_w->grad.data(), pool);
      BiasGrad(g_ff, rows, F, p.up_b->grad.data(), pool);
      LinearBackwardInput(g_ff, rows, F, p.up_w->value.data(), d, im.g_ln.data(), pool);
      LayerNormBackwardRows(a.mid.data(), *p.ln2_w, *p.ln2_b, a.ln2_mean.data(), a.ln2_rstd.data(),
                            im.g_ln.data(), g, true, rows, d, im.partials, pool);
    }
    // mid = resid[l] + z Wo^T + bo
    LinearBackwardWeight(g, rows, d, a.z.data(), d, p.out_w->grad.data(), pool);
    BiasGrad(g, rows, d, p.out_b->grad.data(), pool);
    LinearBackwardInput(g, rows, d, p.out_w->value.data(), d, im.g_z.data(), pool);

    AttentionOptions opts;
    opts.causal = true;
    opts.threads = im.threads;
    if (p.sinks != nullptr) {  // dL/dsinks, summed over the batch and rows by the kernel
      opts.sinks = p.sinks->value.data();
      opts.sinks_grad = p.sinks->grad.data();
    }
    const TensorView out = TensorView::Contiguous(a.z.data(), DType::kF32, batch, seq, H, dh);
    const TensorView dout = TensorView::Contiguous(im.g_z.data(), DType::kF32, batch, seq, H, dh);
    AttentionBackward(
        QkvView(a.qkv.data(), 0, batch, seq, H, dh), QkvView(a.qkv.data(), 1, batch, seq, H, dh),
        QkvView(a.qkv.data(), 2, batch, seq, H, dh), out, a.lse.data(), dout,
        QkvView(im.g_qkv.data(), 0, batch, seq, H, dh), QkvView(im.g_qkv.data(), 1, batch, seq, H, dh),
        QkvView(im.g_qkv.data(), 2, batch, seq, H, dh), opts);

    // qkv = ln1 Wqkv^T + bqkv; ln1 = LN(resid[l])
    LinearBackwardWeight(im.g_qkv.data(), rows, 3 * d, a.ln1.data(), d, p.qkv_w->grad.data(), pool);
    BiasGrad(im.g_qkv.data(), rows, 3 * d, p.qkv_b->grad.data(), pool);
    LinearBackwardInput(im.g_qkv.data(), rows, 3 * d, p.qkv_w->value.data(), d, im.g_ln.data(), pool);
    LayerNormBackwardRows(im.resid[l].data(), *p.ln1_w, *p.ln1_b, a.ln1_mean.data(), a.ln1_rstd.data(),
                          im.g_ln.data(), g, true, rows, d, im.partials, pool);
  }

  // resid[0] = wte[x] + wpe: the token scatter-add runs in row order on one thread.
  std::fill(im.wte->grad.begin(), im.wte->grad.end(), 0.0f);
  std::fill(im.wpe->grad.begin(), im.wpe->grad.end(), 0.0f);
  pool.Run(CeilDiv(seq, kRowChunk) + 1, PassThreads(rows * d), [&](int64_t task, int) {
    if (task == 0) return train::EmbeddingBackwardTokens(im.inputs.data(), g, im.wte->grad.data(), rows, d);
    const int64_t t0 = (task - 1) * kRowChunk;
    train::EmbeddingBackwardPositions(g, im.wpe->grad.data(), batch, seq, t0, std::min(seq, t0 + kRowChunk),
                                      d);
  });
}

namespace {

// Splits training rows (context + 1 tokens each) into inputs and targets, checking every id.
void PrepareTokens(const TrainModelConfig& c, std::span<const int32_t> tokens, int64_t batch,
                   std::vector<int32_t>& inputs, std::vector<int32_t>& targets) {
  const int64_t T = c.context, width = T + 1;
  if (batch < 1) Fail("batch = " + std::to_string(batch) + " (must be >= 1)");
  if (static_cast<int64_t>(tokens.size()) != batch * width) {
    Fail("tokens: " + std::to_string(tokens.size()) + " ids for batch = " + std::to_string(batch) +
         " (expected batch * (context + 1) = " + std::to_string(batch * width) + ")");
  }
  for (int64_t i = 0; i < batch * width; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      Fail("tokens[" + std::to_string(i / width) + "][" + std::to_string(i % width) +
           "] = " + std::to_string(tokens[i]) +
           " (must be in [0, vocab_size = " + std::to_string(c.vocab_size) + "))");
    }
  }
  inputs.resize(static_cast<size_t>(batch * T));
  targets.resize(static_cast<size_t>(batch * T));
  for (int64_t b = 0; b < batch; ++b) {
    std::copy_n(tokens.data() + b * width, T, inputs.data() + b * T);
    std::copy_n(tokens.data() + b * width + 1, T, targets.data() + b * T);
  }
}

// A sequence of n <= context tokens for Logits and Patterns.
void PrepareSequence(const TrainModelConfig& c, std::span<const int32_t> tokens, std::vector<int32_t>& inputs,
                     const char* fn) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < 1 || n > c.context) {
    Fail(std::string(fn) + ": " + std::to_string(n) +
         " tokens (must be 1 to context = " + std::to_string(c.context) + ")");
  }
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      Fail(std::string(fn) + ": tokens[" + std::to_string(i) + "] = " + std::to_string(tokens[i]) +
           " (must be in [0, vocab_size = " + std::to_string(c.vocab_size) + "))");
    }
  }
  inputs.assign(tokens.begin(), tokens.end());
}

}  // namespace

double Trainer::Impl::CrossEntropyRows(int64_t rows, int64_t V, bool grad) {
  Grow(losses, rows);
  const float scale = grad ? static_cast<float>(1.0 / static_cast<double>(rows)) : 0.0f;
  pool.Run(CeilDiv(rows, kRowChunk), PassThreads(4 * rows * V), [&](int64_t task, int) {
    const int64_t r0 = task * kRowChunk, n = std::min(kRowChunk, rows - r0);
    train::CrossEntropy(logits.data() + r0 * V, targets.data() + r0, losses.data() + r0, n, V, scale);
  });
  double sum = 0.0;
  for (int64_t r = 0; r < rows; ++r) sum += losses[r];
  return sum / static_cast<double>(rows);
}

float Trainer::ForwardBackward(std::span<const int32_t> tokens, int64_t batch) {
  Impl& im = *impl_;
  PrepareTokens(config_, tokens, batch, im.inputs, im.targets);
  for (int32_t t : tokens) seen_tokens_[static_cast<size_t>(t)] = 1;  // in range: checked above
  const int64_t rows = batch * config_.context;
  im.Forward(config_, batch, config_.context, nullptr);
  const double loss = im.CrossEntropyRows(rows, config_.vocab_size, true);
  im.Backward(config_);
  return static_cast<float>(loss);
}

float Trainer::Losses(std::span<const int32_t> tokens, int64_t batch, float* losses) {
  Impl& im = *impl_;
  PrepareTokens(config_, tokens, batch, im.inputs, im.targets);
  const int64_t rows = batch * config_.context;
  im.Forward(config_, batch, config_.context, nullptr);
  const double loss = im.CrossEntropyRows(rows, config_.vocab_size, false);
  if (losses != nullptr) std::copy_n(im.losses.data(), rows, losses);
  return static_cast<float>(loss);
}

std::vector<float> Trainer::Logits(std::span<const int32_t> tokens) {
  Impl& im = *impl_;
  PrepareSequence(config_, tokens, im.inputs, "logits");
  const int64_t n = static_cast<int64_t>(tokens.size());
  im.Forward(config_, 1, n, nullptr);
  return std::vector<float>(im.logits.begin(), im.logits.begin() + n * config_.vocab_size);
}

std::vector<float> Trainer::Patterns(std::span<const int32_t> tokens) {
  Impl& im = *impl_;
  PrepareSequence(config_, tokens, im.inputs, "patterns");
  const int64_t n = static_cast<int64_t>(tokens.size());
  std::vector<float> patterns(static_cast<size_t>(config_.n_layers * config_.n_heads * n * n));
  im.Forward(config_, 1, n, patterns.data());
  return patterns;
}

float Trainer::Update() {
  Impl& im = *impl_;
  const TrainOptions& o = options_;
  double sum_sq = 0.0;
  for (const TrainParam& p : params_)
    sum_sq += train::SumSquares(p.grad.data(), static_cast<int64_t>(p.grad.size()));
  const double total = std::sqrt(sum_sq);
  if (!std::isfinite(total)) Fail("gradient norm is not finite at step " + std::to_string(step_));

  // torch.nn.utils.clip_grad_norm_: grads *= min(1, clip / (total + 1e-6)).
  float coef = 1.0f;
  if (o.clip > 0.0f) coef = static_cast<float>(std::min(1.0, static_cast<double>(o.clip) / (total + 1e-6)));

  // torch.optim.AdamW (decoupled decay, bias corrections in double as Python computes them).
  const double lr = LearningRate(step_), t = static_cast<double>(step_ + 1);
  const double bc1 = 1.0 - std::pow(static_cast<double>(o.beta1), t);
  const double bc2 = 1.0 - std::pow(static_cast<double>(o.beta2), t);
  train::AdamWArgs args{};
  args.beta1 = o.beta1, args.beta2 = o.beta2, args.eps = o.adam_eps;
  args.step_size = static_cast<float>(lr / bc1);
  args.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  for (TrainParam& p : params_) {
    train::AdamWArgs a = args;
    a.decay_factor = p.decay ? static_cast<float>(1.0 - lr * o.weight_decay) : 1.0f;
    const int64_t n = static_cast<int64_t>(p.value.size());
    im.pool.Run(CeilDiv(n, kElementChunk), PassThreads(n), [&](int64_t task, int) {
      const int64_t i0 = task * kElementChunk, cnt = std::min(kElementChunk, n - i0);
      if (coef < 1.0f) {
        for (int64_t i = i0; i < i0 + cnt; ++i) p.grad[i] *= coef;
      }
      train::AdamW(p.value.data() + i0, p.grad.data() + i0, p.adam_m.data() + i0, p.adam_v.data() + i0, cnt,
                   a);
    });
  }
  ++step_;
  return static_cast<float>(total);
}

}  // namespace attn
