// The training metrics (induction probe, head scores, ICL score) and the trainer's forward
// against the runtime's, through a saved checkpoint.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "attn/error.h"
#include "attn/model.h"
#include "attn/train.h"
#include "train/metrics.h"

namespace attn {
namespace {

TEST(TrainMetrics, ProbeSequencesAreDistinctTokensRepeatedOnce) {
  const std::vector<int32_t> allowed = {3, 5, 7, 11, 13, 17, 19, 23, 29, 31};
  const InductionProbe probe = MakeInductionProbe(allowed, /*context=*/16, /*count=*/3, /*seed=*/1);
  EXPECT_EQ(probe.period, 8);  // min(context / 2, allowed)
  ASSERT_EQ(probe.sequences.size(), 3u);
  for (const std::vector<int32_t>& seq : probe.sequences) {
    ASSERT_EQ(seq.size(), 16u);
    const std::set<int32_t> first(seq.begin(), seq.begin() + 8);
    EXPECT_EQ(first.size(), 8u);  // no repeats inside a copy
    for (int32_t t : first) EXPECT_TRUE(std::find(allowed.begin(), allowed.end(), t) != allowed.end());
    EXPECT_TRUE(std::equal(seq.begin(), seq.begin() + 8, seq.begin() + 8));
  }
  EXPECT_NE(probe.sequences[0], probe.sequences[1]);
  // Deterministic in the seed; few allowed tokens shorten the period.
  EXPECT_EQ(MakeInductionProbe(allowed, 16, 3, 1).sequences, probe.sequences);
  EXPECT_NE(MakeInductionProbe(allowed, 16, 3, 2).sequences, probe.sequences);
  EXPECT_EQ(MakeInductionProbe(std::vector<int32_t>{1, 2, 3}, 64, 1, 0).period, 3);
  EXPECT_THROW(MakeInductionProbe(std::vector<int32_t>{1}, 16, 1, 0), Error);
  EXPECT_THROW(MakeInductionProbe(allowed, 2, 1, 0), Error);
}

TEST(TrainMetrics, InContextLearningScoreIsLateMinusEarlyLoss) {
  // context 32: w = 2, late = [30, 32), early = [2, 6).
  const int64_t batch = 2, context = 32;
  std::vector<float> losses(batch * context, 9.0f);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 30; t < 32; ++t) losses[b * context + t] = 1.0f;
    for (int64_t t = 2; t < 6; ++t) losses[b * context + t] = 3.0f + static_cast<float>(b);
  }
  EXPECT_DOUBLE_EQ(InContextLearningScore(losses, batch, context), 1.0 - 3.5);
  EXPECT_THROW(InContextLearningScore(losses, batch, 31), Error);
  EXPECT_THROW(InContextLearningScore(std::vector<float>(4), 1, 4), Error);
}

TrainModelConfig Tiny() {
  TrainModelConfig c;
  c.vocab_size = 256;
  c.context = 16;
  c.n_layers = 2;
  c.d_model = 16;
  c.n_heads = 2;
  return c;
}

TEST(TrainMetrics, HeadScoresReadTheTrainersPatterns) {
  TrainOptions o;
  o.threads = 1;
  Trainer trainer(Tiny(), o);
  std::vector<int32_t> allowed(40);
  for (int32_t i = 0; i < 40; ++i) allowed[i] = 'A' + i;
  const InductionProbe probe = MakeInductionProbe(allowed, 16, 2, 0);
  const TrainHeadScores s = ScoreTrainerHeads(trainer, probe);
  ASSERT_EQ(s.induction.size(), 4u);
  // The same means, computed here from the patterns.
  for (int64_t lh = 0; lh < 4; ++lh) {
    double ind = 0, prev = 0;
    for (const std::vector<int32_t>& seq : probe.sequences) {
      const std::vector<float> p = trainer.Patterns(seq);
      const int64_t n = 16, P = 8;
      const float* a = p.data() + lh * n * n;
      double si = 0, sp = 0;
      for (int64_t i = P; i < n; ++i) si += a[i * n + i - P + 1];
      for (int64_t i = 1; i < n; ++i) sp += a[i * n + i - 1];
      ind += si / (n - P) / 2, prev += sp / (n - 1) / 2;
    }
    EXPECT_NEAR(s.induction[lh], ind, 1e-12);
    EXPECT_NEAR(s.previous_token[lh], prev, 1e-12);
    // A freshly initialized model attends almost uniformly: about 1 / (i + 1) per key.
    EXPECT_GT(s.previous_token[lh], 0.05);
    EXPECT_LT(s.previous_token[lh], 0.3);
  }
}

// After a few steps of training, the checkpoint's logits through the runtime (attn::Model, the
// inference kernels) equal the trainer's own forward.
TEST(TrainMetrics, TheRuntimeReproducesTheTrainersLogits) {
  for (int64_t d_ff : {0, 32}) {
    SCOPED_TRACE(d_ff);
    TrainModelConfig c = Tiny();
    c.d_ff = d_ff;
    TrainOptions o;
    o.threads = 1;
    o.batch = 2;
    o.lr = 1e-2f;
    o.warmup = 1;
    Trainer trainer(c, o);
    std::vector<int32_t> batch(2 * 17);
    for (size_t i = 0; i < batch.size(); ++i) batch[i] = static_cast<int32_t>((i * 37 + 11) % 97);
    for (int s = 0; s < 3; ++s) {
      trainer.ForwardBackward(batch, 2);
      trainer.Update();
    }
    const auto dir =
        std::filesystem::temp_directory_path() / ("attn_train_metrics_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string path = (dir / "model.gguf").string();
    SaveCheckpoint(trainer, path);
    auto model = Model::Load(path);
    const std::vector<int32_t> tokens(batch.begin(), batch.begin() + 16);
    std::vector<float> got(16 * 256);
    Session session(*model, c.context);
    model->Forward(session, tokens, got.data(), /*all_logits=*/true, /*threads=*/1);
    const std::vector<float> want = trainer.Logits(tokens);
    ASSERT_EQ(want.size(), got.size());
    double scale = 0, worst = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      scale = std::max(scale, std::abs(static_cast<double>(want[i])));
      worst = std::max(worst, std::abs(static_cast<double>(want[i]) - got[i]));
    }
    ASSERT_GT(scale, 0.1);
    EXPECT_LT(worst, 1e-4 * scale) << "largest |logit| " << scale;
    std::filesystem::remove_all(dir);
  }
}

}  // namespace
}  // namespace attn
