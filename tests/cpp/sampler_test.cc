// The sampling chain (attn/generate.h) on hand-made logits: greedy ties, the logit bias, the
// repetition / frequency / presence penalties over their window (llama.cpp's penalties sampler),
// the filters, seeds, and the errors.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "attn/error.h"
#include "attn/generate.h"

namespace attn {
namespace {

SamplerOptions Greedy() {
  SamplerOptions o;
  o.temperature = 0.0f;
  return o;
}

TEST(Sampler, GreedyTakesTheLargestLogitTiesToTheLowestId) {
  Sampler s(Greedy());
  EXPECT_EQ(s.Sample(std::vector<float>{0.5f, 2.0f, -1.0f, 2.0f}, {}), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{-3.0f}, {}), 0);
}

TEST(Sampler, PenaltiesFollowLlamaCppsRule) {
  // Token 1 (logit 3) seen 3 times, token 2 (logit -1) once, token 3 (logit 2.9) never.
  const std::vector<float> logits = {0.0f, 3.0f, -1.0f, 2.9f};
  const std::vector<int32_t> history = {1, 2, 1, 1};
  // repetition 1.5: token 1 -> 3 / 1.5 = 2 < 2.9.
  SamplerOptions rep = Greedy();
  rep.repetition_penalty = 1.5f;
  EXPECT_EQ(Sampler(rep).Sample(logits, history), 3);
  // frequency 0.05: token 1 -> 3 - 3 * 0.05 = 2.85 < 2.9; presence 0.05 alone: 2.95 > 2.9.
  SamplerOptions freq = Greedy();
  freq.frequency_penalty = 0.05f;
  EXPECT_EQ(Sampler(freq).Sample(logits, history), 3);
  SamplerOptions pres = Greedy();
  pres.presence_penalty = 0.05f;
  EXPECT_EQ(Sampler(pres).Sample(logits, history), 1);
  // A negative penalty encourages repeats: token 1 -> 3 + 3 * 0.5 = 4.5.
  SamplerOptions neg = Greedy();
  neg.frequency_penalty = -0.5f;
  EXPECT_EQ(Sampler(neg).Sample(logits, history), 1);
  // All three together on token 1: 3 / 1.2 - 3 * 0.1 - 0.2 = 2.0; token 2: -1 * 1.2 - 0.1 - 0.2.
  SamplerOptions all = Greedy();
  all.repetition_penalty = 1.2f;
  all.frequency_penalty = 0.1f;
  all.presence_penalty = 0.2f;
  std::vector<float> close = logits;
  close[3] = 1.99f;
  EXPECT_EQ(Sampler(all).Sample(close, history), 1);  // 2.0 > 1.99
  close[3] = 2.01f;
  EXPECT_EQ(Sampler(all).Sample(close, history), 3);
  // Only the last `repetition_window` tokens count: with a window of 1, token 1 is seen once.
  SamplerOptions window = freq;
  window.frequency_penalty = 0.09f;  // 3 - 3 * 0.09 = 2.73 < 2.9, but 3 - 0.09 = 2.91 > 2.9
  EXPECT_EQ(Sampler(window).Sample(logits, history), 3);
  window.repetition_window = 1;
  EXPECT_EQ(Sampler(window).Sample(logits, history), 1);
}

TEST(Sampler, LogitBiasComesFirstAndMinusInfinityBans) {
  const std::vector<float> logits = {0.0f, 3.0f, 1.0f};
  SamplerOptions o = Greedy();
  o.logit_bias = {{2, 2.5f}};
  EXPECT_EQ(Sampler(o).Sample(logits, {}), 2);
  o.logit_bias = {{1, -std::numeric_limits<float>::infinity()}};
  EXPECT_EQ(Sampler(o).Sample(logits, {}), 2);
  // Sampled at temperature 1 with nothing filtered: a banned token never comes.
  o.temperature = 1.0f;
  o.top_k = 0;
  o.top_p = 1.0f;
  o.min_p = 0.0f;
  o.seed = 3;
  Sampler s(o);
  std::set<int32_t> drawn;
  for (int i = 0; i < 300; ++i) drawn.insert(s.Sample(logits, {}));
  EXPECT_EQ(drawn, (std::set<int32_t>{0, 2}));
  // The bias is added before the penalties see the logit ((3 + 1.2) / 2 = 2.1 < 2.5; the other
  // order would give 3 / 2 + 1.2 = 2.7).
  SamplerOptions both = Greedy();
  both.logit_bias = {{1, 1.2f}};
  both.repetition_penalty = 2.0f;
  EXPECT_EQ(Sampler(both).Sample(std::vector<float>{2.5f, 3.0f}, std::vector<int32_t>{1}), 0);

  SamplerOptions out_of_range = Greedy();
  out_of_range.logit_bias = {{3, 1.0f}};
  EXPECT_THROW(Sampler(out_of_range).Sample(logits, {}), Error);
  SamplerOptions ban_all = Greedy();
  for (int32_t id = 0; id < 3; ++id)
    ban_all.logit_bias.emplace_back(id, -std::numeric_limits<float>::infinity());
  EXPECT_THROW(Sampler(ban_all).Sample(logits, {}), Error);
  SamplerOptions nan_bias = Greedy();
  nan_bias.logit_bias = {{0, std::nanf("")}};
  EXPECT_THROW(Sampler{nan_bias}, Error);
}

TEST(Sampler, FiltersKeepOnlyWhatTheyAllowAndSeedsRepeat) {
  const std::vector<float> logits = {2.0f, 1.9f, 0.0f, -5.0f, 1.0f};
  SamplerOptions o;
  o.temperature = 1.0f;
  o.top_k = 2;
  o.top_p = 1.0f;
  o.min_p = 0.0f;
  o.seed = 11;
  Sampler a(o), b(o);
  std::set<int32_t> drawn;
  for (int i = 0; i < 200; ++i) {
    const int32_t t = a.Sample(logits, {});
    EXPECT_EQ(t, b.Sample(logits, {}));  // same seed, same draws
    drawn.insert(t);
  }
  EXPECT_EQ(drawn, (std::set<int32_t>{0, 1}));
  // min_p 0.3: p(4) / p(0) = e^-1 = 0.37 stays, p(2) / p(0) = e^-2 = 0.14 goes.
  o.top_k = 0;
  o.min_p = 0.3f;
  Sampler m(o);
  drawn.clear();
  for (int i = 0; i < 400; ++i) drawn.insert(m.Sample(logits, {}));
  EXPECT_EQ(drawn, (std::set<int32_t>{0, 1, 4}));
}

TEST(Sampler, BadOptionsAndLogitsAreRefused) {
  SamplerOptions o = Greedy();
  o.frequency_penalty = std::numeric_limits<float>::infinity();
  EXPECT_THROW(Sampler{o}, Error);
  o = Greedy();
  o.presence_penalty = std::nanf("");
  EXPECT_THROW(Sampler{o}, Error);
  o = Greedy();
  o.repetition_penalty = 0.0f;
  EXPECT_THROW(Sampler{o}, Error);
  o = Greedy();
  o.top_p = 0.0f;
  EXPECT_THROW(Sampler{o}, Error);
  Sampler s(Greedy());
  EXPECT_THROW(s.Sample(std::vector<float>{1.0f, std::nanf("")}, {}), Error);
  EXPECT_THROW(s.Sample(std::vector<float>{}, {}), Error);
}

}  // namespace
}  // namespace attn
