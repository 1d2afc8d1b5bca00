// Head statistics from the fused kernel (entropy tracked beside the online softmax, masses from
// the row LSE) against the same statistics computed from the full patterns of the
// attn.hook_pattern hook point, on the tiny GPT-2 fixture; plus chunking, hooks and ablation.
#include "attn/heads.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "attn/error.h"
#include "attn/model.h"

namespace attn {
namespace {

const std::string kGpt2 = std::string(ATTN_FIXTURES_DIR) + "/gpt2_tiny.gguf";

// Tokens with repeats (so duplicate and induction rows exist): a random run, repeated, then noise.
std::vector<int32_t> TestTokens(int64_t vocab) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab) - 1);
  std::vector<int32_t> run(20);
  for (auto& t : run) t = pick(rng);
  std::vector<int32_t> tokens = run;
  tokens.insert(tokens.end(), run.begin(), run.end());
  for (int i = 0; i < 30; ++i) tokens.push_back(pick(rng) % 12);  // small ids: many repeats
  return tokens;
}

// The definitions of include/attn/heads.h applied to full patterns [layer][head][i][j].
std::vector<HeadScores> ScoresFromPatterns(const std::vector<std::vector<float>>& patterns, int64_t heads,
                                           const std::vector<int32_t>& tok) {
  const int64_t n = static_cast<int64_t>(tok.size());
  std::vector<HeadScores> out;
  for (size_t l = 0; l < patterns.size(); ++l) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* a = patterns[l].data() + h * n * n;
      double sum[6] = {}, rows[6] = {};
      for (int64_t i = 1; i < n; ++i) {
        const float* row = a + i * n;
        double entropy = 0;
        for (int64_t j = 0; j <= i; ++j)
          if (row[j] > 0) entropy -= row[j] * std::log(static_cast<double>(row[j]));
        sum[0] += row[i - 1], rows[0] += 1;
        sum[3] += row[0], rows[3] += 1;
        sum[5] += entropy, rows[5] += 1;
        if (i >= 4) sum[4] += row[i] + row[i - 1] + row[i - 2] + row[i - 3], rows[4] += 1;
        double dup = 0, ind = 0;
        bool any = false;
        for (int64_t j = 0; j < i; ++j) {
          if (tok[j] != tok[i]) continue;
          any = true;
          dup += row[j];
          ind += row[j + 1];
        }
        if (any) sum[1] += dup, rows[1] += 1, sum[2] += ind, rows[2] += 1;
      }
      HeadScores s;
      s.layer = static_cast<int>(l), s.head = static_cast<int>(h);
      auto mean = [&](int k) { return rows[k] > 0 ? sum[k] / rows[k] : 0.0; };
      s.previous_token = mean(0), s.duplicate_token = mean(1), s.induction = mean(2);
      s.first_token = mean(3), s.local = mean(4), s.entropy = mean(5);
      out.push_back(s);
    }
  }
  return out;
}

void ExpectScoresNear(const std::vector<HeadScores>& a, const std::vector<HeadScores>& b, double tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE("head " + std::to_string(a[i].layer) + "." + std::to_string(a[i].head));
    EXPECT_NEAR(a[i].previous_token, b[i].previous_token, tol);
    EXPECT_NEAR(a[i].duplicate_token, b[i].duplicate_token, tol);
    EXPECT_NEAR(a[i].induction, b[i].induction, tol);
    EXPECT_NEAR(a[i].first_token, b[i].first_token, tol);
    EXPECT_NEAR(a[i].local, b[i].local, tol);
    EXPECT_NEAR(a[i].entropy, b[i].entropy, 10 * tol);
  }
}

