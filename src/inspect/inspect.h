// The data of the attention viewer (src/inspect/report_page.h): every head's role from the
// induction probe, every head's attention pattern on a text and the logit lens, computed in one
// pass. `attn inspect`, `attn serve`'s /inspect and Python's Model.report make their pages from it.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "attn/heads.h"
#include "attn/model.h"

namespace attn::report {

// The most tokens a report shows (every layer's patterns are materialized: heads x n x n floats),
// and the most that get the logit lens (every layer's rows are unembedded).
inline constexpr int64_t kMaxInspectTokens = 4096;
inline constexpr int64_t kMaxLensTokens = 1024;

struct InspectOptions {
  ProbeOptions probe;  // length 0: the default for the model's context
  // The heads' scores on that probe when the caller has them already (ProbeHeads); empty: run it.
  std::vector<HeadScores> scores;
  int threads = 0;
  bool lens = true;       // the logit lens (texts up to kMaxLensTokens)
  std::string prompt;     // shown as the report's prompt
  int64_t n_prompt = -1;  // positions [0, n_prompt) are the prompt, the rest generated (-1: all prompt)
  // Called with every head's full pattern, row-major [n, n] (causal: zeros above the diagonal),
  // as the pass computes it (`attn inspect` draws its PNG heatmaps from it).
  std::function<void(int64_t layer, int64_t head, const float* pattern, int64_t n)> on_pattern;
};

struct InspectOutput {
  nlohmann::json data;        // the viewer page's data (RenderReport)
  nlohmann::json heads_json;  // the same without the patterns and the lens (heads.json)
  std::vector<HeadScores> scores;
  std::string probe;  // DescribeProbe of the probe run
  bool lens = false;  // whether the data has the lens
};

// One pass of the model over `tokens` with every pattern captured, the probe, and the lens. Throws
// attn::Error for no tokens or more than a report can show (kMaxInspectTokens, or the context).
InspectOutput Inspect(const Model& model, const std::vector<int32_t>& tokens, const InspectOptions& options);

}  // namespace attn::report
