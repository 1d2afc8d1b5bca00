// Shared pieces of the commands that report on heads (heads, ablate, inspect): the JSON of head
// scores, the table, the strongest heads of each role, and `L.H` lists.
#pragma once

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "attn/heads.h"

namespace attn::report {

// [{"layer", "head", "previous_token", "duplicate_token", "induction", "first_token", "entropy",
//   "local", "learned_sink", "role"}, ...]
nlohmann::json HeadScoresJson(const std::vector<HeadScores>& scores);
// One line per head: layer.head, role, and every score.
void PrintHeadTable(const std::vector<HeadScores>& scores, std::FILE* out);
// The heads of each role (not diffuse), strongest first, `per_role` at most each.
void PrintStrongestHeads(const std::vector<HeadScores>& scores, int per_role, std::FILE* out);
// The score that defines a role (induction for "induction", first_token for "sink", ...).
double RoleStrength(const HeadScores& s, const std::string& role);
// Parses "5.3,7.1" into (layer, head) pairs; throws attn::Error naming a malformed entry.
std::vector<std::pair<int, int>> ParseHeadList(const std::string& text);
// The probe length the commands use unless told: 64 tokens per copy, fewer when the model's
// context cannot hold BOS + two copies (small trained models).
int64_t DefaultProbeLength(const ModelConfig& config);

}  // namespace attn::report
