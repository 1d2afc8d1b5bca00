// `attn perplexity`: a text's perplexity under a model, chunk by chunk as llama-perplexity measures
// it, and optionally the KL divergence from a base model (another file, or the same model with
// another KV cache type).
#include "attn/perplexity.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "attn/commands.h"
#include "attn/error.h"
#include "attn/model_options.h"
#include "core/read_all.h"

namespace attn::cli {
namespace {

struct PerplexityArgs {
  ModelOptions model;
  PerplexityOptions ppl;
  std::string text;
  std::string file;       // -f: the text from a file ("-": standard input)
  std::string base_path;  // --base: the base model's file
  bool compare = false;   // --base or --base-kv-type given
  bool json = false;
};

nlohmann::json ResultJson(const PerplexityResult& r, const Model& model, const PerplexityArgs& args) {
  nlohmann::json j = {{"model", model.path()},
                      {"kv_type", DTypeName(args.ppl.kv_dtype)},
                      {"tokens", r.n_tokens},
                      {"context", r.context},
                      {"chunks", r.n_chunks},
                      {"scored_tokens", r.n_scored},
                      {"nll", r.nll},
                      {"ppl", r.ppl},
                      {"ppl_stderr", r.ppl_stderr},
                      {"chunk_ppl", r.chunk_ppl},
                      {"seconds", r.seconds}};
  if (r.has_kl) {
    const KlDivergence& kl = r.kl;
    j["base"] = {{"model", args.base_path.empty() ? model.path() : args.base_path},
                 {"kv_type", DTypeName(args.ppl.base_kv_dtype)},
                 {"ppl", kl.base_ppl},
                 {"ppl_stderr", kl.base_ppl_stderr}};
    j["kl_divergence"] = {{"mean", kl.mean},
                          {"stderr", kl.stderr_mean},
                          {"median", kl.median},
                          {"p99", kl.p99},
                          {"max", kl.max}};
    j["top1_agreement"] = kl.top1_agreement;
    j["delta_p"] = {{"mean", kl.delta_p_mean}, {"rms", kl.delta_p_rms}};
  }
  return j;
}

void RunPerplexity(PerplexityArgs& args) {
  if (args.text.empty() && args.file.empty()) {
    throw Error(
        "perplexity: give the text, or -f FILE (- for standard input); e.g. -f ~/.cache/attn/corpus/kjv.txt "
        "--chunks 20");
  }
  const std::string text = args.file.empty() ? args.text : ReadFileOrStdin(args.file, "perplexity");
  std::unique_ptr<Model> model = LoadModel(args.model);
  std::unique_ptr<Model> base;
  if (!args.base_path.empty()) {
    base = Model::Load(args.base_path);
  }
  if (args.compare) args.ppl.base = base ? base.get() : model.get();
  args.ppl.threads = args.model.threads;

  const std::vector<int32_t> tokens = PerplexityTokens(model->tokenizer(), text);
  if (base && PerplexityTokens(base->tokenizer(), text) != tokens) {
    throw Error("perplexity: the base model '" + args.base_path +
                "' tokenizes the text differently from the model (their vocabularies differ)");
  }
  const PerplexityResult r =
      Perplexity(*model, tokens, args.ppl, [&args](int64_t chunk, const PerplexityResult& so_far) {
        if (args.json) return;
        if (chunk == 0) {  // the settings as Perplexity resolved them (the default context)
          std::fprintf(
              stderr,
              "perplexity: %lld tokens, %lld chunks of %lld (the last %lld of each scored), KV cache %s\n",
              static_cast<long long>(so_far.n_tokens), static_cast<long long>(so_far.n_chunks),
              static_cast<long long>(so_far.context),
              static_cast<long long>(so_far.context - 1 - so_far.context / 2), DTypeName(args.ppl.kv_dtype));
        }
        std::printf("%s[%lld]%.4f", chunk == 0 ? "" : ",", static_cast<long long>(chunk + 1),
                    so_far.chunk_ppl.back());
        std::fflush(stdout);
      });
  if (args.json) {
    std::printf("%s\n", ResultJson(r, *model, args).dump().c_str());
    return;
  }
  std::printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_stderr);
  if (r.has_kl) {
    const KlDivergence& kl = r.kl;
    std::printf("base (%s, KV cache %s): PPL = %.4f +/- %.5f\n",
                args.base_path.empty() ? "the same model" : args.base_path.c_str(),
                DTypeName(args.ppl.base_kv_dtype), kl.base_ppl, kl.base_ppl_stderr);
    std::printf("KL divergence from the base: mean %.6f +/- %.6f, median %.6f, 99%% %.6f, max %.6f\n",
                kl.mean, kl.stderr_mean, kl.median, kl.p99, kl.max);
    std::printf("same top-1 token: %.3f%%; p(next) - base p(next): mean %+.4f%%, RMS %.4f%%\n",
                100.0 * kl.top1_agreement, 100.0 * kl.delta_p_mean, 100.0 * kl.delta_p_rms);
  }
  std::fflush(stdout);
  std::fprintf(stderr, "%lld tokens evaluated in %.1f s (%.1f tokens/s%s)\n",
               static_cast<long long>(r.n_chunks * r.context), r.seconds,
               static_cast<double>(r.n_chunks * r.context) / r.seconds, r.has_kl ? ", both models" : "");
}

}  // namespace

void AddPerplexityCommand(CLI::App& app) {
  auto args = std::make_shared<PerplexityArgs>();
  auto* cmd = app.add_subcommand(
      "perplexity",
      "Perplexity of a text, chunk by chunk as llama-perplexity measures it; with --base, the KL divergence "
      "from a base model");
  AddModelOptions(cmd, args->model);
  AddControlVectorOptions(cmd, args->model);
  AddKvTypeOption(cmd, args->ppl.kv_dtype);
  cmd->add_option("-c,--context", args->ppl.context,
                  "Tokens per chunk; the second half of each chunk is scored (default 512, or the model's "
                  "context when shorter)");
  cmd->add_option("--chunks", args->ppl.max_chunks, "Most chunks to evaluate (default: every whole chunk)")
      ->check(CLI::PositiveNumber);
  auto* base = cmd->add_option("--base", args->base_path,
                               "Also compare with this model (same vocabulary): its perplexity, the KL "
                               "divergence of the model's next-token distributions from it, top-1 agreement");
  AddKvTypeOption(cmd, args->ppl.base_kv_dtype, "--base-kv-type",
                  "The base's KV cache storage (default f32; without --base the base is the model itself, so "
                  "--kv-type q8_0 --base-kv-type f32 measures what the q8_0 cache costs)");
  cmd->add_flag("--json", args->json, "Print one JSON object instead of the running estimate");
  auto* positional = cmd->add_option("text", args->text, "The text to score");
  cmd->add_option("-f,--file", args->file, "Read the text from this file (- = standard input)")
      ->excludes(positional);
  cmd->callback([args, cmd, base] {
    args->compare = !base->empty() || cmd->count("--base-kv-type") > 0;
    RunPerplexity(*args);
  });
}

}  // namespace attn::cli
