#include "attn/model_options.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "attn/error.h"
#include "attn/steer.h"

namespace attn::cli {

void AddModelOptions(CLI::App* cmd, ModelOptions& options) {
  cmd->add_option(
      "-m,--model", options.model,
      "GGUF model file (default: $ATTN_MODEL or ~/.cache/attn/models/SmolLM2-135M-Instruct.Q4_1.gguf)");
  cmd->add_option("-t,--threads", options.threads, "Threads (0 = every core)")->check(CLI::Range(0, 1024));
}

void AddKvTypeOption(CLI::App* cmd, DType& kv_dtype, const std::string& name, const std::string& what) {
  static const std::map<std::string, DType> types = {
      {"f16", DType::kF16}, {"bf16", DType::kBF16}, {"f32", DType::kF32}, {"q8_0", DType::kQ8_0}};
  cmd->add_option_function<std::string>(
         name, [&kv_dtype](const std::string& type) { kv_dtype = types.at(type); },
         what +
             ": f16 (llama.cpp's default), bf16, f32 (exact; twice the bytes per token) or q8_0 (8-bit "
             "blocks of 32 with a scale, as llama.cpp's -ctk/-ctv q8_0; head_dim a multiple of 32)")
      ->check(CLI::IsMember({"f16", "bf16", "f32", "q8_0"}));
}

void AddContextShiftOptions(CLI::App* cmd, int64_t& context_keep) {
  auto* shift = cmd->add_flag_callback(
      "--context-shift", [&context_keep] { context_keep = std::max<int64_t>(context_keep, 4); },
      "When the context is full, keep its first 4 positions (attention sinks), forget half of the rest "
      "and go on");
  cmd->add_option("--keep", context_keep, "Positions --context-shift keeps (implies it)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))
      ->excludes(shift);
}

void AddSamplingOptions(CLI::App* cmd, SamplerOptions& o) {
  cmd->add_option("--temperature", o.temperature, "Sampling temperature; 0 = greedy")
      ->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--seed", o.seed, "Random seed of the sampler");
  cmd->add_option("--top-k", o.top_k, "Keep the k most likely tokens (0 = off)")
      ->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--top-p", o.top_p, "Nucleus sampling mass (1 = off)")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--min-p", o.min_p, "Drop tokens below min-p times the top probability (0 = off)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--repeat-penalty", o.repetition_penalty,
                  "Repetition penalty over the last 64 tokens (1 = off)")
      ->check(CLI::Range(0.01, 100.0));
  cmd->add_option("--frequency-penalty", o.frequency_penalty,
                  "Subtract this times each token's count in the last 64 tokens from its logit (0 = off)")
      ->check(CLI::Range(-2.0, 2.0));
  cmd->add_option("--presence-penalty", o.presence_penalty,
                  "Subtract this from the logit of every token in the last 64 tokens (0 = off)")
      ->check(CLI::Range(-2.0, 2.0));
}

std::unique_ptr<Model> LoadModel(const ModelOptions& options) {
  const bool is_default = options.model.empty();
  const std::string path = is_default ? Model::DefaultPath() : options.model;
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (is_default) {
      throw Error("the default model is not at " + path +
                  ": run `bash scripts/setup.sh` (it downloads SmolLM2-135M-Instruct) or pass --model PATH");
    }
    throw Error("model file '" + path + "' does not exist");
  }
  std::unique_ptr<Model> model = Model::Load(path);
  if (!options.chat_template_file.empty()) {
    std::ifstream f(options.chat_template_file, std::ios::binary);
    if (!f.is_open()) throw Error("--chat-template-file: cannot read '" + options.chat_template_file + "'");
    std::ostringstream text;
    text << f.rdbuf();
    try {
      model->SetChatTemplate(text.str());
    } catch (const Error& e) {
      throw Error("--chat-template-file '" + options.chat_template_file + "': " + e.what());
    }
  }
  std::vector<ControlVectorFile> vectors;
  for (const std::string& f : options.control_vectors) vectors.push_back({f, 1.0f});
  const std::vector<std::string>& scaled = options.control_vectors_scaled;
  for (size_t i = 0; i + 1 < scaled.size(); i += 2) {
    char* end = nullptr;
    const float scale = std::strtof(scaled[i + 1].c_str(), &end);
    if (end == scaled[i + 1].c_str() || *end != '\0' || !std::isfinite(scale))
      throw Error("--control-vector-scaled " + scaled[i] + " " + scaled[i + 1] +
                  ": the scale is not a number");
    vectors.push_back({scaled[i], scale});
  }
  if (!vectors.empty()) {
    const std::vector<int>& range = options.control_vector_layers;
    model->SetControlVector(LoadControlVectors(vectors, model->config(), range.empty() ? -1 : range[0],
                                               range.empty() ? -1 : range[1]));
  }
  return model;
}

void AddControlVectorOptions(CLI::App* cmd, ModelOptions& options) {
  cmd->add_option("--control-vector", options.control_vectors,
                  "Add a control vector (llama.cpp's GGUF of direction.N tensors, as repeng or "
                  "llama-cvector-generator write them) to the blocks' outputs (repeatable: they add up)")
      ->allow_extra_args(false)
      ->check(CLI::ExistingFile);
  cmd->add_option("--control-vector-scaled", options.control_vectors_scaled,
                  "The same, times SCALE: --control-vector-scaled FILE SCALE (repeatable)")
      ->type_size(2)
      ->allow_extra_args(false);
  cmd->add_option("--control-vector-layer-range", options.control_vector_layers,
                  "Apply control vectors to blocks START to END only (inclusive)")
      ->expected(2)
      ->allow_extra_args(false);
}

void AddChatTemplateOption(CLI::App* cmd, ModelOptions& options) {
  cmd->add_option(
      "--chat-template-file", options.chat_template_file,
      "A Jinja chat template to use instead of the model's own (llama.cpp's option; e.g. a template "
      "that describes tools)");
}

std::vector<int32_t> TextTokens(const Model& model, const std::string& text) {
  const std::vector<int32_t> tokens = model.tokenizer().EncodePrompt(text);
  if (static_cast<int64_t>(tokens.size()) > model.config().context_length) {
    throw Error("the text has " + std::to_string(tokens.size()) +
                " tokens, more than the model's context of " + std::to_string(model.config().context_length));
  }
  return tokens;
}

std::unique_ptr<Model> LoadDraftModel(const std::string& path, int threads) {
  if (path.empty()) return nullptr;
  ModelOptions options;
  options.model = path;
  options.threads = threads;
  return LoadModel(options);
}

}  // namespace attn::cli
