// The viewer's data for a text: see inspect.h.
#include "inspect/inspect.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "attn/error.h"
#include "attn/lens.h"
#include "inspect/head_report.h"

namespace attn::report {
namespace {

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
  out.scores = options.scores.empty() ? ProbeHeads(model, probe) : options.scores;
  out.probe = DescribeProbe(probe);

  // 2. Every head's pattern on the text (one pass; each layer's patterns materialized in turn).
  const int64_t H = c.n_heads;
  std::vector<SparsePattern> patterns(static_cast<size_t>(c.n_layers * H));
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
      if (options.on_pattern) options.on_pattern(p.layer, h, a, n);
    }
  };
  Session session(model, n);
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));
  ForwardOptions fo;
  fo.threads = options.threads;
  fo.hooks = &hooks;
  fo.max_chunk = n;
  model.Forward(session, tokens, logits.data(), fo);

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

}  // namespace attn::report
