// The GGUF reader against a file written by llama.cpp's own Python writer (tests/fixtures,
// made by make_gguf_fixtures.py), and against truncated, corrupted and hostile inputs.
#include "format/gguf.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "attn/error.h"
#include "attn/tensor.h"

namespace attn::gguf {
namespace {

const std::string kTiny = std::string(ATTN_FIXTURES_DIR) + "/tiny.gguf";

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Builds GGUF bytes field by field.
struct Bytes {
  std::vector<uint8_t> b;
  template <typename T>
  Bytes& Put(T x) {
    const auto* p = reinterpret_cast<const uint8_t*>(&x);
    b.insert(b.end(), p, p + sizeof(T));
    return *this;
  }
  Bytes& Str(const std::string& s) {
    Put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b.insert(b.end(), {'G', 'G', 'U', 'F'});
    return Put<uint32_t>(version).Put<uint64_t>(n_tensors).Put<uint64_t>(n_kv);
  }
  Bytes& KvU32(const std::string& key, uint32_t v) { return Str(key).Put<uint32_t>(4).Put<uint32_t>(v); }
  Bytes& Tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    Str(name).Put<uint32_t>(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) Put<uint64_t>(d);
    return Put<uint32_t>(type).Put<uint64_t>(offset);
  }
  Bytes& PadTo(size_t alignment) {
    while (b.size() % alignment) b.push_back(0);
    return *this;
  }
};

void ExpectRejected(const std::vector<uint8_t>& bytes, const std::string& fragment) {
  try {
    File::Parse(bytes.data(), bytes.size());
    ADD_FAILURE() << "accepted; expected an error mentioning '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(Gguf, ReadsTheFileWrittenByTheGgufPackage) {
  const File f = File::Open(kTiny);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(std::get<std::string>(f.Find("general.architecture")->data), "llama");
  EXPECT_EQ(std::get<std::string>(f.Find("general.name")->data), "tiny");
  EXPECT_EQ(f.Find("llama.block_count")->type, ValueType::kU32);
  EXPECT_EQ(std::get<uint64_t>(f.Find("llama.block_count")->data), 2u);
  EXPECT_EQ(std::get<uint64_t>(f.Find("llama.context_length")->data), 64u);
  EXPECT_EQ(std::get<double>(f.Find("llama.rope.freq_base")->data), 10000.0);
  EXPECT_TRUE(std::get<bool>(f.Find("tiny.flag")->data));
  EXPECT_EQ(std::get<int64_t>(f.Find("tiny.negative")->data), -7);
  const auto& words = *std::get<std::shared_ptr<Array>>(f.Find("tiny.words")->data);
  ASSERT_EQ(words.size(), 3u);
  EXPECT_EQ(std::get<std::string>(words[1].data), "w\xc3\xb6rld");
  EXPECT_EQ(std::get<std::string>(words[2].data), "");
  EXPECT_EQ(f.Find("tiny.ints")->ToString(), "[1, 2, 3]");

  ASSERT_EQ(f.tensors().size(), 3u);
  const TensorInfo* embd = f.FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type, TensorType::kF32);
  EXPECT_EQ(embd->dims, (std::vector<uint64_t>{4, 8}));  // numpy [8, 4]: ne[0] is the fast axis
  EXPECT_EQ(embd->bytes, 128u);
  for (int i = 0; i < 32; ++i) {
    float x;
    std::memcpy(&x, embd->data + 4 * i, 4);
    EXPECT_EQ(x, i / 8.0f);
  }
  const TensorInfo* q = f.FindTensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, TensorType::kF16);
  uint16_t h[5];
  std::memcpy(h, q->data, sizeof(h));
  EXPECT_EQ(HalfToFloat(h[0]), 1.0f);  // identity matrix
  EXPECT_EQ(HalfToFloat(h[1]), 0.0f);
  EXPECT_EQ(HalfToFloat(h[4]), 0.0f);
  const TensorInfo* up = f.FindTensor("blk.0.ffn_up.weight");
  ASSERT_NE(up, nullptr);
  EXPECT_EQ(up->type, TensorType::kQ8_0);
  EXPECT_EQ(up->dims, (std::vector<uint64_t>{32, 2}));
  EXPECT_EQ(up->bytes, 68u);  // 2 blocks of (f16 scale + 32 int8)
}

