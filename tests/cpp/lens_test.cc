// The logit lens (include/attn/lens.h), Model::Unembed and ops::LogSumExp (what turns its rows into
// log-probabilities): the model's head applied to the last
// block's output gives the forward pass's logits bit for bit, so the lens's last layer is the
// model's own prediction; earlier layers read their residual stream the same way. On the tiny
// fixtures of several families (LayerNorm with biases, RMSNorm, quantized output, logit scale,
// final softcap).
#include "attn/lens.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attn/error.h"
#include "attn/generate.h"
#include "attn/model.h"
#include "kernels/ops.h"

namespace attn {
namespace {

std::string Fixture(const std::string& name) { return std::string(ATTN_FIXTURES_DIR) + "/" + name; }

std::vector<int32_t> Tokens(const Model& model, int n) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(static_cast<int32_t>((i * 37 + 11) % model.config().vocab_size));
  return t;
}

class LensTest : public ::testing::TestWithParam<std::string> {};

TEST_P(LensTest, LastLayerIsTheModelsOwnPrediction) {
  auto model = Model::Load(Fixture(GetParam()));
  const ModelConfig& c = model->config();
  const std::vector<int32_t> tokens = Tokens(*model, 13);
  const int64_t n = static_cast<int64_t>(tokens.size());

  // Unembed on the last block's output reproduces the forward's logits exactly.
  const ActivationCache cache = RunWithCache(*model, tokens, [&](const char* name, int layer) {
    return std::string(name) == "hook_resid_post" && layer == c.n_layers - 1;
  });
  const CachedActivation* resid = cache.Find("blocks." + std::to_string(c.n_layers - 1) + ".hook_resid_post");
  ASSERT_NE(resid, nullptr);
  std::vector<float> logits(static_cast<size_t>(n * c.vocab_size));
  model->Unembed(resid->data.data(), n, logits.data());
  ASSERT_EQ(logits, cache.logits);

  const LogitLens lens = ComputeLogitLens(*model, tokens, {.top_k = 3, .threads = 2});
  ASSERT_EQ(lens.layers, c.n_layers + 1);
  ASSERT_EQ(lens.tokens, n);
  ASSERT_EQ(lens.top_ids.size(), static_cast<size_t>(lens.layers * n * 3));
  ASSERT_EQ(lens.next_rank.size(), static_cast<size_t>(lens.layers * (n - 1)));
  const int64_t last = c.n_layers;
  for (int64_t t = 0; t < n; ++t) {
    const std::span<const float> row(cache.logits.data() + t * c.vocab_size,
                                     static_cast<size_t>(c.vocab_size));
    const int32_t next = t + 1 < n ? tokens[static_cast<size_t>(t + 1)] : 0;
    const TokenLogprob want = LogprobOf(row, next, 3);
    for (int j = 0; j < 3; ++j) {
      const size_t at = static_cast<size_t>((last * n + t) * 3 + j);
      EXPECT_EQ(lens.top_ids[at], want.top[static_cast<size_t>(j)].first);
      EXPECT_EQ(lens.top_logprobs[at], want.top[static_cast<size_t>(j)].second);
    }
    if (t + 1 < n) {
      EXPECT_EQ(lens.next_logprob[static_cast<size_t>(last * (n - 1) + t)], want.logprob);
      int32_t rank = 0;
      for (int32_t v = 0; v < c.vocab_size; ++v)
        rank += row[static_cast<size_t>(v)] > row[static_cast<size_t>(next)] ||
                (row[static_cast<size_t>(v)] == row[static_cast<size_t>(next)] && v < next);
      EXPECT_EQ(lens.next_rank[static_cast<size_t>(last * (n - 1) + t)], rank);
    }
  }
  // Every layer: finite log-probabilities, most likely first, ranks within the vocabulary, and the
  // top token's rank 0 wherever it is the text's next token.
  for (int64_t l = 0; l < lens.layers; ++l) {
    for (int64_t t = 0; t < n; ++t) {
      const size_t at = static_cast<size_t>((l * n + t) * 3);
      EXPECT_TRUE(std::isfinite(lens.top_logprobs[at]));
      EXPECT_LE(lens.top_logprobs[at], 0.0f);
      EXPECT_GE(lens.top_logprobs[at], lens.top_logprobs[at + 1]);
      EXPECT_GE(lens.top_logprobs[at + 1], lens.top_logprobs[at + 2]);
      if (t + 1 < n) {
        const size_t r = static_cast<size_t>(l * (n - 1) + t);
        EXPECT_GE(lens.next_rank[r], 0);
        EXPECT_LT(lens.next_rank[r], c.vocab_size);
        EXPECT_LE(lens.next_logprob[r], lens.top_logprobs[at]);
        EXPECT_EQ(lens.next_rank[r] == 0, lens.top_ids[at] == tokens[static_cast<size_t>(t + 1)]);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LensTest,
                         ::testing::Values("gpt2_tiny.gguf", "llama_tiny.gguf", "llama_tiny_f16.gguf",
                                           "granite_tiny.gguf", "gemma2_tiny.gguf", "qwen3moe_tiny.gguf",
                                           "olmo2_tiny.gguf", "gemma_tiny.gguf", "starcoder2_tiny.gguf",
                                           "phi2_tiny.gguf", "stablelm_parallel_tiny.gguf"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param.substr(0, info.param.find('.'));
                           for (char& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

TEST(Lens, LayerZeroReadsTheEmbeddings) {
  // Row 0 is the embeddings through the head: with the unembedding tied to the embedding (the
  // GPT-2 fixture), each token's own id is its own most likely "next" token far more often than
  // chance.
  auto model = Model::Load(Fixture("gpt2_tiny.gguf"));
  ASSERT_TRUE(model->config().tied_output);
  const std::vector<int32_t> tokens = Tokens(*model, 40);
  const LogitLens lens = ComputeLogitLens(*model, tokens, {.top_k = 1});
  int own = 0;
  for (size_t t = 0; t < tokens.size(); ++t) own += lens.top_ids[t] == tokens[t];
  EXPECT_GE(own, 20);
}

TEST(Lens, BadInputsAreErrors) {
  auto model = Model::Load(Fixture("gpt2_tiny.gguf"));
  const std::vector<int32_t> tokens = Tokens(*model, 5);
  EXPECT_THROW(ComputeLogitLens(*model, {}, {}), Error);
  EXPECT_THROW(ComputeLogitLens(*model, tokens, {.top_k = 0}), Error);
  EXPECT_THROW(ComputeLogitLens(*model, tokens, {.top_k = static_cast<int>(model->config().vocab_size) + 1}),
               Error);
  EXPECT_THROW(ComputeLogitLens(*model, std::vector<int32_t>{1, -1}, {}), Error);
  EXPECT_THROW(ComputeLogitLens(*model, std::vector<int32_t>(200, 1), {}), Error);  // past the context (128)
  std::vector<float> out(10);
  EXPECT_THROW(model->Unembed(nullptr, 1, out.data()), Error);
  // One token: no next-token entries.
  const LogitLens one = ComputeLogitLens(*model, std::vector<int32_t>{7}, {.top_k = 2});
  EXPECT_EQ(one.tokens, 1);
  EXPECT_TRUE(one.next_logprob.empty());
  EXPECT_EQ(one.top_ids.size(), static_cast<size_t>(one.layers * 2));
}

}  // namespace
}  // namespace attn

namespace attn {
namespace {

// ops::LogSumExp (vectors of Highway's Exp, summed in float64) against a long-double reference.
TEST(LogSumExp, MatchesALongDoubleReference) {
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.0f, 4.0f);
  for (const int64_t n : {1, 2, 15, 16, 17, 33, 1000, 49152}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = g(rng);
    if (n > 3) x[1] = -std::numeric_limits<float>::infinity(), x[2] = 60.0f;  // a masked entry, a peak
    long double mx = -INFINITY, sum = 0;
    for (float v : x) mx = std::max<long double>(mx, v);
    for (float v : x) sum += std::exp(static_cast<long double>(v) - mx);
    const double want = static_cast<double>(mx + std::log(sum));
    EXPECT_NEAR(ops::LogSumExp(x.data(), n), want, 2e-6 * std::max(1.0, std::abs(want))) << n;
  }
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> masked(40, -inf);
  EXPECT_EQ(ops::LogSumExp(masked.data(), 40), -static_cast<double>(inf));
  masked[17] = 2.5f;
  EXPECT_DOUBLE_EQ(ops::LogSumExp(masked.data(), 40), 2.5);
  std::vector<float> nan(40, 1.0f);
  nan[33] = std::nanf("");
  EXPECT_TRUE(std::isnan(ops::LogSumExp(nan.data(), 40)));
}

}  // namespace
}  // namespace attn
