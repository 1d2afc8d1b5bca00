// The decoder forward pass (DESIGN.md, "the way data flows"):
//   tokens -> embedding (+ learned positions) -> blocks -> final norm -> unembedding -> logits
// and inside every block
//   x += Wo . Attention(rope(Wq . norm(x)), rope(Wk . norm(x)), Wv . norm(x))     (causal, GQA;
//        qwen2 adds biases to the three products, qwen3 / gemma3 RMS-normalize each q and k head
//        before rope, gemma2 / gemma3 slide a window on some layers and norm the sub-block outputs)
//   x += Wdown . act(Wgate . norm(x), Wup . norm(x))       (absent when d_ff == 0: attention-only gpt2)
// Every intermediate passes one named hook point (TransformerLens names).
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "attn/error.h"
#include "attn/heads.h"
#include "attn/model.h"
#include "core/thread_pool.h"
#include "kernels/ops.h"
#include "model/grammar.h"
#include "model/weights.h"

namespace attn {

void LoadWeights(const gguf::File& file, const ModelConfig& config, Model::Weights& weights);

namespace {

// Tokens per pass through the blocks: bounds the scratch memory of long prompts while keeping
// the matrix products wide enough to reuse each weight block many times.
constexpr int64_t kMaxChunk = 512;

struct Scratch {
  std::vector<float> x, h, q, k, v, z, o, gate, up;
  std::vector<float> router, expert_x, expert_out;  // mixture of experts only
  explicit Scratch(const ModelConfig& c, int64_t n) {
    const size_t rows = static_cast<size_t>(n);
    x.resize(rows * c.d_model);
    h.resize(rows * c.d_model);
    q.resize(rows * (c.arch == Arch::kGpt2 ? 3 * c.d_model : c.n_heads * c.head_dim));
    k.resize(rows * c.n_kv_heads * c.head_dim);
    v.resize(rows * c.n_kv_heads * c.head_dim);
    z.resize(rows * c.n_heads * c.head_dim);
    o.resize(rows * c.d_model);
    const size_t ff = static_cast<size_t>(std::max({c.d_ff, c.d_ff_expert, c.d_ff_shared}));
    gate.resize(rows * ff);
    up.resize(rows * ff);
    if (c.n_expert > 0) {  // a token's chosen experts side by side (MixtureOfExperts, n = 1)
      const size_t slots = std::max(rows, static_cast<size_t>(c.n_expert_used));
      router.resize(rows * c.n_expert);
      expert_x.resize(rows * c.d_model);
      expert_out.resize(slots * c.d_model);
      gate.resize(std::max(gate.size(), slots * c.d_ff_expert));
      up.resize(std::max(up.size(), slots * c.d_ff_expert));
    }
  }
};

// The mixture-of-experts feed-forward (ModelConfig::n_expert) of rows h [n, d_model] into out:
// each row goes to its n_expert_used most probable experts (softmax of the router's logits; ties
// to the lower index), whose SwiGLU outputs are summed with the probabilities renormalized over
// the chosen ones. The rows of one expert are gathered and multiplied together; every product is
// row by row, so a row's result does not depend on which other rows share the pass.
// `hook(name, data, cols)` visits the choices before they are used, [n, n_expert_used] each:
// mlp.hook_expert_indices (expert ids, as floats) and mlp.hook_expert_weights (TransformerLens's
// names); what a hook writes there is what runs (an id must stay a whole number below n_expert).
void MixtureOfExperts(const ModelConfig& c, const LayerWeights& L, const float* h, int64_t n, float* out,
                      Scratch& s, ThreadPool& pool, int threads,
                      const std::function<void(const char*, float*, int64_t)>& hook) {
  const int64_t d = c.d_model, n_exp = c.n_expert, k = c.n_expert_used, ff = c.d_ff_expert;
  MatMul(L.router, h, n, d, s.router.data(), n_exp, pool, threads);
  if (L.router_bias.data != nullptr) ops::AddBias(s.router.data(), Floats(L.router_bias), n, n_exp);
  std::vector<float> chosen_ids(static_cast<size_t>(n * k)), chosen_weights(static_cast<size_t>(n * k));
  std::vector<int64_t> order(static_cast<size_t>(n_exp));
  std::vector<double> prob(static_cast<size_t>(n_exp));
  for (int64_t r = 0; r < n; ++r) {
    const float* logit = s.router.data() + r * n_exp;
    const float mx = *std::max_element(logit, logit + n_exp);
    double sum = 0.0;
    for (int64_t e = 0; e < n_exp; ++e)
      sum += prob[static_cast<size_t>(e)] = std::exp(static_cast<double>(logit[e] - mx));
    for (int64_t e = 0; e < n_exp; ++e) order[static_cast<size_t>(e)] = e;
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
      return logit[a] > logit[b] || (logit[a] == logit[b] && a < b);
    });
    double chosen = 0.0;
    for (int64_t i = 0; i < k; ++i) chosen += prob[static_cast<size_t>(order[static_cast<size_t>(i)])];
    if (!c.expert_weights_norm) chosen = sum;  // the plain softmax probabilities (qwen2moe)
    if (!(chosen > 0.0) || !std::isfinite(sum))
      throw Error("forward: the router's logits are not finite (layer weights or activations overflowed)");
    for (int64_t i = 0; i < k; ++i) {
      const int64_t e = order[static_cast<size_t>(i)];
      chosen_ids[static_cast<size_t>(r * k + i)] = static_cast<float>(e);
      chosen_weights[static_cast<size_t>(r * k + i)] =
          static_cast<float>(prob[static_cast<size_t>(e)] / chosen);
    }
  }
  hook("mlp.hook_expert_indices", chosen_ids.data(), k);
  hook("mlp.hook_expert_weights", chosen_weights.data(), k);
  std::vector<std::vector<std::pair<int64_t, float>>> routed(static_cast<size_t>(n_exp));  // (row, weight)
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t i = 0; i < k; ++i) {
      const float id = chosen_ids[static_cast<size_t>(r * k + i)];
      if (!(id >= 0.0f && id < static_cast<float>(n_exp) && id == std::floor(id)))
        throw Error("forward: mlp.hook_expert_indices holds " + std::to_string(id) +
                    " (must be an expert id in [0, " + std::to_string(n_exp) + "))");
      auto& rows = routed[static_cast<size_t>(id)];
      const float weight = chosen_weights[static_cast<size_t>(r * k + i)];
      if (!rows.empty() && rows.back().first == r) {
        rows.back().second += weight;  // a hook named this expert twice for the row: one product
      } else {
        rows.emplace_back(r, weight);
      }
    }
  }
  // gpt-oss: expert e's biases on its gate / up rows and its output rows, then its clamped SwiGLU.
  auto add_biases = [&](int64_t e, int64_t rows, float* gate, float* up, float* y) {
    if (!c.expert_bias) return;
    if (gate != nullptr) ops::AddBias(gate, Floats(L.gate_exps_bias) + e * ff, rows, ff);
    if (up != nullptr) ops::AddBias(up, Floats(L.up_exps_bias) + e * ff, rows, ff);
    if (y != nullptr) ops::AddBias(y, Floats(L.down_exps_bias) + e * d, rows, d);
  };
  auto activate = [&](int64_t rows) {
    if (c.swiglu_oai) {
      ops::SwiGluOai(s.gate.data(), s.up.data(), rows * ff, ModelConfig::kSwigluOaiAlpha,
                     ModelConfig::kSwigluOaiLimit);
    } else {
      ops::SwiGlu(s.gate.data(), s.up.data(), rows * ff);
    }
  };
  std::fill(out, out + n * d, 0.0f);
  if (n == 1) {
    // One token (generation): the gate and up products of all its experts read the same x, so
    // they go in grouped calls of 4 experts (8 matrices) instead of one pool job per expert.
    // Every product equals its own MatMul bit for bit, and the sum keeps the experts' order.
    std::vector<int64_t> used;
    std::vector<float> weights;
    for (int64_t e = 0; e < n_exp; ++e) {
      if (routed[static_cast<size_t>(e)].empty()) continue;
      used.push_back(e);
      weights.push_back(routed[static_cast<size_t>(e)][0].second);
    }
    const int64_t m = static_cast<int64_t>(used.size());
    for (int64_t g0 = 0; g0 < m; g0 += 4) {
      const int64_t count = std::min<int64_t>(4, m - g0);
      const WeightMatrix* ws[8];
      float* ys[8];
      for (int64_t i = 0; i < count; ++i) {
        const auto e = static_cast<size_t>(used[static_cast<size_t>(g0 + i)]);
        ws[2 * i] = &L.expert_gate[e];
        ws[2 * i + 1] = &L.expert_up[e];
        ys[2 * i] = s.gate.data() + (g0 + i) * ff;
        ys[2 * i + 1] = s.up.data() + (g0 + i) * ff;
      }
      MatMulShared(std::span<const WeightMatrix* const>(ws, static_cast<size_t>(2 * count)), h, 1, d,
                   std::span<float* const>(ys, static_cast<size_t>(2 * count)), pool, threads);
    }
    for (int64_t i = 0; i < m; ++i)
      add_biases(used[static_cast<size_t>(i)], 1, s.gate.data() + i * ff, s.up.data() + i * ff, nullptr);
    activate(m);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t e = used[static_cast<size_t>(i)];
      MatMul(L.expert_down[static_cast<size_t>(e)], s.gate.data() + i * ff, 1, ff,
             s.expert_out.data() + i * d, d, pool, threads);
      add_biases(e, 1, nullptr, nullptr, s.expert_out.data() + i * d);
    }
    for (int64_t i = 0; i < m; ++i) {
      const float w = weights[static_cast<size_t>(i)];
      const float* y = s.expert_out.data() + i * d;
      for (int64_t j = 0; j < d; ++j) out[j] += w * y[j];
    }
  }
  for (int64_t e = 0; n > 1 && e < n_exp; ++e) {
    const auto& rows = routed[static_cast<size_t>(e)];
    if (rows.empty()) continue;
    const int64_t m = static_cast<int64_t>(rows.size());
    for (int64_t i = 0; i < m; ++i)
      std::copy(h + rows[static_cast<size_t>(i)].first * d, h + (rows[static_cast<size_t>(i)].first + 1) * d,
                s.expert_x.data() + i * d);
    const WeightMatrix* ws[] = {&L.expert_gate[static_cast<size_t>(e)], &L.expert_up[static_cast<size_t>(e)]};
    float* ys[] = {s.gate.data(), s.up.data()};
    MatMulShared(ws, s.expert_x.data(), m, d, ys, pool, threads);
    add_biases(e, m, s.gate.data(), s.up.data(), nullptr);
    activate(m);
    MatMul(L.expert_down[static_cast<size_t>(e)], s.gate.data(), m, ff, s.expert_out.data(), d, pool,
           threads);
    add_biases(e, m, nullptr, nullptr, s.expert_out.data());
    for (int64_t i = 0; i < m; ++i) {
      const auto [row, w] = rows[static_cast<size_t>(i)];
      float* o = out + row * d;
      const float* y = s.expert_out.data() + i * d;
      for (int64_t j = 0; j < d; ++j) o[j] += w * y[j];
    }
  }
  if (c.d_ff_shared > 0) {  // qwen2moe's shared expert, gated per token by sigmoid(w . x)
    const int64_t sf = c.d_ff_shared;
    const WeightMatrix* ws[] = {&L.shared_gate, &L.shared_up};
    float* ys[] = {s.gate.data(), s.up.data()};
    MatMulShared(ws, h, n, d, ys, pool, threads);
    ops::SwiGlu(s.gate.data(), s.up.data(), n * sf);
    MatMul(L.shared_down, s.gate.data(), n, sf, s.expert_out.data(), d, pool, threads);
    const float* gw = Floats(L.shared_gate_inp);
    for (int64_t r = 0; r < n; ++r) {
      double logit = 0.0;
      for (int64_t j = 0; j < d; ++j) logit += static_cast<double>(gw[j]) * h[r * d + j];
      const float g = static_cast<float>(1.0 / (1.0 + std::exp(-logit)));
      float* o = out + r * d;
      const float* y = s.expert_out.data() + r * d;
      for (int64_t j = 0; j < d; ++j) o[j] += g * y[j];
    }
  }
}

