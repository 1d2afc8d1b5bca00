// The server's generation slots (src/serve/slots.h): requests run together through shared forward
// passes and each gets what it gets alone; a slot's cache serves the next turn of a conversation;
// cancelled, failing and unfinished jobs end with the callback they are owed.
#include "serve/slots.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "attn/error.h"
#include "attn/generate.h"
#include "attn/model.h"

namespace attn {
namespace {

const std::string kLlama = std::string(ATTN_FIXTURES_DIR) + "/llama_tiny.gguf";

struct Waiter {
  std::promise<GenerateResult> promise;
  std::shared_ptr<serve::Job> job = std::make_shared<serve::Job>();
  std::string streamed;
  Waiter(std::vector<int32_t> tokens, const GenerateOptions& options) {
    job->tokens = std::move(tokens);
    job->options = options;
    job->on_text = [this](const std::string& piece) { streamed += piece; };
    job->on_done = [this](const GenerateResult& r) { promise.set_value(r); };
    job->on_error = [this](std::exception_ptr e) { promise.set_exception(e); };
  }
};

GenerateOptions Greedy(int max_tokens) {
  GenerateOptions o;
  o.max_tokens = max_tokens;
  o.stop_at_eos = false;
  o.kv_dtype = DType::kF32;
  o.threads = 2;
  return o;
}

std::vector<int32_t> Prompt(int n, int seed) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back((i * 29 + seed * 13 + 3) % 250);
  return t;
}

TEST(Slots, RequestsRunTogetherAndEachGetsItsOwnAnswer) {
  auto model = Model::Load(kLlama);
  serve::Slots slots(*model, 3, DType::kF32, 2);
  std::vector<std::unique_ptr<Waiter>> waiters;
  for (int i = 0; i < 6; ++i)
    waiters.push_back(std::make_unique<Waiter>(Prompt(4 + 3 * i, i), Greedy(20 + i)));
  for (auto& w : waiters) slots.Submit(w->job);
  for (int i = 0; i < 6; ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    const GenerateResult got = waiters[static_cast<size_t>(i)]->promise.get_future().get();
    const GenerateResult want = GenerateFromTokens(*model, Prompt(4 + 3 * i, i), Greedy(20 + i));
    EXPECT_EQ(got.tokens, want.tokens);
    EXPECT_EQ(got.text, want.text);
    EXPECT_EQ(waiters[static_cast<size_t>(i)]->streamed, want.text);
    EXPECT_EQ(got.stop_reason, "length");
  }
  EXPECT_GE(slots.max_batch(), 2);  // six requests on three slots: passes were shared
  EXPECT_LE(slots.max_batch(), 3);
  for (const auto& info : slots.Describe()) EXPECT_FALSE(info.busy);
}

TEST(Slots, ANextTurnReusesTheSlotThatHoldsItsConversation) {
  auto model = Model::Load(kLlama);
  serve::Slots slots(*model, 2, DType::kF32, 2);
  Waiter first(Prompt(10, 1), Greedy(5));
  slots.Submit(first.job);
  const GenerateResult a = first.promise.get_future().get();
  Waiter other(Prompt(7, 2), Greedy(5));  // takes the other slot (no common beginning)
  slots.Submit(other.job);
  other.promise.get_future().get();
  std::vector<int32_t> next = Prompt(10, 1);
  next.insert(next.end(), a.tokens.begin(), a.tokens.end());
  next.push_back(17);
  Waiter second(next, Greedy(5));
  slots.Submit(second.job);
  const GenerateResult b = second.promise.get_future().get();
  EXPECT_EQ(b.n_prompt_cached, 10 + 4);  // the prompt and all generated tokens but the last
  EXPECT_EQ(b.tokens, GenerateFromTokens(*model, next, Greedy(5)).tokens);
  // cache_prompt = false: evaluated afresh.
  Waiter fresh(next, Greedy(5));
  fresh.job->cache_prompt = false;
  slots.Submit(fresh.job);
  const GenerateResult c = fresh.promise.get_future().get();
  EXPECT_EQ(c.n_prompt_cached, 0);
  EXPECT_EQ(c.tokens, b.tokens);
}

// A long prompt goes in pieces, one between two of the other slots' steps, so they keep
// generating meanwhile; its answer is the one it gets alone with the same pieces.
TEST(Slots, ALongPromptIsEvaluatedInPiecesBetweenTheOtherSlotsSteps) {
  auto model = Model::Load(kLlama);
  const auto alone = [&] {
    serve::Slots slots(*model, 2, DType::kF32, 2, /*prompt_piece=*/8);
    Waiter b(Prompt(96, 2), Greedy(6));
    slots.Submit(b.job);
    return b.promise.get_future().get();
  }();
  serve::Slots slots(*model, 2, DType::kF32, 2, /*prompt_piece=*/8);
  Waiter a(Prompt(4, 1), Greedy(110));
  Waiter b(Prompt(96, 2), Greedy(6));  // 96 tokens: 12 pieces of 8
  // B arrives while A generates: submitted from A's second token's callback (on the slots' thread).
  std::atomic<int64_t> before{-1}, passes_at_first_token{-1};
  int a_tokens = 0;
  a.job->options.logprobs = 0;  // (a callback at each sampled token)
  a.job->options.on_logprob = [&](const TokenLogprob&) {
    if (++a_tokens == 2) {
      before = slots.passes();
      slots.Submit(b.job);
    }
  };
  b.job->options.logprobs = 0;
  b.job->options.on_logprob = [&](const TokenLogprob&) {
    if (passes_at_first_token < 0) passes_at_first_token = slots.passes();
  };
  slots.Submit(a.job);
  const GenerateResult got = b.promise.get_future().get();
  EXPECT_GE(passes_at_first_token - before, 10) << "the other slot's steps while the prompt went in";
  EXPECT_EQ(got.tokens, alone.tokens);
  EXPECT_EQ(got.n_prompt_evaluated, 96);
  EXPECT_EQ(a.promise.get_future().get().tokens.size(), 110u);
}

TEST(Slots, CancelledFailingAndUnfinishedJobsGetTheirCallback) {
  auto model = Model::Load(kLlama);
  // Declared before the slots, so that they outlive them (their callbacks run until ~Slots).
  Waiter runs(Prompt(5, 5), Greedy(100000));
  runs.job->options.context_keep = 2;  // never ends by itself (the context shifts)
  Waiter waits(Prompt(5, 6), Greedy(5));
  auto running = runs.promise.get_future();
  auto queued = waits.promise.get_future();
  {
    serve::Slots slots(*model, 1, DType::kF32, 2);
    // Cancelled before it starts: ends at its first step with what it has.
    Waiter cancelled(Prompt(5, 3), Greedy(100));
    cancelled.job->cancelled = true;
    slots.Submit(cancelled.job);
    const GenerateResult r = cancelled.promise.get_future().get();
    EXPECT_EQ(r.stop_reason, "cancelled");
    EXPECT_LT(r.tokens.size(), 100u);

    // A bad request fails alone; the next one runs.
    Waiter empty({}, Greedy(5));
    slots.Submit(empty.job);
    EXPECT_THROW(empty.promise.get_future().get(), Error);
    Waiter fine(Prompt(5, 4), Greedy(3));
    slots.Submit(fine.job);
    EXPECT_EQ(fine.promise.get_future().get().tokens.size(), 3u);

    // One long job holds the only slot, another waits in the queue; both end when the slots stop.
    slots.Submit(runs.job);
    slots.Submit(waits.job);
    while (slots.passes() < 200) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // past 128
  }
  EXPECT_THROW(running.get(), Error);
  EXPECT_THROW(queued.get(), Error);
  auto model2 = Model::Load(kLlama);
  EXPECT_THROW(serve::Slots(*model2, 0, DType::kF32, 1), Error);
}

}  // namespace
}  // namespace attn