TEST(Gguf, EveryTruncationIsAnError) {
  const std::vector<uint8_t> bytes = ReadBytes(kTiny);
  const File f = File::Parse(bytes.data(), bytes.size());
  size_t end = 0;
  for (const auto& t : f.tensors()) end = std::max<size_t>(end, t.data - bytes.data() + t.bytes);
  for (size_t n = 0; n < end; ++n) {
    EXPECT_THROW(File::Parse(bytes.data(), n), Error) << "prefix of " << n << " bytes";
  }
}

TEST(Gguf, RandomCorruptionNeverCrashes) {
  const std::vector<uint8_t> clean = ReadBytes(kTiny);
  std::mt19937 rng(11);
  int rejected = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> b = clean;
    const int flips = 1 + trial % 4;
    for (int i = 0; i < flips; ++i) {
      const size_t at = std::uniform_int_distribution<size_t>(0, 300)(rng);  // header, metadata, infos
      b[at] = static_cast<uint8_t>(rng());
    }
    try {
      File::Parse(b.data(), b.size());
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
}

TEST(Gguf, HostileFieldsAreRejectedByName) {
  ExpectRejected(Bytes().Put<uint32_t>(0x46554747 + 1).b, "magic");
  ExpectRejected(Bytes().Header(0, 0, 1).b, "version: 1");
  ExpectRejected(Bytes().Header(0, uint64_t{1} << 62).b, "kv_count");
  ExpectRejected(Bytes().Header(uint64_t{1} << 62, 0).b, "tensor_count");
  ExpectRejected(Bytes().Header(0, 1).Put<uint64_t>(uint64_t{1} << 60).Put<uint64_t>(0).Put<uint64_t>(0).b,
                 "string length");
  ExpectRejected(Bytes().Header(0, 2).KvU32("a", 1).KvU32("a", 2).b, "duplicate metadata key 'a'");
  ExpectRejected(Bytes().Header(0, 1).Str("x").Put<uint32_t>(99).b, "unknown value type 99");
  ExpectRejected(
      Bytes().Header(0, 1).Str("arr").Put<uint32_t>(9).Put<uint32_t>(4).Put<uint64_t>(uint64_t{1} << 61).b,
      "array count");
  ExpectRejected(Bytes().Header(0, 1).KvU32("general.alignment", 48).b, "general.alignment");
  ExpectRejected(Bytes().Header(1, 0).Tensor("t", {1, 2, 3, 4, 5}, 0, 0).b, "n_dims = 5");
  ExpectRejected(Bytes().Header(1, 0).Tensor("t", {uint64_t{1} << 39, uint64_t{1} << 39}, 0, 0).b,
                 "overflow");
  ExpectRejected(Bytes().Header(1, 0).Tensor("t", {0}, 0, 0).b, "dimension 0 = 0");
  ExpectRejected(Bytes().Header(1, 0).Tensor("t", {4}, 77, 0).b, "tensor type 77");
  ExpectRejected(Bytes().Header(1, 0).Tensor("t", {33}, 8, 0).b, "multiple of the Q8_0 block");
  ExpectRejected(Bytes().Header(1, 0).Tensor("t", {4}, 0, 8).b, "alignment");
  ExpectRejected(Bytes().Header(1, 0).Tensor(std::string(64, 'n'), {4}, 0, 0).b, "name of 64 bytes");
  ExpectRejected(Bytes().Header(2, 0).Tensor("t", {8}, 0, 0).Tensor("t", {8}, 0, 32).PadTo(32).b,
                 "duplicate tensor name 't'");
  // Offset + size past the end of the data section (the classic out-of-bounds read).
  ExpectRejected(Bytes().Header(1, 0).Tensor("t", {8}, 0, 1u << 20).PadTo(32).b, "run past its end");
  ExpectRejected(Bytes().Header(1, 0).Tensor("t", {16}, 0, 0).PadTo(32).Put<uint64_t>(0).b,
                 "run past its end");
  // A minimal valid file parses.
  Bytes ok;
  ok.Header(1, 1).KvU32("general.alignment", 16).Tensor("t", {4}, 0, 0).PadTo(16);
  for (int i = 0; i < 4; ++i) ok.Put<float>(1.0f * i);
  const File f = File::Parse(ok.b.data(), ok.b.size());
  EXPECT_EQ(f.tensors()[0].bytes, 16u);
}

TEST(Gguf, OpenNamesThePath) {
  try {
    File::Open("/nonexistent/model.gguf");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.gguf"), std::string::npos);
  }
}

}  // namespace
}  // namespace attn::gguf
