// `attn inspect PROMPT`: runs a model on a prompt (optionally generating a continuation), scores
// every head on the induction probe, captures every head's attention pattern on the text and
// writes DIR/report.html (the interactive viewer, self-contained), DIR/heads.json and PNG
// heatmaps (DIR/heatmaps/), then prints the strongest heads of each role and the report's path.

#include "inspect/inspect.h"

#include <png.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "attn/commands.h"
#include "attn/error.h"
#include "attn/generate.h"
#include "attn/heads.h"
#include "attn/lens.h"
#include "attn/model_options.h"
#include "inspect/head_report.h"
#include "inspect/report_page.h"

namespace attn::cli {
namespace {

// A prompt with repeated phrases, so previous-token and induction heads have something to do.
constexpr const char* kDefaultPrompt =
    "The old lighthouse keeper, Tom Harrow, climbed the stairs every night. Tom Harrow lit the lamp, "
    "wiped the glass and watched the sea. One stormy night a small boat came close to the rocks, and "
    "Tom Harrow";
using report::kMaxInspectTokens;

struct InspectArgs {
  ModelOptions model;
  std::string prompt = kDefaultPrompt;
  std::string out = "attn-report";
  int generate = 0;
  ProbeOptions probe;
  bool all_heatmaps = false;
  bool lens = true;  // --no-lens leaves the logit lens out
};

// Blues, light to dark, for weights in [0, 1] (the square root spreads the small weights out).
void WeightColor(float w, uint8_t* rgb) {
  static const float kStops[5][3] = {
      {247, 251, 255}, {198, 219, 239}, {107, 174, 214}, {33, 113, 181}, {8, 48, 107}};
  const float x = std::sqrt(std::clamp(w, 0.0f, 1.0f)) * 4.0f;
  const int i = std::min(3, static_cast<int>(x));
  const float t = x - static_cast<float>(i);
  for (int c = 0; c < 3; ++c)
    rgb[c] = static_cast<uint8_t>(kStops[i][c] + (kStops[i + 1][c] - kStops[i][c]) * t);
}

void WritePng(const std::string& path, int width, int height, const std::vector<uint8_t>& rgb) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = PNG_FORMAT_RGB;
  if (!png_image_write_to_file(&image, path.c_str(), 0, rgb.data(), 0, nullptr)) {
    throw Error("inspect: cannot write " + path + ": " + image.message);
  }
}

// Max-pools an n x n causal pattern (row-major) into a size x size image at (x0, y0) of `rgb`
// (row stride `stride` pixels).
void DrawPattern(const float* a, int64_t n, int size, std::vector<uint8_t>& rgb, int stride, int x0, int y0) {
  for (int y = 0; y < size; ++y) {
    const int64_t r0 = y * n / size, r1 = std::max(r0 + 1, (y + 1) * n / size);
    for (int x = 0; x < size; ++x) {
      const int64_t c0 = x * n / size, c1 = std::max(c0 + 1, (x + 1) * n / size);
      float w = 0.0f;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < std::min(c1, r + 1); ++c) w = std::max(w, a[r * n + c]);
      WeightColor(w, &rgb[(static_cast<size_t>(y0 + y) * stride + x0 + x) * 3]);
    }
  }
}

void MakeDirectory(const std::string& path) {
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    throw Error("inspect: cannot create the folder '" + path + "': " + std::strerror(errno));
  }
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  if (!f) throw Error("inspect: cannot write " + path);
}

