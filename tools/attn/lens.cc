// `attn lens TEXT`: the logit lens (include/attn/lens.h) as a table: for the last positions of the
// text, the token each block's residual stream would predict next, read through the model's own
// final norm and unembedding, with its probability; or all of it as JSON.
#include "attn/lens.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "attn/commands.h"
#include "attn/model_options.h"

namespace attn::cli {
namespace {

struct LensArgs {
  ModelOptions model;
  std::string text;
  int positions = 8;  // table: the last N positions
  int every = 1;      // table: every K-th layer (and the last)
  int top_k = 5;      // JSON: alternatives per layer and position
  bool json = false;
};

// A token's text for a table cell: control characters escaped, at most `width` characters.
std::string Cell(const std::string& piece, size_t width) {
  std::string out;
  size_t chars = 0;
  for (size_t i = 0; i < piece.size() && chars < width; ++i) {
    const unsigned char ch = static_cast<unsigned char>(piece[i]);
    if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (ch < 0x20 || ch == 0x7f) {
      out += '?';
    } else {
      out += piece[i];
    }
    if ((ch & 0xC0) != 0x80) ++chars;  // UTF-8 lead bytes count
  }
  // A cut inside a character: drop its leading bytes.
  while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80) out.pop_back();
  if (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0xC0) out.pop_back();
  return out;
}

// Pads s to `width` characters (UTF-8).
std::string Pad(const std::string& s, size_t width) {
  size_t chars = 0;
  for (const char c : s) chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return s + std::string(width > chars ? width - chars : 0, ' ');
}

void PrintLine(std::string line) {
  while (!line.empty() && line.back() == ' ') line.pop_back();
  std::printf("%s\n", line.c_str());
}

void RunLens(const LensArgs& args) {
  std::unique_ptr<Model> model = LoadModel(args.model);
  const Tokenizer& tok = model->tokenizer();
  const std::vector<int32_t> tokens = TextTokens(*model, args.text);
  LogitLensOptions o;
  o.top_k = args.json ? std::min<int>(args.top_k, static_cast<int>(model->config().vocab_size)) : 1;
  o.threads = args.model.threads;
  const LogitLens lens = ComputeLogitLens(*model, tokens, o);
  const int64_t n = lens.tokens, k = lens.top_k;

  if (args.json) {
    nlohmann::json j;
    j["model"] = model->path();
    j["tokens"] = tokens;
    nlohmann::json texts = nlohmann::json::array();
    for (int32_t t : tokens) texts.push_back(tok.TokenToPiece(t));
    j["token_texts"] = texts;
    nlohmann::json layers = nlohmann::json::array();
    for (int64_t l = 0; l < lens.layers; ++l) {
      nlohmann::json top = nlohmann::json::array();
      for (int64_t t = 0; t < n; ++t) {
        nlohmann::json row = nlohmann::json::array();
        for (int64_t i = 0; i < k; ++i) {
          const size_t at = static_cast<size_t>((l * n + t) * k + i);
          row.push_back({{"id", lens.top_ids[at]},
                         {"text", tok.TokenToPiece(lens.top_ids[at])},
                         {"logprob", lens.top_logprobs[at]}});
        }
        top.push_back(std::move(row));
      }
      const auto first = static_cast<std::ptrdiff_t>(l * (n - 1));
      layers.push_back({{"layer", l},
                        {"top", std::move(top)},
                        {"next_logprob", std::vector<float>(lens.next_logprob.begin() + first,
                                                            lens.next_logprob.begin() + first + (n - 1))},
                        {"next_rank", std::vector<int32_t>(lens.next_rank.begin() + first,
                                                           lens.next_rank.begin() + first + (n - 1))}});
    }
    j["layers"] = std::move(layers);
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return;
  }

  constexpr size_t kWidth = 16, kToken = 9;
  const int64_t shown = std::min<int64_t>(args.positions, n), first = n - shown;
  std::printf(
      "Logit lens on %lld tokens: after each block, the token the residual stream predicts next\n"
      "(the model's own final norm and unembedding) and its probability; the last %lld positions.\n\n",
      static_cast<long long>(n), static_cast<long long>(shown));
  std::string line = Pad("input", 8);
  for (int64_t t = first; t < n; ++t)
    line += Pad("'" + Cell(tok.TokenToPiece(tokens[static_cast<size_t>(t)]), 12) + "'", kWidth);
  PrintLine(line);
  for (int64_t l = 0; l < lens.layers; ++l) {
    if (l % args.every != 0 && l != lens.layers - 1) continue;
    line = Pad(l == 0 ? "embed" : std::to_string(l), 8);
    for (int64_t t = first; t < n; ++t) {
      const size_t at = static_cast<size_t>(l * n + t);
      char p[16];
      std::snprintf(p, sizeof p, " %.2f", std::exp(lens.top_logprobs[at]));
      line += Pad("'" + Cell(tok.TokenToPiece(lens.top_ids[at]), kToken) + "'" + p, kWidth);
    }
    PrintLine(line);
  }
  line = Pad("next", 8);
  for (int64_t t = first; t < n; ++t)
    line += Pad(t + 1 < n ? "'" + Cell(tok.TokenToPiece(tokens[static_cast<size_t>(t + 1)]), 12) + "'" : "",
                kWidth);
  PrintLine(line);
  // Where the text's own next token becomes the lens's top prediction and stays so to the output.
  int64_t total = 0;
  std::vector<int64_t> depth;
  for (int64_t t = first; t + 1 < n; ++t, ++total) {
    int64_t from = lens.layers;
    while (from > 0 && lens.next_rank[static_cast<size_t>((from - 1) * (n - 1) + t)] == 0) --from;
    if (from < lens.layers) depth.push_back(from);
  }
  if (total > 0) {
    std::printf("\n%lld of the %lld shown next tokens are the top prediction from some layer on",
                static_cast<long long>(depth.size()), static_cast<long long>(total));
    if (!depth.empty()) {
      std::sort(depth.begin(), depth.end());
      std::printf(" (median: from layer %lld of %lld)", static_cast<long long>(depth[depth.size() / 2]),
                  static_cast<long long>(lens.layers - 1));
    }
    std::printf(".\n");
  }
}

}  // namespace

void AddLensCommand(CLI::App& app) {
  auto args = std::make_shared<LensArgs>();
  auto* cmd = app.add_subcommand(
      "lens",
      "The logit lens: what each layer's residual stream predicts next, through the model's own head");
  AddModelOptions(cmd, args->model);
  cmd->add_option("--positions", args->positions, "Table: the last N positions of the text (default 8)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--every", args->every, "Table: every K-th layer, and the last (default 1: all)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_flag(
      "--json", args->json,
      "Print one JSON object: every layer's top-k tokens at every position, and the log-probability and "
      "rank of the text's next token");
  cmd->add_option("-k,--top-k", args->top_k, "JSON: most likely tokens per layer and position (default 5)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("text", args->text, "The text to read")->required();
  cmd->callback([args] { RunLens(*args); });
}

}  // namespace attn::cli