TensorView View4(float* data, int64_t n, int64_t heads, int64_t head_dim, int64_t row_stride) {
  TensorView t;
  t.data = data;
  t.dtype = DType::kF32;
  t.shape[0] = 1;
  t.shape[1] = n;
  t.shape[2] = heads;
  t.shape[3] = head_dim;
  t.stride[0] = n * row_stride;
  t.stride[1] = row_stride;
  t.stride[2] = head_dim;
  t.stride[3] = 1;
  return t;
}

// Attention with the pattern materialized, for the hooks that ask for scores or the pattern:
//   A[h, r, j] = scale q_r . k_j (pos0 + r - window <= j <= pos0 + r, else -inf; window -1: none;
//   softcapped as the model says) ->
//   hook_attn_scores -> softmax -> hook_pattern -> z[r, h] = sum_j A[h, r, j] v_j.
// Both products run on the f32 matrix kernel (the cached K rows and V^T as weight matrices).
// Also fills the row LSE and entropy for the statistics when they are given. With z == nullptr
// (read-only hooks) it stops after hook_pattern. With sinks (gpt-oss), each head's sink logit
// joins the softmax's denominator: a pattern row then sums to 1 - p_sink.
void ExplicitAttention(const float* q, int64_t q_stride, const KVCache& cache, int64_t n, int64_t pos0,
                       int64_t window, const ModelConfig& c, const float* sinks, const Hooks& hooks,
                       int layer, float* z, float* lse, float* entropy, ThreadPool& pool, int threads) {
  const int64_t keys = pos0 + n, hd = c.head_dim, group = c.n_heads / c.n_kv_heads;
  const float scale = c.AttnScale();
  const float cap = c.attn_softcap;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::vector<float> k32, v32;  // a half or q8_0 cache widened (this path is for inspection, not speed)
  const TensorView kt = cache.KeysF32(&k32), vt = cache.ValuesF32(&v32);
  std::vector<float> a(static_cast<size_t>(c.n_heads * n * keys));
  std::vector<float> v_t(static_cast<size_t>(hd * keys));
  for (int64_t h = 0; h < c.n_heads; ++h) {
    const float* k_rows = static_cast<const float*>(kt.data) + (h / group) * kt.stride[2];
    const WeightMatrix km{TensorType::kF32, reinterpret_cast<const uint8_t*>(k_rows), keys, hd,
                          static_cast<size_t>(kt.stride[1]) * sizeof(float)};
    float* ah = a.data() + h * n * keys;
    MatMul(km, q + h * hd, n, q_stride, ah, keys, pool, threads);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t j = 0; j < keys; ++j) {
        float& x = ah[r * keys + j];
        x *= scale;
        if (cap > 0.0f) x = cap * std::tanh(x / cap);
        if (j > pos0 + r || (window >= 0 && pos0 + r - j > window)) x = neg_inf;
      }
    }
  }
  auto visit = [&](const char* name) {
    if (hooks.Wants(name, layer)) hooks.fn(HookPoint{name, layer, a.data(), n, keys, pos0, c.n_heads});
  };
  visit("attn.hook_attn_scores");
  for (int64_t row = 0; row < c.n_heads * n; ++row) {
    float* ar = a.data() + row * keys;
    const int64_t h = row / n, r = row % n;
    const float sink = sinks != nullptr ? sinks[h] : neg_inf;
    float mx = sink;
    for (int64_t j = 0; j < keys; ++j) mx = std::max(mx, ar[j]);
    double sum = 0.0, dot = 0.0;  // sum e^(s - m), sum e^(s - m) (s - m), the sink's term included
    for (int64_t j = 0; j < keys; ++j) {
      const float e = mx == neg_inf ? 0.0f : std::exp(ar[j] - mx);
      sum += e;
      if (e > 0.0f) dot += static_cast<double>(e) * (ar[j] - mx);
      ar[j] = e;
    }
    if (sink > neg_inf) {
      const float e = std::exp(sink - mx);
      sum += e;
      dot += static_cast<double>(e) * (sink - mx);
    }
    const float inv = sum > 0.0 ? static_cast<float>(1.0 / sum) : 0.0f;
    for (int64_t j = 0; j < keys; ++j) ar[j] *= inv;
    if (lse) lse[h * n + r] = sum > 0.0 ? mx + static_cast<float>(std::log(sum)) : neg_inf;
    if (entropy) entropy[h * n + r] = sum > 0.0 ? static_cast<float>(std::log(sum) - dot / sum) : 0.0f;
  }
  visit("attn.hook_pattern");
  if (z == nullptr) return;
  for (int64_t kvh = 0; kvh < c.n_kv_heads; ++kvh) {
    const float* v_rows = static_cast<const float*>(vt.data) + kvh * vt.stride[2];
    for (int64_t j = 0; j < keys; ++j)
      for (int64_t dd = 0; dd < hd; ++dd) v_t[dd * keys + j] = v_rows[j * vt.stride[1] + dd];
    const WeightMatrix vm{TensorType::kF32, reinterpret_cast<const uint8_t*>(v_t.data()), hd, keys,
                          static_cast<size_t>(keys) * sizeof(float)};
    for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
      MatMul(vm, a.data() + h * n * keys, n, keys, z + h * hd, c.n_heads * hd, pool, threads);
  }
}

