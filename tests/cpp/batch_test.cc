// Several sequences in one forward pass (Model::ForwardBatch) and batched generation
// (GenerateBatch): each sequence's logits equal those of its own one-sequence Forward within
// rounding, its cache ends up the same, and greedy generations equal one-at-a-time ones.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "attn/error.h"
#include "attn/generate.h"
#include "attn/model.h"
#include "attn/tensor.h"

namespace attn {
namespace {

std::string Fixture(const std::string& name) { return std::string(ATTN_FIXTURES_DIR) + "/" + name + ".gguf"; }

std::vector<int32_t> Tokens(int n, int seed, int64_t vocab) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(static_cast<int32_t>((i * 37 + seed * 101 + 5) % vocab));
  return t;
}

// Largest |a - b| over the largest |b|.
double RelDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0.0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return diff / scale;
}

// Three sequences with 5, 0 and 9 cached positions run 3, 1 and 7 new tokens in one pass, then
// one more token each; against the same steps run one sequence at a time. With max_chunk 4 the
// items straddle passes (an item continues in the next pass after its first rows are cached).
TEST(ForwardBatch, EachSequenceMatchesItsOwnForward) {
  for (const char* name : {"gpt2_tiny",
                           "llama_tiny",
                           "qwen2_tiny",
                           "qwen3_tiny",
                           "gemma2_tiny",
                           "gemma3_tiny",
                           "phi3_tiny",
                           "gptoss_tiny",
                           "smollm3_tiny",
                           "granite_tiny",
                           "mixtral_tiny",
                           "qwen2moe_tiny",
                           "olmoe_tiny",
                           "gemma_tiny",
                           "olmo2_tiny",
                           "starcoder2_tiny",
                           "phi2_tiny",
                           "stablelm_tiny",
                           "stablelm_parallel_tiny",
                           "ernie4_5_tiny",
                           "exaone4_tiny",
                           "olmo3_tiny",
                           "granitemoe_tiny",
                           "cohere_tiny",
                           "cohere2_tiny"}) {
    for (int64_t max_chunk : {int64_t{512}, int64_t{4}}) {
      SCOPED_TRACE(std::string(name) + " max_chunk " + std::to_string(max_chunk));
      auto model = Model::Load(Fixture(name));
      const int64_t vocab = model->config().vocab_size;
      const std::vector<int> cached = {5, 0, 9}, fresh = {3, 1, 7};
      std::vector<std::unique_ptr<Session>> batch, alone;
      std::vector<std::vector<int32_t>> news;
      std::vector<float> ref(static_cast<size_t>(vocab));
      std::vector<float> expected;  // each sequence's last-row logits, one at a time
      for (size_t i = 0; i < cached.size(); ++i) {
        batch.push_back(std::make_unique<Session>(*model, 32, DType::kF32));
        alone.push_back(std::make_unique<Session>(*model, 32, DType::kF32));
        const std::vector<int32_t> prefix = Tokens(cached[i], static_cast<int>(i), vocab);
        if (!prefix.empty()) {
          model->Forward(*batch[i], prefix, ref.data());
          model->Forward(*alone[i], prefix, ref.data());
        }
        news.push_back(Tokens(fresh[i], static_cast<int>(i) + 7, vocab));
        model->Forward(*alone[i], news[i], ref.data());
        expected.insert(expected.end(), ref.begin(), ref.end());
      }
      std::vector<Model::BatchItem> items;
      for (size_t i = 0; i < cached.size(); ++i) items.push_back({batch[i].get(), news[i]});
      ForwardOptions o;
      o.max_chunk = max_chunk;
      std::vector<float> got(expected.size());
      model->ForwardBatch(items, got.data(), o);
      EXPECT_LT(RelDiff(got, expected), 1e-5);
      for (size_t i = 0; i < cached.size(); ++i) {
        EXPECT_EQ(batch[i]->n_past(), cached[i] + fresh[i]);
        EXPECT_EQ(batch[i]->tokens(), alone[i]->tokens());
      }

      // One more token each, every row's logits kept: the caches the batch left are the same.
      expected.clear();
      std::vector<std::vector<int32_t>> step;
      for (size_t i = 0; i < cached.size(); ++i) {
        step.push_back(Tokens(2, static_cast<int>(i) + 3, vocab));
        std::vector<float> rows(2 * static_cast<size_t>(vocab));
        model->Forward(*alone[i], step[i], rows.data(), true);
        expected.insert(expected.end(), rows.begin(), rows.end());
        items[i].tokens = step[i];
      }
      o.all_logits = true;
      got.assign(expected.size(), 0.0f);
      model->ForwardBatch(items, got.data(), o);
      EXPECT_LT(RelDiff(got, expected), 1e-5);
    }
  }
}

