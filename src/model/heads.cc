// Head statistics (detector scores from the fused kernel's row LSE and entropy), the induction
// probe, role labels and head ablation. Definitions: include/attn/heads.h.
#include "attn/heads.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "attn/error.h"
#include "core/thread_pool.h"
#include "kernels/head_stats.h"

namespace attn {

HeadStats::HeadStats(const ModelConfig& config)
    : layers_(config.n_layers),
      heads_(config.n_heads),
      kv_heads_(config.n_kv_heads),
      head_dim_(config.head_dim),
      sums_(static_cast<size_t>(config.n_layers * config.n_heads)) {}

void HeadStats::Clear() { std::fill(sums_.begin(), sums_.end(), Sums{}); }

void HeadStats::Add(const LayerInput& in) {
  if (in.layer < 0 || in.layer >= layers_) throw Error("head stats: layer " + std::to_string(in.layer));
  const int64_t n = in.n, pos0 = in.pos0, D = head_dim_, group = heads_ / kv_heads_;
  if (static_cast<int64_t>(in.tokens.size()) < pos0 + n) throw Error("head stats: missing tokens");

  // Earlier copies of each row's token: positions j < i with tok_j == tok_i (CSR over rows).
  std::unordered_map<int32_t, std::vector<int64_t>> seen;
  for (int64_t j = 0; j < pos0; ++j) seen[in.tokens[j]].push_back(j);
  std::vector<int64_t> copy_begin(static_cast<size_t>(n + 1)), copies;
  for (int64_t r = 0; r < n; ++r) {
    copy_begin[r] = static_cast<int64_t>(copies.size());
    std::vector<int64_t>& list = seen[in.tokens[pos0 + r]];
    copies.insert(copies.end(), list.begin(), list.end());
    list.push_back(pos0 + r);
  }
  copy_begin[n] = static_cast<int64_t>(copies.size());

  // Tasks are (head, block of rows); each fills its own partial sums, which are then added in a
  // fixed order, so the result does not depend on the thread count.
  constexpr int64_t kRowsPerTask = 64;
  const int64_t blocks = (n + kRowsPerTask - 1) / kRowsPerTask;
  std::vector<Sums> partial(static_cast<size_t>(heads_ * blocks));
  const DType k_dtype = in.keys.dtype;  // float32, or the f16 / bf16 of a half KV cache
  const auto* keys = static_cast<const uint8_t*>(in.keys.data);
  const int64_t k_stride = in.keys.stride[1];
  ThreadPool::Global().Run(heads_ * blocks, in.threads, [&](int64_t task, int) {
    const int64_t h = task / blocks, r_begin = task % blocks * kRowsPerTask;
    const uint8_t* k_head = keys + (h / group) * in.keys.stride[2] * static_cast<int64_t>(DTypeSize(k_dtype));
    Sums& acc = partial[static_cast<size_t>(task)];
    for (int64_t r = r_begin; r < std::min(n, r_begin + kRowsPerTask); ++r) {
      const int64_t i = pos0 + r;
      const float* q = in.q + r * in.q_stride + h * D;
      const float lse = in.lse[h * n + r];
      // The attention weight on a set of keys: sum exp(scale q . k_j - lse), as the kernel normalizes it.
      // A key outside a sliding window has weight 0: the sets below only hold keys the row sees.
      const int64_t lo = in.window < 0 ? 0 : std::max<int64_t>(0, i - in.window);
      auto mass = [&](const int64_t* set, int64_t count, int64_t offset) {
        return kernels::SumKeyWeights(q, k_head, k_dtype, k_stride, D, set, count, offset, in.scale, lse,
                                      in.softcap);
      };
      if (in.sinks != nullptr)
        acc.mass[kSink] += std::exp(static_cast<double>(in.sinks[h]) - lse), ++acc.rows[kSink];
      if (i >= 1) {
        const int64_t first_prev[2] = {0, i - 1};
        acc.mass[kFirst] += lo == 0 ? mass(first_prev, 1, 0) : 0.0, ++acc.rows[kFirst];
        acc.mass[kPrev] += i - 1 >= lo ? mass(first_prev + 1, 1, 0) : 0.0, ++acc.rows[kPrev];
        acc.mass[kEntropy] += in.entropy[h * n + r], ++acc.rows[kEntropy];
      }
      if (i >= 4) {
        const int64_t local[4] = {i - 3, i - 2, i - 1, i};
        const int64_t skip = std::clamp<int64_t>(lo - (i - 3), 0, 3);
        acc.mass[kLocal] += mass(local + skip, 4 - skip, 0), ++acc.rows[kLocal];
      }
      // Earlier copies are in increasing order: those the window cuts off come first. (Their
      // successors, copy + 1, are cut off when copy + 1 < lo.)
      const int64_t* set = copies.data() + copy_begin[r];
      const int64_t n_copies = copy_begin[r + 1] - copy_begin[r];
      if (n_copies > 0) {
        const int64_t* seen_dup = std::lower_bound(set, set + n_copies, lo);
        const int64_t* seen_ind = std::lower_bound(set, set + n_copies, lo - 1);
        acc.mass[kDup] += mass(seen_dup, set + n_copies - seen_dup, 0), ++acc.rows[kDup];
        // The token after each earlier copy (copy < i, so copy + 1 <= i).
        acc.mass[kInduction] += mass(seen_ind, set + n_copies - seen_ind, 1), ++acc.rows[kInduction];
      }
    }
  });
  for (int64_t h = 0; h < heads_; ++h) {
    Sums& total = sums_[static_cast<size_t>(in.layer * heads_ + h)];
    for (int64_t b = 0; b < blocks; ++b) {
      const Sums& part = partial[static_cast<size_t>(h * blocks + b)];
      for (int k = 0; k < kStats; ++k) total.mass[k] += part.mass[k], total.rows[k] += part.rows[k];
    }
  }
}

std::vector<HeadScores> HeadStats::Scores() const {
  std::vector<HeadScores> out;
  for (int64_t l = 0; l < layers_; ++l) {
    for (int64_t h = 0; h < heads_; ++h) {
      const Sums& s = sums_[static_cast<size_t>(l * heads_ + h)];
      auto mean = [&](Stat k) { return s.rows[k] > 0 ? s.mass[k] / static_cast<double>(s.rows[k]) : 0.0; };
      HeadScores hs;
      hs.layer = static_cast<int>(l);
      hs.head = static_cast<int>(h);
      hs.previous_token = mean(kPrev);
      hs.duplicate_token = mean(kDup);
      hs.induction = mean(kInduction);
      hs.first_token = mean(kFirst);
      hs.local = mean(kLocal);
      hs.entropy = mean(kEntropy);
      hs.learned_sink = mean(kSink);
      hs.role = RoleOf(hs);
      out.push_back(hs);
    }
  }
  return out;
}

const std::vector<std::string>& RoleNames() {
  static const std::vector<std::string> names = {"induction", "previous-token", "duplicate-token",
                                                 "sink",      "local",          "diffuse"};
  return names;
}

std::string RoleOf(const HeadScores& s) {
  if (s.induction >= 0.4) return "induction";
  if (s.previous_token >= 0.5) return "previous-token";
  if (s.duplicate_token >= 0.4) return "duplicate-token";
  if (s.first_token >= 0.6) return "sink";
  if (s.local >= 0.5) return "local";
  return "diffuse";
}

std::vector<HeadScores> ScoreHeads(const Model& model, std::span<const int32_t> tokens, int threads) {
  if (tokens.empty()) throw Error("head scores: no tokens");
  HeadStats stats(model.config());
  Session session(model, static_cast<int64_t>(tokens.size()));
  std::vector<float> logits(static_cast<size_t>(model.config().vocab_size));
  ForwardOptions o;
  o.threads = threads;
  o.stats = &stats;
  model.Forward(session, tokens, logits.data(), o);
  return stats.Scores();
}

std::string DescribeProbe(const ProbeOptions& o) {
  return std::to_string(o.sequences) + " sequences of " + std::to_string(o.length) +
         " distinct random tokens, each repeated once (seed " + std::to_string(o.seed) + ")";
}

std::vector<HeadScores> ProbeHeads(const Model& model, const ProbeOptions& o) {
  const ModelConfig& c = model.config();
  const Tokenizer& tok = model.tokenizer();
  const bool bos = tok.add_bos() && tok.bos_id() >= 0;
  const int64_t total = 2 * o.length + (bos ? 1 : 0);
  if (o.length < 2 || o.sequences < 1 || total > c.context_length) {
    throw Error("probe: length = " + std::to_string(o.length) +
                ", sequences = " + std::to_string(o.sequences) +
                " (need length >= 2, sequences >= 1 and 2 * length + 1 <= the context length " +
                std::to_string(c.context_length) + ")");
  }
  std::vector<int32_t> ordinary;
  for (int32_t id = 0; id < tok.vocab_size(); ++id)
    if (!tok.IsControl(id) && !tok.IsUnused(id)) ordinary.push_back(id);
  if (static_cast<int64_t>(ordinary.size()) < o.length) throw Error("probe: the vocabulary is too small");

  HeadStats stats(c);
  Session session(model, total);
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));
  std::mt19937_64 rng(o.seed);
  for (int64_t s = 0; s < o.sequences; ++s) {
    // n distinct tokens: a partial Fisher-Yates shuffle of the ordinary ids.
    for (int64_t i = 0; i < o.length; ++i) {
      std::uniform_int_distribution<size_t> pick(static_cast<size_t>(i), ordinary.size() - 1);
      std::swap(ordinary[static_cast<size_t>(i)], ordinary[pick(rng)]);
    }
    std::vector<int32_t> seq;
    if (bos) seq.push_back(tok.bos_id());
    for (int rep = 0; rep < 2; ++rep) seq.insert(seq.end(), ordinary.begin(), ordinary.begin() + o.length);
    session.Reset();
    ForwardOptions fo;
    fo.threads = o.threads;
    fo.stats = &stats;
    model.Forward(session, seq, logits.data(), fo);
  }
  return stats.Scores();
}