// The per-pair frequency divisors of the rotary angles: Llama 3.1's rope_freqs, Phi-3's LongRoPE
// set for a session of `capacity` positions, YaRN's; nullptr for none.
const float* RopeFactors(const ModelConfig& c, const Model::Weights& w, int64_t capacity) {
  if (!c.rope_yarn_factors.empty()) return c.rope_yarn_factors.data();
  if (w.rope_factors_long.data != nullptr)  // LongRoPE (phi3), chosen by the session's size
    return Floats(capacity > c.rope_orig_context ? w.rope_factors_long : w.rope_factors_short);
  return w.rope_freqs.data != nullptr ? Floats(w.rope_freqs) : nullptr;
}

// Whether sliding-window layers rotate with a table of their own (rope_base_swa; no scaling where
// rope_swa_unscaled, as gemma3's; gemma2's and gpt-oss's share the global layers' scaling).
bool OwnSlidingTable(const ModelConfig& c, const float* factors) {
  return c.sliding_window > 0 &&
         (c.rope_base_swa != c.rope_base || (c.rope_swa_unscaled && (c.rope_freq_scale != 1.0f || factors)));
}

}  // namespace

void Model::ShiftContext(Session& session, int64_t keep, int64_t discard) const {
  const ModelConfig& c = config_;
  if (c.arch == Arch::kGpt2)
    throw Error("context shift: gpt2 has learned absolute positions, so its cached keys cannot move");
  if (keep < 0 || discard < 1 || keep + discard > session.n_past_)
    throw Error("context shift: keep " + std::to_string(keep) + ", discard " + std::to_string(discard) +
                " (need keep >= 0, discard >= 1, keep + discard <= " + std::to_string(session.n_past_) +
                " cached positions)");
  // A rotation by -discard positions: the angles of position `discard` without the magnitude
  // (the cached keys carry theirs already), the sine negated.
  const int64_t half = c.rope_dim / 2;
  const float* factors = RopeFactors(c, *weights_, session.capacity_);
  std::vector<float> cos_t(static_cast<size_t>(half)), sin_t(cos_t.size()), swa_cos = cos_t, swa_sin = cos_t;
  ops::RopeAngles(1, c.rope_dim, discard, c.rope_base, c.rope_freq_scale, factors, cos_t.data(),
                  sin_t.data());
  if (OwnSlidingTable(c, factors)) {
    ops::RopeAngles(1, c.rope_dim, discard, c.rope_base_swa, c.rope_swa_unscaled ? 1.0f : c.rope_freq_scale,
                    c.rope_swa_unscaled ? nullptr : factors, swa_cos.data(), swa_sin.data());
  } else {
    swa_cos = cos_t, swa_sin = sin_t;
  }
  for (float* s : {sin_t.data(), swa_sin.data()})
    for (int64_t i = 0; i < half; ++i) s[i] = -s[i];
  const auto style = c.rope_neox ? ops::RopeStyle::kNeox : ops::RopeStyle::kNormal;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    KVCache& cache = *session.caches_[static_cast<size_t>(l)];
    cache.Shift(keep, discard);
    if (!c.UsesRope(l)) continue;  // NoPE keys carry no position: nothing to rotate back
    const bool sliding = c.IsSliding(l);
    const float* ct = sliding ? swa_cos.data() : cos_t.data();
    const float* st = sliding ? swa_sin.data() : sin_t.data();
    cache.UpdateKeys(keep, cache.length(),
                     [&](float* row) { ops::ApplyRope(row, 1, 1, c.head_dim, c.rope_dim, ct, st, style); });
  }
  session.tokens_.erase(session.tokens_.begin() + keep, session.tokens_.begin() + keep + discard);
  session.n_past_ -= discard;
}

