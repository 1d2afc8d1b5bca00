// Training checkpoints (src/train/checkpoint.h): bit-exact round trips, refusals that name what
// differs and change nothing, atomic saves, and the runtime opening a checkpoint as a model whose
// logits match a plain scalar forward written here from include/attn/train.h's equations.
#include "train/checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "attn/error.h"
#include "attn/heads.h"
#include "attn/model.h"
#include "format/gguf.h"
#include "format/gguf_writer.h"

namespace attn {
namespace {

std::string TempPath(const std::string& name) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("attn_checkpoint_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void ExpectError(const std::function<void()>& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning '" << fragments[0] << "'";
  } catch (const Error& e) {
    for (const std::string& f : fragments)
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
  }
}

TrainModelConfig SmallConfig(int64_t d_ff) {
  TrainModelConfig c;
  c.vocab_size = 256;
  c.context = 32;
  c.n_layers = 2;
  c.d_model = 16;
  c.n_heads = 4;
  c.d_ff = d_ff;
  c.norm_eps = 1e-5f;
  return c;
}

// The gpt2 params of `c` in GGUF order, filled by a seeded generator: weights N(0, 0.3), norm
// gains 1 + N(0, 0.1), biases N(0, 0.1); moments random too, so that a round trip shows them.
std::vector<TrainParam> RandomParams(const TrainModelConfig& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<TrainParam> ps;
  auto add = [&](const std::string& name, int64_t rows, int64_t cols, float mean, float std) {
    TrainParam p;
    p.name = name;
    p.rows = rows;
    p.cols = cols;
    p.decay = rows > 1;
    const size_t n = static_cast<size_t>(rows * cols);
    for (size_t i = 0; i < n; ++i) p.value.push_back(mean + std * normal(rng));
    for (size_t i = 0; i < n; ++i) p.adam_m.push_back(1e-3f * normal(rng));
    for (size_t i = 0; i < n; ++i) p.adam_v.push_back(1e-6f * std::abs(normal(rng)));
    p.grad.assign(n, 0.0f);
    ps.push_back(std::move(p));
  };
  const int64_t d = c.d_model;
  add("token_embd.weight", c.vocab_size, d, 0.0f, 0.3f);
  add("position_embd.weight", c.context, d, 0.0f, 0.3f);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add(b + "attn_norm.weight", 1, d, 1.0f, 0.1f);
    add(b + "attn_norm.bias", 1, d, 0.0f, 0.1f);
    add(b + "attn_qkv.weight", 3 * d, d, 0.0f, 0.3f);
    add(b + "attn_qkv.bias", 1, 3 * d, 0.0f, 0.1f);
    add(b + "attn_output.weight", d, d, 0.0f, 0.3f);
    add(b + "attn_output.bias", 1, d, 0.0f, 0.1f);
    if (c.d_ff > 0) {
      add(b + "ffn_norm.weight", 1, d, 1.0f, 0.1f);
      add(b + "ffn_norm.bias", 1, d, 0.0f, 0.1f);
      add(b + "ffn_up.weight", c.d_ff, d, 0.0f, 0.3f);
      add(b + "ffn_up.bias", 1, c.d_ff, 0.0f, 0.1f);
      add(b + "ffn_down.weight", d, c.d_ff, 0.0f, 0.3f);
      add(b + "ffn_down.bias", 1, d, 0.0f, 0.1f);
    }
  }
  add("output_norm.weight", 1, d, 1.0f, 0.1f);
  add("output_norm.bias", 1, d, 0.0f, 0.1f);
  add("output.weight", c.vocab_size, d, 0.0f, 0.3f);
  return ps;
}

const TrainParam& P(const std::vector<TrainParam>& ps, const std::string& name) {
  for (const TrainParam& p : ps)
    if (p.name == name) return p;
  throw Error("no param " + name);
}

bool SameBits(const std::vector<TrainParam>& a, const std::vector<TrainParam>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto same = [](const std::vector<float>& x, const std::vector<float>& y) {
      return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
    };
    if (a[i].name != b[i].name || !same(a[i].value, b[i].value) || !same(a[i].adam_m, b[i].adam_m) ||
        !same(a[i].adam_v, b[i].adam_v))
      return false;
  }
  return true;
}

// ---- an independent forward, in double, straight from train.h's equations ----

using Mat = std::vector<double>;  // row-major

