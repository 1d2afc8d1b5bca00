// Hooks during generation (GenerateOptions::hooks) and activation steering (include/attn/steer.h),
// on the tiny float32 fixtures.
#include "attn/steer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "attn/error.h"
#include "attn/generate.h"
#include "attn/model.h"

namespace attn {
namespace {

std::string Fixture(const std::string& name) { return std::string(ATTN_FIXTURES_DIR) + "/" + name; }

std::vector<int32_t> Prompt(int64_t vocab, int n) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(static_cast<int32_t>((i * 37 + 5) % vocab));
  return p;
}

// The hooks run on the prompt's pass, then on each new token's, each seeing where its rows sit; a
// hook that only reads changes nothing.
TEST(GenerateHooks, RunOnEveryPassWithItsPositions) {
  auto model = Model::Load(Fixture("llama_tiny.gguf"));
  const std::vector<int32_t> prompt = Prompt(model->config().vocab_size, 7);
  GenerateOptions o;
  o.max_tokens = 6;
  o.stop_at_eos = false;
  o.threads = 2;
  const GenerateResult plain = GenerateFromTokens(*model, prompt, o);
  std::vector<std::pair<int64_t, int64_t>> passes;  // (pos0, rows)
  Hooks hooks;
  hooks.wants = [](const char* name, int layer) {
    return layer == 1 && std::strcmp(name, "hook_resid_pre") == 0;
  };
  hooks.fn = [&](const HookPoint& p) { passes.emplace_back(p.pos0, p.rows); };
  o.hooks = &hooks;
  const GenerateResult hooked = GenerateFromTokens(*model, prompt, o);
  EXPECT_EQ(hooked.tokens, plain.tokens);
  const std::vector<std::pair<int64_t, int64_t>> want = {{0, 7}, {7, 1}, {8, 1}, {9, 1}, {10, 1}, {11, 1}};
  EXPECT_EQ(passes, want);
}

// Generating with a steering hook and the KV cache gives, at every step, the log-probabilities of
// running the whole text so far in one pass with the same hook.
TEST(GenerateHooks, SteeredGenerationEqualsRecomputingTheWholeText) {
  for (const char* name : {"llama_tiny.gguf", "gpt2_tiny.gguf"}) {
    SCOPED_TRACE(name);
    auto model = Model::Load(Fixture(name));
    const int64_t vocab = model->config().vocab_size;
    const std::vector<int32_t> prompt = Prompt(vocab, 6);
    const std::vector<std::vector<int32_t>> adds = {{3, 9, 4}}, subs = {{3, 9, 11}};
    const Hooks hooks = SteeringHooks(1, SteeringVector(*model, adds, subs, 1, 2), 3.0f);
    GenerateOptions o;
    o.max_tokens = 8;
    o.stop_at_eos = false;
    o.threads = 2;
    o.kv_dtype = DType::kF32;
    o.logprobs = 0;
    const GenerateResult plain = GenerateFromTokens(*model, prompt, o);
    o.hooks = &hooks;
    const GenerateResult steered = GenerateFromTokens(*model, prompt, o);
    EXPECT_NE(steered.tokens, plain.tokens);  // the vector moves this model's choices
    std::vector<int32_t> text = prompt;
    for (size_t k = 0; k < steered.tokens.size(); ++k) {
      const std::vector<float> logits = RunWithHooks(*model, text, hooks, 2);
      const float* row = logits.data() + (text.size() - 1) * static_cast<size_t>(vocab);
      double max = row[0], sum = 0.0;
      for (int64_t i = 1; i < vocab; ++i) max = std::max<double>(max, row[i]);
      for (int64_t i = 0; i < vocab; ++i) sum += std::exp(row[i] - max);
      const double logprob = row[steered.tokens[k]] - max - std::log(sum);
      EXPECT_NEAR(steered.logprobs[k].logprob, logprob, 1e-4) << "step " << k;
      text.push_back(steered.tokens[k]);
    }
  }
}

TEST(Steering, VectorIsTheMeanDifferenceOfLastRows) {
  auto model = Model::Load(Fixture("llama_tiny.gguf"));
  const std::vector<std::vector<int32_t>> adds = {{3, 9, 4}, {5, 6}}, subs = {{3, 9, 11}, {7, 6, 2, 2}};
  const std::vector<float> v = SteeringVector(*model, adds, subs, 1, 2);
  const auto last = [&](const std::vector<int32_t>& t) {
    const ActivationCache c = RunWithCache(*model, t, {}, 2);
    const CachedActivation* a = c.Find("blocks.1.hook_resid_pre");
    return std::vector<float>(a->data.end() - a->cols, a->data.end());
  };
  const std::vector<float> a0 = last(adds[0]), a1 = last(adds[1]), s0 = last(subs[0]), s1 = last(subs[1]);
  ASSERT_EQ(v.size(), a0.size());
  for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(v[i], ((a0[i] - s0[i]) + (a1[i] - s1[i])) / 2, 1e-5);
}

TEST(Steering, HooksAddFromTheirFirstPosition) {
  const Hooks hooks = SteeringHooks(3, {1.0f, -2.0f}, 0.5f, /*from=*/2);
  std::vector<float> rows(6, 10.0f);  // positions 1, 2, 3
  EXPECT_TRUE(hooks.Wants("hook_resid_pre", 3));
  EXPECT_FALSE(hooks.Wants("hook_resid_pre", 2));
  EXPECT_FALSE(hooks.Wants("hook_resid_mid", 3));
  hooks.fn(HookPoint{"hook_resid_pre", 3, rows.data(), 3, 2, 1});
  EXPECT_EQ(rows, (std::vector<float>{10.0f, 10.0f, 10.5f, 9.0f, 10.5f, 9.0f}));
  std::vector<float> wide(3, 0.0f);
  EXPECT_THROW(hooks.fn(HookPoint{"hook_resid_pre", 3, wide.data(), 1, 3, 5}), Error);
}

TEST(Steering, BadArgumentsAreRefusedByName) {
  auto model = Model::Load(Fixture("llama_tiny.gguf"));
  const std::vector<std::vector<int32_t>> one = {{3, 4}}, two = {{3, 4}, {5}}, empty = {{}};
  const auto message = [&](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { SteeringVector(*model, one, one, 99); }).find("layer 99"), std::string::npos);
  EXPECT_NE(message([&] { SteeringVector(*model, one, two, 0); }).find("1 texts to add and 2"),
            std::string::npos);
  EXPECT_NE(message([&] { SteeringVector(*model, empty, one, 0); }).find("no tokens"), std::string::npos);
  const Hooks hooks =
      SteeringHooks(0, std::vector<float>(static_cast<size_t>(model->config().d_model)), 1.0f);
  GenerateOptions o;
  o.hooks = &hooks;
  o.lookup = 4;
  EXPECT_NE(message([&] {
              GenerateFromTokens(*model, {3, 4}, o);
            }).find("lookup and hooks"),
            std::string::npos);
  o.lookup = 0;
  const std::vector<std::vector<int32_t>> prompts = {{3, 4}, {5, 6}};
  EXPECT_NE(message([&] { GenerateBatch(*model, prompts, std::span(&o, 1)); }).find("not a batch"),
            std::string::npos);
}

}  // namespace
}  // namespace attn