void KernelStatisticsEqualThoseOfFullPatterns(DType kv) {
  auto model = Model::Load(kGpt2);
  const ModelConfig& c = model->config();
  const std::vector<int32_t> tokens = TestTokens(c.vocab_size);
  const int64_t n = static_cast<int64_t>(tokens.size());
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));

  // Full patterns through the hook point (one pass, so each layer's block is the whole sequence).
  std::vector<std::vector<float>> patterns(static_cast<size_t>(c.n_layers));
  Hooks hooks;
  hooks.wants = [](const char* name, int) { return std::strcmp(name, "attn.hook_pattern") == 0; };
  hooks.fn = [&](const HookPoint& p) {
    ASSERT_EQ(p.heads, c.n_heads);
    ASSERT_EQ(p.rows, n);
    ASSERT_EQ(p.cols, n);
    patterns[static_cast<size_t>(p.layer)].assign(p.data, p.data + p.heads * p.rows * p.cols);
  };
  Session s1(*model, n, kv);
  ForwardOptions o1;
  o1.hooks = &hooks;
  o1.max_chunk = n;
  model->Forward(s1, tokens, logits.data(), o1);
  const std::vector<HeadScores> expected = ScoresFromPatterns(patterns, c.n_heads, tokens);

  // The fused kernel's statistics, in one pass and in chunks of 7 (targets cross chunks).
  for (int64_t chunk : {n, int64_t{7}}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    HeadStats stats(c);
    Session s2(*model, n, kv);
    ForwardOptions o2;
    o2.stats = &stats;
    o2.max_chunk = chunk;
    model->Forward(s2, tokens, logits.data(), o2);
    ExpectScoresNear(stats.Scores(), expected, 2e-5);
  }
  // The statistics also come out of the explicit (pattern-hook) path.
  HeadStats stats(c);
  Session s3(*model, n, kv);
  o1.stats = &stats;
  model->Forward(s3, tokens, logits.data(), o1);
  ExpectScoresNear(stats.Scores(), expected, 2e-5);
}

// Every KV cache type: the statistics read the cache's keys as stored (f16 / bf16 widened), and
// the patterns of the explicit path come from the same cache.
TEST(HeadStats, KernelStatisticsEqualThoseOfFullPatterns) {
  for (DType kv : {DType::kF32, DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(kv));
    KernelStatisticsEqualThoseOfFullPatterns(kv);
  }
}

TEST(HeadStats, HooksDoNotChangeLogitsAndPatternEditsPatchAttention) {
  auto model = Model::Load(kGpt2);
  const ModelConfig& c = model->config();
  const std::vector<int32_t> tokens = TestTokens(c.vocab_size);
  const int64_t n = static_cast<int64_t>(tokens.size()), V = c.vocab_size;
  std::vector<float> plain(static_cast<size_t>(n * V)), hooked(plain.size());
  Session s(*model, n);
  model->Forward(s, tokens, plain.data(), true);
  // A hook that visits every point (patterns included) but changes nothing.
  int visits = 0;
  Hooks all;
  all.fn = [&](const HookPoint&) { ++visits; };
  ForwardOptions o;
  o.all_logits = true;
  o.hooks = &all;
  s.Reset();
  model->Forward(s, tokens, hooked.data(), o);
  EXPECT_GT(visits, 10 * c.n_layers);
  double diff = 0;
  for (size_t i = 0; i < plain.size(); ++i)
    diff = std::max(diff, static_cast<double>(std::abs(plain[i] - hooked[i])));
  EXPECT_LT(diff, 1e-4);  // the explicit attention path rounds differently from the fused kernel

  // Every query of layer 0 head 1 attends only to position 0: its z rows become V row 0.
  std::vector<float> v0, z;
  Hooks patch;
  patch.wants = [](const char* name, int layer) {
    return layer == 0 && (std::strcmp(name, "attn.hook_pattern") == 0 ||
                          std::strcmp(name, "attn.hook_v") == 0 || std::strcmp(name, "attn.hook_z") == 0);
  };
  patch.fn = [&](const HookPoint& p) {
    if (std::strcmp(p.name, "attn.hook_v") == 0) v0.assign(p.data, p.data + p.cols);  // position 0
    if (std::strcmp(p.name, "attn.hook_z") == 0) z.assign(p.data, p.data + p.rows * p.cols);
    if (std::strcmp(p.name, "attn.hook_pattern") == 0) {
      float* a = p.data + 1 * p.rows * p.cols;
      for (int64_t i = 0; i < p.rows * p.cols; ++i) a[i] = i % p.cols == 0 ? 1.0f : 0.0f;
    }
  };
  o.hooks = &patch;
  o.max_chunk = n;
  s.Reset();
  model->Forward(s, tokens, hooked.data(), o);
  const int64_t hd = c.head_dim;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < hd; ++d) ASSERT_NEAR(z[i * c.n_heads * hd + 1 * hd + d], v0[1 * hd + d], 1e-5);
}