Mat LayerNorm(const Mat& x, int64_t n, int64_t d, const TrainParam& g, const TrainParam& b, double eps) {
  Mat y(x.size());
  for (int64_t i = 0; i < n; ++i) {
    double mean = 0, var = 0;
    for (int64_t j = 0; j < d; ++j) mean += x[i * d + j];
    mean /= d;
    for (int64_t j = 0; j < d; ++j) var += (x[i * d + j] - mean) * (x[i * d + j] - mean);
    var /= d;  // biased, as PyTorch's LayerNorm
    for (int64_t j = 0; j < d; ++j)
      y[i * d + j] = (x[i * d + j] - mean) / std::sqrt(var + eps) * g.value[j] + b.value[j];
  }
  return y;
}

// y = x W^T (+ bias): x [n, W.cols], W [rows, cols] -> y [n, W.rows].
Mat Linear(const Mat& x, int64_t n, const TrainParam& w, const TrainParam* bias) {
  Mat y(static_cast<size_t>(n * w.rows));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 0; r < w.rows; ++r) {
      double s = bias ? bias->value[r] : 0.0;
      for (int64_t k = 0; k < w.cols; ++k) s += x[i * w.cols + k] * w.value[r * w.cols + k];
      y[i * w.rows + r] = s;
    }
  return y;
}

Mat ReferenceLogits(const TrainModelConfig& c, const std::vector<TrainParam>& ps,
                    const std::vector<int32_t>& x) {
  const int64_t n = static_cast<int64_t>(x.size()), d = c.d_model, H = c.n_heads, dh = d / H;
  Mat h(static_cast<size_t>(n * d));
  for (int64_t t = 0; t < n; ++t)  // h = wte[x_t] + wpe[t]
    for (int64_t j = 0; j < d; ++j)
      h[t * d + j] =
          P(ps, "token_embd.weight").value[x[t] * d + j] + P(ps, "position_embd.weight").value[t * d + j];
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const Mat a = LayerNorm(h, n, d, P(ps, b + "attn_norm.weight"), P(ps, b + "attn_norm.bias"), c.norm_eps);
    const Mat qkv = Linear(a, n, P(ps, b + "attn_qkv.weight"), &P(ps, b + "attn_qkv.bias"));  // [n, 3d]
    Mat z(static_cast<size_t>(n * d));
    for (int64_t head = 0; head < H; ++head)
      for (int64_t i = 0; i < n; ++i) {
        // scores over keys j <= i, softmax, weighted sum of values
        std::vector<double> s(static_cast<size_t>(i + 1));
        double mx = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (int64_t e = 0; e < dh; ++e)
            dot += qkv[i * 3 * d + head * dh + e] * qkv[j * 3 * d + d + head * dh + e];
          s[j] = dot / std::sqrt(static_cast<double>(dh));
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (double& v : s) sum += (v = std::exp(v - mx));
        for (int64_t e = 0; e < dh; ++e) {
          double acc = 0;
          for (int64_t j = 0; j <= i; ++j) acc += s[j] / sum * qkv[j * 3 * d + 2 * d + head * dh + e];
          z[i * d + head * dh + e] = acc;
        }
      }
    const Mat o = Linear(z, n, P(ps, b + "attn_output.weight"), &P(ps, b + "attn_output.bias"));
    for (size_t i = 0; i < h.size(); ++i) h[i] += o[i];
    if (c.d_ff > 0) {
      const Mat a2 = LayerNorm(h, n, d, P(ps, b + "ffn_norm.weight"), P(ps, b + "ffn_norm.bias"), c.norm_eps);
      Mat u = Linear(a2, n, P(ps, b + "ffn_up.weight"), &P(ps, b + "ffn_up.bias"));
      for (double& v : u)  // GELU, tanh form
        v = 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
      const Mat down = Linear(u, n, P(ps, b + "ffn_down.weight"), &P(ps, b + "ffn_down.bias"));
      for (size_t i = 0; i < h.size(); ++i) h[i] += down[i];
    }
  }
  const Mat f = LayerNorm(h, n, d, P(ps, "output_norm.weight"), P(ps, "output_norm.bias"), c.norm_eps);
  return Linear(f, n, P(ps, "output.weight"), nullptr);  // [n, vocab]
}

// ---- tests ----

