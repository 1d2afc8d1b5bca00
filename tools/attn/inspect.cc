// `attn inspect PROMPT`: runs a model on a prompt (optionally generating a continuation), scores
// every head on the induction probe, captures every head's attention pattern on the text and
// writes DIR/report.html (the interactive viewer, self-contained), DIR/heads.json and PNG
// heatmaps (DIR/heatmaps/), then prints the strongest heads of each role and the report's path.
#include "attn/inspect.h"

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
#include "attn/head_report.h"
#include "attn/heads.h"
#include "attn/lens.h"
#include "attn/model_options.h"
#include "attn/report.h"

namespace attn::cli {
namespace {

// A prompt with repeated phrases, so previous-token and induction heads have something to do.
constexpr const char* kDefaultPrompt =
    "The old lighthouse keeper, Tom Harrow, climbed the stairs every night. Tom Harrow lit the lamp, "
    "wiped the glass and watched the sea. One stormy night a small boat came close to the rocks, and "
    "Tom Harrow";
constexpr int64_t kMaxInspectTokens = 4096;  // patterns are materialized per layer: heads x S x S
// The logit lens unembeds every layer's rows (layers x S x vocab products): up to this many tokens.
constexpr int64_t kMaxLensTokens = 1024;

struct InspectArgs {
  ModelOptions model;
  std::string prompt = kDefaultPrompt;
  std::string out = "attn-report";
  int generate = 0;
  ProbeOptions probe;
  bool all_heatmaps = false;
  bool lens = true;  // --no-lens leaves the logit lens out
};

// One head's pattern in the page's compressed form: CSR rows of (key, round(255 w)), keeping the
// kMaxRowEntries largest nonzero entries of each row (so a report stays a few MB at 1,000 tokens).
constexpr size_t kMaxRowEntries = 32;
struct SparsePattern {
  std::vector<uint32_t> rows;
  std::vector<uint32_t> cols;
  std::vector<uint8_t> vals;
};

std::string Base64(const void* data, size_t n) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* p = static_cast<const uint8_t*>(data);
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t b = (p[i] << 16) | (i + 1 < n ? p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    out += kAlphabet[(b >> 18) & 63];
    out += kAlphabet[(b >> 12) & 63];
    out += i + 1 < n ? kAlphabet[(b >> 6) & 63] : '=';
    out += i + 2 < n ? kAlphabet[b & 63] : '=';
  }
  return out;
}

// Little-endian bytes of the key indices, 2 or 4 bytes each.
std::string IndexBase64(const std::vector<uint32_t>& cols, int bytes) {
  std::vector<uint8_t> raw;
  raw.reserve(cols.size() * bytes);
  for (uint32_t c : cols)
    for (int b = 0; b < bytes; ++b) raw.push_back(static_cast<uint8_t>(c >> (8 * b)));
  return Base64(raw.data(), raw.size());
}

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

}  // namespace