Model::Model() = default;
Model::~Model() = default;

void Model::SetControlVector(std::vector<std::vector<float>> directions) {
  if (directions.size() > static_cast<size_t>(config_.n_layers))
    throw Error("control vector: " + std::to_string(directions.size()) + " layers for a model of " +
                std::to_string(config_.n_layers));
  for (size_t l = 0; l < directions.size(); ++l) {
    if (!directions[l].empty() && directions[l].size() != static_cast<size_t>(config_.d_model))
      throw Error("control vector: layer " + std::to_string(l) + " has " +
                  std::to_string(directions[l].size()) + " values; the model's residual stream has " +
                  std::to_string(config_.d_model));
  }
  control_vector_ = std::move(directions);
}

const ConstraintVocabulary& Model::constraint_vocabulary() const {
  std::call_once(constraint_once_, [this] {
    const Tokenizer& tok = tokenizer();
    std::vector<std::string> pieces(static_cast<size_t>(config_.vocab_size));
    for (int32_t id = 0; id < tok.vocab_size() && id < config_.vocab_size; ++id) {
      // Control tokens never enter the text; end-of-generation ones are decided at each step.
      if (!tok.IsControl(id) && !tok.IsUnused(id)) pieces[static_cast<size_t>(id)] = tok.TokenToPiece(id);
    }
    TokenTrie trie(pieces);
    std::vector<int32_t> textless;
    for (size_t id = 0; id < pieces.size(); ++id) {
      if (pieces[id].empty()) textless.push_back(static_cast<int32_t>(id));
    }
    constraint_vocabulary_ = std::make_unique<ConstraintVocabulary>(
        ConstraintVocabulary{std::move(pieces), std::move(trie), std::move(textless)});
  });
  return *constraint_vocabulary_;
}

std::unique_ptr<Model> Model::Load(const std::string& path) {
  std::unique_ptr<Model> m(new Model());
  m->path_ = path;
  m->file_ = std::make_unique<gguf::File>(gguf::File::Open(path));
  m->config_ = ReadConfig(*m->file_);
  m->weights_ = std::make_unique<Weights>();
  LoadWeights(*m->file_, m->config_, *m->weights_);
  m->tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::FromGGUF(*m->file_));
  if (m->tokenizer_->vocab_size() > m->config_.vocab_size) {
    throw Error("model: the tokenizer has " + std::to_string(m->tokenizer_->vocab_size()) +
                " tokens but token_embd.weight only " + std::to_string(m->config_.vocab_size) + " rows");
  }
  return m;
}

uint64_t Model::weight_bytes() const {
  // The tensors of the architecture's list only: a training checkpoint also holds AdamW moments.
  uint64_t total = 0;
  Weights unused;
  ForEachTensor(config_, unused, [&](const TensorSpec& spec, WeightMatrix&) {
    if (const gguf::TensorInfo* t = file_->FindTensor(spec.name)) total += t->bytes;
  });
  return total;
}

Session::Session(const Model& model, int64_t capacity, DType kv_dtype) {
  const ModelConfig& c = model.config();
  if (capacity <= 0 || capacity > c.context_length) {
    throw Error("session: capacity = " + std::to_string(capacity) + " (must be in [1, " +
                std::to_string(c.context_length) + "], the model's context length)");
  }
  if (kv_dtype == DType::kQ8_0 && c.head_dim % 32 != 0) {
    throw Error("session: a q8_0 KV cache needs a head_dim that is a multiple of 32; this model's is " +
                std::to_string(c.head_dim) + " (use f16, bf16 or f32)");
  }
  model_ = &model;
  capacity_ = capacity;
  context_length_ = c.context_length;
  kv_dtype_ = kv_dtype;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    caches_.push_back(std::make_unique<KVCache>(1, c.n_kv_heads, c.head_dim, capacity, kv_dtype));
  }
}

Session::~Session() = default;

void Session::Reset() {
  n_past_ = 0;
  tokens_.clear();
  for (auto& cache : caches_) cache->Clear();
}

void Session::Truncate(int64_t n_past) {
  if (n_past < 0 || n_past > n_past_) {
    throw Error("session: truncate to " + std::to_string(n_past) + " positions (must be in [0, " +
                std::to_string(n_past_) + "])");
  }
  n_past_ = n_past;
  tokens_.resize(static_cast<size_t>(n_past));
  for (auto& cache : caches_) cache->Truncate(n_past);
}

const KVCache& Session::cache(int64_t layer) const {
  if (layer < 0 || layer >= static_cast<int64_t>(caches_.size()))
    throw Error("session: layer " + std::to_string(layer) + " not in [0, " + std::to_string(caches_.size()) +
                ")");
  return *caches_[static_cast<size_t>(layer)];
}

