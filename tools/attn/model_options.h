// Options shared by the subcommands that run a model (generate, chat, bench, ...).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "attn/generate.h"
#include "attn/model.h"

namespace attn::cli {

struct ModelOptions {
  std::string model;  // empty = Model::DefaultPath()
  int threads = 0;
  std::string chat_template_file;  // --chat-template-file: replaces the file's chat template
  // --control-vector FILE, --control-vector-scaled FILE SCALE, --control-vector-layer-range A B.
  std::vector<std::string> control_vectors;
  std::vector<std::string> control_vectors_scaled;  // FILE, SCALE, FILE, SCALE, ...
  std::vector<int> control_vector_layers;           // START, END (empty: every block)
};

// Adds --model and --threads to a subcommand.
void AddModelOptions(CLI::App* cmd, ModelOptions& options);
// Adds --kv-type (f16, bf16, f32 or q8_0): how the KV cache stores keys and values; `name` and
// `what` give the option another name and its help another subject (e.g. --base-kv-type).
void AddKvTypeOption(CLI::App* cmd, DType& kv_dtype, const std::string& name = "--kv-type",
                     const std::string& what = "KV cache storage (default f16)");
// Adds the sampling options (--temperature, --seed, --top-k, --top-p, --min-p, --repeat-penalty).
void AddSamplingOptions(CLI::App* cmd, SamplerOptions& options);
// Adds --context-shift and --keep N (GenerateOptions::context_keep): go on past a full context.
void AddContextShiftOptions(CLI::App* cmd, int64_t& context_keep);
// Adds --chat-template-file FILE (llama.cpp's): a Jinja chat template used instead of the model's.
void AddChatTemplateOption(CLI::App* cmd, ModelOptions& options);
// Adds llama.cpp's control vector options (include/attn/steer.h): --control-vector FILE,
// --control-vector-scaled FILE SCALE (both repeatable) and --control-vector-layer-range START END.
void AddControlVectorOptions(CLI::App* cmd, ModelOptions& options);
// Loads the chosen model (with --chat-template-file's template and the control vectors); a missing default
// model gets a message saying how to fetch it.
std::unique_ptr<Model> LoadModel(const ModelOptions& options);
// The draft model of --model-draft (`path`; threads as the model's), or null when `path` is empty.
std::unique_ptr<Model> LoadDraftModel(const std::string& path, int threads);
// A text's tokens as a prompt (BOS where the model adds one); attn::Error when they do not fit the
// model's context.
std::vector<int32_t> TextTokens(const Model& model, const std::string& text);

}  // namespace attn::cli
