// Rotary angles: plain, linear scaling and per-pair factors by their formula; YaRN against the
// frequencies transformers computes at a real model's size (tests/fixtures/hf_decoders_logits.json,
// made by tests/fixtures/make_hf_decoders_fixture.py).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/ops.h"

namespace attn {
namespace {

TEST(Rope, AnglesFollowTheFormula) {
  const int64_t dim = 8, half = dim / 2, rows = 3, pos0 = 5;
  const float factors[] = {1.0f, 2.0f, 4.0f, 8.0f};
  std::vector<float> c(rows * half), s(rows * half);
  ops::RopeAngles(rows, dim, pos0, 10000.0f, 0.5f, factors, c.data(), s.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < half; ++i) {
      const double theta = (pos0 + r) * 0.5 * std::pow(10000.0, -2.0 * i / dim) / factors[i];
      EXPECT_NEAR(c[r * half + i], std::cos(theta), 1e-6);
      EXPECT_NEAR(s[r * half + i], std::sin(theta), 1e-6);
    }
  }
}

TEST(Rope, YarnMatchesTransformersFrequencies) {
  std::ifstream in(std::string(ATTN_FIXTURES_DIR) + "/hf_decoders_logits.json");
  ASSERT_TRUE(in);
  const nlohmann::json y = nlohmann::json::parse(in)["yarn_inv_freq"];
  const int64_t dim = y["rope_dim"], half = dim / 2;
  const std::vector<double> inv_freq = y["inv_freq"].get<std::vector<double>>();
  ASSERT_EQ(static_cast<int64_t>(inv_freq.size()), half);
  const float factor = y["factor"];
  // Position 1: the angles are the frequencies themselves (all below pi, so atan2 recovers them).
  std::vector<float> c(half), s(half);
  std::vector<float> divisors(half);
  ops::YarnFactors(dim, y["rope_theta"].get<float>(), 1.0f / factor,
                   y["original_max_position_embeddings"].get<int64_t>(), 32.0f, 1.0f, divisors.data());
  ops::RopeAngles(1, dim, 1, y["rope_theta"].get<float>(), 1.0f / factor, divisors.data(), c.data(),
                  s.data());
  int blended = 0;
  for (int64_t i = 0; i < half; ++i) {
    const double theta = std::atan2(s[i], c[i]);
    EXPECT_NEAR(theta, inv_freq[i], 2e-6 * inv_freq[i] + 1e-12) << "pair " << i;
    const double extrapolated = std::pow(static_cast<double>(y["rope_theta"]), -2.0 * i / dim);
    blended += std::fabs(inv_freq[i] - extrapolated) > 1e-9 * extrapolated &&
               std::fabs(inv_freq[i] - extrapolated / factor) > 1e-9 * extrapolated;
  }
  EXPECT_GE(blended, 5) << "the fixture's ramp should blend several pairs";
  // transformers' attention factor is the magnitude attn applies to cos and sin for YaRN.
  EXPECT_NEAR(y["attention_factor"].get<double>(), 1.0 + 0.1 * std::log(static_cast<double>(factor)), 1e-9);
}

}  // namespace
}  // namespace attn