TEST(Checkpoint, RoundTripsParamsMomentsAndStepBitForBit) {
  for (int64_t d_ff : {0, 24}) {
    SCOPED_TRACE(d_ff);
    const TrainModelConfig c = SmallConfig(d_ff);
    TrainOptions o;
    o.lr = 3e-4f;
    o.batch = 7;
    o.seed = 12345678901234ull;
    const std::vector<TrainParam> saved = RandomParams(c, 1);
    const std::string path = TempPath("round_trip.gguf");
    WriteCheckpoint(c, o, saved, 4321, path);
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

    std::vector<TrainParam> loaded = RandomParams(c, 2);  // different numbers, same names
    int64_t step = -1;
    ReadCheckpoint(path, c, loaded, step);
    EXPECT_EQ(step, 4321);
    EXPECT_TRUE(SameBits(saved, loaded));

    const TrainModelConfig rc = ReadCheckpointConfig(path);
    EXPECT_EQ(rc.vocab_size, 256);
    EXPECT_EQ(rc.context, 32);
    EXPECT_EQ(rc.n_layers, 2);
    EXPECT_EQ(rc.d_model, 16);
    EXPECT_EQ(rc.n_heads, 4);
    EXPECT_EQ(rc.d_ff, d_ff);
    EXPECT_EQ(rc.norm_eps, 1e-5f);
    const TrainOptions ro = ReadCheckpointOptions(path);
    EXPECT_EQ(ro.lr, 3e-4f);
    EXPECT_EQ(ro.batch, 7);
    EXPECT_EQ(ro.seed, 12345678901234ull);
    EXPECT_EQ(ro.beta2, o.beta2);

    // The file itself: the layout train.h promises.
    const gguf::File f = gguf::File::Open(path);
    EXPECT_EQ(std::get<std::string>(f.Find("general.architecture")->data), "gpt2");
    EXPECT_EQ(std::get<std::string>(f.Find("general.name")->data), "attn-trained");
    EXPECT_EQ(std::get<uint64_t>(f.Find("gpt2.feed_forward_length")->data), static_cast<uint64_t>(d_ff));
    EXPECT_EQ(std::get<uint64_t>(f.Find("attn.train.step")->data), 4321u);
    EXPECT_EQ(f.tensors().size(), 3 * saved.size());
    EXPECT_EQ(f.FindTensor("blk.1.attn_qkv.weight")->dims, (std::vector<uint64_t>{16, 48}));
    EXPECT_EQ(f.FindTensor("blk.1.attn_qkv.bias")->dims, (std::vector<uint64_t>{48}));
    EXPECT_EQ(f.FindTensor("train.adam_v.output.weight")->dims, (std::vector<uint64_t>{16, 256}));
    EXPECT_EQ(f.FindTensor("blk.0.ffn_up.weight") != nullptr, d_ff > 0);
  }
}

TEST(Checkpoint, EmptyMomentsAreSavedAsZeros) {
  const TrainModelConfig c = SmallConfig(0);
  std::vector<TrainParam> ps = RandomParams(c, 3);
  for (TrainParam& p : ps) p.adam_m.clear(), p.adam_v.clear();
  const std::string path = TempPath("fresh.gguf");
  WriteCheckpoint(c, {}, ps, 0, path);
  std::vector<TrainParam> loaded = RandomParams(c, 4);
  int64_t step = -1;
  ReadCheckpoint(path, c, loaded, step);
  EXPECT_EQ(step, 0);
  for (const TrainParam& p : loaded) {
    EXPECT_EQ(p.adam_m, std::vector<float>(p.value.size(), 0.0f)) << p.name;
    EXPECT_EQ(p.adam_v, std::vector<float>(p.value.size(), 0.0f)) << p.name;
  }
}

