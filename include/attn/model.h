// A decoder-only language model loaded from a GGUF file, run on attn's kernels.
//
//   auto model = attn::Model::Load(path);          // memory-maps the weights
//   attn::Session session(*model, capacity);       // a KV cache per layer
//   model->Forward(session, tokens, logits, ...);  // appends tokens, returns logits
//
// Architectures (src/model/config.cc): "llama" (RMSNorm, RoPE, GQA, SwiGLU, tied or separate
// output); its relatives "qwen2" (biases on Q, K and V; NEOX RoPE), "qwen3" (an RMSNorm on every
// query and key head before RoPE; NEOX RoPE), "gemma3" (dense Gemma 3 text models: embeddings
// scaled by sqrt(d_model), an RMSNorm on each q / k head, RMSNorms after attention and after the
// feed-forward block, a GELU gate, and sliding-window attention on five of every six layers with
// their own RoPE base) and "gemma2" (the same without q / k norms, every other layer sliding,
// softcapped scores and logits), "gemma" (Gemma 1: llama with Gemma's embedding scale and GELU
// gate), "starcoder2" (LayerNorm, biases everywhere, an ungated GELU feed-forward), "phi2" (the
// same with partial rotary, attention and feed-forward in parallel, a biased unembedding),
// "stablelm" (LayerNorm, partial rotary, SwiGLU, optional Q / K / V biases, parallel blocks when
// the file has no ffn_norm), "ernie4_5" (ERNIE 4.5 dense: llama, its RoPE pairs interleaved as
// written), "exaone4" (EXAONE 4.0 without sliding layers: olmo2's post-norms with a q / k norm per
// head), "olmo2" (RMSNorms
// after attention and the feed-forward block instead of before, and over each token's whole q and k rows);
// "smollm3" (llama with no RoPE on every fourth layer); "granite" (llama with four multipliers: embeddings,
// residual branches, the score scale and the logits), "granitemoe" (the same with experts);
// "command-r" (Cohere: LayerNorm without bias feeding attention and feed-forward in parallel,
// interleaved RoPE pairs, scaled logits), "cohere2" (Command R7B: the same with three sliding
// layers in four and no RoPE on the global ones); "gpt-oss"
// (OpenAI's: learned attention sinks, biases on every projection, sliding and full layers alternating, a
// mixture of experts with biases and a clamped SwiGLU); and "gpt2" (learned positions, LayerNorm, GELU, fused
// QKV, biases).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "attn/kv_cache.h"
#include "attn/tokenizer.h"

