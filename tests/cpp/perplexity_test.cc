// Perplexity (llama-perplexity's chunks, second half scored) against a direct computation from one
// forward pass per chunk, the KL statistics' edge cases, and the errors that name the argument.
#include "attn/perplexity.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "attn/error.h"
#include "attn/model.h"

namespace attn {
namespace {

const std::string kLlama = std::string(ATTN_FIXTURES_DIR) + "/llama_tiny.gguf";

std::vector<int32_t> Tokens(int64_t n, int64_t vocab) {
  std::vector<int32_t> t;
  for (int64_t i = 0; i < n; ++i) t.push_back(static_cast<int32_t>((i * 131 + 7) % vocab));
  return t;
}

TEST(Perplexity, ScoresTheSecondHalfOfEachChunkAsOnePassDoes) {
  auto model = Model::Load(kLlama);
  const int64_t vocab = model->config().vocab_size, context = 20;
  const std::vector<int32_t> tokens = Tokens(95, vocab);  // 4 chunks; 15 tokens left over
  PerplexityOptions o;
  o.context = context;
  o.kv_dtype = DType::kF32;
  o.threads = 2;
  const PerplexityResult r = Perplexity(*model, tokens, o);
  ASSERT_EQ(r.n_chunks, 4);
  ASSERT_EQ(r.n_scored, 4 * 9);  // positions 10..18 of each chunk predict 11..19
  ASSERT_EQ(r.token_nll.size(), 36u);

  std::vector<double> expected;
  std::vector<float> logits(static_cast<size_t>(context * vocab));
  for (int64_t c = 0; c < 4; ++c) {
    Session s(*model, context, DType::kF32);
    const std::span<const int32_t> chunk(tokens.data() + c * context, static_cast<size_t>(context));
    model->Forward(s, chunk, logits.data(), true, 2);
    for (int64_t j = context / 2; j < context - 1; ++j) {
      const float* row = logits.data() + j * vocab;
      const double mx = *std::max_element(row, row + vocab);
      double sum = 0;
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - mx);
      expected.push_back(mx + std::log(sum) - row[chunk[static_cast<size_t>(j + 1)]]);
    }
  }
  double mean = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(r.token_nll[i], expected[i], 1e-4) << "scored token " << i;
    mean += expected[i] / static_cast<double>(expected.size());
  }
  EXPECT_NEAR(r.nll, mean, 1e-5);
  EXPECT_NEAR(r.ppl, std::exp(mean), 1e-4 * std::exp(mean));
  ASSERT_EQ(r.chunk_ppl.size(), 4u);
  EXPECT_DOUBLE_EQ(r.chunk_ppl.back(), r.ppl);
  EXPECT_FALSE(r.has_kl);
}

TEST(Perplexity, TheModelAgainstItselfDivergesByNothing) {
  auto model = Model::Load(kLlama);
  PerplexityOptions o;
  o.context = 16;
  o.kv_dtype = o.base_kv_dtype = DType::kF32;
  o.base = model.get();
  const PerplexityResult r = Perplexity(*model, Tokens(64, model->config().vocab_size), o);
  ASSERT_TRUE(r.has_kl);
  EXPECT_EQ(r.kl.mean, 0.0);
  EXPECT_EQ(r.kl.max, 0.0);
  EXPECT_EQ(r.kl.top1_agreement, 1.0);
  EXPECT_DOUBLE_EQ(r.kl.base_ppl, r.ppl);
  // A bf16 cache does move the distributions.
  o.kv_dtype = DType::kBF16;
  const PerplexityResult b = Perplexity(*model, Tokens(64, model->config().vocab_size), o);
  EXPECT_GT(b.kl.mean, 0.0);
  EXPECT_GE(b.kl.max, b.kl.p99);
  EXPECT_GE(b.kl.p99, b.kl.median);
}

void ExpectError(const Model& model, std::span<const int32_t> tokens, const PerplexityOptions& o,
                 const std::string& message) {
  try {
    Perplexity(model, tokens, o);
    ADD_FAILURE() << "no error; expected: " << message;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
  }
}

TEST(Perplexity, BadArgumentsAreNamed) {
  auto model = Model::Load(kLlama);
  const std::vector<int32_t> tokens = Tokens(200, model->config().vocab_size);
  PerplexityOptions o;
  o.context = 3;
  ExpectError(*model, tokens, o, "context = 3 (must be in [4, 128]");
  o.context = 129;
  ExpectError(*model, tokens, o, "context = 129");
  o.context = 16;
  o.max_chunks = 0;
  ExpectError(*model, tokens, o, "max_chunks = 0");
  o.max_chunks = -2;
  ExpectError(*model, tokens, o, "max_chunks = -2");
  o.max_chunks = -1;
  ExpectError(*model, std::span<const int32_t>(tokens).first(15), o,
              "the text is 15 tokens, less than one chunk of 16");
  auto gpt2 = Model::Load(std::string(ATTN_FIXTURES_DIR) + "/gpt2_tiny.gguf");
  o.base = gpt2.get();
  ExpectError(*model, tokens, o, "base model's vocabulary has 300 tokens, this model's 299");
  o.base = nullptr;
  std::vector<int32_t> bad = tokens;
  bad[40] = 5000;  // out of the vocabulary: the forward pass names it
  ExpectError(*model, bad, o, "5000");
}

}  // namespace
}  // namespace attn
