// The report of `attn inspect` (and of `attn serve`'s /inspect): every head's role from the
// induction probe, every head's attention pattern on a text and the logit lens, as the data of the
// viewer page (tools/attn/report/report.html), optionally with PNG heatmaps.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "attn/heads.h"
#include "attn/model.h"

namespace attn::cli {

struct InspectOptions {
  ProbeOptions probe;  // length 0: the default for the model's context
  int threads = 0;
  bool lens = true;         // the logit lens (texts up to 1,024 tokens)
  std::string heatmap_dir;  // PNG heatmaps written there (grid.png and the strongest heads); "" = none
  bool all_heatmaps = false;
  std::string prompt;     // shown as the report's prompt
  int64_t n_prompt = -1;  // positions [0, n_prompt) are the prompt, the rest generated (-1: all prompt)
};

struct InspectOutput {
  nlohmann::json data;        // the viewer page's data (RenderReport)
  nlohmann::json heads_json;  // the same without the patterns and the lens (heads.json)
  std::vector<HeadScores> scores;
  std::string probe;              // DescribeProbe of the probe run
  std::vector<std::string> pngs;  // heatmaps written, relative to the report ("heatmaps/...")
  bool lens = false;              // whether the data has the lens
};

// One pass of the model over `tokens` with every pattern captured, the probe, and the lens. Throws
// attn::Error for no tokens or more than a report can show (4,096, or the model's context).
InspectOutput Inspect(const Model& model, const std::vector<int32_t>& tokens, const InspectOptions& options);

}  // namespace attn::cli