namespace attn {
namespace {

// A control vector on the model adds its directions to the blocks' outputs: the same numbers as a
// hook adding them at hook_resid_post, for every pass.
TEST(ControlVector, EqualsAHookAtTheBlocksOutput) {
  for (const char* name : {"llama_tiny.gguf", "gpt2_tiny.gguf"}) {
    SCOPED_TRACE(name);
    auto model = Model::Load(Fixture(name));
    const ModelConfig& c = model->config();
    std::vector<std::vector<float>> directions(static_cast<size_t>(c.n_layers));
    directions[1].resize(static_cast<size_t>(c.d_model));
    for (size_t i = 0; i < directions[1].size(); ++i)
      directions[1][i] = 0.05f * static_cast<float>(i % 7) - 0.1f;
    const std::vector<int32_t> tokens = Prompt(c.vocab_size, 9);
    Hooks hooks;
    hooks.wants = [](const char* n, int layer) {
      return layer == 1 && std::strcmp(n, "hook_resid_post") == 0;
    };
    hooks.fn = [&](const HookPoint& p) {
      for (int64_t r = 0; r < p.rows; ++r)
        for (int64_t i = 0; i < p.cols; ++i) p.data[r * p.cols + i] += directions[1][static_cast<size_t>(i)];
    };
    const std::vector<float> hooked = RunWithHooks(*model, tokens, hooks, 2);
    model->SetControlVector(directions);
    const std::vector<float> steered = RunWithHooks(*model, tokens, Hooks{}, 2);
    EXPECT_EQ(steered, hooked);
    model->SetControlVector({});
    EXPECT_NE(RunWithHooks(*model, tokens, Hooks{}, 2), hooked);
  }
}

TEST(ControlVector, FilesRoundTripAddUpAndKeepTheirRange) {
  auto model = Model::Load(Fixture("llama_tiny.gguf"));
  const ModelConfig& c = model->config();
  const size_t d = static_cast<size_t>(c.d_model);
  std::vector<std::vector<float>> a(static_cast<size_t>(c.n_layers)), b = a;
  a[1].assign(d, 1.0f);
  b[1].assign(d, 0.5f);
  const std::string dir = ::testing::TempDir();
  SaveControlVector(dir + "/a.gguf", a, "llama");
  SaveControlVector(dir + "/b.gguf", b, "llama");
  const std::vector<ControlVectorFile> files = {{dir + "/a.gguf", 2.0f}, {dir + "/b.gguf", -1.0f}};
  std::vector<std::vector<float>> loaded = LoadControlVectors(files, c);
  ASSERT_EQ(loaded.size(), static_cast<size_t>(c.n_layers));
  EXPECT_TRUE(loaded[0].empty());
  EXPECT_EQ(loaded[1], std::vector<float>(d, 1.5f));
  loaded = LoadControlVectors(files, c, /*layer_start=*/2, /*layer_end=*/-1);
  EXPECT_TRUE(loaded[1].empty());
  std::vector<std::vector<float>> zero(2, std::vector<float>(d, 1.0f));
  EXPECT_THROW(SaveControlVector(dir + "/z.gguf", zero, "llama"), Error);  // block 0 has none
}

TEST(ControlVector, BadFilesAreRefusedByName) {
  auto model = Model::Load(Fixture("llama_tiny.gguf"));
  const ModelConfig& c = model->config();
  const auto message = [&](const std::string& path) {
    try {
      const std::vector<ControlVectorFile> files = {{path, 1.0f}};
      LoadControlVectors(files, c);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string dir = ::testing::TempDir();
  // direction.N beyond the last block, of another width, or not a control vector at all.
  std::vector<std::vector<float>> far(static_cast<size_t>(c.n_layers + 1));
  far.back().assign(static_cast<size_t>(c.d_model), 1.0f);
  SaveControlVector(dir + "/far.gguf", far, "llama");
  EXPECT_NE(
      message(dir + "/far.gguf").find("direction." + std::to_string(c.n_layers) + ": the model has blocks"),
      std::string::npos);
  std::vector<std::vector<float>> wide(2);
  wide[1].assign(static_cast<size_t>(c.d_model + 1), 1.0f);
  SaveControlVector(dir + "/wide.gguf", wide, "llama");
  EXPECT_NE(message(dir + "/wide.gguf").find("expected F32 [" + std::to_string(c.d_model) + "]"),
            std::string::npos);
  EXPECT_NE(message(Fixture("llama_tiny.gguf")).find("no direction.N tensors"), std::string::npos);
  EXPECT_NE(message(dir + "/missing.gguf").find("missing.gguf"), std::string::npos);
  EXPECT_THROW(model->SetControlVector(std::vector<std::vector<float>>(static_cast<size_t>(c.n_layers + 1))),
               Error);
  EXPECT_THROW(model->SetControlVector({std::vector<float>(3, 1.0f)}), Error);
}

}  // namespace
}  // namespace attn

namespace attn {
namespace {

// The control vector of pairs holds, at block l's output, the steering vector of block l + 1's input.
TEST(ControlVector, FromPairsIsTheSteeringVectorOfTheNextBlock) {
  auto model = Model::Load(Fixture("granite_tiny.gguf"));  // 4 blocks
  const int n = static_cast<int>(model->config().n_layers);
  const std::vector<std::vector<int32_t>> adds = {{3, 9, 4}, {5, 6}}, subs = {{3, 9, 11}, {7, 6, 2, 2}};
  const std::vector<std::vector<float>> cv = ControlVectorFromPairs(*model, adds, subs, 2);
  ASSERT_EQ(cv.size(), static_cast<size_t>(n));
  EXPECT_TRUE(cv[0].empty());
  for (int l = 1; l + 1 < n; ++l)
    EXPECT_EQ(cv[static_cast<size_t>(l)], SteeringVector(*model, adds, subs, l + 1, 2)) << l;
  EXPECT_EQ(cv.back().size(), static_cast<size_t>(model->config().d_model));  // the last block's output too
}

}  // namespace
}  // namespace attn
