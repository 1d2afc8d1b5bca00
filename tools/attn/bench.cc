// `attn bench`: prompt processing and generation speed of a model, llama-bench style
// (pp = one batch of N prompt tokens, tg = N tokens generated one at a time), median of repeats.
// With --parallel P, P sequences go through every pass together (Model::ForwardBatch), as a
// server's slots do: each processes the prompt, then each step generates one token for each of
// them; tokens/s count all P sequences' tokens.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "attn/attention.h"
#include "attn/commands.h"
#include "attn/error.h"
#include "attn/heads.h"
#include "attn/model_options.h"

namespace attn::cli {
namespace {

struct BenchArgs {
  ModelOptions model;
  int prompt_tokens = 512;
  int gen_tokens = 128;
  int repeats = 3;
  int parallel = 1;  // sequences evaluated and generated together (llama-batched-bench's -npl)
  bool json = false;
  bool head_stats = false;  // also time prompt processing with per-head statistics
  DType kv_dtype = DType::kF16;
  std::string simd_target;  // empty = the best this CPU runs
};

// A fixed English text, cycled to the requested length so every run sees the same tokens.
const char* kBenchText =
    "Attention lets every position of a sequence look at every other position and decide how much "
    "of each one to take. The queries ask, the keys answer, and the values carry what is passed on. "
    "Scores are scaled dot products, softmax turns them into weights, and the output is the weighted "
    "sum of the values. Many heads do this in parallel, each free to learn its own pattern: some "
    "look at the previous word, some at the first token, some copy what followed an earlier match. ";

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void RunBench(const BenchArgs& args) {
  SetSimdTarget(args.simd_target);
  std::unique_ptr<Model> model = LoadModel(args.model);
  const ModelConfig& c = model->config();
  if (args.prompt_tokens + args.gen_tokens > c.context_length) {
    throw Error("bench: " + std::to_string(args.prompt_tokens) + " + " + std::to_string(args.gen_tokens) +
                " tokens exceed the model's context of " + std::to_string(c.context_length));
  }
  std::vector<int32_t> text = model->tokenizer().Encode(kBenchText, false);
  std::vector<int32_t> prompt;
  while (static_cast<int>(prompt.size()) < args.prompt_tokens)
    prompt.push_back(text[prompt.size() % text.size()]);

  const int P = args.parallel;
  std::vector<std::unique_ptr<Session>> sessions;
  for (int i = 0; i < P; ++i)
    sessions.push_back(
        std::make_unique<Session>(*model, args.prompt_tokens + args.gen_tokens, args.kv_dtype));
  std::vector<float> logits(static_cast<size_t>(c.vocab_size) * P);
  std::vector<Model::BatchItem> items(static_cast<size_t>(P));
  std::vector<int32_t> next(static_cast<size_t>(P));
  ForwardOptions fo;
  fo.threads = args.model.threads;
  std::vector<double> pp, tg, pp_stats;
  HeadStats stats(c);
  using Clock = std::chrono::steady_clock;
  for (int rep = 0; rep < args.repeats; ++rep) {
    for (int i = 0; i < P; ++i) {
      sessions[static_cast<size_t>(i)]->Reset();
      items[static_cast<size_t>(i)] = {sessions[static_cast<size_t>(i)].get(), prompt};
    }
    auto t0 = Clock::now();
    model->ForwardBatch(items, logits.data(), fo);
    pp.push_back(static_cast<double>(args.prompt_tokens) * P /
                 std::chrono::duration<double>(Clock::now() - t0).count());
    if (args.head_stats) {
      // The same prompt with the head statistics accumulated (entropy in the kernel, LSE masses).
      Session stats_session(*model, args.prompt_tokens, args.kv_dtype);
      ForwardOptions o;
      o.threads = args.model.threads;
      o.stats = &stats;
      auto ts = Clock::now();
      model->Forward(stats_session, prompt, logits.data(), o);
      pp_stats.push_back(args.prompt_tokens / std::chrono::duration<double>(Clock::now() - ts).count());
      if (!args.json)
        std::fprintf(stderr, "  run %d: pp with head statistics %.1f tokens/s\n", rep + 1, pp_stats.back());
    }
    // Generation: feed each sequence's argmax back, one token per sequence and forward pass.
    auto t1 = Clock::now();
    for (int i = 0; i < args.gen_tokens; ++i) {
      for (size_t b = 0; b < next.size(); ++b) {
        const auto row = logits.begin() + static_cast<std::ptrdiff_t>(b * c.vocab_size);
        next[b] = static_cast<int32_t>(std::max_element(row, row + c.vocab_size) - row);
        items[b].tokens = std::span<const int32_t>(&next[b], 1);
      }
      model->ForwardBatch(items, logits.data(), fo);
    }
    tg.push_back(static_cast<double>(args.gen_tokens) * P /
                 std::chrono::duration<double>(Clock::now() - t1).count());
    if (!args.json)
      std::fprintf(stderr, "  run %d: pp %.1f tokens/s, tg %.1f tokens/s\n", rep + 1, pp.back(), tg.back());
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  const double peak_mb = ru.ru_maxrss / 1024.0;
  if (args.json) {
    nlohmann::json j = {{"model", model->path()},
                        {"threads", args.model.threads},
                        {"prompt_tokens", args.prompt_tokens},
                        {"parallel", P},
                        {"kv_type", DTypeName(args.kv_dtype)},
                        {"simd_target", CurrentSimdTarget()},
                        {"prompt_ids", prompt},
                        {"gen_tokens", args.gen_tokens},
                        {"repeats", args.repeats},
                        {"pp_tokens_per_s", pp},
                        {"tg_tokens_per_s", tg},
                        {"pp_median", Median(pp)},
                        {"tg_median", Median(tg)},
                        {"peak_rss_mb", peak_mb}};
    if (args.head_stats) {
      j["pp_stats_tokens_per_s"] = pp_stats;
      j["pp_stats_median"] = Median(pp_stats);
    }
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  const std::string seqs = P > 1 ? std::to_string(P) + " sequences, " : "";
  std::printf(
      "%s\n  pp%d: %.1f tokens/s   tg%d: %.1f tokens/s   (%smedian of %d; %s KV cache; %s; peak RSS %.0f "
      "MB)\n",
      model->path().c_str(), args.prompt_tokens, Median(pp), args.gen_tokens, Median(tg), seqs.c_str(),
      args.repeats, DTypeName(args.kv_dtype), CurrentSimdTarget().c_str(), peak_mb);
  if (args.head_stats) {
    std::printf("  pp%d with head statistics: %.1f tokens/s (%.1f%% slower than plain)\n", args.prompt_tokens,
                Median(pp_stats), 100.0 * (Median(pp) / Median(pp_stats) - 1.0));
  }
}

}  // namespace

void AddBenchCommand(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "Measure prompt processing and generation speed of a model");
  AddModelOptions(cmd, args->model);
  AddKvTypeOption(cmd, args->kv_dtype);
  cmd->add_option("-p,--prompt-tokens", args->prompt_tokens, "Prompt tokens processed in one batch")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("-n,--gen-tokens", args->gen_tokens, "Tokens generated one at a time")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("-r,--repeats", args->repeats, "Repeats (the median is reported)")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--parallel", args->parallel,
                  "Sequences run together in every pass (a server's parallel slots); tokens/s count them all")
      ->check(CLI::Range(1, 256));
  cmd->add_flag("--json", args->json, "Print one JSON object");
  cmd->add_flag("--head-stats", args->head_stats,
                "Also time prompt processing with per-head statistics (attn heads' scores)");
  cmd->add_option(
      "--simd-target", args->simd_target,
      "Run on this SIMD target instead of the best one (AVX3_BF16, AVX3_VNNI, AVX3, AVX2, ...: what an "
      "older CPU would get)");
  cmd->callback([args] { RunBench(*args); });
}

}  // namespace attn::cli