TEST(HeadStats, AblationChangesTheLossAndBadHeadsAreRejected) {
  auto model = Model::Load(kGpt2);
  const std::vector<int32_t> tokens = TestTokens(model->config().vocab_size);
  const AblationResult none = AblateHeads(*model, tokens, {{0, 0}}, AblationMode::kZero);
  EXPECT_TRUE(std::isfinite(none.loss) && std::isfinite(none.ablated_loss));
  EXPECT_EQ(none.tokens, static_cast<int64_t>(tokens.size()) - 1);
  const AblationResult mean = AblateHeads(*model, tokens, {{0, 0}, {1, 2}}, AblationMode::kMean);
  EXPECT_DOUBLE_EQ(mean.loss, none.loss);
  EXPECT_NE(mean.ablated_loss, mean.loss);
  EXPECT_THROW(AblateHeads(*model, tokens, {{2, 0}}, AblationMode::kZero), Error);
  EXPECT_THROW(AblateHeads(*model, tokens, {{0, 4}}, AblationMode::kZero), Error);
  EXPECT_THROW(AblateHeads(*model, std::vector<int32_t>{1}, {{0, 0}}, AblationMode::kZero), Error);
}

TEST(HeadStats, ProbeIsDeterministicAndChecksItsArguments) {
  auto model = Model::Load(kGpt2);
  ProbeOptions o;
  o.length = 20;
  o.sequences = 2;
  const auto a = ProbeHeads(*model, o), b = ProbeHeads(*model, o);
  ASSERT_EQ(a.size(), 2u * 4u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].induction, b[i].induction);
    EXPECT_GE(a[i].induction, 0.0);
    EXPECT_LE(a[i].induction, 1.0 + 1e-6);
    EXPECT_FALSE(a[i].role.empty());
  }
  o.length = 1000;  // 2001 tokens > the fixture's 128-position context
  EXPECT_THROW(ProbeHeads(*model, o), Error);
}

TEST(HeadStats, RolesFollowTheThresholds) {
  HeadScores s;
  EXPECT_EQ(RoleOf(s), "diffuse");
  s.first_token = 0.7;
  EXPECT_EQ(RoleOf(s), "sink");
  s.previous_token = 0.6;
  EXPECT_EQ(RoleOf(s), "previous-token");
  s.induction = 0.5;
  EXPECT_EQ(RoleOf(s), "induction");
}

}  // namespace
}  // namespace attn

namespace attn {
namespace {

TEST(RunWithCache, KeepsTheAskedPointsWithPlainLogits) {
  auto model = Model::Load(kGpt2);
  const ModelConfig& c = model->config();
  const std::vector<int32_t> tokens = TestTokens(c.vocab_size);
  const int64_t n = static_cast<int64_t>(tokens.size());
  std::vector<float> plain(static_cast<size_t>(n * c.vocab_size));
  Session s(*model, n);
  model->Forward(s, tokens, plain.data(), true);

  const ActivationCache all = RunWithCache(*model, tokens);
  EXPECT_EQ(all.logits, plain);  // capturing (patterns included) changes no bit
  const CachedActivation* pattern = all.Find("blocks.1.attn.hook_pattern");
  ASSERT_NE(pattern, nullptr);
  EXPECT_EQ(pattern->heads, c.n_heads);
  EXPECT_EQ(pattern->rows, n);
  for (int64_t h = 0; h < pattern->heads; ++h) {
    for (int64_t i = 0; i < n; ++i) {
      double row = 0;
      for (int64_t j = 0; j < n; ++j) row += pattern->data[(h * n + i) * n + j];
      ASSERT_NEAR(row, 1.0, 1e-5);
    }
  }
  ASSERT_NE(all.Find("hook_embed"), nullptr);
  ASSERT_NE(all.Find("ln_final.hook_normalized"), nullptr);

  const ActivationCache some = RunWithCache(*model, tokens, [](const char* name, int layer) {
    return layer == 0 && std::strcmp(name, "attn.hook_z") == 0;
  });
  ASSERT_EQ(some.activations.size(), 1u);
  EXPECT_EQ(some.activations[0].FullName(), "blocks.0.attn.hook_z");
  EXPECT_EQ(some.activations[0].data, all.Find("blocks.0.attn.hook_z")->data);

  // RunWithHooks: zeroing every head's z of both layers leaves only the embedding path.
  Hooks zero;
  zero.wants = [](const char* name, int) { return std::strcmp(name, "attn.hook_z") == 0; };
  zero.fn = [](const HookPoint& p) { std::fill(p.data, p.data + p.rows * p.cols, 0.0f); };
  EXPECT_NE(RunWithHooks(*model, tokens, zero), plain);
  EXPECT_THROW(RunWithHooks(*model, std::vector<int32_t>{}, zero), Error);
}

}  // namespace
}  // namespace attn
