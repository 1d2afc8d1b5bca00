// Generation in a kept session (a conversation): the cached positions that begin the next prompt
// are reused, the rest of the cache is dropped, and greedy results equal a fresh evaluation's
// (on the tiny float32 GPT-2 fixture, where chunking changes only the last bits).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#include "attn/error.h"
#include "attn/generate.h"
#include "attn/model.h"
#include "attn/tensor.h"

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

// A context shift moves the cached positions after the forgotten ones down and rotates their keys
// by -discard positions. Layer 0's keys depend only on the token and its position, so after the
// shift they must equal the keys a fresh session computes for the kept tokens at their new
// positions: checked on every rotary variant of the fixtures (Llama 3.1's rope_freqs, NEOX order,
// YaRN, Qwen3's per-head norm, Gemma 3's sliding layers with their own base, Phi-3's partial
// rotary with LongRoPE, gpt-oss's sliding layers sharing the YaRN table, SmolLM3). Values move
// unchanged, and so do the keys of SmolLM3's NoPE layers (they carry no position to rotate).
TEST(GenerateInSession, CancelEndsBeforeTheNextPassAndKeepsTheSessionConsistent) {
  auto model = Model::Load(kGpt2);
  const int32_t vocab = static_cast<int32_t>(model->config().vocab_size);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 7; ++i) prompt.push_back((i * 29 + 3) % vocab);
  GenerateOptions o;
  o.max_tokens = 40;
  o.stop_at_eos = false;
  o.kv_dtype = DType::kF32;
  const GenerateResult whole = GenerateFromTokens(*model, prompt, o);
  ASSERT_EQ(whole.tokens.size(), 40u);

  // Cancelled (as a stream's reader does, from its own thread) once 5 tokens were sampled.
  std::atomic<bool> cancel{false};
  o.cancel = &cancel;
  o.logprobs = 0;
  int sampled = 0;
  o.on_logprob = [&](const TokenLogprob&) {
    if (++sampled == 5) cancel = true;
  };
  std::string streamed;
  Session session(*model, 8, DType::kF32);
  const GenerateResult r =
      GenerateInSession(*model, session, prompt, o, [&](const std::string& piece) { streamed += piece; });
  EXPECT_EQ(r.stop_reason, "cancelled");
  ASSERT_EQ(r.tokens.size(), 5u);
  EXPECT_TRUE(std::equal(r.tokens.begin(), r.tokens.end(), whole.tokens.begin()));
  EXPECT_EQ(r.text, streamed);
  // The session holds what a finished generation leaves: the prompt and all but the last token.
  EXPECT_EQ(session.n_past(), 7 + 4);
  // Set before the start: the prompt is evaluated and one token sampled, no generation pass.
  cancel = true;
  sampled = 0;
  const GenerateResult early = GenerateFromTokens(*model, prompt, o);
  EXPECT_EQ(early.stop_reason, "cancelled");
  EXPECT_EQ(early.tokens.size(), 1u);
  EXPECT_EQ(early.n_gen_evaluated, 0);
}