InspectOutput Inspect(const Model& model, const std::vector<int32_t>& tokens, const InspectOptions& options) {
  const ModelConfig& c = model.config();
  const Tokenizer& tok = model.tokenizer();
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) throw Error("inspect: no tokens");
  if (n > std::min(kMaxInspectTokens, c.context_length)) {
    throw Error("inspect: " + std::to_string(n) + " tokens exceed the " +
                std::to_string(std::min(kMaxInspectTokens, c.context_length)) +
                " tokens a report can show (use a shorter text)");
  }
  InspectOutput out;

  // 1. Head roles from the probe.
  ProbeOptions probe = options.probe;
  probe.threads = options.threads;
  if (probe.length == 0) probe.length = DefaultProbeLength(c);
  out.scores = ProbeHeads(model, probe);
  out.probe = DescribeProbe(probe);

  // 2. Every head's pattern on the text (one pass; each layer's patterns materialized in turn), and
  // with a heatmap folder, the PNGs.
  const bool pngs = !options.heatmap_dir.empty();
  const int64_t H = c.n_heads;
  std::vector<SparsePattern> patterns(static_cast<size_t>(c.n_layers * H));
  constexpr int kThumb = 64, kGap = 4;
  const int grid_w = static_cast<int>(H) * (kThumb + kGap) + kGap;
  const int grid_h = static_cast<int>(c.n_layers) * (kThumb + kGap) + kGap;
  std::vector<uint8_t> grid(pngs ? static_cast<size_t>(grid_w) * grid_h * 3 : 0, 255);
  // The heatmaps written one per head: every head, or the strongest two of each role.
  std::vector<bool> full_png(patterns.size(), options.all_heatmaps);
  for (const std::string& role : RoleNames()) {
    std::vector<const HeadScores*> heads;
    for (const HeadScores& s : out.scores)
      if (s.role == role && role != "diffuse") heads.push_back(&s);
    std::sort(heads.begin(), heads.end(), [&](const HeadScores* a, const HeadScores* b) {
      return RoleStrength(*a, role) > RoleStrength(*b, role);
    });
    for (size_t i = 0; i < heads.size() && i < 2; ++i) full_png[heads[i]->layer * H + heads[i]->head] = true;
  }
  Hooks hooks;
  hooks.wants = [](const char* name, int) { return std::strcmp(name, "attn.hook_pattern") == 0; };
  hooks.fn = [&](const HookPoint& p) {
    for (int64_t h = 0; h < H; ++h) {
      const float* a = p.data + h * n * n;
      SparsePattern& sp = patterns[static_cast<size_t>(p.layer * H + h)];
      sp.rows.assign(1, 0);
      std::vector<std::pair<uint8_t, uint32_t>> row;  // (value, key)
      for (int64_t r = 0; r < n; ++r) {
        row.clear();
        for (int64_t j = 0; j <= r; ++j) {
          const long v = std::lround(a[r * n + j] * 255.0f);
          if (v > 0) row.emplace_back(static_cast<uint8_t>(std::min(255L, v)), static_cast<uint32_t>(j));
        }
        if (row.size() > kMaxRowEntries) {
          std::nth_element(row.begin(), row.begin() + kMaxRowEntries, row.end(),
                           [](const auto& x, const auto& y) { return x.first > y.first; });
          row.resize(kMaxRowEntries);
          std::sort(row.begin(), row.end(), [](const auto& x, const auto& y) { return x.second < y.second; });
        }
        for (const auto& [v, j] : row) sp.cols.push_back(j), sp.vals.push_back(v);
        sp.rows.push_back(static_cast<uint32_t>(sp.cols.size()));
      }
      if (!pngs) continue;
      DrawPattern(a, n, kThumb, grid, grid_w, kGap + static_cast<int>(h) * (kThumb + kGap),
                  kGap + p.layer * (kThumb + kGap));
      if (full_png[p.layer * H + h]) {
        // At least 512 pixels: small texts get square cells of whole pixels.
        const int size = static_cast<int>(n <= 512 ? n * std::max<int64_t>(1, 512 / n) : 512);
        std::vector<uint8_t> img(static_cast<size_t>(size) * size * 3);
        DrawPattern(a, n, size, img, size, 0, 0);
        const std::string file = "heatmaps/L" + std::to_string(p.layer) + "H" + std::to_string(h) + ".png";
        WritePng(options.heatmap_dir + "/" + file.substr(9), size, size, img);
        out.pngs.push_back(file);
      }
    }
  };
  Session session(model, n);
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));
  ForwardOptions fo;
  fo.threads = options.threads;
  fo.hooks = &hooks;
  fo.max_chunk = n;
  model.Forward(session, tokens, logits.data(), fo);
  if (pngs) {
    WritePng(options.heatmap_dir + "/grid.png", grid_w, grid_h, grid);
    out.pngs.push_back("heatmaps/grid.png");
  }

  // 3. The data: what heads.json holds, then the patterns and the logit lens.
  nlohmann::json token_text = nlohmann::json::array();
  for (int32_t id : tokens) token_text.push_back(tok.TokenToPiece(id));
  nlohmann::json& j = out.data;
  j["model"] = c.name.empty() ? model.path() : c.name;
  j["path"] = model.path();
  j["layers"] = c.n_layers;
  j["heads"] = c.n_heads;
  j["kv_heads"] = c.n_kv_heads;
  j["prompt"] = options.prompt;
  j["token_ids"] = tokens;
  j["tokens"] = token_text;
  j["n_prompt"] = std::clamp<int64_t>(options.n_prompt < 0 ? n : options.n_prompt, 0, n);
  j["roles"] = RoleNames();
  j["probe"] = out.probe;
  j["heads_scores"] = HeadScoresJson(out.scores);
  j["heatmaps"] = out.pngs;
  out.heads_json = j;

  const int index_bytes = n <= 65535 ? 2 : 4;
  nlohmann::json heads = nlohmann::json::array();
  for (const SparsePattern& sp : patterns) {
    heads.push_back({{"rows", Base64(sp.rows.data(), sp.rows.size() * sizeof(uint32_t))},
                     {"cols", IndexBase64(sp.cols, index_bytes)},
                     {"vals", Base64(sp.vals.data(), sp.vals.size())}});
  }
  j["patterns"] = {{"n", n}, {"scale", 255}, {"index_bytes", index_bytes}, {"heads", heads}};
  // The logit lens: each layer's top prediction at every position, and the next token's chance.
  out.lens = options.lens && n <= kMaxLensTokens;
  if (out.lens) {
    LogitLensOptions lo;
    lo.top_k = 1;
    lo.threads = options.threads;
    const LogitLens lens = ComputeLogitLens(model, tokens, lo);
    std::vector<float> top_p(lens.top_logprobs.size()), next_p(lens.top_ids.size(), 0.0f);
    nlohmann::json texts = nlohmann::json::object();
    for (size_t i = 0; i < top_p.size(); ++i) {
      top_p[i] = std::round(std::exp(lens.top_logprobs[i]) * 1000.0f) / 1000.0f;
      texts[std::to_string(lens.top_ids[i])] = tok.TokenToPiece(lens.top_ids[i]);
    }
    for (int64_t l = 0; l < lens.layers; ++l)
      for (int64_t t = 0; t + 1 < n; ++t)
        next_p[static_cast<size_t>(l * n + t)] =
            std::round(std::exp(lens.next_logprob[static_cast<size_t>(l * (n - 1) + t)]) * 1000.0f) / 1000.0f;
    j["lens"] = {{"layers", lens.layers},
                 {"top", lens.top_ids},
                 {"top_p", top_p},
                 {"next_p", next_p},
                 {"texts", texts}};
  }
  return out;
}

namespace {

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
  InspectOptions o;
  o.probe = args.probe;
  o.threads = args.model.threads;
  o.lens = args.lens;
  o.heatmap_dir = args.out + "/heatmaps";
  o.all_heatmaps = args.all_heatmaps;
  o.prompt = args.prompt;
  o.n_prompt = n_prompt;
  const InspectOutput r = Inspect(*model, tokens, o);
  const auto dump = [](const nlohmann::json& x, int indent) {
    return x.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  WriteFile(args.out + "/heads.json", dump(r.heads_json, 1) + "\n");
  const std::string report = args.out + "/report.html";
  WriteFile(report, RenderReport(dump(r.data, -1)));
  if (args.lens && !r.lens)
    std::printf("(the logit lens is left out of reports over %lld tokens)\n",
                static_cast<long long>(kMaxLensTokens));

  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("Strongest heads of each role (score; %s):\n", r.probe.c_str());
  PrintStrongestHeads(r.scores, 3, stdout);
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
