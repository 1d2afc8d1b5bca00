// Training a small decoder from scratch on the CPU (issue 5): the model, its backward pass,
// AdamW, and GGUF checkpoints that `attn generate`, `attn heads` and `attn inspect` open like
// any other model.
//
// The model is GPT-2's layout, so a checkpoint is a "gpt2" GGUF file:
//   h = wte[x_t] + wpe[t]
//   per layer:  a = LayerNorm(h; ln1)        qkv = a Wqkv^T + bqkv   (q | k | v, head h at h*dh)
//               z = causal softmax(q k^T / sqrt(dh)) v (the fused kernel, per head; with
//                   attn_sinks, head h's softmax also has the learned logit sinks[h], gpt-oss's)
//               h = h + z Wo^T + bo
//               if d_ff > 0:  h = h + GELU_tanh(LayerNorm(h; ln2) Wup^T + bup) Wdown^T + bdown
//   logits = LayerNorm(h; lnf) Wout^T        (untied output, no bias)
//   loss   = mean over the batch and positions of -log softmax(logits_t)[x_{t+1}]
// d_ff = 0 gives an attention-only model (GGUF gpt2.feed_forward_length = 0, no ffn tensors).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace attn {

class ThreadPool;

struct TrainModelConfig {
  int64_t vocab_size = 256;  // byte-level by default
  int64_t context = 256;     // positions (training sequences hold context + 1 tokens)
  int64_t n_layers = 2;
  int64_t d_model = 128;
  int64_t n_heads = 4;  // head_dim = d_model / n_heads
  int64_t d_ff = 0;     // 0: attention-only
  float norm_eps = 1e-5f;
  // Learned attention sinks (gpt-oss): a parameter blk.L.attn_sinks.weight [n_heads] per layer
  // (initialized to 0, no weight decay), one more logit in each head's softmax that carries no
  // value, so a head can attend to nothing instead of parking its weight on some token.
  bool attn_sinks = false;
};

struct TrainOptions {
  int64_t batch = 16;  // sequences per step
  int64_t steps = 1000;
  float lr = 1e-3f;      // peak learning rate
  int64_t warmup = 100;  // linear warmup steps, then cosine decay to min_lr_ratio * lr
  float min_lr_ratio = 0.1f;
  float beta1 = 0.9f, beta2 = 0.95f, adam_eps = 1e-8f;
  float weight_decay = 0.1f;  // decoupled (AdamW), on matrices only (not biases or norms)
  float clip = 1.0f;          // clip the global gradient norm to this; 0 = off
  float init_std = 0.02f;     // N(0, init_std); output projections scaled by 1/sqrt(2 n_layers)
  uint64_t seed = 0;
  int threads = 0;  // 0 = all cores
};

// One parameter tensor, named and shaped as in the GGUF checkpoint: rows x cols, row-major
// (GGUF ne = [cols, rows]); vectors have rows == 1.
struct TrainParam {
  std::string name;
  int64_t rows = 1, cols = 0;
  bool decay = false;  // weight decay applies (2-D matrices)
  std::vector<float> value, grad;
  std::vector<float> adam_m, adam_v;
};

// The trainer's whole state: enough to save a checkpoint and resume bit for bit.
class Trainer {
 public:
  // Initializes parameters from options.seed; throws attn::Error naming a bad setting.
  Trainer(const TrainModelConfig& config, const TrainOptions& options);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  const TrainModelConfig& config() const { return config_; }
  const TrainOptions& options() const { return options_; }
  TrainOptions& mutable_options() { return options_; }

  // Parameters in GGUF order (token_embd, position_embd, blk.L.*, output_norm.*, output).
  std::vector<TrainParam>& params() { return params_; }
  const std::vector<TrainParam>& params() const { return params_; }
  TrainParam& param(const std::string& name);

  // Which token ids have occurred in a batch given to ForwardBackward ([vocab_size], 1 = seen).
  // A checkpoint marks the others "unused" (GGUF token_type 5): their embeddings never learned
  // anything, so the head probes of `attn heads` and `attn inspect` leave them out, as the
  // training-time probe does (a byte-level model trained on English never sees most bytes).
  const std::vector<uint8_t>& seen_tokens() const { return seen_tokens_; }
  std::vector<uint8_t>& mutable_seen_tokens() { return seen_tokens_; }

  // Steps taken (AdamW updates applied).
  int64_t step() const { return step_; }
  void set_step(int64_t s) { step_ = s; }

  // tokens: batch rows of (context + 1) ids each, row-major. Runs forward and backward,
  // overwrites every param's grad with d(mean loss)/d(param) and returns the mean loss.
  // A token outside [0, vocab) throws attn::Error.
  float ForwardBackward(std::span<const int32_t> tokens, int64_t batch);

  // Forward only: per-position losses [batch, context] (row b, position t = loss of
  // predicting tokens[b][t + 1]). Returns their mean.
  float Losses(std::span<const int32_t> tokens, int64_t batch, float* losses);

  // Logits of one sequence of n <= context tokens: [n, vocab].
  std::vector<float> Logits(std::span<const int32_t> tokens);

  // Attention patterns of one sequence of n <= context tokens: [n_layers][n_heads][n][n]
  // (row = query, zero above the diagonal).
  std::vector<float> Patterns(std::span<const int32_t> tokens);

  // Learning rate at step s (0-based): warmup then cosine.
  float LearningRate(int64_t s) const;

  // Clips the gradients (options.clip) and applies one AdamW update at LearningRate(step()),
  // then step()++. Returns the global gradient norm before clipping. Throws attn::Error and
  // changes nothing when a gradient is not finite.
  float Update();

 private:
  struct Impl;
  TrainModelConfig config_;
  TrainOptions options_;
  std::vector<TrainParam> params_;
  std::vector<uint8_t> seen_tokens_;
  int64_t step_ = 0;
  std::unique_ptr<Impl> impl_;
};

// Checkpoints (GGUF, architecture gpt2, byte-level tokenizer when vocab_size == 256).
// Saved atomically: written to PATH.tmp and renamed, so a failed save never replaces the last
// good checkpoint. Besides the model tensors, the file holds AdamW's moments (tensors
// "train.adam_m.<name>" / "train.adam_v.<name>", ignored by the model loader) and the step and
// options as metadata keys "attn.train.*", so training resumes exactly.
void SaveCheckpoint(const Trainer& trainer, const std::string& path);

// Restores parameters, moments and step into `trainer`. Throws attn::Error, leaving the trainer
// unchanged, when the file is not a checkpoint or does not match trainer.config() (names the
// key or tensor that differs).
void LoadCheckpoint(Trainer& trainer, const std::string& path);

// Reads just the model config of a checkpoint (to build a Trainer for it).
TrainModelConfig ReadCheckpointConfig(const std::string& path);

}  // namespace attn
