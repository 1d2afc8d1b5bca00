// `attn heads` (every head's detector scores and role, from the induction probe or a text) and
// `attn ablate` (the loss change when chosen heads are zeroed or mean-ablated).
#include "attn/heads.h"

#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "attn/commands.h"
#include "attn/error.h"
#include "attn/model_options.h"
#include "inspect/head_report.h"

namespace attn::cli {
namespace {

struct HeadsArgs {
  ModelOptions model;
  ProbeOptions probe;
  std::string text;  // score on this text instead of the probe
  bool json = false;
};

void RunHeads(const HeadsArgs& args) {
  std::unique_ptr<Model> model = LoadModel(args.model);
  const ModelConfig& c = model->config();
  ProbeOptions probe = args.probe;
  probe.threads = args.model.threads;
  if (probe.length == 0) probe.length = report::DefaultProbeLength(model->config());
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<HeadScores> scores;
  std::string measured_on;
  if (args.text.empty()) {
    scores = ProbeHeads(*model, probe);
    measured_on = DescribeProbe(probe);
  } else {
    const std::vector<int32_t> tokens = TextTokens(*model, args.text);
    scores = ScoreHeads(*model, tokens, args.model.threads);
    measured_on = "the given text (" + std::to_string(tokens.size()) + " tokens)";
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (args.json) {
    nlohmann::json j;
    j["model"] = model->path();
    j["layers"] = c.n_layers;
    j["heads"] = c.n_heads;
    j["kv_heads"] = c.n_kv_heads;
    j["measured_on"] = measured_on;
    j["heads_scores"] = report::HeadScoresJson(scores);
    std::printf("%s\n", j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return;
  }
  std::printf("%s: %lld layers x %lld heads (%lld KV heads), scored on %s in %.0f ms\n\n",
              model->path().c_str(), static_cast<long long>(c.n_layers), static_cast<long long>(c.n_heads),
              static_cast<long long>(c.n_kv_heads), measured_on.c_str(), ms);
  report::PrintHeadTable(scores, stdout);
  std::printf("\nStrongest heads of each role (score):\n");
  report::PrintStrongestHeads(scores, 5, stdout);
}

struct AblateArgs {
  ModelOptions model;
  std::string heads;
  std::string mode = "zero";
  std::string text;
};

void RunAblate(const AblateArgs& args) {
  std::unique_ptr<Model> model = LoadModel(args.model);
  const auto heads = report::ParseHeadList(args.heads);
  const AblationMode mode = args.mode == "mean" ? AblationMode::kMean : AblationMode::kZero;
  const std::vector<int32_t> tokens = TextTokens(*model, args.text);
  const AblationResult r = AblateHeads(*model, tokens, heads, mode, args.model.threads);
  std::printf("%s-ablating %s on %lld predictions: loss %.4f -> %.4f nats/token (%+.4f)\n", args.mode.c_str(),
              args.heads.c_str(), static_cast<long long>(r.tokens), r.loss, r.ablated_loss,
              r.ablated_loss - r.loss);
}

}  // namespace

void AddHeadsCommand(CLI::App& app) {
  auto args = std::make_shared<HeadsArgs>();
  auto* cmd = app.add_subcommand(
      "heads",
      "Score every attention head (previous-token, duplicate-token, induction, sink, entropy) and label it");
  AddModelOptions(cmd, args->model);
  cmd->add_flag("--json", args->json, "Print one JSON object instead of the table");
  args->probe.length = 0;  // the default fits the model's context
  cmd->add_option(
         "--probe-length", args->probe.length,
         "Random tokens per copy in the induction probe (default: 64, fewer when the context is short)")
      ->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--sequences", args->probe.sequences, "Probe sequences averaged")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--seed", args->probe.seed, "Seed of the probe's random tokens");
  cmd->add_option("--text", args->text, "Score the heads on this text instead of the probe");
  cmd->callback([args] { RunHeads(*args); });
}

void AddAblateCommand(CLI::App& app) {
  auto args = std::make_shared<AblateArgs>();
  auto* cmd =
      app.add_subcommand("ablate", "Loss change on a text when chosen heads are zero- or mean-ablated");
  AddModelOptions(cmd, args->model);
  cmd->add_option("--heads", args->heads, "Heads to ablate: LAYER.HEAD[,LAYER.HEAD...] (e.g. 5.3,7.1)")
      ->required();
  cmd->add_option("--mode", args->mode,
                  "zero (replace the head's output by 0) or mean (by its mean over the text)")
      ->check(CLI::IsMember({"zero", "mean"}));
  cmd->add_option("text", args->text, "The text to measure the loss on")->required();
  cmd->callback([args] { RunAblate(*args); });
}

}  // namespace attn::cli
