// Reading a model's description from GGUF metadata, and loading its weights by the tensor list.
#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>

#include "attn/error.h"
#include "attn/model.h"
#include "core/cache_dir.h"
#include "kernels/ops.h"
#include "model/weights.h"

namespace attn {
namespace {

const gguf::Value& Require(const gguf::File& file, const std::string& key) {
  const gguf::Value* v = file.Find(key);
  if (v == nullptr) throw Error("model: metadata key '" + key + "' is missing");
  return *v;
}

// An integer key of any integer type, checked to lie in [lo, hi].
int64_t GetInt(const gguf::File& file, const std::string& key, int64_t lo, int64_t hi,
               const int64_t* fallback = nullptr) {
  const gguf::Value* v = file.Find(key);
  if (v == nullptr) {
    if (fallback != nullptr) return *fallback;
    throw Error("model: metadata key '" + key + "' is missing");
  }
  int64_t x = 0;
  if (const auto* u = std::get_if<uint64_t>(&v->data)) {
    if (*u > static_cast<uint64_t>(INT64_MAX))
      x = INT64_MAX;
    else
      x = static_cast<int64_t>(*u);
  } else if (const auto* i = std::get_if<int64_t>(&v->data)) {
    x = *i;
  } else {
    throw Error("model: metadata key '" + key + "' = " + v->ToString() + " (must be an integer)",
                Error::Kind::kType);
  }
  if (x < lo || x > hi) {
    throw Error("model: metadata key '" + key + "' = " + std::to_string(x) + " (must be in [" +
                std::to_string(lo) + ", " + std::to_string(hi) + "])");
  }
  return x;
}

float GetFloat(const gguf::File& file, const std::string& key, float fallback) {
  const gguf::Value* v = file.Find(key);
  if (v == nullptr) return fallback;
  const auto* d = std::get_if<double>(&v->data);
  if (d == nullptr || !std::isfinite(*d) || *d <= 0.0) {
    throw Error("model: metadata key '" + key + "' = " + v->ToString() + " (must be a positive number)");
  }
  return static_cast<float>(*d);
}

// Limits that keep every size product far from overflow; real models are well inside them.
constexpr int64_t kMaxDim = 1 << 20;
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxExperts = 1024;
constexpr int64_t kZero = 0;

}  // namespace

ModelConfig ReadConfig(const gguf::File& file) {
  ModelConfig c;
  const gguf::Value& arch = Require(file, "general.architecture");
  const auto* arch_name = std::get_if<std::string>(&arch.data);
  if (arch_name == nullptr) throw Error("model: general.architecture is not a string", Error::Kind::kType);
  c.arch_name = *arch_name;
  if (c.arch_name == "llama") {
    c.arch = Arch::kLlama;
  } else if (c.arch_name == "qwen2") {
    c.arch = Arch::kQwen2;
    c.rope_neox = c.qkv_bias = true;
  } else if (c.arch_name == "qwen2moe") {
    c.arch = Arch::kQwen2Moe;
    c.rope_neox = c.qkv_bias = true;
    c.expert_weights_norm = false;  // as llama.cpp runs Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B)
  } else if (c.arch_name == "qwen3") {
    c.arch = Arch::kQwen3;
    c.rope_neox = c.qk_norm = true;
  } else if (c.arch_name == "qwen3moe") {
    c.arch = Arch::kQwen3Moe;
    c.rope_neox = c.qk_norm = true;
  } else if (c.arch_name == "olmoe") {
    c.arch = Arch::kOlmoe;
    c.rope_neox = c.qk_norm_full = true;
    c.expert_weights_norm = false;  // as llama.cpp and transformers run OLMoE
  } else if (c.arch_name == "olmo2") {
    // OLMo 2: no norm before the sub-blocks, an RMSNorm of each one's output (post_attention_norm,
    // post_ffw_norm) and of each token's whole query and key rows. OLMo 3 (the same arch with
    // attention.sliding_window): three of every four layers slide, as llama.cpp reads it.
    c.arch = Arch::kOlmo2;
    c.rope_neox = c.qk_norm_full = c.post_norms = true;
    c.pre_norms = false;
    c.sliding_window = GetInt(file, c.arch_name + ".attention.sliding_window", 0, kMaxDim, &kZero);
    c.sliding_pattern = 4;
  } else if (c.arch_name == "gemma") {
    // Gemma (1): Llama's blocks with a GELU-gated feed-forward and embeddings scaled by sqrt(d_model).
    c.arch = Arch::kGemma;
    c.rope_neox = c.gelu_gate = true;
  } else if (c.arch_name == "starcoder2") {
    // StarCoder2: LayerNorms with biases, biases on every projection, an ungated GELU feed-forward.
    c.arch = Arch::kStarcoder2;
    c.norm = NormKind::kLayer;
    c.rope_neox = c.qkv_bias = c.out_bias = c.gelu_mlp = true;
  } else if (c.arch_name == "phi2") {
    // Phi-2: as starcoder2, with one LayerNorm per block feeding attention and the feed-forward in
    // parallel, partial rotary dimensions and a bias on the unembedding; Q, K and V fused or not.
    c.arch = Arch::kPhi2;
    c.norm = NormKind::kLayer;
    c.rope_neox = c.qkv_bias = c.out_bias = c.gelu_mlp = c.parallel_residual = c.output_bias = true;
    c.fused_qkv = file.FindTensor("blk.0.attn_qkv.weight") != nullptr;
  } else if (c.arch_name == "exaone4") {
    // EXAONE 4.0 (the 1.2B's form, every layer global with RoPE): OLMo 2's post-norms, an RMSNorm on
    // every q / k head. The 32B's sliding layers (with RoPE only there) are refused by name.
    c.arch = Arch::kExaone4;
    c.rope_neox = c.qk_norm = c.post_norms = true;
    c.pre_norms = false;
    if (GetInt(file, c.arch_name + ".attention.sliding_window", 0, kMaxDim, &kZero) > 0)
      throw Error(
          "model: exaone4 with attention.sliding_window (EXAONE 4.0 32B's hybrid attention) is not "
          "supported");
  } else if (c.arch_name == "ernie4_5") {
    // ERNIE 4.5 (dense): llama's blocks; its RoPE pairs are interleaved in the checkpoint itself, so
    // the converter leaves them as they are (llama.cpp's normal RoPE). Biases where the file has them.
    c.arch = Arch::kErnie45;
    c.qkv_bias = file.FindTensor("blk.0.attn_q.bias") != nullptr;
  } else if (c.arch_name == "stablelm") {
    // StableLM 2: LayerNorms with biases, partial rotary, SwiGLU; Q, K and V biases where the file has
    // them (the 1.6B), attention and feed-forward in parallel where it has no ffn_norm (the 12B, as
    // llama.cpp decides). The 12B's per-head q / k LayerNorms are refused by name.
    c.arch = Arch::kStableLM;
    c.norm = NormKind::kLayer;
    c.rope_neox = true;
    c.qkv_bias = file.FindTensor("blk.0.attn_q.bias") != nullptr;
    c.parallel_residual = file.FindTensor("blk.0.ffn_norm.weight") == nullptr;
    if (file.FindTensor("blk.0.attn_q_norm.weight") != nullptr)
      throw Error(
          "model: stablelm with per-head q / k LayerNorms (attn_q_norm: StableLM 2 12B) is not supported");
  } else if (c.arch_name == "gemma2") {
    c.arch = Arch::kGemma2;
    c.rope_neox = c.post_norms = c.gelu_gate = true;
  } else if (c.arch_name == "gemma3") {
    c.arch = Arch::kGemma3;
    c.rope_neox = c.qk_norm = c.post_norms = c.gelu_gate = true;
  } else if (c.arch_name == "phi3") {
    c.arch = Arch::kPhi3;
    c.rope_neox = c.fused_gate_up = true;
    // llama.cpp's converter writes attn_qkv; it also accepts separate attn_q / _k / _v.
    c.fused_qkv = file.FindTensor("blk.0.attn_qkv.weight") != nullptr;
  } else if (c.arch_name == "granite") {
    c.arch = Arch::kGranite;
  } else if (c.arch_name == "command-r") {
    // Cohere (Command R, Aya): one LayerNorm without bias per block feeding attention and the
    // feed-forward in parallel, RoPE pairs interleaved as written (nothing permuted), logits times
    // logit_scale. The per-head q / k LayerNorms of Command R+ are refused by name.
    c.arch = Arch::kCommandR;
    c.norm = NormKind::kLayer;
    c.parallel_residual = true;
    c.norm_bias = false;
    if (file.FindTensor("blk.0.attn_q_norm.weight") != nullptr)
      throw Error(
          "model: command-r with per-head q / k LayerNorms (attn_q_norm: Command R+) is not supported");
  } else if (c.arch_name == "cohere2") {
    // Command R7B: command-r's blocks; three of every four layers slide over attention.sliding_window
    // keys with RoPE, the fourth sees everything without RoPE (as llama.cpp reads it).
    c.arch = Arch::kCohere2;
    c.norm = NormKind::kLayer;
    c.parallel_residual = true;
    c.norm_bias = false;
    c.sliding_window = GetInt(file, c.arch_name + ".attention.sliding_window", 1, kMaxDim);
    c.sliding_pattern = 4;
    c.no_rope_interval = 4;
  } else if (c.arch_name == "granitemoe") {
    c.arch = Arch::kGraniteMoe;  // Granite's multipliers; experts as Mixtral's (renormalized top-k)
  } else if (c.arch_name == "smollm3") {
    c.arch = Arch::kSmolLM3;
    c.no_rope_interval = 4;  // as llama.cpp runs SmolLM3: layers 3, 7, 11, ... without RoPE
  } else if (c.arch_name == "gpt-oss") {
    c.arch = Arch::kGptOss;
    c.rope_neox = c.qkv_bias = c.out_bias = c.attn_sinks = c.expert_bias = c.swiglu_oai = true;
  } else if (c.arch_name == "gpt2") {
    c.arch = Arch::kGpt2;
    // attn's trainer writes gpt2 files, with learned sinks when it trained them (train.h).
    c.attn_sinks = file.FindTensor("blk.0.attn_sinks.weight") != nullptr;
  } else {
    throw Error(
        "model: architecture '" + c.arch_name +
        "' is not supported (llama, qwen2, qwen2moe, qwen3, qwen3moe, olmoe, olmo2, gemma, gemma2, gemma3, "
        "ernie4_5, exaone4, phi2, phi3, stablelm, starcoder2, smollm3, granite, granitemoe, command-r, "
        "cohere2, gpt-oss and gpt2 are)");
  }
  const bool gpt2 = c.arch == Arch::kGpt2;
  if (gpt2) c.norm = NormKind::kLayer;
  if (const gguf::Value* n = file.Find("general.name")) {
    if (const auto* s = std::get_if<std::string>(&n->data)) c.name = *s;
  }
  const std::string a = c.arch_name + ".";
  c.n_layers = GetInt(file, a + "block_count", 1, kMaxLayers);
  c.d_model = GetInt(file, a + "embedding_length", 1, kMaxDim);
  c.n_heads = GetInt(file, a + "attention.head_count", 1, kMaxDim);
  c.n_kv_heads = GetInt(file, a + "attention.head_count_kv", 1, kMaxDim, &c.n_heads);
  // gpt2 may have no feed-forward sub-block at all (attention-only models, as attn's trainer makes
  // them: feed_forward_length = 0 and no ffn tensors); llama always has one.
  c.n_expert = GetInt(file, a + "expert_count", 0, kMaxExperts, &kZero);
  const bool moe_arch = c.arch == Arch::kQwen2Moe || c.arch == Arch::kQwen3Moe || c.arch == Arch::kGptOss;
  if ((moe_arch || c.arch == Arch::kOlmoe || c.arch == Arch::kGraniteMoe) && c.n_expert == 0)
    throw Error("model: metadata key '" + a + "expert_count' is missing (" + c.arch_name +
                " is a mixture of experts)");
  if (c.n_expert > 0) {
    if (c.arch != Arch::kLlama && c.arch != Arch::kOlmoe && c.arch != Arch::kGraniteMoe && !moe_arch)
      throw Error(
          "model: " + a + "expert_count = " + std::to_string(c.n_expert) +
          ": mixture-of-experts blocks are supported for llama (Mixtral), qwen2moe, qwen3moe, olmoe and "
          "gpt-oss files, not " +
          c.arch_name);
    c.n_expert_used = GetInt(file, a + "expert_used_count", 1, c.n_expert);
  }
  // Qwen-MoE and gpt-oss experts have their own width; Mixtral's and OLMoE's are feed_forward_length wide.
  if (moe_arch) {
    c.d_ff_expert = GetInt(file, a + "expert_feed_forward_length", 1, kMaxDim);
    c.d_ff = GetInt(file, a + "feed_forward_length", 1, kMaxDim, &c.d_ff_expert);
    if (c.arch == Arch::kQwen2Moe)
      c.d_ff_shared = GetInt(file, a + "expert_shared_feed_forward_length", 1, kMaxDim);
  } else {
    c.d_ff = GetInt(file, a + "feed_forward_length", gpt2 ? 0 : 1, kMaxDim);
    if (c.n_expert > 0) c.d_ff_expert = c.d_ff;
  }
  c.context_length = GetInt(file, a + "context_length", 1, kMaxDim);
  if (c.n_heads % c.n_kv_heads != 0) {
    throw Error("model: head_count " + std::to_string(c.n_heads) + " is not a multiple of head_count_kv " +
                std::to_string(c.n_kv_heads));
  }
  // The head size is attention.key_length when the file has it (Qwen3: 128 with embedding_length
  // 1024 and 16 heads), else embedding_length / head_count. Keys and values share it.
  if (!gpt2 && file.Find(a + "attention.key_length") != nullptr) {
    c.head_dim = GetInt(file, a + "attention.key_length", 1, kMaxDim);
    const int64_t value_length = GetInt(file, a + "attention.value_length", 1, kMaxDim, &c.head_dim);
    if (value_length != c.head_dim) {
      throw Error("model: attention.value_length " + std::to_string(value_length) +
                  " differs from attention.key_length " + std::to_string(c.head_dim) + " (not supported)");
    }
  } else {
    if (c.d_model % c.n_heads != 0) {
      throw Error("model: embedding_length " + std::to_string(c.d_model) +
                  " is not a multiple of head_count " + std::to_string(c.n_heads));
    }
    c.head_dim = c.d_model / c.n_heads;
  }
  if (!gpt2) {
    c.norm_eps = c.norm == NormKind::kLayer ? GetFloat(file, a + "attention.layer_norm_epsilon", 1e-5f)
                                            : GetFloat(file, a + "attention.layer_norm_rms_epsilon", 1e-5f);
    c.rope_dim = GetInt(file, a + "rope.dimension_count", 2, c.head_dim, &c.head_dim);
    if (c.rope_dim % 2 != 0)
      throw Error("model: rope.dimension_count " + std::to_string(c.rope_dim) + " is odd");
    c.rope_base = GetFloat(file, a + "rope.freq_base", 10000.0f);
    // Linear scaling divides every position by the factor; YaRN blends that with the original
    // frequencies pair by pair (ops::YarnFactors); any other type is refused rather than run
    // wrong. (Llama 3.1's scaling comes as the rope_freqs.weight tensor, Phi-3's LongRoPE as
    // rope_factors_long / _short: both applied.)
    bool yarn = false;
    if (const gguf::Value* type = file.Find(a + "rope.scaling.type")) {
      const auto* name = std::get_if<std::string>(&type->data);
      if (name == nullptr || (*name != "none" && *name != "linear" && *name != "yarn")) {
        throw Error("model: " + a + "rope.scaling.type = " + type->ToString() +
                    " is not supported (none, linear and yarn are)");
      }
      yarn = *name == "yarn";
    }
    const float factor =
        GetFloat(file, a + "rope.scaling.factor", GetFloat(file, a + "rope.scale_linear", 1.0f));
    c.rope_freq_scale = 1.0f / factor;
    const bool longrope = file.FindTensor("rope_factors_long.weight") != nullptr ||
                          file.FindTensor("rope_factors_short.weight") != nullptr;
    if (longrope && c.arch != Arch::kPhi3) {
      throw Error(
          "model: rope_factors_long / rope_factors_short (LongRoPE) are supported for phi3 only, not " +
          c.arch_name);
    }
    c.rope_orig_context =
        GetInt(file, a + "rope.scaling.original_context_length", 1, kMaxDim, &c.context_length);
    c.rope_attn_factor = GetFloat(file, a + "rope.scaling.attn_factor", 1.0f);
    if (yarn) {
      if (file.Find(a + "rope.scaling.yarn_log_multiplier") != nullptr)
        throw Error("model: " + a + "rope.scaling.yarn_log_multiplier (DeepSeek's YaRN) is not supported");
      c.rope_yarn_factors.resize(static_cast<size_t>(c.rope_dim / 2));
      ops::YarnFactors(c.rope_dim, c.rope_base, c.rope_freq_scale, c.rope_orig_context,
                       GetFloat(file, a + "rope.scaling.yarn_beta_fast", 32.0f),
                       GetFloat(file, a + "rope.scaling.yarn_beta_slow", 1.0f), c.rope_yarn_factors.data());
      if (factor > 1.0f) c.rope_attn_factor *= 1.0f + 0.1f * std::log(factor);
    }
  } else {
    c.norm_eps = GetFloat(file, a + "attention.layer_norm_epsilon", 1e-5f);
  }
  if (c.arch == Arch::kGemma) c.embed_scale = std::sqrt(static_cast<float>(c.d_model));
  if (c.arch == Arch::kGemma3) {
    // As llama.cpp reads Gemma 3: the embedding scale sqrt(d_model); with attention.sliding_window,
    // five sliding layers in every six (the sixth, 5, 11, ..., global) at RoPE base 10000.
    c.embed_scale = std::sqrt(static_cast<float>(c.d_model));
    c.sliding_window = GetInt(file, a + "attention.sliding_window", 0, kMaxDim, &kZero);
    c.sliding_pattern = 6;
    c.rope_base_swa = 10000.0f;
    c.rope_swa_unscaled = true;
  }
  if (c.arch == Arch::kGranite || c.arch == Arch::kGraniteMoe) {
    // As llama.cpp reads Granite 3.x: embeddings times embedding_scale, every block's attention and
    // MLP outputs times residual_scale, scores times attention.scale (instead of 1 / sqrt(head_dim)),
    // logits divided by logit_scale.
    c.embed_scale = GetFloat(file, a + "embedding_scale", 1.0f);
    c.residual_scale = GetFloat(file, a + "residual_scale", 1.0f);
    c.attn_scale = GetFloat(file, a + "attention.scale", c.AttnScale());
    Require(file, a + "logit_scale");  // required, as llama.cpp requires it (the others default to 1)
    c.logit_scale = GetFloat(file, a + "logit_scale", 1.0f);
  }
  if (c.arch == Arch::kOlmo2 || c.arch == Arch::kCohere2) c.rope_base_swa = c.rope_base;
  if (c.arch == Arch::kCommandR || c.arch == Arch::kCohere2) {
    Require(file, a + "logit_scale");  // Cohere multiplies the logits by it; attn divides by logit_scale
    c.logit_scale = 1.0f / GetFloat(file, a + "logit_scale", 1.0f);
  }  // OLMo 3: one RoPE for both kinds of layer
  if (c.arch == Arch::kGptOss) {
    // As llama.cpp reads gpt-oss: layers 0, 2, ... slide over attention.sliding_window keys (a
    // required key), the others see everything; both rotate alike (one YaRN table).
    c.sliding_window = GetInt(file, a + "attention.sliding_window", 1, kMaxDim);
    c.sliding_pattern = 2;
    c.rope_base_swa = c.rope_base;
  }
  if (c.arch == Arch::kGemma2) {
    // As llama.cpp reads Gemma 2: every other layer (0, 2, ...) slides over attention.sliding_window
    // keys (4096 when absent) with the global RoPE base; scores and logits are softcapped (50 and
    // 30 when the keys are absent).
    c.embed_scale = std::sqrt(static_cast<float>(c.d_model));
    const int64_t default_window = 4096;
    c.sliding_window = GetInt(file, a + "attention.sliding_window", 0, kMaxDim, &default_window);
    c.sliding_pattern = 2;
    c.rope_base_swa = c.rope_base;
    c.attn_softcap = GetFloat(file, a + "attn_logit_softcapping", 50.0f);
    c.final_softcap = GetFloat(file, a + "final_logit_softcapping", 30.0f);
  }
  // Gemma 2 27B (46 layers) and Gemma 3 27B (62 layers) scale scores by 1 / sqrt(d_model / n_heads)
  // (168 for both, against a head size of 128): llama.cpp recognizes them by their layer count.
  if ((c.arch == Arch::kGemma2 && c.n_layers == 46) || (c.arch == Arch::kGemma3 && c.n_layers == 62))
    c.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.d_model / c.n_heads));
  // The vocabulary size is the embedding's row count (llama.vocab_size is optional in GGUF).
  const gguf::TensorInfo* embd = file.FindTensor("token_embd.weight");
  if (embd == nullptr) throw Error("model: tensor 'token_embd.weight' is missing");
  if (embd->dims.size() != 2 || embd->dims[1] == 0 || embd->dims[1] > static_cast<uint64_t>(kMaxDim)) {
    throw Error("model: tensor 'token_embd.weight' has a bad shape");
  }
  c.vocab_size = static_cast<int64_t>(embd->dims[1]);
  c.tied_output = file.FindTensor("output.weight") == nullptr;
  return c;
}