TEST(Checkpoint, AMismatchNamesTheKeyOrTensorAndChangesNothing) {
  const TrainModelConfig c = SmallConfig(24);
  const std::string path = TempPath("mismatch.gguf");
  WriteCheckpoint(c, {}, RandomParams(c, 5), 10, path);
  const std::vector<TrainParam> original = RandomParams(c, 6);

  auto expect_refused = [&](const TrainModelConfig& expect, std::vector<TrainParam> params,
                            const std::vector<std::string>& fragments) {
    const std::vector<TrainParam> before = params;
    int64_t step = 77;
    ExpectError([&] { ReadCheckpoint(path, expect, params, step); }, fragments);
    EXPECT_TRUE(SameBits(before, params));
    EXPECT_EQ(step, 77);
  };
  TrainModelConfig other = c;
  other.d_model = 32;
  expect_refused(other, original, {"gpt2.embedding_length", "is 16 in the file, 32 expected"});
  other = c, other.d_ff = 0;
  expect_refused(other, original, {"gpt2.feed_forward_length", "is 24 in the file, 0 expected"});
  other = c, other.context = 64;
  expect_refused(other, original, {"gpt2.context_length", "32", "64"});
  other = c, other.n_layers = 3;
  expect_refused(other, original, {"gpt2.block_count", "2", "3"});
  other = c, other.n_heads = 2;
  expect_refused(other, original, {"gpt2.attention.head_count", "4", "2"});
  other = c, other.vocab_size = 300;
  expect_refused(other, original, {"vocab_size", "256", "300"});
  other = c, other.norm_eps = 1e-6f;
  expect_refused(other, original, {"layer_norm_epsilon", "9.99999975e-06", "9.99999997e-07"});

  std::vector<TrainParam> ps = original;  // a tensor shaped differently
  for (TrainParam& p : ps)
    if (p.name == "blk.1.ffn_up.bias") p.cols = 25;
  expect_refused(c, ps, {"tensor 'blk.1.ffn_up.bias'", "[24] in the file, [25] expected"});
  ps = original;  // a tensor the file lacks
  ps.back().name = "output.weight2";
  expect_refused(c, ps, {"tensor 'output.weight' in the file is not a parameter"});
  ps = original;
  ps.push_back(ps.back());
  ps.back().name = "extra.weight";
  expect_refused(c, ps, {"tensor 'extra.weight' is missing"});

  // Files that are not checkpoints: a model, and another architecture.
  ExpectError([&] { ReadCheckpointConfig(std::string(ATTN_FIXTURES_DIR) + "/gpt2_tiny.gguf"); },
              {"not an attn checkpoint", "attn.train.format"});
  ExpectError([&] { ReadCheckpointConfig(std::string(ATTN_FIXTURES_DIR) + "/tiny.gguf"); },
              {"not an attn checkpoint", "\"llama\""});
  ps = original;
  int64_t step = 77;
  ExpectError([&] { ReadCheckpoint(std::string(ATTN_FIXTURES_DIR) + "/tiny.gguf", c, ps, step); },
              {"not an attn checkpoint"});
  EXPECT_TRUE(SameBits(original, ps));
}

TEST(Checkpoint, WriteRefusesParamsThatAreNotTheModelsTensors) {
  const TrainModelConfig c = SmallConfig(0);
  const std::string path = TempPath("refused.gguf");
  std::vector<TrainParam> ps = RandomParams(c, 7);
  ps.erase(ps.begin() + 3);  // blk.0.attn_norm.bias
  ExpectError([&] { WriteCheckpoint(c, {}, ps, 0, path); }, {"param 'blk.0.attn_norm.bias'", "missing"});
  ps = RandomParams(c, 7);
  ps[0].value.pop_back();
  ExpectError([&] { WriteCheckpoint(c, {}, ps, 0, path); }, {"'token_embd.weight' holds 4095 values"});
  ps = RandomParams(c, 7);
  ps[1].rows = 31;
  ExpectError([&] { WriteCheckpoint(c, {}, ps, 0, path); }, {"'position_embd.weight' is 31 x 16", "32 x 16"});
  ExpectError([&] { WriteCheckpoint(SmallConfig(8), {}, RandomParams(c, 7), 0, path); }, {"ffn_norm.weight"});
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Checkpoint, AFailedSaveKeepsThePreviousFile) {
  const TrainModelConfig c = SmallConfig(0);
  const std::string path = TempPath("atomic.gguf");
  const std::vector<TrainParam> first = RandomParams(c, 8);
  WriteCheckpoint(c, {}, first, 1, path);
  const std::vector<uint8_t> bytes = ReadBytes(path);

  // Unwritable: the temporary file's place is taken by a folder.
  std::filesystem::create_directory(path + ".tmp");
  ExpectError([&] { WriteCheckpoint(c, {}, RandomParams(c, 9), 2, path); },
              {"atomic.gguf.tmp", "cannot create"});
  std::filesystem::remove(path + ".tmp");
  EXPECT_EQ(ReadBytes(path), bytes);
  std::vector<TrainParam> loaded = RandomParams(c, 10);
  int64_t step = 0;
  ReadCheckpoint(path, c, loaded, step);
  EXPECT_EQ(step, 1);
  EXPECT_TRUE(SameBits(first, loaded));
  // A folder that does not exist.
  ExpectError([&] { WriteCheckpoint(c, {}, first, 1, TempPath("missing/dir/x.gguf")); }, {"cannot create"});
}

