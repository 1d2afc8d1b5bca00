// What every attention head does: detector scores accumulated inside the forward pass, the
// standard probe (random tokens repeated once), role labels, and head ablation.
//
//   attn::HeadStats stats(model.config());
//   attn::ForwardOptions o;  o.stats = &stats;
//   model.Forward(session, tokens, logits, o);   // accumulates over every row of the pass
//   for (const attn::HeadScores& h : stats.Scores()) ...
//
// The scores are TransformerLens's "mul" detector scores, sum(A * D) / sum(A), over the rows of
// the pattern A that have a target in D (so a head that puts all its mass on the target scores 1):
//   previous_token   D[i][i-1] = 1                          rows i >= 1
//   duplicate_token  D[i][j] = 1 where tok_j == tok_i, j < i  rows with an earlier copy of tok_i
//   induction        D[i][j+1] = 1 where tok_j == tok_i, j < i  (the token after an earlier copy)
//   first_token      D[i][0] = 1 (attention sink)             rows i >= 1
//   local            D[i][j] = 1 for i - 3 <= j <= i          rows i >= 4 (the window misses key 0)
//   entropy          mean over rows i >= 1 of -sum_j A_ij ln A_ij (nats)
//   learned_sink     mean over all rows of p_sink = exp(sink_h - lse_i): the share of the row's
//                    attention a learned sink (gpt-oss, attn train --sinks) takes; 0 without sinks.
//                    With sinks the other scores are shares of the whole softmax, the sink's part
//                    included (a row's key weights sum to 1 - p_sink).
// The entropy is accumulated by the fused kernel beside its online softmax; the masses are
// exp(scale q_i . k_j - lse_i) for the few target keys j of each row, from the kernel's row LSE.
// On the probe (distinct random tokens repeated once), induction is the mean attention from each
// position of the second copy to the position n - 1 back, the recipe of REFERENCE.md.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "attn/model.h"

namespace attn {

struct HeadScores {
  int layer = 0, head = 0;
  double previous_token = 0, duplicate_token = 0, induction = 0, first_token = 0, local = 0;
  double entropy = 0;
  double learned_sink = 0;
  std::string role;  // RoleOf(*this)
};

// Sums of the detector masses over rows, per (layer, head); see the header comment.
class HeadStats {
 public:
  explicit HeadStats(const ModelConfig& config);
  int64_t layers() const { return layers_; }
  int64_t heads() const { return heads_; }
  // Scores of every head, layer-major, with role labels.
  std::vector<HeadScores> Scores() const;
  void Clear();

  // Adds rows [pos0, pos0 + n) of `layer` (called by Model::Forward). q: rotated queries
  // [n, heads, head_dim] (row stride q_stride); keys: the layer's cache; lse, entropy: the
  // kernel's [heads, n]; tokens: the sequence so far (positions [0, pos0 + n)).
  struct LayerInput {
    int layer;
    int64_t pos0, n;
    const float* q;
    int64_t q_stride;
    TensorView keys;  // [1, >= pos0 + n, kv_heads, head_dim]: float32, f16 or bf16 (the KV cache's)
    const float* lse;
    const float* entropy;
    float scale;
    std::span<const int32_t> tokens;
    int threads;
    int64_t window = -1;           // sliding layers: row i sees keys i - window .. i only; -1: all before it
    float softcap = 0.0f;          // scores capped as softcap * tanh(s / softcap) (gemma2); 0: not
    const float* sinks = nullptr;  // the layer's learned sink logits [heads], or nullptr
  };
  void Add(const LayerInput& in);

  enum Stat : int { kPrev, kDup, kInduction, kFirst, kLocal, kEntropy, kSink, kStats };

 private:
  struct Sums {
    double mass[kStats] = {};   // summed row masses (entropy for kEntropy)
    int64_t rows[kStats] = {};  // rows that had a target
  };
  int64_t layers_, heads_, kv_heads_, head_dim_;
  std::vector<Sums> sums_;  // [layer * heads + head]
};

// The role label of a head: the first that holds of induction >= 0.4, previous_token >= 0.5,
// duplicate_token >= 0.4, first_token >= 0.6 ("sink"), local >= 0.5; else "diffuse".
std::string RoleOf(const HeadScores& s);
// Every role label, in the order RoleOf tests them.
const std::vector<std::string>& RoleNames();

struct ProbeOptions {
  int64_t length = 64;    // n: random tokens per copy (each probe is BOS + n tokens + the same n)
  int64_t sequences = 4;  // probes averaged
  uint64_t seed = 0;
  int threads = 0;
};
// Runs the standard probe: distinct random tokens (from the vocabulary's ordinary tokens: no
// control tokens, no unused ones), repeated once, with BOS first when the model adds one; returns every
// head's scores.
std::vector<HeadScores> ProbeHeads(const Model& model, const ProbeOptions& options = {});
// A sentence describing the probe, for reports.
std::string DescribeProbe(const ProbeOptions& options);

// Scores of every head on the given tokens (one forward pass with statistics).
std::vector<HeadScores> ScoreHeads(const Model& model, std::span<const int32_t> tokens, int threads = 0);

enum class AblationMode : uint8_t { kZero, kMean };
struct AblationResult {
  double loss = 0;          // mean next-token cross-entropy (nats) of the unchanged model
  double ablated_loss = 0;  // with the heads ablated
  int64_t tokens = 0;       // predictions averaged
};
// Zero- or mean-ablates the heads (layer, head) by replacing their slice of hook_z (mean: the
// head's mean output over the text's positions) and measures the loss change on `tokens`.
AblationResult AblateHeads(const Model& model, std::span<const int32_t> tokens,
                           const std::vector<std::pair<int, int>>& heads, AblationMode mode, int threads = 0);

}  // namespace attn