void RunInspect(const InspectArgs& args) {
  std::unique_ptr<Model> model = LoadModel(args.model);
  const ModelConfig& c = model->config();
  const Tokenizer& tok = model->tokenizer();
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();

  // The text: BOS + prompt, plus a greedy continuation when asked.
  std::vector<int32_t> tokens = tok.EncodePrompt(args.prompt);
  const int64_t n_prompt = static_cast<int64_t>(tokens.size());
  if (n_prompt + args.generate > std::min(kMaxInspectTokens, c.context_length)) {
    throw Error("inspect: " + std::to_string(n_prompt) + " prompt tokens + " + std::to_string(args.generate) +
                " generated exceed the " + std::to_string(std::min(kMaxInspectTokens, c.context_length)) +
                " tokens a report can show (use a shorter prompt)");
  }
  std::printf("%s", args.prompt.c_str());
  if (args.generate > 0) {
    GenerateOptions g;
    g.max_tokens = args.generate;
    g.threads = args.model.threads;
    g.kv_dtype = DType::kF32;  // the report's pass uses the exact cache; so does its text
    const GenerateResult r = GenerateFromTokens(*model, tokens, g, [](const std::string& piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    });
    tokens.insert(tokens.end(), r.tokens.begin(), r.tokens.end());
  }
  std::printf("\n\n");

  MakeDirectory(args.out);
  MakeDirectory(args.out + "/heatmaps");
  report::InspectOptions o;
  o.probe = args.probe;
  o.probe.threads = args.model.threads;
  if (o.probe.length == 0) o.probe.length = report::DefaultProbeLength(c);
  o.scores = ProbeHeads(*model, o.probe);
  o.threads = args.model.threads;
  o.lens = args.lens;
  o.prompt = args.prompt;
  o.n_prompt = n_prompt;
  // PNG heatmaps: every head's thumbnail in one grid, and full-size ones for every head
  // (--all-heatmaps) or for the strongest two of each role.
  const int64_t H = c.n_heads;
  constexpr int kThumb = 64, kGap = 4;
  const int grid_w = static_cast<int>(H) * (kThumb + kGap) + kGap;
  const int grid_h = static_cast<int>(c.n_layers) * (kThumb + kGap) + kGap;
  std::vector<uint8_t> grid(static_cast<size_t>(grid_w) * grid_h * 3, 255);
  std::vector<bool> full_png(static_cast<size_t>(c.n_layers * H), args.all_heatmaps);
  for (const std::string& role : RoleNames()) {
    std::vector<const HeadScores*> heads;
    for (const HeadScores& s : o.scores)
      if (s.role == role && role != "diffuse") heads.push_back(&s);
    std::sort(heads.begin(), heads.end(), [&](const HeadScores* a, const HeadScores* b) {
      return report::RoleStrength(*a, role) > report::RoleStrength(*b, role);
    });
    for (size_t i = 0; i < heads.size() && i < 2; ++i) full_png[heads[i]->layer * H + heads[i]->head] = true;
  }
  std::vector<std::string> png_files;
  o.on_pattern = [&](int64_t layer, int64_t h, const float* a, int64_t n) {
    DrawPattern(a, n, kThumb, grid, grid_w, kGap + static_cast<int>(h) * (kThumb + kGap),
                kGap + static_cast<int>(layer) * (kThumb + kGap));
    if (!full_png[static_cast<size_t>(layer * H + h)]) return;
    // At least 512 pixels: small texts get square cells of whole pixels.
    const int size = static_cast<int>(n <= 512 ? n * std::max<int64_t>(1, 512 / n) : 512);
    std::vector<uint8_t> img(static_cast<size_t>(size) * size * 3);
    DrawPattern(a, n, size, img, size, 0, 0);
    const std::string file = "heatmaps/L" + std::to_string(layer) + "H" + std::to_string(h) + ".png";
    WritePng(args.out + "/" + file, size, size, img);
    png_files.push_back(file);
  };
  report::InspectOutput r = report::Inspect(*model, tokens, o);
  WritePng(args.out + "/heatmaps/grid.png", grid_w, grid_h, grid);
  png_files.push_back("heatmaps/grid.png");
  r.heads_json["heatmaps"] = png_files;
  r.data["heatmaps"] = png_files;
  const auto dump = [](const nlohmann::json& x, int indent) {
    return x.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  WriteFile(args.out + "/heads.json", dump(r.heads_json, 1) + "\n");
  const std::string report = args.out + "/report.html";
  WriteFile(report, report::RenderReport(dump(r.data, -1)));
  if (args.lens && !r.lens)
    std::printf("(the logit lens is left out of reports over %lld tokens)\n",
                static_cast<long long>(report::kMaxLensTokens));

  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("Strongest heads of each role (score; %s):\n", r.probe.c_str());
  report::PrintStrongestHeads(r.scores, 3, stdout);
  std::printf("\n%lld tokens, %lld heads inspected in %.1f s.\nReport: %s (open it in a browser)\n",
              static_cast<long long>(tokens.size()), static_cast<long long>(c.n_layers * c.n_heads), secs,
              report.c_str());
}

}  // namespace

void AddInspectCommand(CLI::App& app) {
  auto args = std::make_shared<InspectArgs>();
  auto* cmd = app.add_subcommand(
      "inspect", "Run a model on a prompt and write an interactive report of what every head attends to");
  AddModelOptions(cmd, args->model);
  cmd->add_option("-o,--out", args->out,
                  "Folder for report.html, heads.json and heatmaps/ (default: attn-report)");
  cmd->add_option("-n,--generate", args->generate, "Also generate this many tokens (greedy) and show them")
      ->check(CLI::Range(0, 4096));
  args->probe.length = 0;  // the default fits the model's context
  cmd->add_option(
         "--probe-length", args->probe.length,
         "Random tokens per copy in the induction probe (default: 64, fewer when the context is short)")
      ->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--sequences", args->probe.sequences, "Probe sequences averaged")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_flag("--all-heatmaps", args->all_heatmaps,
                "Write a PNG for every head (default: the grid and the two strongest heads of each role)");
  cmd->add_flag(
      "!--no-lens", args->lens,
      "Leave out the logit lens (each layer's prediction at every position; on by default up to 1,024 "
      "tokens)");
  cmd->add_option("prompt", args->prompt,
                  "The text to inspect (default: a short passage with repeated names)");
  cmd->callback([args] { RunInspect(*args); });
}

}  // namespace attn::cli