// Binds every tensor of the list to its slot, checking presence, shape and type.
void LoadWeights(const gguf::File& file, const ModelConfig& config, Model::Weights& weights) {
  ForEachTensor(config, weights, [&](const TensorSpec& spec, WeightMatrix& slot) {
    const gguf::TensorInfo* t = file.FindTensor(spec.name);
    if (t == nullptr) {
      if (spec.required) throw Error("model: tensor '" + spec.name + "' is missing");
      return;
    }
    const uint64_t want_rows = static_cast<uint64_t>(spec.rows), want_cols = static_cast<uint64_t>(spec.cols);
    const bool stack = spec.count > 1;  // 3-D: [cols, rows, count]
    // A vector may also come as a [cols, 1] matrix (the converter keeps HF's [1, d] shape); a
    // stack of vectors (gpt-oss's expert biases) is [cols, count].
    const bool shape_ok =
        spec.kind == TensorKind::kVector
            ? (stack ? t->dims.size() == 2 && t->dims[0] == want_cols &&
                           t->dims[1] == static_cast<uint64_t>(spec.count)
                     : (t->dims.size() == 1 || (t->dims.size() == 2 && t->dims[1] == 1)) &&
                           t->dims[0] == want_cols)
            : (t->dims.size() == (stack ? 3u : 2u) && t->dims[0] == want_cols && t->dims[1] == want_rows &&
               (!stack || t->dims[2] == static_cast<uint64_t>(spec.count)));
    if (!shape_ok) {
      std::string got;
      for (uint64_t d : t->dims) got += (got.empty() ? "" : ", ") + std::to_string(d);
      throw Error("model: tensor '" + spec.name + "' has shape [" + got + "], expected [" +
                  std::to_string(spec.cols) +
                  (spec.kind == TensorKind::kVector ? "" : ", " + std::to_string(spec.rows)) +
                  (stack ? ", " + std::to_string(spec.count) : "") + "] (ne order)");
    }
    if (spec.kind == TensorKind::kVector && t->type != gguf::TensorType::kF32) {
      throw Error("model: tensor '" + spec.name + "' has type " + gguf::TensorTypeName(t->type) +
                      " (norm weights and biases must be F32)",
                  Error::Kind::kType);
    }
    // A stack of matrices is bound as one matrix of all their rows; LoadWeights cuts the views.
    const int64_t rows = spec.rows * spec.count;
    slot = MakeWeightMatrix(t->type, t->data, rows, spec.cols, spec.name.c_str());
    if (slot.row_bytes * static_cast<uint64_t>(rows) != t->bytes) {
      throw Error("model: tensor '" + spec.name + "' holds " + std::to_string(t->bytes) +
                  " bytes, expected " + std::to_string(slot.row_bytes * static_cast<uint64_t>(rows)));
    }
  });
  if (weights.output.data == nullptr) weights.output = weights.token_embd;
  // Fused tensors (phi3) become views of their row blocks: the forward pass sees separate matrices.
  const auto rows_of = [](const WeightMatrix& m, int64_t r0, int64_t count) {
    WeightMatrix v = m;
    v.data = m.data + static_cast<size_t>(r0) * m.row_bytes;
    v.rows = count;
    return v;
  };
  const int64_t q_dim = config.n_heads * config.head_dim, kv_dim = config.n_kv_heads * config.head_dim;
  for (LayerWeights& L : weights.layers) {
    if (config.fused_qkv) {
      L.wq = rows_of(L.wqkv, 0, q_dim);
      L.wk = rows_of(L.wqkv, q_dim, kv_dim);
      L.wv = rows_of(L.wqkv, q_dim + kv_dim, kv_dim);
      if (L.bqkv.data != nullptr) {  // phi2: the fused bias, cut the same way
        const auto floats_of = [&](int64_t f0, int64_t count) {
          WeightMatrix v = L.bqkv;
          v.data = L.bqkv.data + static_cast<size_t>(f0) * sizeof(float);
          v.cols = count;
          return v;
        };
        L.bq = floats_of(0, q_dim);
        L.bk = floats_of(q_dim, kv_dim);
        L.bv = floats_of(q_dim + kv_dim, kv_dim);
      }
    }
    if (config.fused_gate_up) {  // gate first, as HF's gate_up_proj and llama.cpp's swiglu split it
      const WeightMatrix both = L.w_up;
      L.w_gate = rows_of(both, 0, config.d_ff);
      L.w_up = rows_of(both, config.d_ff, config.d_ff);
    }
    for (int64_t e = 0; e < config.n_expert; ++e) {  // expert e's rows of each stack
      L.expert_gate.push_back(rows_of(L.gate_exps, e * config.d_ff_expert, config.d_ff_expert));
      L.expert_up.push_back(rows_of(L.up_exps, e * config.d_ff_expert, config.d_ff_expert));
      L.expert_down.push_back(rows_of(L.down_exps, e * config.d_model, config.d_model));
    }
  }
  // Sink logits (gpt-oss) are numbers or -inf (no sink): the kernel refuses anything else.
  for (size_t l = 0; l < weights.layers.size(); ++l) {
    const WeightMatrix& sinks = weights.layers[l].sinks;
    for (int64_t h = 0; sinks.data != nullptr && h < config.n_heads; ++h) {
      const float x = Floats(sinks)[h];
      if (std::isnan(x) || x == INFINITY)
        throw Error("model: blk." + std::to_string(l) + ".attn_sinks.weight[" + std::to_string(h) +
                    "] = " + std::to_string(x) + " (must be a number or -inf)");
    }
  }
  if (!config.rope_yarn_factors.empty() && weights.rope_freqs.data != nullptr)
    throw Error("model: rope_freqs.weight together with YaRN scaling is not supported");
  if ((weights.rope_factors_long.data == nullptr) != (weights.rope_factors_short.data == nullptr))
    throw Error("model: rope_factors_long.weight and rope_factors_short.weight must come together");
  // Per-pair frequency divisors must be positive numbers.
  for (const auto& [factors, name] : {std::pair{&weights.rope_freqs, "rope_freqs"},
                                      {&weights.rope_factors_long, "rope_factors_long"},
                                      {&weights.rope_factors_short, "rope_factors_short"}}) {
    if (factors->data == nullptr) continue;
    const float* f = Floats(*factors);
    for (int64_t i = 0; i < config.rope_dim / 2; ++i) {
      if (!(std::isfinite(f[i]) && f[i] > 0.0f)) {
        throw Error(std::string("model: ") + name + ".weight[" + std::to_string(i) +
                    "] = " + std::to_string(f[i]) + " (must be a positive number)");
      }
    }
  }
}

std::string Model::DefaultPath() {
  if (const char* env = std::getenv("ATTN_MODEL"); env != nullptr && *env != '\0') return env;
  return CacheDirectory() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

}  // namespace attn