void Session::Reserve(int64_t capacity) {
  if (capacity <= capacity_) return;
  if (capacity > context_length_) {
    throw Error("session: capacity = " + std::to_string(capacity) +
                " (must be <= " + std::to_string(context_length_) + ", the model's context length)");
  }
  for (auto& cache : caches_) cache->Reserve(capacity);
  capacity_ = capacity;
}

void Model::Forward(Session& session, std::span<const int32_t> tokens, float* logits,
                    const ForwardOptions& options) const {
  const BatchItem item{&session, tokens};
  ForwardBatch(std::span<const BatchItem>(&item, 1), logits, options);
}

namespace {

// The unembedding's bias (phi2), the logit scale (granite) and final softcap (gemma 2) on logits
// [rows, vocab].
void FinishLogits(const ModelConfig& c, const Model::Weights& w, float* out, int64_t rows) {
  if (w.output_bias.data != nullptr) ops::AddBias(out, Floats(w.output_bias), rows, c.vocab_size);
  if (c.logit_scale != 1.0f) ops::Scale(out, 1.0f / c.logit_scale, rows * c.vocab_size);
  if (c.final_softcap > 0.0f) {
    const float cap = c.final_softcap;
    for (int64_t i = 0; i < rows * c.vocab_size; ++i) out[i] = cap * std::tanh(out[i] / cap);
  }
}

// One item's rows within one pass through the blocks.
struct Piece {
  int64_t item;   // index in the batch
  int64_t begin;  // first token of the item's in this pass
  int64_t count;  // its tokens in this pass
  int64_t row;    // first row of the pass's matrices
};

// Splits the items' tokens into passes of at most max_chunk rows, in item order; an item longer
// than what is left of a pass continues in the next one (after its earlier tokens are cached).
std::vector<std::vector<Piece>> PlanPasses(std::span<const Model::BatchItem> items, int64_t max_chunk) {
  std::vector<std::vector<Piece>> passes(1);
  int64_t rows = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const int64_t total = static_cast<int64_t>(items[i].tokens.size());
    for (int64_t begin = 0; begin < total;) {
      if (rows == max_chunk) passes.emplace_back(), rows = 0;
      const int64_t count = std::min(total - begin, max_chunk - rows);
      passes.back().push_back(Piece{static_cast<int64_t>(i), begin, count, rows});
      begin += count, rows += count;
    }
  }
  return passes;
}

}  // namespace

