#include "train/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

#include "attn/error.h"
#include "attn/tokenizer.h"
#include "format/gguf.h"
#include "format/gguf_writer.h"
#include "model/weights.h"
#include "tokenizer/unicode.h"

namespace attn {
namespace {

constexpr uint32_t kFormatVersion = 1;  // attn.train.format
constexpr const char* kAdamM = "train.adam_m.";
constexpr const char* kAdamV = "train.adam_v.";

template <typename... Args>
[[noreturn]] void Fail(const std::string& path, const Args&... args) {
  std::ostringstream s;
  s.precision(9);  // floats print exactly enough to tell two apart
  s << "checkpoint " << path << ": ";
  (s << ... << args);
  throw Error(s.str());
}

std::string Shape(const std::vector<uint64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// The model config the runtime would read from such a file (src/model/config.cc), for the
// tensor list of src/model/weights.h.
ModelConfig RuntimeConfig(const TrainModelConfig& c) {
  ModelConfig m;
  m.arch = Arch::kGpt2;
  m.arch_name = "gpt2";
  m.norm = NormKind::kLayer;
  m.n_layers = c.n_layers;
  m.d_model = c.d_model;
  m.n_heads = m.n_kv_heads = c.n_heads;
  m.head_dim = c.d_model / c.n_heads;
  m.d_ff = c.d_ff;
  m.vocab_size = c.vocab_size;
  m.context_length = c.context;
  m.norm_eps = c.norm_eps;
  m.attn_sinks = c.attn_sinks;
  return m;
}

// The tensors the model loader binds for `c` (src/model/weights.h), in file order.
std::vector<TensorSpec> ModelTensors(const TrainModelConfig& c) {
  std::vector<TensorSpec> specs;
  Model::Weights unused;
  ForEachTensor(RuntimeConfig(c), unused,
                [&](const TensorSpec& spec, WeightMatrix&) { specs.push_back(spec); });
  return specs;
}

const TensorSpec* FindSpec(const std::vector<TensorSpec>& specs, const std::string& name) {
  for (const TensorSpec& s : specs)
    if (s.name == name) return &s;
  return nullptr;
}

// GGUF ne of a param: matrices [cols, rows], vectors (norm weights, biases) [cols]. The loader's
// list decides which is which (a [1, d] matrix stays 2-D); a name not on it is a vector when rows == 1.
std::vector<uint64_t> Dims(const TrainParam& p, const std::vector<TensorSpec>& specs) {
  const TensorSpec* spec = FindSpec(specs, p.name);
  const bool vector = spec != nullptr ? spec->kind == TensorKind::kVector : p.rows == 1;
  if (vector) return {static_cast<uint64_t>(p.cols)};
  return {static_cast<uint64_t>(p.cols), static_cast<uint64_t>(p.rows)};
}

void CheckConfig(const TrainModelConfig& c, const std::string& path) {
  auto in_range = [&](const char* name, int64_t v, int64_t lo) {
    if (v < lo || v > int64_t{UINT32_MAX})
      Fail(path, "config ", name, " = ", v, " (must be in [", lo, ", 2^32))");
  };
  in_range("vocab_size", c.vocab_size, 1);
  in_range("context", c.context, 1);
  in_range("n_layers", c.n_layers, 1);
  in_range("d_model", c.d_model, 1);
  in_range("n_heads", c.n_heads, 1);
  in_range("d_ff", c.d_ff, 0);
  if (c.d_model % c.n_heads != 0)
    Fail(path, "config d_model = ", c.d_model, " is not a multiple of n_heads = ", c.n_heads);
  if (!(c.norm_eps > 0.0f) || !std::isfinite(c.norm_eps))
    Fail(path, "config norm_eps = ", c.norm_eps, " (must be > 0)");
}

// An integer metadata key of any integer type.
int64_t GetInt(const gguf::File& f, const std::string& key, const std::string& path) {
  const gguf::Value* v = f.Find(key);
  if (v == nullptr) Fail(path, "metadata key '", key, "' is missing");
  if (const auto* u = std::get_if<uint64_t>(&v->data); u != nullptr && *u <= uint64_t{INT64_MAX})
    return static_cast<int64_t>(*u);
  if (const auto* i = std::get_if<int64_t>(&v->data)) return *i;
  Fail(path, "metadata key '", key, "' = ", v->ToString(), " (must be an integer)");
}

double GetFloat(const gguf::File& f, const std::string& key, const std::string& path) {
  const gguf::Value* v = f.Find(key);
  if (v == nullptr) Fail(path, "metadata key '", key, "' is missing");
  const auto* d = std::get_if<double>(&v->data);
  if (d == nullptr) Fail(path, "metadata key '", key, "' = ", v->ToString(), " (must be a number)");
  return *d;
}

// Opens `path` and checks that it is an attn checkpoint.
gguf::File OpenCheckpoint(const std::string& path) {
  gguf::File f = gguf::File::Open(path);
  const gguf::Value* arch = f.Find("general.architecture");
  const auto* name = arch ? std::get_if<std::string>(&arch->data) : nullptr;
  if (name == nullptr || *name != "gpt2")
    Fail(path,
         "not an attn checkpoint (general.architecture = ", arch ? arch->ToString() : std::string("missing"),
         ", expected \"gpt2\")");
  if (f.Find("attn.train.format") == nullptr)
    Fail(path, "not an attn checkpoint (no attn.train.format key: a model, not a training state)");
  const int64_t format = GetInt(f, "attn.train.format", path);
  if (format != kFormatVersion)
    Fail(path, "attn.train.format = ", format, " is not supported (this build reads ", kFormatVersion, ")");
  return f;
}

TrainModelConfig ConfigOf(const gguf::File& f, const std::string& path) {
  TrainModelConfig c;
  c.n_layers = GetInt(f, "gpt2.block_count", path);
  c.d_model = GetInt(f, "gpt2.embedding_length", path);
  c.n_heads = GetInt(f, "gpt2.attention.head_count", path);
  c.d_ff = GetInt(f, "gpt2.feed_forward_length", path);
  c.context = GetInt(f, "gpt2.context_length", path);
  c.norm_eps = static_cast<float>(GetFloat(f, "gpt2.attention.layer_norm_epsilon", path));
  c.attn_sinks = f.FindTensor("blk.0.attn_sinks.weight") != nullptr;  // as the model loader decides
  const int64_t kv_heads = GetInt(f, "gpt2.attention.head_count_kv", path);
  if (kv_heads != c.n_heads)
    Fail(path, "gpt2.attention.head_count_kv = ", kv_heads, " differs from head_count = ", c.n_heads);
  const gguf::TensorInfo* embd = f.FindTensor("token_embd.weight");
  if (embd == nullptr || embd->dims.size() != 2)
    Fail(path, "tensor 'token_embd.weight' is missing or not 2-D");
  c.vocab_size = static_cast<int64_t>(embd->dims[1]);
  if (const gguf::Value* v = f.Find("gpt2.vocab_size");
      v != nullptr && GetInt(f, "gpt2.vocab_size", path) != c.vocab_size)
    Fail(path, "gpt2.vocab_size = ", v->ToString(), " but token_embd.weight has ", c.vocab_size, " rows");
  return c;
}

// GGUF token types (llama.cpp's LLAMA_TOKEN_TYPE_*).
constexpr int32_t kTokenNormal = 1, kTokenUnused = 5;

void WriteTokenizer(gguf::Writer& w, std::span<const uint8_t> seen) {
  w.SetString("tokenizer.ggml.model", "gpt2");
  w.SetString("tokenizer.ggml.pre", "gpt2");
  w.SetStrings("tokenizer.ggml.tokens", ByteLevelTokens());
  // Bytes never seen in training are "unused"; before any token was seen, all are normal.
  const bool any_seen = std::find(seen.begin(), seen.end(), uint8_t{1}) != seen.end();
  std::vector<int32_t> types(256, kTokenNormal);
  for (size_t b = 0; b < types.size() && any_seen; ++b)
    if (!seen[b]) types[b] = kTokenUnused;
  w.SetI32s("tokenizer.ggml.token_type", types);
  w.SetStrings("tokenizer.ggml.merges", {});  // every token is one byte: nothing to merge
  // No BOS and no EOS: a model trained on raw bytes has no end marker; every id is a byte of text.
  w.SetBool("tokenizer.ggml.add_bos_token", false);
}

}  // namespace

std::vector<std::string> ByteLevelTokens() {
  std::vector<std::string> tokens(256);
  for (int b = 0; b < 256; ++b)
    tokenizer::AppendUtf8(tokenizer::ByteToCodepoint(static_cast<uint8_t>(b)), tokens[b]);
  return tokens;
}

void WriteCheckpoint(const TrainModelConfig& config, const TrainOptions& options,
                     const std::vector<TrainParam>& params, int64_t step, const std::string& path,
                     std::span<const uint8_t> seen_tokens) {
  CheckConfig(config, path);
  if (step < 0) Fail(path, "step = ", step, " (must be >= 0)");
  if (!seen_tokens.empty() && static_cast<int64_t>(seen_tokens.size()) != config.vocab_size)
    Fail(path, "seen_tokens holds ", seen_tokens.size(), " flags for vocab_size = ", config.vocab_size);

  // The params must be exactly the tensors the model loader binds for this config.
  const std::vector<TensorSpec> specs = ModelTensors(config);
  for (const TensorSpec& spec : specs) {
    const std::string& name = spec.name;
    const TrainParam* p = nullptr;
    for (const TrainParam& q : params)
      if (q.name == name) p = &q;
    if (p == nullptr) {
      if (spec.required) Fail(path, "param '", name, "' of the gpt2 model is missing");
      continue;
    }
    if (p->rows != spec.rows || p->cols != spec.cols)
      Fail(path, "param '", name, "' is ", p->rows, " x ", p->cols, ", the model needs ", spec.rows, " x ",
           spec.cols);
  }
  std::set<std::string> seen;
  size_t max_elements = 0;
  for (const TrainParam& p : params) {
    if (FindSpec(specs, p.name) == nullptr)
      Fail(path, "param '", p.name, "' is not a tensor of the gpt2 model");
    if (!seen.insert(p.name).second) Fail(path, "param '", p.name, "' appears twice");
    const size_t n = static_cast<size_t>(p.rows * p.cols);
    if (p.value.size() != n)
      Fail(path, "param '", p.name, "' holds ", p.value.size(), " values, expected ", n);
    if (!p.adam_m.empty() && p.adam_m.size() != n)
      Fail(path, "param '", p.name, "' holds ", p.adam_m.size(), " adam_m values, expected ", n);
    if (!p.adam_v.empty() && p.adam_v.size() != n)
      Fail(path, "param '", p.name, "' holds ", p.adam_v.size(), " adam_v values, expected ", n);
    max_elements = std::max(max_elements, n);
  }
  const std::vector<float> zeros(max_elements, 0.0f);  // the moments not yet allocated

  gguf::Writer w;
  w.SetString("general.architecture", "gpt2");
  w.SetString("general.name", "attn-trained");
  w.SetU32("general.file_type", 0);  // llama.cpp's LLAMA_FTYPE_ALL_F32
  w.SetU32("gpt2.block_count", static_cast<uint32_t>(config.n_layers));
  w.SetU32("gpt2.context_length", static_cast<uint32_t>(config.context));
  w.SetU32("gpt2.embedding_length", static_cast<uint32_t>(config.d_model));
  w.SetU32("gpt2.feed_forward_length", static_cast<uint32_t>(config.d_ff));
  w.SetU32("gpt2.attention.head_count", static_cast<uint32_t>(config.n_heads));
  w.SetU32("gpt2.attention.head_count_kv", static_cast<uint32_t>(config.n_heads));
  w.SetF32("gpt2.attention.layer_norm_epsilon", config.norm_eps);
  w.SetU32("gpt2.vocab_size", static_cast<uint32_t>(config.vocab_size));
  if (config.vocab_size == 256) WriteTokenizer(w, seen_tokens);

  w.SetU32("attn.train.format", kFormatVersion);
  w.SetU64("attn.train.step", static_cast<uint64_t>(step));
  w.SetI64("attn.train.batch", options.batch);
  w.SetI64("attn.train.steps", options.steps);
  w.SetF32("attn.train.lr", options.lr);
  w.SetI64("attn.train.warmup", options.warmup);
  w.SetF32("attn.train.min_lr_ratio", options.min_lr_ratio);
  w.SetF32("attn.train.beta1", options.beta1);
  w.SetF32("attn.train.beta2", options.beta2);
  w.SetF32("attn.train.adam_eps", options.adam_eps);
  w.SetF32("attn.train.weight_decay", options.weight_decay);
  w.SetF32("attn.train.clip", options.clip);
  w.SetF32("attn.train.init_std", options.init_std);
  w.SetU64("attn.train.seed", options.seed);

  auto moments = [&](const std::vector<float>& m, size_t n) {
    return m.empty() ? std::span<const float>(zeros.data(), n) : std::span<const float>(m);
  };
  for (const TrainParam& p : params) w.AddTensorF32(p.name, Dims(p, specs), p.value);
  for (const TrainParam& p : params)
    w.AddTensorF32(kAdamM + p.name, Dims(p, specs), moments(p.adam_m, p.value.size()));
  for (const TrainParam& p : params)
    w.AddTensorF32(kAdamV + p.name, Dims(p, specs), moments(p.adam_v, p.value.size()));
  w.Write(path);
}

void ReadCheckpoint(const std::string& path, const TrainModelConfig& expect, std::vector<TrainParam>& params,
                    int64_t& step, std::vector<uint8_t>* seen_tokens) {
  CheckConfig(expect, path);
  const gguf::File f = OpenCheckpoint(path);

  // The config, key by key.
  {
    const TrainModelConfig got = ConfigOf(f, path);
    auto same = [&](const char* key, int64_t file_value, int64_t want, const char* field) {
      if (file_value != want)
        Fail(path, key, " is ", file_value, " in the file, ", want, " expected (config ", field, ")");
    };
    same("gpt2.block_count", got.n_layers, expect.n_layers, "n_layers");
    same("gpt2.embedding_length", got.d_model, expect.d_model, "d_model");
    same("gpt2.attention.head_count", got.n_heads, expect.n_heads, "n_heads");
    same("gpt2.feed_forward_length", got.d_ff, expect.d_ff, "d_ff");
    same("gpt2.context_length", got.context, expect.context, "context");
    same("vocab_size (token_embd.weight rows)", got.vocab_size, expect.vocab_size, "vocab_size");
    if (got.norm_eps != expect.norm_eps)
      Fail(path, "gpt2.attention.layer_norm_epsilon is ", got.norm_eps, " in the file, ", expect.norm_eps,
           " expected (config norm_eps)");
  }
  const int64_t file_step = GetInt(f, "attn.train.step", path);
  if (file_step < 0) Fail(path, "attn.train.step = ", file_step, " (must be >= 0)");

  // Every tensor, before anything is copied.
  const std::vector<TensorSpec> specs = ModelTensors(expect);
  auto tensor = [&](const std::string& name, const TrainParam& p) -> const gguf::TensorInfo& {
    const gguf::TensorInfo* t = f.FindTensor(name);
    if (t == nullptr) Fail(path, "tensor '", name, "' is missing");
    if (t->dims != Dims(p, specs))
      Fail(path, "tensor '", name, "' has shape ", Shape(t->dims), " in the file, ", Shape(Dims(p, specs)),
           " expected");
    if (t->type != gguf::TensorType::kF32)
      Fail(path, "tensor '", name, "' has type ", gguf::TensorTypeName(t->type),
           " in the file, F32 expected");
    return *t;
  };
  std::set<std::string> names;
  for (const TrainParam& p : params) names.insert(p.name);
  for (const gguf::TensorInfo& t : f.tensors()) {
    const std::string& n = t.name;
    const std::string base =
        n.rfind(kAdamM, 0) == 0 || n.rfind(kAdamV, 0) == 0 ? n.substr(std::strlen(kAdamM)) : n;
    if (!names.count(base)) Fail(path, "tensor '", n, "' in the file is not a parameter of this model");
  }
  struct Loaded {
    std::vector<float> value, m, v;
  };
  std::vector<Loaded> loaded(params.size());
  auto copy = [](const gguf::TensorInfo& t) {
    std::vector<float> out(static_cast<size_t>(t.n_elements()));
    std::memcpy(out.data(), t.data, out.size() * sizeof(float));
    return out;
  };
  for (size_t i = 0; i < params.size(); ++i) {
    const TrainParam& p = params[i];
    loaded[i].value = copy(tensor(p.name, p));
    loaded[i].m = copy(tensor(kAdamM + p.name, p));
    loaded[i].v = copy(tensor(kAdamV + p.name, p));
  }

  // The token types, read by the model's own tokenizer loader: every token seen unless marked
  // unused (a file without a tokenizer: all seen).
  std::vector<uint8_t> seen(static_cast<size_t>(expect.vocab_size), 1);
  if (f.Find("tokenizer.ggml.model") != nullptr) {
    const Tokenizer tok = Tokenizer::FromGGUF(f);
    for (size_t i = 0; i < seen.size(); ++i) seen[i] = tok.IsUnused(static_cast<int32_t>(i)) ? 0 : 1;
  }

  // Commit: moves only, nothing left that can throw.
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].value = std::move(loaded[i].value);
    params[i].adam_m = std::move(loaded[i].m);
    params[i].adam_v = std::move(loaded[i].v);
  }
  step = file_step;
  if (seen_tokens != nullptr) *seen_tokens = std::move(seen);
}

