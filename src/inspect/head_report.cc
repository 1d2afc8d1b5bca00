#include "inspect/head_report.h"

#include <algorithm>
#include <sstream>

#include "attn/error.h"

namespace attn::report {

nlohmann::json HeadScoresJson(const std::vector<HeadScores>& scores) {
  nlohmann::json list = nlohmann::json::array();
  for (const HeadScores& s : scores) {
    list.push_back({{"layer", s.layer},
                    {"head", s.head},
                    {"previous_token", s.previous_token},
                    {"duplicate_token", s.duplicate_token},
                    {"induction", s.induction},
                    {"first_token", s.first_token},
                    {"entropy", s.entropy},
                    {"local", s.local},
                    {"learned_sink", s.learned_sink},
                    {"role", s.role}});
  }
  return list;
}

void PrintHeadTable(const std::vector<HeadScores>& scores, std::FILE* out) {
  // The learned sink's column only for models that have sinks (gpt-oss, attn train --sinks).
  const bool sinks =
      std::any_of(scores.begin(), scores.end(), [](const HeadScores& s) { return s.learned_sink > 0.0; });
  std::fprintf(out, "%-6s %-16s %8s %8s %8s %8s %8s %8s%s\n", "head", "role", "prev", "dup", "induct",
               "first", "local", "entropy", sinks ? "    lsink" : "");
  for (const HeadScores& s : scores) {
    const std::string name = std::to_string(s.layer) + "." + std::to_string(s.head);
    std::fprintf(out, "%-6s %-16s %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f", name.c_str(), s.role.c_str(),
                 s.previous_token, s.duplicate_token, s.induction, s.first_token, s.local, s.entropy);
    if (sinks) std::fprintf(out, " %8.3f", s.learned_sink);
    std::fprintf(out, "\n");
  }
}

int64_t DefaultProbeLength(const ModelConfig& config) {
  return std::max<int64_t>(2, std::min<int64_t>(64, (config.context_length - 1) / 2));
}

double RoleStrength(const HeadScores& s, const std::string& role) {
  if (role == "induction") return s.induction;
  if (role == "previous-token") return s.previous_token;
  if (role == "duplicate-token") return s.duplicate_token;
  if (role == "sink") return s.first_token;
  if (role == "local") return s.local;
  return s.entropy;
}

void PrintStrongestHeads(const std::vector<HeadScores>& scores, int per_role, std::FILE* out) {
  for (const std::string& role : RoleNames()) {
    if (role == "diffuse") continue;
    std::vector<const HeadScores*> heads;
    for (const HeadScores& s : scores)
      if (s.role == role) heads.push_back(&s);
    std::sort(heads.begin(), heads.end(), [&](const HeadScores* a, const HeadScores* b) {
      return RoleStrength(*a, role) > RoleStrength(*b, role);
    });
    std::fprintf(out, "  %-16s %3zu heads", role.c_str(), heads.size());
    for (size_t i = 0; i < heads.size() && i < static_cast<size_t>(per_role); ++i)
      std::fprintf(out, "%s %d.%d (%.2f)", i ? "," : ":", heads[i]->layer, heads[i]->head,
                   RoleStrength(*heads[i], role));
    std::fprintf(out, "\n");
  }
}

std::vector<std::pair<int, int>> ParseHeadList(const std::string& text) {
  std::vector<std::pair<int, int>> heads;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    int layer = -1, head = -1;
    char dot = 0, extra = 0;
    std::istringstream is(item);
    if (!(is >> layer >> dot >> head) || dot != '.' || (is >> extra)) {
      throw Error("heads: '" + item + "' is not LAYER.HEAD (e.g. 5.3)");
    }
    heads.emplace_back(layer, head);
  }
  if (heads.empty()) throw Error("heads: no head given (use LAYER.HEAD[,LAYER.HEAD...])");
  return heads;
}

}  // namespace attn::report
