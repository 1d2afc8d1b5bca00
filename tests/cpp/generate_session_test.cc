// Generation in a kept session (a conversation): the cached positions that begin the next prompt
// are reused, the rest of the cache is dropped, and greedy results equal a fresh evaluation's
// (on the tiny float32 GPT-2 fixture, where chunking changes only the last bits).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "attn/error.h"
#include "attn/generate.h"
#include "attn/model.h"

namespace attn {
namespace {

const std::string kGpt2 = std::string(ATTN_FIXTURES_DIR) + "/gpt2_tiny.gguf";

TEST(GenerateInSession, ReusesTheCachedPrefixAndMatchesAFreshRun) {
  auto model = Model::Load(kGpt2);
  const int32_t vocab = static_cast<int32_t>(model->config().vocab_size);
  std::vector<int32_t> a;
  for (int i = 0; i < 12; ++i) a.push_back((i * 37 + 5) % vocab);
  GenerateOptions o;
  o.max_tokens = 6;
  o.stop_at_eos = false;
  o.kv_dtype = DType::kF32;
  o.threads = 2;

  Session session(*model, 8, DType::kF32);  // grows as needed
  const GenerateResult first = GenerateInSession(*model, session, a, o);
  EXPECT_EQ(first.tokens, GenerateFromTokens(*model, a, o).tokens);
  EXPECT_EQ(first.n_prompt_cached, 0);
  EXPECT_EQ(first.n_prompt_evaluated, 12);
  ASSERT_EQ(first.tokens.size(), 6u);
  // The session holds the prompt and every generated token but the last (never evaluated).
  EXPECT_EQ(session.n_past(), 12 + 5);
  EXPECT_GE(session.capacity(), 18);

  // The next turn: everything so far, then three more tokens.
  std::vector<int32_t> b = a;
  b.insert(b.end(), first.tokens.begin(), first.tokens.end());
  for (int i = 0; i < 3; ++i) b.push_back((i * 11 + 2) % vocab);
  const GenerateResult second = GenerateInSession(*model, session, b, o);
  EXPECT_EQ(second.n_prompt_cached, 17);
  EXPECT_EQ(second.n_prompt_evaluated, 4);
  EXPECT_EQ(second.tokens, GenerateFromTokens(*model, b, o).tokens);

  // A prompt that leaves the cache after 5 tokens: the rest is dropped and re-evaluated.
  std::vector<int32_t> c(a.begin(), a.begin() + 5);
  for (int i = 0; i < 9; ++i) c.push_back((i * 13 + 7) % vocab);
  c[5] = (a[5] + 1) % vocab;
  const GenerateResult third = GenerateInSession(*model, session, c, o);
  EXPECT_EQ(third.n_prompt_cached, 5);
  EXPECT_EQ(third.n_prompt_evaluated, 9);
  EXPECT_EQ(third.tokens, GenerateFromTokens(*model, c, o).tokens);

  // The same prompt again: all but its last token come from the cache.
  const GenerateResult again = GenerateInSession(*model, session, c, o);
  EXPECT_EQ(again.n_prompt_cached, 13);
  EXPECT_EQ(again.n_prompt_evaluated, 1);
  EXPECT_EQ(again.tokens, third.tokens);

  EXPECT_THROW(session.Truncate(session.n_past() + 1), Error);
  EXPECT_THROW(session.Reserve(model->config().context_length + 1), Error);
}

}  // namespace
}  // namespace attn