namespace attn {

namespace gguf {
class File;
}
class ThreadPool;

enum class Arch : uint8_t {
  kLlama,
  kQwen2,
  kQwen2Moe,
  kQwen3,
  kQwen3Moe,
  kOlmoe,
  kOlmo2,
  kGemma,
  kGemma2,
  kStarcoder2,
  kPhi2,
  kStableLM,
  kErnie45,
  kExaone4,
  kGemma3,
  kPhi3,
  kGptOss,
  kSmolLM3,
  kGranite,
  kGraniteMoe,
  kCommandR,
  kCohere2,
  kGpt2
};
enum class NormKind : uint8_t { kRms, kLayer };

// Everything the forward pass needs to know about a model's shape, read from GGUF metadata.
struct ModelConfig {
  Arch arch = Arch::kLlama;
  std::string arch_name;  // general.architecture
  std::string name;       // general.name, when present
  int64_t n_layers = 0;
  int64_t d_model = 0;     // embedding_length
  int64_t n_heads = 0;     // query heads
  int64_t n_kv_heads = 0;  // key/value heads (GQA when < n_heads)
  int64_t head_dim = 0;
  int64_t d_ff = 0;  // feed_forward_length
  int64_t vocab_size = 0;
  int64_t context_length = 0;
  int64_t rope_dim = 0;  // dimensions rotated per head (rotary models)
  float rope_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // 1 / rope.scaling.factor (linear scaling), 1 without
  bool rope_neox = false;        // RoPE pairs (i, i + rope_dim / 2) (qwen*) instead of (2i, 2i + 1) (llama)
  bool qkv_bias = false;         // Q, K and V projections have biases (qwen2; gpt2's are in its fused QKV)
  bool out_bias = false;         // the attention output projection has a bias (gpt2, gpt-oss)
  bool attn_sinks = false;  // a learned sink logit per query head (gpt-oss; gpt2 files of attn train --sinks)
  bool qk_norm = false;     // RMSNorm over head_dim on every query and key head before RoPE (qwen3, gemma3)
  bool qk_norm_full = false;  // RMSNorm over each token's whole query and whole key row instead (olmoe)
  float embed_scale = 1.0f;   // token embeddings are multiplied by it (gemma*: sqrt(d_model))
  bool post_norms = false;    // RMSNorm of the attention and feed-forward outputs before the residual add
  bool pre_norms = true;      // RMSNorm of each sub-block's input (olmo2 has the post norms only)
  // An ungated feed-forward: up (+ bias), GELU (tanh), down (+ bias) (gpt2, starcoder2, phi2).
  bool gelu_mlp = false;
  // Attention and feed-forward both read the norm of the block's input, and both outputs join the
  // residual stream at once (phi2: one norm per block, no ffn_norm).
  bool parallel_residual = false;
  bool output_bias = false;    // the unembedding has a bias (phi2)
  bool norm_bias = true;       // LayerNorms have biases (not command-r's)
  bool gelu_gate = false;      // the gated feed-forward's gate is GELU (tanh), not SiLU (gemma*)
  bool fused_qkv = false;      // Q, K, V rows of one attn_qkv tensor (phi3), split into views at load
  bool fused_gate_up = false;  // gate and up rows of one ffn_up tensor [2 d_ff] (phi3), split likewise
  // LongRoPE (phi3 files with rope_factors_long / _short): a session whose capacity exceeds
  // rope_orig_context rotates with the long per-pair frequency divisors, else with the short ones
  // (as llama.cpp chooses by its context size); cos and sin are multiplied by rope_attn_factor.
  int64_t rope_orig_context = 0;
  float rope_attn_factor = 1.0f;
  // YaRN (rope.scaling.type = yarn): per-pair divisors on top of rope_freq_scale = 1 / factor
  // (ops::YarnFactors over rope_orig_context positions; empty without YaRN); rope_attn_factor then
  // includes 1 + 0.1 ln(factor).
  std::vector<float> rope_yarn_factors;
  // Sliding-window attention (gemma*): on sliding layers a query sees itself and the
  // sliding_window - 1 keys before it; every sliding_pattern-th layer sees everything. Sliding
  // layers rotate with rope_base_swa and no scaling.
  int64_t sliding_window = 0;  // 0: no sliding layers
  int64_t sliding_pattern = 0;
  float rope_base_swa = 10000.0f;
  bool rope_swa_unscaled = false;  // sliding layers rotate without the model's scaling (gemma3)
  float attn_softcap = 0.0f;       // scores capped as attn_softcap * tanh(s / attn_softcap) (gemma2); 0: not
  // The scale of q . k: 1 / sqrt(head_dim), except Gemma 2 / 3 27B's 1 / sqrt(d_model / n_heads)
  // (their query_pre_attn_scalar, which GGUF does not store: llama.cpp knows them by layer count).
  float attn_scale = 0.0f;  // 0: 1 / sqrt(head_dim)
  float AttnScale() const {
    return attn_scale > 0.0f ? attn_scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
  }
  float final_softcap = 0.0f;  // the same on the logits (gemma2)
  // Granite: each block's attention and MLP outputs are multiplied by residual_scale before the
  // residual add, and the logits divided by logit_scale (its embeddings use embed_scale, its
  // scores attn_scale).
  float residual_scale = 1.0f, logit_scale = 1.0f;
  // SmolLM3: every no_rope_interval-th layer (3, 7, ... for 4) has no RoPE (NoPE: its queries and
  // keys carry no position; only the causal mask orders them). 0: every layer rotates.
  int64_t no_rope_interval = 0;
  bool UsesRope(int64_t layer) const { return no_rope_interval <= 0 || (layer + 1) % no_rope_interval != 0; }
  bool IsSliding(int64_t layer) const {
    return sliding_window > 0 && (sliding_pattern <= 0 || (layer + 1) % sliding_pattern != 0);
  }
  // Mixture of experts (llama files with expert_count, as Mixtral; qwen2moe; qwen3moe; olmoe): every
  // block's feed-forward is n_expert SwiGLU experts of width d_ff_expert; a router (ffn_gate_inp)
  // picks n_expert_used of them per token by softmax probability, and their outputs are summed
  // weighted by those probabilities, renormalized to sum to 1 when expert_weights_norm (llama.cpp's
  // norm_w: Mixtral and Qwen3-MoE, not Qwen2-MoE or OLMoE). qwen2moe adds a shared expert of width
  // d_ff_shared that every token uses, scaled by sigmoid(ffn_gate_inp_shexp . x). 0 experts: a
  // dense feed-forward of width d_ff.
  // gpt-oss: the router and every expert product have biases, and the experts' activation is
  // SwiGluOai (alpha 1.702, limit 7, as llama.cpp hard-codes them); its gating (softmax over the
  // k largest logits) is the renormalized top-k softmax.
  int64_t n_expert = 0, n_expert_used = 0, d_ff_expert = 0, d_ff_shared = 0;
  bool expert_weights_norm = true;
  bool expert_bias = false;
  bool swiglu_oai = false;
  static constexpr float kSwigluOaiAlpha = 1.702f, kSwigluOaiLimit = 7.0f;
  float norm_eps = 1e-5f;
  NormKind norm = NormKind::kRms;
  bool tied_output = false;  // output projection = token embedding (no output.weight)
};

// A hook point sees (and may overwrite) one named intermediate of the forward pass, a
// row-major [rows, cols] float32 block for the tokens of the current pass (rows = tokens,
// starting at position pos0). `layer` is -1 for points outside the blocks. The points, with the
// shapes TransformerLens gives them ([batch, pos, ...], batch = 1):
//   hook_embed, hook_pos_embed (gpt2)                 [pos, d_model]
//   blocks.{l}.hook_resid_pre / hook_resid_mid / hook_resid_post, hook_attn_out, hook_mlp_out,
//   ln1.hook_normalized, ln2.hook_normalized          [pos, d_model]
//   attn.hook_q, attn.hook_rot_q, attn.hook_z         [pos, n_heads, head_dim]
//   attn.hook_k, attn.hook_v, attn.hook_rot_k         [pos, n_kv_heads, head_dim]
//   mlp.hook_pre, mlp.hook_post                       [pos, d_ff] (not in mixture-of-experts blocks)
//   mlp.hook_expert_indices, mlp.hook_expert_weights  [pos, n_expert_used] (mixture-of-experts blocks:
//       the experts each token goes to, most probable first, as floats, and their renormalized
//       weights; edits change the routing)
//   attn.hook_attn_scores, attn.hook_pattern          [n_heads, pos, keys]: `heads` blocks of
//       [rows, cols = pos0 + rows]; scores are scaled, causally masked with -inf; the pattern is
//       their softmax (with gpt-oss's sinks in its denominator: a row sums to 1 - p_sink).
//       Computed (O(S^2) memory) only when a filter asks for them; the layer's hook_z then comes
//       from this pattern, so editing it patches the attention.
//   ln_final.hook_normalized                          [pos, d_model]
// The rotary points exist for rotary models (all but gpt2) only. hook_q and hook_k hold the
// projections (with qwen2's biases); the per-head norm of qwen3 / gemma3 comes between them and
// hook_rot_q/k.
struct HookPoint {
  const char* name;  // TransformerLens-style name without the "blocks.{l}." prefix
  int layer;
  float* data;
  int64_t rows, cols;
  int64_t pos0;       // position of the first row
  int64_t heads = 1;  // > 1 for the [heads, rows, cols] attention points
};
using HookFn = std::function<void(const HookPoint&)>;
// Which points to visit, by name (without the "blocks.{l}." prefix) and layer (-1 outside blocks).
using HookFilter = std::function<bool(const char* name, int layer)>;

// Hooks of one forward pass. Only the points `wants` accepts are visited (all when it is empty);
// a plain forward (no Hooks) pays nothing.
struct Hooks {
  HookFilter wants;
  HookFn fn;
  // True when fn only reads (a cache): the attention points are then materialized for viewing
  // only and the layer's z still comes from the fused kernel, so the pass computes exactly the
  // numbers of a plain forward (with 8-bit activations, the f32 explicit path's last-bit
  // differences would otherwise move later layers and the logits visibly).
  bool read_only = false;
  bool Wants(const char* name, int layer) const { return fn && (!wants || wants(name, layer)); }
};

class HeadStats;

struct ForwardOptions {
  bool all_logits = false;  // logits of every token, else only of the last one
  int threads = 0;          // 0 = every core
  const Hooks* hooks = nullptr;
  // When set, per-head attention statistics of every row are added to it (include/attn/heads.h),
  // computed inside the fused kernel and from its row LSE, never materializing the pattern.
  HeadStats* stats = nullptr;
  int64_t max_chunk = 512;  // tokens per pass through the blocks (bounds scratch memory)
  // When set: the final norm's output of every token, [tokens, d_model] (what embeddings pool).
  // The logits pointer may then be null: the unembedding is skipped.
  float* hidden = nullptr;
  // Each new token's attention is computed as a pass of that token alone would compute it (its
  // own kernel call over the keys up to its position) instead of one call for all the pass's
  // queries. With the matrix products' row-for-row results (integer weight formats, up to 24
  // rows: matmul.h), a pass of a few tokens then gives every row the logits of one-token passes
  // bit for bit: speculative decoding checks its drafts this way (GenerateOptions::lookup).
  // Not with hooks or head statistics.
  bool one_row_attention = false;
};

class Model;

// The state of one sequence: its KV caches and scratch space. Positions advance with every
// Forward call; Reset() starts a new sequence.
class Session {
 public:
  // `capacity`: the most positions this session will hold (<= the model's context length).
  // `kv_dtype`: how the KV cache stores keys and values. float32 (the default) keeps every number
  // of the forward pass exact for inspection; f16 (llama.cpp's default cache type) or bf16 halve
  // the bytes each generated token reads, at a rounding of K and V (activations stay float32).
  Session(const Model& model, int64_t capacity, DType kv_dtype = DType::kF32);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  int64_t n_past() const { return n_past_; }
  // The tokens at positions [0, n_past()).
  const std::vector<int32_t>& tokens() const { return tokens_; }
  int64_t capacity() const { return capacity_; }
  DType kv_dtype() const { return kv_dtype_; }
  void Reset();
  // Keeps the first n_past positions (of tokens()) and forgets the rest.
  void Truncate(int64_t n_past);
  // Grows the capacity to at least `capacity` positions (<= the model's context length), keeping
  // what is cached.
  void Reserve(int64_t capacity);
  // Layer `layer`'s KV cache (for inspection and tests).
  const KVCache& cache(int64_t layer) const;