TEST(ContextShift, RotatedKeysEqualThoseComputedAtTheNewPositions) {
  for (const char* name : {"llama_tiny",      "qwen2_tiny",   "qwen2_yarn_tiny", "qwen3_tiny",
                           "gemma3_tiny",     "gemma2_tiny",  "phi3_tiny",       "gptoss_tiny",
                           "smollm3_tiny",    "granite_tiny", "gemma_tiny",      "olmo2_tiny",
                           "starcoder2_tiny", "phi2_tiny",    "stablelm_tiny",   "stablelm_parallel_tiny",
                           "ernie4_5_tiny",   "exaone4_tiny", "olmo3_tiny",      "granitemoe_tiny",
                           "cohere_tiny",     "cohere2_tiny"}) {
    SCOPED_TRACE(name);
    auto model = Model::Load(std::string(ATTN_FIXTURES_DIR) + "/" + name + ".gguf");
    const int32_t vocab = static_cast<int32_t>(model->config().vocab_size);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 40; ++i) tokens.push_back((i * 37 + 11) % vocab);
    std::vector<float> logits(static_cast<size_t>(vocab));
    Session shifted(*model, 64, DType::kF32);
    model->Forward(shifted, tokens, logits.data());
    // A copy of layer 0's values (for a float32 cache ValuesF32 views the cache's own memory).
    std::vector<float> unused;
    const TensorView vb = shifted.cache(0).ValuesF32(&unused);
    const auto* vb_data = static_cast<const float*>(vb.data);
    const std::vector<float> v_before(vb_data, vb_data + vb.stride[2] * vb.shape[2]);
    const int64_t nope = model->config().UsesRope(3) ? -1 : 3;  // smollm3: layer 3 has no RoPE
    std::vector<float> k_nope_before;
    if (nope >= 0) {
      std::vector<float> unused_k;
      const TensorView kn = shifted.cache(nope).KeysF32(&unused_k);
      const auto* kn_data = static_cast<const float*>(kn.data);
      k_nope_before.assign(kn_data, kn_data + kn.stride[2] * kn.shape[2]);
    }
    model->ShiftContext(shifted, 4, 10);
    if (nope >= 0) {
      std::vector<float> unused_k;
      const TensorView kn = shifted.cache(nope).KeysF32(&unused_k);
      const auto* kn_data = static_cast<const float*>(kn.data);
      for (int64_t h = 0; h < kn.shape[2]; ++h)
        for (int64_t p = 0; p < 30; ++p)
          for (int64_t d = 0; d < kn.shape[3]; ++d)
            ASSERT_EQ(kn_data[h * kn.stride[2] + p * kn.stride[1] + d],
                      k_nope_before[h * kn.stride[2] + (p < 4 ? p : p + 10) * kn.stride[1] + d])
                << "NoPE layer key moved but changed";
    }
    ASSERT_EQ(shifted.n_past(), 30);
    std::vector<int32_t> kept(tokens.begin(), tokens.begin() + 4);
    kept.insert(kept.end(), tokens.begin() + 14, tokens.end());
    EXPECT_EQ(shifted.tokens(), kept);

    Session fresh(*model, 64, DType::kF32);
    model->Forward(fresh, kept, logits.data());
    std::vector<float> unused_a, unused_b, unused_v;
    const TensorView a = shifted.cache(0).KeysF32(&unused_a), b = fresh.cache(0).KeysF32(&unused_b);
    const TensorView va = shifted.cache(0).ValuesF32(&unused_v);
    const auto* ks = static_cast<const float*>(a.data);
    const auto* kf = static_cast<const float*>(b.data);
    const auto* vs = static_cast<const float*>(va.data);
    const int64_t heads = a.shape[2], D = a.shape[3];
    double worst = 0.0, scale = 0.0;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t p = 0; p < 30; ++p)
        for (int64_t d = 0; d < D; ++d) {
          const float x = ks[h * a.stride[2] + p * a.stride[1] + d],
                      y = kf[h * b.stride[2] + p * b.stride[1] + d];
          worst = std::max(worst, std::abs(static_cast<double>(x) - y));
          scale = std::max(scale, std::abs(static_cast<double>(y)));
          // Values: position p now holds what position p (< 4) or p + 10 held.
          const int64_t old = p < 4 ? p : p + 10;
          ASSERT_EQ(vs[h * va.stride[2] + p * va.stride[1] + d],
                    v_before[h * vb.stride[2] + old * vb.stride[1] + d]);
        }
    EXPECT_LE(worst, 2e-5 * scale) << "largest key " << scale;
    EXPECT_GT(scale, 0.0);
    EXPECT_THROW(model->ShiftContext(shifted, 20, 11), Error);  // beyond the 30 cached positions
    EXPECT_THROW(model->ShiftContext(shifted, 4, 0), Error);
  }
  auto gpt2 = Model::Load(kGpt2);
  Session s(*gpt2, 16, DType::kF32);
  std::vector<float> logits(static_cast<size_t>(gpt2->config().vocab_size));
  const std::vector<int32_t> t = {1, 2, 3, 4, 5, 6};
  gpt2->Forward(s, t, logits.data());
  EXPECT_THROW(gpt2->ShiftContext(s, 2, 2), Error);  // learned absolute positions
}

// With context_keep, generation goes past the model's context (128 positions in the tiny Llama),
// shifting as often as needed; without it, it stops at the context. Half and q8_0-free caches alike.
TEST(ContextShift, GenerationGoesPastTheContext) {
  auto model = Model::Load(std::string(ATTN_FIXTURES_DIR) + "/llama_tiny.gguf");
  const std::vector<int32_t> prompt = {1, 5, 9, 13, 17};
  GenerateOptions o;
  o.max_tokens = 300;
  o.stop_at_eos = false;
  o.threads = 2;
  for (DType kv : {DType::kF32, DType::kF16, DType::kBF16}) {
    o.kv_dtype = kv;
    o.context_keep = -1;
    const GenerateResult stopped = GenerateFromTokens(*model, prompt, o);
    EXPECT_EQ(stopped.stop_reason, "context");
    EXPECT_EQ(stopped.tokens.size(), 128u - 5u + 1u);  // the last one sampled, never evaluated
    o.context_keep = 4;
    const GenerateResult shifted = GenerateFromTokens(*model, prompt, o);
    EXPECT_EQ(shifted.stop_reason, "length");
    EXPECT_EQ(shifted.tokens.size(), 300u);
    EXPECT_GE(shifted.n_context_shifts, 3);
    // Up to the first shift the two runs are the same run.
    EXPECT_TRUE(std::equal(stopped.tokens.begin(), stopped.tokens.end(), shifted.tokens.begin()));
  }
  auto gpt2 = Model::Load(kGpt2);
  o.context_keep = 4;
  EXPECT_THROW(GenerateFromTokens(*gpt2, prompt, o), Error);
}

TEST(Logprobs, LogSoftmaxAndTheMostLikelyTokensTiesByLowerId) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f};
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x));
  const double lse = std::log(sum);
  const TokenLogprob r = LogprobOf(logits, 2, 3);
  EXPECT_EQ(r.token, 2);
  EXPECT_NEAR(r.logprob, 2.0 - lse, 1e-6);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].first, 1);  // 3.0 at ids 1 and 3: the lower id first
  EXPECT_EQ(r.top[1].first, 3);
  EXPECT_EQ(r.top[2].first, 2);
  EXPECT_NEAR(r.top[0].second, 3.0 - lse, 1e-6);
  EXPECT_EQ(LogprobOf(logits, 0, 99).top.size(), 5u);  // k beyond the vocabulary: all of it
  EXPECT_TRUE(LogprobOf(logits, 0, 0).top.empty());
  EXPECT_THROW(LogprobOf(logits, 5, 1), Error);
}

}  // namespace
}  // namespace attn