void Model::ForwardBatch(std::span<const BatchItem> items, float* logits,
                         const ForwardOptions& options) const {
  const bool all_logits = options.all_logits;
  const int threads = options.threads;
  const Hooks* hooks = options.hooks;
  HeadStats* stats = options.stats;
  const ModelConfig& c = config_;
  const Weights& w = *weights_;
  if (items.empty()) throw Error("forward: no sequences");
  if (logits == nullptr && options.hidden == nullptr)
    throw Error("forward: no output asked for (logits and hidden are both null)");
  if (options.one_row_attention && (hooks != nullptr || stats != nullptr))
    throw Error("forward: one_row_attention is not for passes with hooks or head statistics");
  if (items.size() > 1 && (hooks != nullptr || stats != nullptr))
    throw Error("forward: hooks and head statistics need a single sequence, not a batch of " +
                std::to_string(items.size()));
  for (size_t b = 0; b < items.size(); ++b) {
    const std::string which = items.size() > 1 ? "sequence " + std::to_string(b) + ": " : "";
    const Session* session = items[b].session;
    const std::span<const int32_t> tokens = items[b].tokens;
    const int64_t n_total = static_cast<int64_t>(tokens.size());
    if (session == nullptr) throw Error("forward: " + which + "no session");
    if (n_total == 0) throw Error("forward: " + which + "no tokens");
    for (size_t e = 0; e < b; ++e) {
      if (items[e].session == session)
        throw Error("forward: sequences " + std::to_string(e) + " and " + std::to_string(b) +
                    " share one session");
    }
    if (session->model_ != this || session->caches_.size() != static_cast<size_t>(c.n_layers)) {
      throw Error("forward: " + which + "the session was made for another model");
    }
    if (session->n_past_ + n_total > session->capacity_) {
      throw Error("forward: " + which + std::to_string(session->n_past_) + " cached + " +
                  std::to_string(n_total) + " new tokens exceed the session's capacity of " +
                  std::to_string(session->capacity_) + " positions (the prompt is too long for the context)");
    }
    for (int64_t i = 0; i < n_total; ++i) {
      if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
        throw Error("forward: " + which + "token id " + std::to_string(tokens[i]) + " at index " +
                    std::to_string(i) + " is out of range [0, " + std::to_string(c.vocab_size) + ")");
      }
    }
  }

  ThreadPool& pool = ThreadPool::Global();
  const int64_t d = c.d_model, hd = c.head_dim;
  const int64_t q_dim = c.n_heads * hd, kv_dim = c.n_kv_heads * hd;
  const bool gpt2 = c.arch == Arch::kGpt2;
  if (options.max_chunk <= 0) throw Error("forward: max_chunk = " + std::to_string(options.max_chunk));
  if (stats != nullptr && (stats->layers() != c.n_layers || stats->heads() != c.n_heads)) {
    throw Error("forward: the head statistics were made for another model");
  }
  const std::vector<std::vector<Piece>> passes = PlanPasses(items, options.max_chunk);
  int64_t max_rows = 0;
  for (const auto& pass : passes) max_rows = std::max(max_rows, pass.back().row + pass.back().count);
  Scratch s(c, max_rows);
  std::vector<float> row_lse, row_entropy;  // [n_heads, n] per layer, statistics mode only
  int64_t logit_row = 0;                    // all_logits: the output row of the pass's first row
  int64_t hidden_row = 0;                   // options.hidden: likewise

  for (const std::vector<Piece>& pass : passes) {
    const int64_t n = pass.back().row + pass.back().count;
    // Hooks and statistics (a single item) see the pass's positions from pos0.
    const int64_t pos0 = items[static_cast<size_t>(pass[0].item)].session->n_past_;
    for (const Piece& p : pass) {
      const BatchItem& it = items[static_cast<size_t>(p.item)];
      it.session->tokens_.insert(it.session->tokens_.end(), it.tokens.begin() + p.begin,
                                 it.tokens.begin() + p.begin + p.count);
    }
    auto point = [&](const char* name, int layer, float* data, int64_t cols) {
      if (hooks != nullptr && hooks->Wants(name, layer))
        hooks->fn(HookPoint{name, layer, data, n, cols, pos0});
    };
    if (stats != nullptr) {
      row_lse.resize(static_cast<size_t>(c.n_heads * n));
      row_entropy.resize(row_lse.size());
    }
    auto matmul = [&](const WeightMatrix& m, const float* x, int64_t ldx, float* y, int64_t ldy) {
      MatMul(m, x, n, ldx, y, ldy, pool, threads);
    };
    // Row-wise steps (norms, activations, residual adds) of a long chunk are split over the pool by
    // rows: each row's result is computed alone, so the split changes no bit.
    auto by_rows = [&](const std::function<void(int64_t, int64_t)>& f) {
      constexpr int64_t kRowsPerTask = 32;
      if (n < 2 * kRowsPerTask) return f(0, n);
      pool.Run((n + kRowsPerTask - 1) / kRowsPerTask, threads, [&](int64_t task, int) {
        const int64_t r0 = task * kRowsPerTask;
        f(r0, std::min(n, r0 + kRowsPerTask));
      });
    };
    // Without a weight (olmo2's sub-block inputs) the rows pass unchanged.
    auto norm = [&](const WeightMatrix& weight, const WeightMatrix& bias, const float* x, float* y) {
      by_rows([&](int64_t r0, int64_t r1) {
        if (weight.data == nullptr) {
          if (y != x) std::copy(x + r0 * d, x + r1 * d, y + r0 * d);
        } else if (c.norm == NormKind::kRms) {
          ops::RmsNorm(x + r0 * d, Floats(weight), y + r0 * d, r1 - r0, d, c.norm_eps);
        } else {
          ops::LayerNorm(x + r0 * d, Floats(weight), Floats(bias), y + r0 * d, r1 - r0, d, c.norm_eps);
        }
      });
    };
    auto add_rows = [&](float* y, const float* o) {
      by_rows([&](int64_t r0, int64_t r1) { ops::Add(y + r0 * d, o + r0 * d, (r1 - r0) * d); });
    };
    // The control vector's direction of this block, added to every row of its output.
    auto steer = [&](float* x, int layer) {
      if (static_cast<size_t>(layer) >= control_vector_.size() ||
          control_vector_[static_cast<size_t>(layer)].empty())
        return;
      const float* v = control_vector_[static_cast<size_t>(layer)].data();
      by_rows([&](int64_t r0, int64_t r1) { ops::AddBias(x + r0 * d, v, r1 - r0, d); });
    };

    // Rotary angles of this pass's positions (each piece at its session's), shared by every
    // layer. Sliding layers rotate at rope_base_swa without scaling: their own table where that
    // differs (gemma3), else the same one. LongRoPE's factors depend on each session's capacity.
    std::vector<float> rope_cos, rope_sin, swa_cos, swa_sin;
    const float *swa_cos_t = nullptr, *swa_sin_t = nullptr;
    auto session_of = [&](const Piece& p) -> Session& { return *items[static_cast<size_t>(p.item)].session; };
    if (!gpt2) {
      const int64_t half = c.rope_dim / 2;
      rope_cos.resize(static_cast<size_t>(n * half));
      rope_sin.resize(rope_cos.size());
      bool own_table = false;
      for (const Piece& p : pass) own_table |= OwnSlidingTable(c, RopeFactors(c, w, session_of(p).capacity_));
      if (own_table) {
        swa_cos.resize(rope_cos.size());
        swa_sin.resize(rope_cos.size());
      }
      for (const Piece& p : pass) {
        const Session& ps = session_of(p);
        const float* factors = RopeFactors(c, w, ps.capacity_);
        const size_t at = static_cast<size_t>(p.row * half);
        ops::RopeAngles(p.count, c.rope_dim, ps.n_past_, c.rope_base, c.rope_freq_scale, factors,
                        rope_cos.data() + at, rope_sin.data() + at, c.rope_attn_factor);
        if (!own_table) continue;
        if (OwnSlidingTable(c, factors)) {
          ops::RopeAngles(p.count, c.rope_dim, ps.n_past_, c.rope_base_swa,
                          c.rope_swa_unscaled ? 1.0f : c.rope_freq_scale,
                          c.rope_swa_unscaled ? nullptr : factors, swa_cos.data() + at, swa_sin.data() + at,
                          c.rope_swa_unscaled ? 1.0f : c.rope_attn_factor);
        } else {
          std::copy_n(rope_cos.data() + at, p.count * half, swa_cos.data() + at);
          std::copy_n(rope_sin.data() + at, p.count * half, swa_sin.data() + at);
        }
      }
      swa_cos_t = own_table ? swa_cos.data() : rope_cos.data();
      swa_sin_t = own_table ? swa_sin.data() : rope_sin.data();
    }

    // Embedding: x[i] = E[token_i] (+ P[pos_i]).
    float* x = s.x.data();
    for (const Piece& p : pass) {
      for (int64_t i = 0; i < p.count; ++i) {
        const int32_t id = items[static_cast<size_t>(p.item)].tokens[static_cast<size_t>(p.begin + i)];
        DequantizeRow(w.token_embd.type, w.token_embd.data + static_cast<size_t>(id) * w.token_embd.row_bytes,
                      x + (p.row + i) * d, d);
      }
    }
    if (c.embed_scale != 1.0f) ops::Scale(x, c.embed_scale, n * d);
    point("hook_embed", -1, x, d);
    if (gpt2) {
      // All n position rows first, so hook_pos_embed sees one [n, d_model] block.
      std::vector<float> pos_rows(static_cast<size_t>(n * d));
      for (const Piece& p : pass) {
        for (int64_t i = 0; i < p.count; ++i) {
          const int64_t pos = session_of(p).n_past_ + i;
          DequantizeRow(w.pos_embd.type, w.pos_embd.data + static_cast<size_t>(pos) * w.pos_embd.row_bytes,
                        pos_rows.data() + (p.row + i) * d, d);
        }
      }
      point("hook_pos_embed", -1, pos_rows.data(), d);
      ops::Add(x, pos_rows.data(), n * d);
    }

    for (int64_t l = 0; l < c.n_layers; ++l) {
      const LayerWeights& L = w.layers[static_cast<size_t>(l)];
      const int layer = static_cast<int>(l);
      const bool sliding = c.IsSliding(l);
      const int64_t window = sliding ? c.sliding_window - 1 : -1;  // keys before the query it sees
      point("hook_resid_pre", layer, x, d);

      // Attention sub-block.
      norm(L.attn_norm, L.attn_norm_bias, x, s.h.data());
      point("ln1.hook_normalized", layer, s.h.data(), d);
      float *q, *k, *v;
      int64_t q_stride, kv_stride;
      if (gpt2) {
        // One fused product [n, 3d], then q, k, v are column blocks of it.
        matmul(L.wqkv, s.h.data(), d, s.q.data(), q_dim + 2 * kv_dim);
        ops::AddBias(s.q.data(), Floats(L.bqkv), n, q_dim + 2 * kv_dim);
        q = s.q.data();
        k = q + q_dim;
        v = k + kv_dim;
        q_stride = kv_stride = q_dim + 2 * kv_dim;
      } else {
        // Q, K and V read the same normalized rows: one shared product (one quantization of h).
        const WeightMatrix* ws[] = {&L.wq, &L.wk, &L.wv};
        float* ys[] = {s.q.data(), s.k.data(), s.v.data()};
        MatMulShared(ws, s.h.data(), n, d, ys, pool, threads);
        q = s.q.data();
        k = s.k.data();
        v = s.v.data();
        q_stride = q_dim;
        kv_stride = kv_dim;
      }
      if (c.qkv_bias) {
        ops::AddBias(q, Floats(L.bq), n, q_dim);
        ops::AddBias(k, Floats(L.bk), n, kv_dim);
        ops::AddBias(v, Floats(L.bv), n, kv_dim);
      }
      if (hooks != nullptr && gpt2) {
        // Hooks see contiguous [n, heads * head_dim] blocks; copy out of the fused layout.
        for (float* part : {q, k, v}) {
          const int64_t cols = part == q ? q_dim : kv_dim;
          std::vector<float> tmp(static_cast<size_t>(n * cols));
          for (int64_t i = 0; i < n; ++i) std::copy_n(part + i * q_stride, cols, tmp.data() + i * cols);
          point(part == q   ? "attn.hook_q"
                : part == k ? "attn.hook_k"
                            : "attn.hook_v",
                layer, tmp.data(), cols);
          for (int64_t i = 0; i < n; ++i) std::copy_n(tmp.data() + i * cols, cols, part + i * q_stride);
        }
      } else {
        point("attn.hook_q", layer, q, q_dim);
        point("attn.hook_k", layer, k, kv_dim);
        point("attn.hook_v", layer, v, kv_dim);
      }
      if (c.qk_norm) {  // every head's row of head_dim values on its own
        ops::RmsNorm(q, Floats(L.q_norm), q, n * c.n_heads, hd, c.norm_eps);
        ops::RmsNorm(k, Floats(L.k_norm), k, n * c.n_kv_heads, hd, c.norm_eps);
      } else if (c.qk_norm_full) {  // each token's whole query row and whole key row (olmoe)
        ops::RmsNorm(q, Floats(L.q_norm), q, n, q_dim, c.norm_eps);
        ops::RmsNorm(k, Floats(L.k_norm), k, n, kv_dim, c.norm_eps);
      }
      if (!gpt2) {
        // GGUF llama: consecutive pairs (its converter permutes Q and K rows); qwen*: NEOX halves.
        const auto style = c.rope_neox ? ops::RopeStyle::kNeox : ops::RopeStyle::kNormal;
        const float* cos_t = sliding ? swa_cos_t : rope_cos.data();
        const float* sin_t = sliding ? swa_sin_t : rope_sin.data();
        if (c.UsesRope(l)) {  // SmolLM3's NoPE layers skip it (hook_rot_q / _k then equal hook_q / _k)
          ops::ApplyRope(q, n, c.n_heads, hd, c.rope_dim, cos_t, sin_t, style);
          ops::ApplyRope(k, n, c.n_kv_heads, hd, c.rope_dim, cos_t, sin_t, style);
        }
        point("attn.hook_rot_q", layer, q, q_dim);
        point("attn.hook_rot_k", layer, k, kv_dim);
      }
      float* lse = stats != nullptr ? row_lse.data() : nullptr;
      float* entropy = stats != nullptr ? row_entropy.data() : nullptr;
      const float* sinks = L.sinks.data != nullptr ? Floats(L.sinks) : nullptr;
      const bool explicit_pattern = hooks != nullptr && (hooks->Wants("attn.hook_attn_scores", layer) ||
                                                         hooks->Wants("attn.hook_pattern", layer));
      // Each piece's rows join its own session's cache and attend to it. (With hooks or statistics
      // there is one piece: rows [0, n) at pos0.)
      for (const Piece& p : pass) {
        Session& ps = session_of(p);
        KVCache& cache = *ps.caches_[static_cast<size_t>(l)];
        const int64_t m = p.count;
        float* pq = q + p.row * q_stride;
        float* pz = s.z.data() + p.row * q_dim;
        cache.Append(View4(k + p.row * kv_stride, m, c.n_kv_heads, hd, kv_stride),
                     View4(v + p.row * kv_stride, m, c.n_kv_heads, hd, kv_stride));
        if (explicit_pattern && hooks->read_only) {
          ExplicitAttention(pq, q_stride, cache, m, pos0, window, c, sinks, *hooks, layer, nullptr, nullptr,
                            nullptr, pool, threads);
        }
        if (explicit_pattern && !hooks->read_only) {
          ExplicitAttention(pq, q_stride, cache, m, pos0, window, c, sinks, *hooks, layer, pz, lse, entropy,
                            pool, threads);
        } else {
          AttentionOptions opts;
          opts.causal = true;  // bottom-right: the m new queries are the last m cached positions
          opts.scale = c.AttnScale();
          opts.window_left = window;
          opts.softcap = c.attn_softcap;
          opts.sinks = sinks;
          opts.threads = threads;
          opts.lse = lse;
          opts.entropy = entropy;
          if (options.one_row_attention) {
            // Row i as a one-token pass at its position: the keys up to and including its own.
            for (int64_t i = 0; i < m; ++i)
              cache.AttendFirst(View4(pq + i * q_stride, 1, c.n_heads, hd, q_stride),
                                View4(pz + i * q_dim, 1, c.n_heads, hd, q_dim), opts,
                                cache.length() - m + 1 + i);
          } else {
            cache.Attend(View4(pq, m, c.n_heads, hd, q_stride), View4(pz, m, c.n_heads, hd, q_dim), opts);
          }
        }
        if (stats != nullptr) {
          // The statistics read f32 / half keys in place; a q8_0 cache's are widened first.
          std::vector<float> k32;
          const TensorView keys = cache.dtype() == DType::kQ8_0 ? cache.KeysF32(&k32) : cache.keys();
          stats->Add(HeadStats::LayerInput{layer, pos0, m, pq, q_stride, keys, lse, entropy, c.AttnScale(),
                                           ps.tokens_, threads, window, c.attn_softcap, sinks});
        }
      }
      point("attn.hook_z", layer, s.z.data(), q_dim);
      matmul(L.wo, s.z.data(), q_dim, s.o.data(), d);
      if (L.bo.data != nullptr) ops::AddBias(s.o.data(), Floats(L.bo), n, d);
      if (c.post_norms) norm(L.post_attn_norm, WeightMatrix{}, s.o.data(), s.o.data());
      if (c.residual_scale != 1.0f) ops::Scale(s.o.data(), c.residual_scale, n * d);  // granite
      point("hook_attn_out", layer, s.o.data(), d);
      add_rows(x, s.o.data());
      if (c.d_ff == 0) {
        // Attention-only (gpt2 with feed_forward_length = 0): the block ends here. As in
        // TransformerLens's attn_only models, resid_mid and the MLP's points do not exist, and
        // resid_post = resid_pre + attn_out.
        steer(x, layer);
        point("hook_resid_post", layer, x, d);
        continue;
      }
      point("hook_resid_mid", layer, x, d);

      // Feed-forward sub-block (phi2's reads the block input's norm, still in s.h).
      if (!c.parallel_residual) norm(L.ffn_norm, L.ffn_norm_bias, x, s.h.data());
      point("ln2.hook_normalized", layer, s.h.data(), d);
      if (gpt2 || c.gelu_mlp) {
        matmul(L.w_up, s.h.data(), d, s.up.data(), c.d_ff);
        ops::AddBias(s.up.data(), Floats(L.b_up), n, c.d_ff);
        point("mlp.hook_pre", layer, s.up.data(), c.d_ff);
        by_rows(
            [&](int64_t r0, int64_t r1) { ops::GeluTanh(s.up.data() + r0 * c.d_ff, (r1 - r0) * c.d_ff); });
        point("mlp.hook_post", layer, s.up.data(), c.d_ff);
        matmul(L.w_down, s.up.data(), c.d_ff, s.o.data(), d);
        ops::AddBias(s.o.data(), Floats(L.b_down), n, d);
      } else if (c.n_expert > 0) {
        MixtureOfExperts(
            c, L, s.h.data(), n, s.o.data(), s, pool, threads,
            [&](const char* name, float* data, int64_t cols) { point(name, layer, data, cols); });
      } else {
        const WeightMatrix* ws[] = {&L.w_gate, &L.w_up};
        float* ys[] = {s.gate.data(), s.up.data()};
        MatMulShared(ws, s.h.data(), n, d, ys, pool, threads);
        point("mlp.hook_pre", layer, s.gate.data(), c.d_ff);
        by_rows([&](int64_t r0, int64_t r1) {
          float* gate = s.gate.data() + r0 * c.d_ff;
          const float* up = s.up.data() + r0 * c.d_ff;
          c.gelu_gate ? ops::GegluTanh(gate, up, (r1 - r0) * c.d_ff)
                      : ops::SwiGlu(gate, up, (r1 - r0) * c.d_ff);
        });
        point("mlp.hook_post", layer, s.gate.data(), c.d_ff);
        matmul(L.w_down, s.gate.data(), c.d_ff, s.o.data(), d);
        if (c.post_norms) norm(L.post_ffn_norm, WeightMatrix{}, s.o.data(), s.o.data());
      }
      if (c.residual_scale != 1.0f) ops::Scale(s.o.data(), c.residual_scale, n * d);  // granite
      point("hook_mlp_out", layer, s.o.data(), d);
      add_rows(x, s.o.data());
      steer(x, layer);
      point("hook_resid_post", layer, x, d);
    }
    for (const Piece& p : pass) session_of(p).n_past_ += p.count;
    auto final_norm = [&](const float* in, float* out_rows, int64_t count) {
      if (c.norm == NormKind::kRms) {
        ops::RmsNorm(in, Floats(w.output_norm), out_rows, count, d, c.norm_eps);
      } else {
        ops::LayerNorm(in, Floats(w.output_norm), Floats(w.output_norm_bias), out_rows, count, d, c.norm_eps);
      }
    };
    if (options.hidden != nullptr) final_norm(x, options.hidden + hidden_row * d, n);
    hidden_row += n;
    if (logits == nullptr) continue;

    // Final norm and unembedding, for every row, or for the last row of each item that ends in this
    // pass (consecutive items: only a pass's last piece can leave its item unfinished).
    int64_t first = 0, rows = n;  // rows [first, first + rows) of x when all_logits
    std::vector<int64_t> last_rows;
    int64_t first_item = -1;
    if (!all_logits) {
      for (const Piece& p : pass) {
        if (p.begin + p.count < static_cast<int64_t>(items[static_cast<size_t>(p.item)].tokens.size()))
          continue;
        if (first_item < 0) first_item = p.item;
        last_rows.push_back(p.row + p.count - 1);
      }
      if (last_rows.empty()) continue;
      first = last_rows[0];
      rows = static_cast<int64_t>(last_rows.size());
    }
    float* h = s.h.data();
    if (all_logits) {
      final_norm(x, h, n);
    } else {
      for (int64_t j = 0; j < rows; ++j) final_norm(x + last_rows[static_cast<size_t>(j)] * d, h + j * d, 1);
    }
    if (hooks != nullptr && hooks->Wants("ln_final.hook_normalized", -1)) {
      hooks->fn(HookPoint{"ln_final.hook_normalized", -1, h, rows, d, pos0 + first});
    }
    float* out = logits + (all_logits ? logit_row : first_item) * c.vocab_size;
    logit_row += n;
    MatMul(w.output, h, rows, d, out, c.vocab_size, pool, threads);
    FinishLogits(c, w, out, rows);
  }
}

void Model::Unembed(const float* x, int64_t rows, float* logits, int threads) const {
  const ModelConfig& c = config_;
  const Weights& w = *weights_;
  if (rows < 0 || (rows > 0 && (x == nullptr || logits == nullptr)))
    throw Error("unembed: " + std::to_string(rows) + " rows with a null pointer");
  if (rows == 0) return;
  std::vector<float> h(static_cast<size_t>(rows * c.d_model));
  if (c.norm == NormKind::kRms) {
    ops::RmsNorm(x, Floats(w.output_norm), h.data(), rows, c.d_model, c.norm_eps);
  } else {
    ops::LayerNorm(x, Floats(w.output_norm), Floats(w.output_norm_bias), h.data(), rows, c.d_model,
                   c.norm_eps);
  }
  MatMul(w.output, h.data(), rows, c.d_model, logits, c.vocab_size, ThreadPool::Global(), threads);
  FinishLogits(c, w, logits, rows);
}

}  // namespace attn