TrainModelConfig ReadCheckpointConfig(const std::string& path) {
  const gguf::File f = OpenCheckpoint(path);
  return ConfigOf(f, path);
}

TrainOptions ReadCheckpointOptions(const std::string& path, const TrainOptions& defaults) {
  const gguf::File f = OpenCheckpoint(path);
  TrainOptions o = defaults;
  auto get_int = [&](const char* key, int64_t& field) {
    if (f.Find(key) != nullptr) field = GetInt(f, key, path);
  };
  auto get_float = [&](const char* key, float& field) {
    if (f.Find(key) != nullptr) field = static_cast<float>(GetFloat(f, key, path));
  };
  get_int("attn.train.batch", o.batch);
  get_int("attn.train.steps", o.steps);
  get_int("attn.train.warmup", o.warmup);
  get_float("attn.train.lr", o.lr);
  get_float("attn.train.min_lr_ratio", o.min_lr_ratio);
  get_float("attn.train.beta1", o.beta1);
  get_float("attn.train.beta2", o.beta2);
  get_float("attn.train.adam_eps", o.adam_eps);
  get_float("attn.train.weight_decay", o.weight_decay);
  get_float("attn.train.clip", o.clip);
  get_float("attn.train.init_std", o.init_std);
  if (const gguf::Value* v = f.Find("attn.train.seed")) {
    const auto* u = std::get_if<uint64_t>(&v->data);
    if (u == nullptr) Fail(path, "attn.train.seed = ", v->ToString(), " (must be an unsigned integer)");
    o.seed = *u;
  }
  return o;
}

// The declarations of include/attn/train.h.

void SaveCheckpoint(const Trainer& trainer, const std::string& path) {
  WriteCheckpoint(trainer.config(), trainer.options(), trainer.params(), trainer.step(), path,
                  trainer.seen_tokens());
}

void LoadCheckpoint(Trainer& trainer, const std::string& path) {
  int64_t step = 0;
  std::vector<uint8_t> seen;
  ReadCheckpoint(path, trainer.config(), trainer.params(), step, &seen);  // all or nothing
  trainer.set_step(step);
  trainer.mutable_seen_tokens() = std::move(seen);
}

}  // namespace attn