TEST(Checkpoint, TheRuntimeLoadsItAndMatchesAScalarForward) {
  for (int64_t d_ff : {0, 24}) {
    SCOPED_TRACE(d_ff);
    const TrainModelConfig c = SmallConfig(d_ff);
    const std::vector<TrainParam> ps = RandomParams(c, 11 + static_cast<uint32_t>(d_ff));
    const std::string path = TempPath("model.gguf");
    WriteCheckpoint(c, {}, ps, 5, path);

    auto model = Model::Load(path);
    const ModelConfig& mc = model->config();
    EXPECT_EQ(mc.arch, Arch::kGpt2);
    EXPECT_EQ(mc.d_ff, d_ff);
    EXPECT_EQ(mc.vocab_size, 256);
    EXPECT_FALSE(mc.tied_output);
    EXPECT_EQ(model->weight_bytes(), [&] {  // model tensors only, not the moments
      uint64_t n = 0;
      for (const TrainParam& p : ps) n += p.value.size() * sizeof(float);
      return n;
    }());

    const std::vector<int32_t> tokens = model->tokenizer().Encode("Hi there, bytes\xff!");
    ASSERT_EQ(tokens.size(), 17u);
    std::vector<float> logits(tokens.size() * 256);
    Session session(*model, c.context);
    model->Forward(session, tokens, logits.data(), /*all_logits=*/true, /*threads=*/1);
    const Mat want = ReferenceLogits(c, ps, tokens);
    double scale = 0;
    for (double v : want) scale = std::max(scale, std::abs(v));
    ASSERT_GT(scale, 1.0);
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(logits[i] - want[i]));
    EXPECT_LT(worst, 1e-4 * scale) << "largest |logit| " << scale;
  }
}

TEST(Checkpoint, AttentionOnlyBlocksHaveNoMlpHookPoints) {
  const TrainModelConfig c = SmallConfig(0);
  const std::string path = TempPath("hooks.gguf");
  WriteCheckpoint(c, {}, RandomParams(c, 12), 0, path);
  auto model = Model::Load(path);
  const std::vector<int32_t> tokens = {1, 2, 3, 4};
  const ActivationCache cache = RunWithCache(*model, tokens);
  for (const CachedActivation& a : cache.activations) {
    EXPECT_EQ(a.name.find("mlp"), std::string::npos) << a.FullName();
    EXPECT_NE(a.name, "ln2.hook_normalized");
    EXPECT_NE(a.name, "hook_resid_mid");  // as TransformerLens's attn_only blocks
  }
  for (int l = 0; l < 2; ++l) {  // resid_post = resid_pre + attn_out
    const std::string b = "blocks." + std::to_string(l) + ".";
    const auto* pre = cache.Find(b + "hook_resid_pre");
    const auto* out = cache.Find(b + "hook_attn_out");
    const auto* post = cache.Find(b + "hook_resid_post");
    ASSERT_TRUE(pre && out && post);
    for (size_t i = 0; i < post->data.size(); ++i) EXPECT_EQ(post->data[i], pre->data[i] + out->data[i]);
  }
}

// Bytes 'a'..'z' seen in training, the rest not.
std::vector<uint8_t> LettersSeen() {
  std::vector<uint8_t> seen(256, 0);
  for (int b = 'a'; b <= 'z'; ++b) seen[static_cast<size_t>(b)] = 1;
  return seen;
}