TEST(ForwardBatch, BadBatchesAreRefusedBeforeAnythingChanges) {
  auto model = Model::Load(Fixture("llama_tiny"));
  const int64_t vocab = model->config().vocab_size;
  Session a(*model, 8, DType::kF32), b(*model, 8, DType::kF32);
  const std::vector<int32_t> three = Tokens(3, 0, vocab), nine = Tokens(9, 1, vocab);
  std::vector<float> logits(2 * static_cast<size_t>(vocab));
  const ForwardOptions o;
  auto expect_error = [&](std::vector<Model::BatchItem> items, const std::string& needle,
                          const ForwardOptions& fo) {
    try {
      model->ForwardBatch(items, logits.data(), fo);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_EQ(a.n_past(), 0);
    EXPECT_EQ(b.n_past(), 0);
  };
  expect_error({}, "no sequences", o);
  expect_error({{&a, three}, {&a, three}}, "sequences 0 and 1 share one session", o);
  expect_error({{&a, three}, {&b, nine}}, "sequence 1: 0 cached + 9 new tokens exceed", o);
  expect_error({{&a, three}, {&b, {}}}, "sequence 1: no tokens", o);
  expect_error({{&a, three}, {nullptr, three}}, "sequence 1: no session", o);
  const std::vector<int32_t> bad = {1, static_cast<int32_t>(vocab)};
  expect_error({{&a, three}, {&b, bad}}, "sequence 1: token id", o);
  Hooks hooks;
  hooks.fn = [](const HookPoint&) {};
  ForwardOptions with_hooks;
  with_hooks.hooks = &hooks;
  expect_error({{&a, three}, {&b, three}}, "need a single sequence", with_hooks);
  auto other = Model::Load(Fixture("gpt2_tiny"));
  Session foreign(*other, 8, DType::kF32);
  expect_error({{&a, three}, {&foreign, three}}, "sequence 1: the session was made for another model", o);
}

// Greedy batched generation gives each prompt the tokens it gets alone, with each sequence's own
// stop rules (a stop string, max_tokens 0, a length limit) and its own sampler.
TEST(GenerateBatch, MatchesOneAtATime) {
  for (const char* name : {"gpt2_tiny", "llama_tiny", "qwen3moe_tiny"}) {
    SCOPED_TRACE(name);
    auto model = Model::Load(Fixture(name));
    const int64_t vocab = model->config().vocab_size;
    std::vector<std::vector<int32_t>> prompts;
    std::vector<GenerateOptions> options;
    for (int i = 0; i < 4; ++i) {
      prompts.push_back(Tokens(3 + 5 * i, i, vocab));
      GenerateOptions o;
      o.max_tokens = 4 + 3 * i;
      o.stop_at_eos = false;
      o.kv_dtype = DType::kF32;
      o.threads = 2;
      options.push_back(o);
    }
    options[1].max_tokens = 0;
    options[3].sampling.temperature = 0.8f;  // seeded sampling: the same draws as alone
    options[3].sampling.seed = 42;
    // A stop string: the text of the second token that prompt 2 generates alone.
    const GenerateResult plain = GenerateFromTokens(*model, prompts[2], options[2]);
    ASSERT_GE(plain.tokens.size(), 3u);
    const std::string stop = model->tokenizer().TokenToPiece(plain.tokens[1]);
    if (!stop.empty()) options[2].stop = {stop};

    std::vector<std::string> streamed(prompts.size());
    std::vector<std::function<void(const std::string&)>> on_text;
    for (size_t i = 0; i < prompts.size(); ++i)
      on_text.push_back([&streamed, i](const std::string& piece) { streamed[i] += piece; });
    const std::vector<GenerateResult> got = GenerateBatch(*model, prompts, options, on_text);
    ASSERT_EQ(got.size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      SCOPED_TRACE("prompt " + std::to_string(i));
      const GenerateResult want = GenerateFromTokens(*model, prompts[i], options[i]);
      EXPECT_EQ(got[i].tokens, want.tokens);
      EXPECT_EQ(got[i].text, want.text);
      EXPECT_EQ(streamed[i], want.text);
      EXPECT_EQ(got[i].stop_reason, want.stop_reason);
      EXPECT_EQ(got[i].prompt_tokens, prompts[i]);
      EXPECT_EQ(got[i].n_gen_evaluated, want.n_gen_evaluated);
    }
    EXPECT_TRUE(got[1].tokens.empty());
    if (!stop.empty()) {
      EXPECT_EQ(got[2].stop_reason, "stop");
    }
  }
  auto model = Model::Load(Fixture("llama_tiny"));
  const std::vector<std::vector<int32_t>> two = {{1, 2}, {3}};
  std::vector<GenerateOptions> three(3);
  EXPECT_THROW(GenerateBatch(*model, two, three), Error);
  EXPECT_THROW(GenerateBatch(*model, {}, three), Error);
  const std::vector<std::vector<int32_t>> with_empty = {{1, 2}, {}};
  EXPECT_THROW(GenerateBatch(*model, with_empty, std::vector<GenerateOptions>(1)), Error);
}

}  // namespace
}  // namespace attn
