// Prompt lookup decoding (GenerateOptions::lookup): drafts run in one pass with each row attending
// as it would alone (ForwardOptions::one_row_attention), so generation gives the tokens, texts and
// log-probabilities of one token at a time, bit for bit. Checked on the tiny fixtures (float32
// weights, whose products are row for row too); tests/python/test_lookup.py does the same on
// SmolLM2's Q4_1 weights.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "attn/error.h"
#include "attn/generate.h"
#include "attn/model.h"
#include "attn/tensor.h"

namespace attn {
namespace {

std::string Fixture(const std::string& name) { return std::string(ATTN_FIXTURES_DIR) + "/" + name; }

// m tokens in one pass with one_row_attention give the logits of m one-token passes bit for bit,
// and leave the same cache behind.
TEST(OneRowAttention, APassOfSeveralTokensEqualsOneTokenPasses) {
  for (const char* name : {"llama_tiny.gguf", "gpt2_tiny.gguf", "gemma3_tiny.gguf", "qwen3moe_tiny.gguf"}) {
    SCOPED_TRACE(name);
    auto model = Model::Load(Fixture(name));
    const int64_t vocab = model->config().vocab_size;
    std::vector<int32_t> prefix;
    for (int i = 0; i < 9; ++i) prefix.push_back(static_cast<int32_t>((i * 37 + 5) % vocab));
    const std::vector<int32_t> more = {3, 17, 4, 3, 11};
    for (DType kv : {DType::kF32, DType::kF16}) {
      Session one(*model, 32, kv), many(*model, 32, kv);
      std::vector<float> scratch(static_cast<size_t>(vocab));
      model->Forward(one, prefix, scratch.data(), false, 2);
      model->Forward(many, prefix, scratch.data(), false, 2);
      std::vector<float> expected;
      for (int32_t t : more) {
        model->Forward(one, std::span<const int32_t>(&t, 1), scratch.data(), false, 2);
        expected.insert(expected.end(), scratch.begin(), scratch.end());
      }
      ForwardOptions fo;
      fo.all_logits = fo.one_row_attention = true;
      fo.threads = 2;
      std::vector<float> got(more.size() * static_cast<size_t>(vocab));
      model->Forward(many, more, got.data(), fo);
      EXPECT_EQ(got, expected);
      // One more token after it sees the same cache.
      const int32_t t = 8;
      std::vector<float> a(static_cast<size_t>(vocab)), b(static_cast<size_t>(vocab));
      model->Forward(one, std::span<const int32_t>(&t, 1), a.data(), false, 2);
      model->Forward(many, std::span<const int32_t>(&t, 1), b.data(), false, 2);
      EXPECT_EQ(a, b);
      // Without it, the pass takes the multi-query kernel: not required to be equal, only close.
      Session plain(*model, 32, kv);
      model->Forward(plain, prefix, scratch.data(), false, 2);
      fo.one_row_attention = false;
      std::vector<float> joint(got.size());
      model->Forward(plain, more, joint.data(), fo);
      for (size_t i = 0; i < joint.size(); ++i) ASSERT_NEAR(joint[i], expected[i], 1e-3);
    }
    // Not with hooks.
    Session s(*model, 32);
    Hooks hooks;
    hooks.fn = [](const HookPoint&) {};
    ForwardOptions fo;
    fo.one_row_attention = true;
    fo.hooks = &hooks;
    std::vector<float> logits(static_cast<size_t>(vocab));
    EXPECT_THROW(model->Forward(s, prefix, logits.data(), fo), Error);
    EXPECT_EQ(s.n_past(), 0);
  }
}

// Greedy and sampled generations with lookup equal those without, with fewer passes. The tiny
// model's weights are random, so a logit bias keeps it to two tokens (5 and 9, in patterns its
// logits decide): n-grams then recur, and some drafts hold and some fail.
TEST(Lookup, GenerationEqualsOneTokenAtATime) {
  auto model = Model::Load(Fixture("llama_tiny.gguf"));
  std::vector<int32_t> prompt;
  for (int rep = 0; rep < 4; ++rep)
    for (int32_t t : {5, 9, 9, 5, 9}) prompt.push_back(t);
  GenerateOptions o;
  o.sampling.logit_bias = {{5, 10.0f}, {9, 10.0f}};
  o.max_tokens = 60;
  o.stop_at_eos = false;
  o.threads = 2;
  o.logprobs = 3;
  for (float temperature : {0.0f, 0.9f}) {
    o.sampling.temperature = temperature;
    o.sampling.seed = 7;
    o.lookup = 0;
    const GenerateResult plain = GenerateFromTokens(*model, prompt, o);
    EXPECT_EQ(plain.n_drafted, 0);
    for (int lookup : {1, 4, 23}) {
      SCOPED_TRACE("temperature " + std::to_string(temperature) + ", lookup " + std::to_string(lookup));
      o.lookup = lookup;
      const GenerateResult r = GenerateFromTokens(*model, prompt, o);
      EXPECT_EQ(r.tokens, plain.tokens);
      EXPECT_EQ(r.text, plain.text);
      ASSERT_EQ(r.logprobs.size(), plain.logprobs.size());
      for (size_t i = 0; i < r.logprobs.size(); ++i) {
        EXPECT_EQ(r.logprobs[i].logprob, plain.logprobs[i].logprob);
        EXPECT_EQ(r.logprobs[i].top, plain.logprobs[i].top);
      }
      // Rows evaluated = one per pass + the drafts; each kept draft saved a pass.
      EXPECT_EQ(r.n_gen_evaluated - r.n_drafted, plain.n_gen_evaluated - r.n_draft_accepted);
      EXPECT_LE(r.n_draft_accepted, r.n_drafted);
      EXPECT_GT(r.n_draft_accepted, 0);
    }
  }
}

// Near the end of the context no pass may overflow the session, and max_tokens still holds.
TEST(Lookup, StopsAtTheContextAndMaxTokens) {
  auto model = Model::Load(Fixture("llama_tiny.gguf"));  // context 128
  std::vector<int32_t> prompt;
  for (int rep = 0; rep < 6; ++rep)
    for (int32_t t : {5, 9, 13, 17}) prompt.push_back(t);
  GenerateOptions o;
  o.max_tokens = 500;
  o.stop_at_eos = false;
  o.threads = 2;
  o.lookup = 8;
  o.sampling.logit_bias = {{5, 10.0f}, {9, 10.0f}};  // recurring n-grams (see above)
  const GenerateResult r = GenerateFromTokens(*model, prompt, o);
  o.lookup = 0;
  const GenerateResult plain = GenerateFromTokens(*model, prompt, o);
  EXPECT_EQ(r.stop_reason, "context");
  EXPECT_EQ(r.tokens, plain.tokens);
  // With context shifts: none falls inside a pass of drafts, so they happen where they would.
  o.context_keep = 4;
  o.max_tokens = 300;
  const GenerateResult shifted_plain = GenerateFromTokens(*model, prompt, o);
  o.lookup = 8;
  const GenerateResult shifted = GenerateFromTokens(*model, prompt, o);
  EXPECT_GE(shifted.n_context_shifts, 2);
  EXPECT_EQ(shifted.n_context_shifts, shifted_plain.n_context_shifts);
  EXPECT_EQ(shifted.tokens, shifted_plain.tokens);
  EXPECT_GT(shifted.n_draft_accepted, 0);
  o.context_keep = -1;
  for (int max_tokens : {1, 2, 7}) {
    o.max_tokens = max_tokens;
    o.lookup = 0;
    const GenerateResult a = GenerateFromTokens(*model, prompt, o);
    o.lookup = 8;
    const GenerateResult b = GenerateFromTokens(*model, prompt, o);
    EXPECT_EQ(b.tokens.size(), static_cast<size_t>(max_tokens));
    EXPECT_EQ(a.tokens, b.tokens);
  }
}

TEST(Lookup, BadOptionsAreRefused) {
  auto model = Model::Load(Fixture("llama_tiny.gguf"));
  const std::vector<int32_t> prompt = {1, 5, 9};
  GenerateOptions o;
  o.max_tokens = 4;
  for (int lookup : {-1, 24}) {
    o.lookup = lookup;
    EXPECT_THROW(GenerateFromTokens(*model, prompt, o), Error) << lookup;
  }
  o.lookup = 4;
  o.lookup_min_ngram = 0;
  EXPECT_THROW(GenerateFromTokens(*model, prompt, o), Error);
  o.lookup_min_ngram = 3;
  o.lookup_ngram = 2;
  EXPECT_THROW(GenerateFromTokens(*model, prompt, o), Error);
}

// GenerateBatch runs every sequence's drafts in the step's pass: each result is the one without
// drafts; with more sequences than fit 24 rows with their drafts, some steps drop drafts.
TEST(Lookup, BatchedGenerationEqualsOneTokenAtATime) {
  auto model = Model::Load(Fixture("llama_tiny.gguf"));
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> p;
    for (int rep = 0; rep < 3; ++rep)
      for (int32_t t : {5, 9, 9, 5, 9}) p.push_back(rep == 1 && i % 2 ? 9 : t);
    prompts.push_back(p);
  }
  GenerateOptions o;
  o.max_tokens = 40;
  o.stop_at_eos = false;
  o.threads = 2;
  o.sampling.logit_bias = {{5, 10.0f}, {9, 10.0f}};
  o.sampling.temperature = 0.7f;
  for (int lookup : {0, 8, 23}) {
    SCOPED_TRACE(lookup);
    o.lookup = lookup;
    std::vector<GenerateOptions> options;
    for (int i = 0; i < 6; ++i) {
      options.push_back(o);
      options.back().sampling.seed = 100 + static_cast<uint64_t>(i);
    }
    const std::vector<GenerateResult> batch = GenerateBatch(*model, prompts, options);
    int64_t kept = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      GenerateOptions alone = options[i];
      alone.lookup = 0;
      EXPECT_EQ(batch[i].tokens, GenerateFromTokens(*model, prompts[i], alone).tokens) << i;
      kept += batch[i].n_draft_accepted;
    }
    if (lookup > 0) {
      EXPECT_GT(kept, 0);
    }
  }
}

}  // namespace
}  // namespace attn