TEST(Checkpoint, TheByteTokenizerRoundTripsAnyBytes) {
  // Without seen flags every byte is a normal token; with them the unseen ones are "unused"
  // (token_type 5), which changes nothing in encoding and decoding.
  for (const bool letters_only : {false, true}) {
    SCOPED_TRACE(letters_only);
    const TrainModelConfig c = SmallConfig(0);
    const std::string path = TempPath("bytes.gguf");
    const std::vector<uint8_t> seen = letters_only ? LettersSeen() : std::vector<uint8_t>{};
    WriteCheckpoint(c, {}, RandomParams(c, 13), 0, path, seen);
    auto model = Model::Load(path);
    const Tokenizer& t = model->tokenizer();
    EXPECT_EQ(t.vocab_size(), 256);
    EXPECT_EQ(t.bos_id(), -1);
    EXPECT_EQ(t.eos_id(), -1);
    EXPECT_FALSE(t.add_bos());
    EXPECT_EQ(t.EncodePrompt("hi"), (std::vector<int32_t>{'h', 'i'}));
    for (int id = 0; id < 256; ++id) {
      EXPECT_EQ(t.TokenToPiece(id), std::string(1, static_cast<char>(id)));
      EXPECT_FALSE(t.IsEndOfGeneration(id));
      EXPECT_FALSE(t.IsControl(id));
      EXPECT_EQ(t.IsUnused(id), letters_only && (id < 'a' || id > 'z')) << id;
    }
    std::vector<std::string> texts = {"",
                                      "hello world",
                                      "  spaces\tand\nnewlines\r\n",
                                      "w\xc3\xb6rld \xe4\xb8\xad\xf0\x9f\x98\x80",
                                      std::string("nul\0inside", 10),
                                      "\xff\xfe bad \xc3 utf8 \xed\xa0\x80 \xc0\xaf",
                                      "<|endoftext|> <|im_end|> </s>"};
    std::string all;
    for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
    texts.push_back(all);
    std::mt19937 rng(14);
    for (int i = 0; i < 50; ++i) {
      std::string s(rng() % 40, '\0');
      for (char& ch : s) ch = static_cast<char>(rng() % 256);
      texts.push_back(s);
    }
    for (const std::string& s : texts) {
      const std::vector<int32_t> ids = t.Encode(s);
      std::vector<int32_t> bytes;
      for (unsigned char ch : s) bytes.push_back(ch);
      EXPECT_EQ(ids, bytes);  // token id == byte value
      EXPECT_EQ(t.Decode(ids), s);
    }
  }
}

TEST(Checkpoint, SeenTokensRoundTripAndKeepUnseenBytesOutOfTheHeadProbe) {
  const TrainModelConfig c = SmallConfig(0);  // context 32: the default probe is 15 tokens per copy
  const std::string path = TempPath("seen.gguf");
  std::vector<TrainParam> ps = RandomParams(c, 17);
  WriteCheckpoint(c, {}, ps, 5, path, LettersSeen());
  std::vector<uint8_t> seen;
  int64_t step = 0;
  ReadCheckpoint(path, c, ps, step, &seen);
  EXPECT_EQ(seen, LettersSeen());
  // Nothing seen yet (a checkpoint at step 0) marks nothing unused.
  WriteCheckpoint(c, {}, ps, 0, path, std::vector<uint8_t>(256, 0));
  ReadCheckpoint(path, c, ps, step, &seen);
  EXPECT_EQ(seen, std::vector<uint8_t>(256, 1));
  ExpectError([&] { WriteCheckpoint(c, {}, ps, 0, path, std::vector<uint8_t>(255, 1)); },
              {"seen_tokens holds 255 flags", "vocab_size = 256"});

  // The probe draws only from seen bytes: 26 letters hold 15 distinct tokens, 10 bytes do not.
  WriteCheckpoint(c, {}, ps, 5, path, LettersSeen());
  ProbeOptions probe;
  probe.length = 15;
  EXPECT_EQ(ProbeHeads(*Model::Load(path), probe).size(), 8u);
  std::vector<uint8_t> few(256, 0);
  for (int b = '0'; b <= '9'; ++b) few[static_cast<size_t>(b)] = 1;
  WriteCheckpoint(c, {}, ps, 5, path, few);
  ExpectError([&] { ProbeHeads(*Model::Load(path), probe); }, {"probe", "vocabulary is too small"});
}

TEST(Checkpoint, OtherVocabulariesGetNoTokenizer) {
  TrainModelConfig c = SmallConfig(0);
  c.vocab_size = 64;
  const std::string path = TempPath("vocab64.gguf");
  const std::vector<TrainParam> ps = RandomParams(c, 15);
  WriteCheckpoint(c, {}, ps, 3, path);
  const gguf::File f = gguf::File::Open(path);
  for (const auto& [key, value] : f.metadata()) EXPECT_NE(key.rfind("tokenizer.", 0), 0u) << key;
  std::vector<TrainParam> loaded = RandomParams(c, 16);
  int64_t step = 0;
  ReadCheckpoint(path, c, loaded, step);
  EXPECT_TRUE(SameBits(ps, loaded));
  EXPECT_EQ(ReadCheckpointConfig(path).vocab_size, 64);
  // The runtime needs a tokenizer to open a model.
  ExpectError([&] { Model::Load(path); }, {"tokenizer.ggml.model is missing"});
}

}  // namespace
}  // namespace attn