namespace {

// Mean next-token cross-entropy of `tokens` (nats) with optional hooks.
double Loss(const Model& model, std::span<const int32_t> tokens, const Hooks* hooks, int threads) {
  const int64_t n = static_cast<int64_t>(tokens.size()), vocab = model.config().vocab_size;
  std::vector<float> logits(static_cast<size_t>(n * vocab));
  Session session(model, n);
  ForwardOptions o;
  o.all_logits = true;
  o.threads = threads;
  o.hooks = hooks;
  model.Forward(session, tokens, logits.data(), o);
  double total = 0.0;
  for (int64_t i = 0; i + 1 < n; ++i) {
    const float* row = logits.data() + i * vocab;
    const float mx = *std::max_element(row, row + vocab);
    double sum = 0.0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v] - mx));
    total += mx + std::log(sum) - row[tokens[i + 1]];
  }
  return total / static_cast<double>(n - 1);
}

}  // namespace

AblationResult AblateHeads(const Model& model, std::span<const int32_t> tokens,
                           const std::vector<std::pair<int, int>>& heads, AblationMode mode, int threads) {
  const ModelConfig& c = model.config();
  if (tokens.size() < 2) throw Error("ablate: need at least 2 tokens to measure a loss");
  std::vector<std::vector<int>> by_layer(static_cast<size_t>(c.n_layers));
  for (const auto& [layer, head] : heads) {
    if (layer < 0 || layer >= c.n_layers || head < 0 || head >= c.n_heads) {
      throw Error("ablate: head " + std::to_string(layer) + "." + std::to_string(head) + " does not exist (" +
                  std::to_string(c.n_layers) + " layers x " + std::to_string(c.n_heads) + " heads)");
    }
    by_layer[static_cast<size_t>(layer)].push_back(head);
  }
  const int64_t hd = c.head_dim;
  auto wants_z = [&](const char* name, int layer) {
    return layer >= 0 && !by_layer[static_cast<size_t>(layer)].empty() &&
           std::string_view(name) == "attn.hook_z";
  };

  AblationResult result;
  result.tokens = static_cast<int64_t>(tokens.size()) - 1;
  // Mean mode: each ablated head's mean output over the text, from the clean run.
  std::vector<double> mean_z(static_cast<size_t>(c.n_layers * c.n_heads * hd), 0.0);
  Hooks record;
  record.wants = wants_z;
  record.fn = [&](const HookPoint& p) {
    for (int h : by_layer[static_cast<size_t>(p.layer)])
      for (int64_t r = 0; r < p.rows; ++r)
        for (int64_t d = 0; d < hd; ++d)
          mean_z[(p.layer * c.n_heads + h) * hd + d] +=
              p.data[r * p.cols + h * hd + d] / static_cast<double>(tokens.size());
  };
  result.loss = Loss(model, tokens, mode == AblationMode::kMean ? &record : nullptr, threads);

  Hooks ablate;
  ablate.wants = wants_z;
  ablate.fn = [&](const HookPoint& p) {
    for (int h : by_layer[static_cast<size_t>(p.layer)])
      for (int64_t r = 0; r < p.rows; ++r)
        for (int64_t d = 0; d < hd; ++d)
          p.data[r * p.cols + h * hd + d] =
              mode == AblationMode::kZero ? 0.0f
                                          : static_cast<float>(mean_z[(p.layer * c.n_heads + h) * hd + d]);
  };
  result.ablated_loss = Loss(model, tokens, &ablate, threads);
  return result;
}

}  // namespace attn
