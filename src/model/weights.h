// One description per architecture: which tensors a model has, their shapes, and where each one
// lands in the weight structs. The same list drives loading, validation and `attn info`-style
// printing (DESIGN.md: gemma.cpp's ForEachTensor, llama.cpp's create_tensor).
#pragma once

#include <string>
#include <vector>

#include "attn/model.h"
#include "format/gguf.h"
#include "kernels/matmul.h"

namespace attn {

// The tensors of one block. A WeightMatrix with data == nullptr is absent (optional tensors).
struct LayerWeights {
  WeightMatrix attn_norm, attn_norm_bias;  // [1, d_model]
  WeightMatrix wq, wk, wv;                 // llama: [n_heads * head_dim | n_kv_heads * head_dim, d_model]
  WeightMatrix bq, bk, bv;                 // qwen2: their biases
  WeightMatrix q_norm, k_norm;  // qwen3, gemma3: [1, head_dim], shared by every head; olmoe: whole rows
  WeightMatrix post_attn_norm, post_ffn_norm;  // gemma2, gemma3: [1, d_model]
  WeightMatrix wqkv, bqkv;                     // gpt2, phi3: fused [q_dim + 2 kv_dim, d_model] (gpt2: + bias)
  WeightMatrix wo, bo;                         // [d_model, n_heads * head_dim]; bo: gpt2, gpt-oss
  WeightMatrix sinks;                          // gpt-oss: [1, n_heads] sink logits (F32)
  WeightMatrix ffn_norm, ffn_norm_bias;        // [1, d_model]; all ffn_* absent when d_ff == 0 (gpt2)
  WeightMatrix w_gate;                         // llama: [d_ff, d_model]
  WeightMatrix w_up, b_up;                     // [d_ff, d_model]
  WeightMatrix w_down, b_down;                 // [d_model, d_ff]
  // Mixture of experts (ModelConfig::n_expert > 0) instead of w_gate / w_up / w_down:
  WeightMatrix router, router_bias;                               // ffn_gate_inp [n_expert, d_model]
  WeightMatrix gate_exps, up_exps, down_exps;                     // stacks of n_expert matrices, as stored
  std::vector<WeightMatrix> expert_gate, expert_up, expert_down;  // views of one expert each
  WeightMatrix gate_exps_bias, up_exps_bias, down_exps_bias;      // gpt-oss: F32 [n_expert, ff | d_model]
  WeightMatrix shared_gate_inp;                                   // qwen2moe: [1, d_model] (F32)
  WeightMatrix shared_gate, shared_up, shared_down;               // its shared expert
};

struct Model::Weights {
  WeightMatrix token_embd;  // [vocab, d_model]
  WeightMatrix pos_embd;    // gpt2: [context, d_model]
  WeightMatrix output_norm, output_norm_bias;
  WeightMatrix output;       // [vocab, d_model]; = token_embd when tied
  WeightMatrix output_bias;  // phi2: [1, vocab]
  WeightMatrix rope_freqs;   // [1, rope_dim / 2]: per-pair frequency divisors (Llama 3.1), optional
  WeightMatrix rope_factors_long, rope_factors_short;  // phi3 LongRoPE: the same, by context size
  std::vector<LayerWeights> layers;
};

// How a tensor of the list is stored.
enum class TensorKind : uint8_t {
  kMatrix,  // any supported weight type, [rows, cols]
  kVector,  // float32 [cols] (norm weights, biases); with count > 1, [count, cols] (GGUF ne [cols, count])
};

struct TensorSpec {
  std::string name;  // GGUF name
  int64_t rows;      // GGUF ne[1] (1 for vectors)
  int64_t cols;      // GGUF ne[0]
  TensorKind kind;
  bool required;
  int64_t count = 1;  // GGUF ne[2] of a 3-D tensor: a stack of `count` [rows, cols] matrices (vectors: ne[1])
};

// Reads the architecture's hyperparameters; throws attn::Error naming a missing or bad key.
ModelConfig ReadConfig(const gguf::File& file);

// Calls fn(spec, slot) for every tensor of the architecture, in file order of a llama.cpp
// conversion; slot is where the loaded view goes.
template <class Fn>
void ForEachTensor(const ModelConfig& c, Model::Weights& w, Fn&& fn) {
  const int64_t d = c.d_model, q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  const bool gpt2 = c.arch == Arch::kGpt2;
  fn(TensorSpec{"token_embd.weight", c.vocab_size, d, TensorKind::kMatrix, true}, w.token_embd);
  if (gpt2)
    fn(TensorSpec{"position_embd.weight", c.context_length, d, TensorKind::kMatrix, true}, w.pos_embd);
  w.layers.resize(static_cast<size_t>(c.n_layers));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    LayerWeights& L = w.layers[static_cast<size_t>(l)];
    const std::string p = "blk." + std::to_string(l) + ".";
    auto mat = [&](const char* n, int64_t rows, int64_t cols, WeightMatrix& slot, bool required = true) {
      fn(TensorSpec{p + n + ".weight", rows, cols, TensorKind::kMatrix, required}, slot);
    };
    auto vec = [&](const char* n, const char* suffix, int64_t cols, WeightMatrix& slot) {
      fn(TensorSpec{p + n + suffix, 1, cols, TensorKind::kVector, true}, slot);
    };
    const bool layer_norm = c.norm == NormKind::kLayer;
    if (c.pre_norms) vec("attn_norm", ".weight", d, L.attn_norm);
    if (layer_norm && c.norm_bias && !gpt2) vec("attn_norm", ".bias", d, L.attn_norm_bias);
    if (gpt2) {
      vec("attn_norm", ".bias", d, L.attn_norm_bias);
      mat("attn_qkv", q_dim + 2 * kv_dim, d, L.wqkv);
      vec("attn_qkv", ".bias", q_dim + 2 * kv_dim, L.bqkv);
      mat("attn_output", d, q_dim, L.wo);
      vec("attn_output", ".bias", d, L.bo);
      if (c.attn_sinks) vec("attn_sinks", ".weight", c.n_heads, L.sinks);  // attn's trainer with sinks
      if (c.d_ff > 0) {  // d_ff == 0: attention-only, no feed-forward tensors
        vec("ffn_norm", ".weight", d, L.ffn_norm);
        vec("ffn_norm", ".bias", d, L.ffn_norm_bias);
        mat("ffn_up", c.d_ff, d, L.w_up);
        vec("ffn_up", ".bias", c.d_ff, L.b_up);
        mat("ffn_down", d, c.d_ff, L.w_down);
        vec("ffn_down", ".bias", d, L.b_down);
      }
    } else {
      if (c.fused_qkv) {
        mat("attn_qkv", q_dim + 2 * kv_dim, d, L.wqkv);  // split into wq, wk, wv views by LoadWeights
        if (c.qkv_bias) vec("attn_qkv", ".bias", q_dim + 2 * kv_dim, L.bqkv);  // and bq, bk, bv
      } else {
        mat("attn_q", q_dim, d, L.wq);
        if (c.qkv_bias) vec("attn_q", ".bias", q_dim, L.bq);
        mat("attn_k", kv_dim, d, L.wk);
        if (c.qkv_bias) vec("attn_k", ".bias", kv_dim, L.bk);
        mat("attn_v", kv_dim, d, L.wv);
        if (c.qkv_bias) vec("attn_v", ".bias", kv_dim, L.bv);
      }
      if (c.attn_sinks) vec("attn_sinks", ".weight", c.n_heads, L.sinks);
      if (c.qk_norm || c.qk_norm_full) {  // per head: [head_dim]; full rows (olmoe): [q_dim], [kv_dim]
        vec("attn_q_norm", ".weight", c.qk_norm_full ? q_dim : c.head_dim, L.q_norm);
        vec("attn_k_norm", ".weight", c.qk_norm_full ? kv_dim : c.head_dim, L.k_norm);
      }
      mat("attn_output", d, q_dim, L.wo);
      if (c.out_bias) vec("attn_output", ".bias", d, L.bo);
      if (c.post_norms) vec("post_attention_norm", ".weight", d, L.post_attn_norm);
      // gpt-oss's norm before the feed-forward block is named post_attention_norm.
      if (c.pre_norms && !c.parallel_residual) {
        vec(c.arch == Arch::kGptOss ? "post_attention_norm" : "ffn_norm", ".weight", d, L.ffn_norm);
        if (layer_norm && c.norm_bias) vec("ffn_norm", ".bias", d, L.ffn_norm_bias);
      }
      if (c.gelu_mlp) {
        mat("ffn_up", c.d_ff, d, L.w_up);
        vec("ffn_up", ".bias", c.d_ff, L.b_up);
        mat("ffn_down", d, c.d_ff, L.w_down);
        vec("ffn_down", ".bias", d, L.b_down);
        continue;
      }
      if (c.n_expert > 0) {  // as llama.cpp's converters write Mixtral, Qwen3-MoE and gpt-oss
        const int64_t e = c.n_expert, ff = c.d_ff_expert;
        mat("ffn_gate_inp", e, d, L.router);
        if (c.expert_bias) vec("ffn_gate_inp", ".bias", e, L.router_bias);
        fn(TensorSpec{p + "ffn_gate_exps.weight", ff, d, TensorKind::kMatrix, true, e}, L.gate_exps);
        fn(TensorSpec{p + "ffn_down_exps.weight", d, ff, TensorKind::kMatrix, true, e}, L.down_exps);
        fn(TensorSpec{p + "ffn_up_exps.weight", ff, d, TensorKind::kMatrix, true, e}, L.up_exps);
        if (c.expert_bias) {
          fn(TensorSpec{p + "ffn_gate_exps.bias", 1, ff, TensorKind::kVector, true, e}, L.gate_exps_bias);
          fn(TensorSpec{p + "ffn_down_exps.bias", 1, d, TensorKind::kVector, true, e}, L.down_exps_bias);
          fn(TensorSpec{p + "ffn_up_exps.bias", 1, ff, TensorKind::kVector, true, e}, L.up_exps_bias);
        }
        if (c.d_ff_shared > 0) {
          vec("ffn_gate_inp_shexp", ".weight", d, L.shared_gate_inp);
          mat("ffn_gate_shexp", c.d_ff_shared, d, L.shared_gate);
          mat("ffn_up_shexp", c.d_ff_shared, d, L.shared_up);
          mat("ffn_down_shexp", d, c.d_ff_shared, L.shared_down);
        }
        continue;
      }
      if (c.fused_gate_up) {
        mat("ffn_up", 2 * c.d_ff, d, L.w_up);  // gate rows, then up rows: split by LoadWeights
      } else {
        mat("ffn_gate", c.d_ff, d, L.w_gate);
        mat("ffn_up", c.d_ff, d, L.w_up);
      }
      mat("ffn_down", d, c.d_ff, L.w_down);
      if (c.post_norms) vec("post_ffw_norm", ".weight", d, L.post_ffn_norm);
    }
  }
  fn(TensorSpec{"output_norm.weight", 1, d, TensorKind::kVector, true}, w.output_norm);
  if (c.norm == NormKind::kLayer && c.norm_bias)
    fn(TensorSpec{"output_norm.bias", 1, d, TensorKind::kVector, true}, w.output_norm_bias);
  fn(TensorSpec{"output.weight", c.vocab_size, d, TensorKind::kMatrix, false}, w.output);
  if (c.output_bias) fn(TensorSpec{"output.bias", 1, c.vocab_size, TensorKind::kVector, true}, w.output_bias);
  if (!gpt2) fn(TensorSpec{"rope_freqs.weight", 1, c.rope_dim / 2, TensorKind::kVector, false}, w.rope_freqs);
  if (c.arch == Arch::kPhi3) {
    fn(TensorSpec{"rope_factors_long.weight", 1, c.rope_dim / 2, TensorKind::kVector, false},
       w.rope_factors_long);
    fn(TensorSpec{"rope_factors_short.weight", 1, c.rope_dim / 2, TensorKind::kVector, false},
       w.rope_factors_short);
  }
}

// A vector tensor's floats (kVector slots are always float32).
inline const float* Floats(const WeightMatrix& m) { return reinterpret_cast<const float*>(m.data); }

}  // namespace attn
