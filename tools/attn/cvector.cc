// `attn cvector`: a control vector from pairs of texts (include/attn/steer.h), written as the GGUF
// file llama.cpp's --control-vector and attn's read: at each block's output, the mean over the
// pairs of the residual stream at the last token of the positive text minus that of the negative.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "attn/commands.h"
#include "attn/error.h"
#include "attn/model_options.h"
#include "attn/steer.h"
#include "core/read_all.h"

namespace attn::cli {
namespace {

struct CvectorArgs {
  ModelOptions model;
  std::vector<std::string> positive, negative;  // --positive / --negative texts
  std::string positive_file, negative_file;     // one text per line
  std::string out;
};

// The non-empty lines of a file, with "\n" written as two characters read as a line break (as
// llama-cvector-generator's prompt files write multi-line prompts).
std::vector<std::string> Lines(const std::string& path, const char* what) {
  const std::string text = ReadFileOrStdin(path, what);
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t nl = text.find('\n', start), stop = nl == std::string::npos ? text.size() : nl;
    size_t end = stop;
    if (end > start && text[end - 1] == '\r') --end;
    std::string line;
    for (size_t i = start; i < end; ++i) {
      if (text[i] == '\\' && i + 1 < end && text[i + 1] == 'n') {
        line += '\n';
        ++i;
      } else {
        line += text[i];
      }
    }
    if (!line.empty()) out.push_back(std::move(line));
    start = stop + 1;
  }
  return out;
}

void RunCvector(const CvectorArgs& args) {
  std::vector<std::string> pos = args.positive, neg = args.negative;
  if (!args.positive_file.empty())
    for (std::string& l : Lines(args.positive_file, "--positive-file")) pos.push_back(std::move(l));
  if (!args.negative_file.empty())
    for (std::string& l : Lines(args.negative_file, "--negative-file")) neg.push_back(std::move(l));
  if (pos.empty() || pos.size() != neg.size())
    throw Error(std::to_string(pos.size()) + " positive and " + std::to_string(neg.size()) +
                " negative texts: give them in pairs (the same number of each, at least one)");
  const std::unique_ptr<Model> model = LoadModel(args.model);
  std::vector<std::vector<int32_t>> adds, subs;
  for (size_t i = 0; i < pos.size(); ++i) {
    adds.push_back(TextTokens(*model, pos[i]));
    subs.push_back(TextTokens(*model, neg[i]));
  }
  const std::vector<std::vector<float>> directions =
      ControlVectorFromPairs(*model, adds, subs, args.model.threads);
  SaveControlVector(args.out, directions, model->config().arch_name);
  std::printf("%zu pairs; directions for blocks 1 to %zu (|direction|:", pos.size(), directions.size() - 1);
  for (size_t l = 1; l < directions.size(); l += std::max<size_t>(1, directions.size() / 6)) {
    double norm = 0.0;
    for (float v : directions[l]) norm += static_cast<double>(v) * v;
    std::printf(" %zu: %.1f", l, std::sqrt(norm));
  }
  std::printf(")\nwrote %s: use it with --control-vector-scaled %s SCALE (attn or llama.cpp)\n",
              args.out.c_str(), args.out.c_str());
}

}  // namespace

void AddCvectorCommand(CLI::App& app) {
  auto args = std::make_shared<CvectorArgs>();
  auto* cmd = app.add_subcommand("cvector",
                                 "Make a control vector from pairs of texts (the mean difference of their "
                                 "residual streams at every block's output), as llama.cpp reads them");
  AddModelOptions(cmd, args->model);
  cmd->add_option("--positive", args->positive, "A text to steer toward (repeatable; pairs with --negative)")
      ->allow_extra_args(false);
  cmd->add_option("--negative", args->negative, "A text to steer away from (repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--positive-file", args->positive_file, "Texts to steer toward, one per line");
  cmd->add_option("--negative-file", args->negative_file, "Texts to steer away from, one per line");
  cmd->add_option("-o,--out", args->out, "The control vector file to write (GGUF)")->required();
  cmd->callback([args] { RunCvector(*args); });
}

}  // namespace attn::cli