 private:
  friend class Model;
  const Model* model_ = nullptr;  // the model it was made for (compared, never followed)
  int64_t n_past_ = 0;
  int64_t capacity_ = 0;
  int64_t context_length_ = 0;
  DType kv_dtype_ = DType::kF32;
  std::vector<int32_t> tokens_;
  std::vector<std::unique_ptr<KVCache>> caches_;  // one per layer
};

struct ConstraintVocabulary;  // src/model/grammar.h

class Model {
 public:
  // Opens and validates a GGUF model; throws attn::Error naming what is wrong or missing.
  static std::unique_ptr<Model> Load(const std::string& path);
  // The default model's path: $ATTN_MODEL, else ~/.cache/attn/models/SmolLM2-135M-Instruct.Q4_1.gguf
  // ($XDG_CACHE_HOME respected). Does not check that it exists.
  static std::string DefaultPath();
  ~Model();

  const ModelConfig& config() const { return config_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  // Replaces the file's chat template (llama.cpp's --chat-template-file; Tokenizer::WithChatTemplate
  // says what is checked). Only before the model is shared with other threads.
  void SetChatTemplate(const std::string& chat_template) {
    tokenizer_ = std::make_unique<Tokenizer>(tokenizer_->WithChatTemplate(chat_template));
  }
  // A control vector (llama.cpp's --control-vector, include/attn/steer.h): directions[l] (empty, or
  // d_model values) is added to block l's output, before blocks.{l}.hook_resid_post, at every
  // position of every pass; no directions (the default) removes it. Only before the model is
  // shared with other threads. attn::Error for more directions than blocks or a wrong size.
  void SetControlVector(std::vector<std::vector<float>> directions);
  const std::vector<std::vector<float>>& control_vector() const { return control_vector_; }
  const std::string& path() const { return path_; }
  // Bytes of weights in the mapped file.
  uint64_t weight_bytes() const;

  // Runs `tokens` at positions [session.n_past(), + tokens.size()) and appends them to the
  // session's caches. Writes logits [tokens.size(), vocab] when all_logits, else only the last
  // token's [vocab]. Throws attn::Error when a token id is out of range or the session is full.
  void Forward(Session& session, std::span<const int32_t> tokens, float* logits,
               const ForwardOptions& options) const;
  void Forward(Session& session, std::span<const int32_t> tokens, float* logits, bool all_logits = false,
               int threads = 0) const {
    ForwardOptions o;
    o.all_logits = all_logits;
    o.threads = threads;
    Forward(session, tokens, logits, o);
  }
  // One sequence of a batched forward pass: `tokens` run at positions [session->n_past(), + size).
  struct BatchItem {
    Session* session;
    std::span<const int32_t> tokens;
  };
  // Several sequences in one pass (llama.cpp's batch of sequences, as a server with parallel slots
  // decodes): the rows of every item share each matrix product, and each item's rows attend to its
  // own session's cache. Logits: with all_logits, [total tokens, vocab] in item order; else one row
  // [vocab] per item, its last token's. Each session at most once; hooks and statistics need a
  // single item. Everything is checked before any session changes. A row's result can differ from
  // a one-sequence Forward's in the last bits (a product over more rows may take another kernel).
  void ForwardBatch(std::span<const BatchItem> items, float* logits, const ForwardOptions& options) const;
  // A context shift (llama.cpp's; with a small `keep`, StreamingLLM's attention sinks): forgets
  // positions [keep, keep + discard) of the session and moves the later ones down, rotating their
  // cached keys by -discard positions so that each sits at its new position. Values are kept as
  // they are (computed with the forgotten tokens in view). Throws attn::Error for gpt2 (learned
  // absolute positions) and for keep / discard outside the cached positions.
  void ShiftContext(Session& session, int64_t keep, int64_t discard) const;

  // The model's head on residual-stream rows x [rows, d_model]: the final norm, the unembedding,
  // then the logit scale and final softcap where the model has them, into logits [rows, vocab]:
  // what Forward does to the last block's output (bit for bit for the same rows). The logit lens
  // (include/attn/lens.h) applies it to earlier layers' residuals.
  void Unembed(const float* x, int64_t rows, float* logits, int threads = 0) const;

  struct Weights;  // defined in src/model/weights.h

  // Every token's text (control and unused tokens empty) and their byte trie, for constrained
  // generation (JSON mode, grammars): built on first use (thread-safe), then shared.
  const ConstraintVocabulary& constraint_vocabulary() const;

 private:
  Model();
  std::string path_;
  ModelConfig config_;
  std::unique_ptr<gguf::File> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Weights> weights_;
  std::vector<std::vector<float>> control_vector_;  // per layer; empty rows add nothing
  mutable std::once_flag constraint_once_;
  mutable std::unique_ptr<ConstraintVocabulary> constraint_vocabulary_;
};

// One hook point's activation kept by RunWithCache: data [heads, rows, cols] (heads = 1 except
// for the attention scores and patterns), rows = the sequence's positions.
struct CachedActivation {
  std::string name;  // without the "blocks.{l}." prefix
  int layer;         // -1 outside the blocks
  int64_t heads, rows, cols;
  std::vector<float> data;
  // "blocks.{l}.{name}", or the name alone outside the blocks (TransformerLens's names).
  std::string FullName() const;
};

struct ActivationCache {
  std::vector<float> logits;                  // [tokens, vocab]
  std::vector<CachedActivation> activations;  // in the order the forward pass visits them
  // The activation with this full name, or nullptr.
  const CachedActivation* Find(const std::string& full_name) const;
};

// Runs `tokens` as one pass (a fresh sequence) and keeps the points `wants` accepts (every point,
// attention patterns included, when it is empty). The logits equal a plain forward's bit for bit.
ActivationCache RunWithCache(const Model& model, std::span<const int32_t> tokens,
                             const HookFilter& wants = {}, int threads = 0);
// Runs `tokens` as one pass (a fresh sequence) with hooks that may edit activations in place;
// returns the logits [tokens, vocab].
std::vector<float> RunWithHooks(const Model& model, std::span<const int32_t> tokens, const Hooks& hooks,
                                int threads = 0);

}  // namespace attn
