// The GGUF writer against the reader (format/gguf.h): every value type, tensors at aligned
// offsets, the atomic file write, and the arguments it refuses.
#include "format/gguf_writer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "attn/error.h"
#include "format/gguf.h"

namespace attn::gguf {
namespace {

std::string TempPath(const std::string& name) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("attn_writer_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

template <typename T>
T Get(const File& f, const std::string& key, ValueType type) {
  const Value* v = f.Find(key);
  EXPECT_NE(v, nullptr) << key;
  if (v == nullptr) return T{};
  EXPECT_EQ(v->type, type) << key;
  return std::get<T>(v->data);
}

void ExpectError(const std::function<void()>& fn, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

// A writer with one value of every type and three tensors of awkward sizes.
struct Sample {
  std::vector<float> a = {1.5f, -2.25f, 3.0f};              // 12 bytes: padding follows
  std::vector<float> b = std::vector<float>(5 * 7);         // 140 bytes
  std::vector<uint8_t> half = std::vector<uint8_t>(2 * 9);  // F16, 9 elements
  Writer w;
  explicit Sample(uint32_t alignment) : w(alignment) {
    for (size_t i = 0; i < b.size(); ++i) b[i] = 0.25f * static_cast<float>(i) - 3.0f;
    for (size_t i = 0; i < half.size(); ++i) half[i] = static_cast<uint8_t>(i * 7);
    w.SetString("general.architecture", "test");
    w.SetU8("t.u8", 250);
    w.SetI8("t.i8", -120);
    w.SetU16("t.u16", 65000);
    w.SetI16("t.i16", -32000);
    w.SetU32("t.u32", 4000000000u);
    w.SetI32("t.i32", -2000000000);
    w.SetU64("t.u64", 18000000000000000000ull);
    w.SetI64("t.i64", -9000000000000000000ll);
    w.SetF32("t.f32", 0.1f);
    w.SetF64("t.f64", 0.1);
    w.SetBool("t.true", true);
    w.SetBool("t.false", false);
    w.SetString("t.utf8", "w\xc3\xb6rld\n");
    w.SetString("t.empty", "");
    w.SetStrings("t.strings", {"a", "", "\xc4\xa0the"});
    w.SetStrings("t.no_strings", {});
    w.SetI32s("t.ints", {1, -2, 2147483647});
    // An array of arrays of u8, through the generic Set.
    Value inner;
    inner.type = ValueType::kArray;
    inner.array_type = ValueType::kU8;
    Value byte;
    byte.type = ValueType::kU8;
    byte.data = uint64_t{7};
    inner.data = std::make_shared<Array>(Array{byte, byte});
    Value outer;
    outer.type = ValueType::kArray;
    outer.array_type = ValueType::kArray;
    outer.data = std::make_shared<Array>(Array{inner});
    w.Set("t.nested", outer);
    w.AddTensorF32("a", {3}, a);
    w.AddTensorF32("b.weight", {5, 7}, b);
    w.AddTensor("half", {9}, TensorType::kF16, half);
  }
};

void ExpectSample(const File& f, const Sample& s, uint32_t alignment) {
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), alignment);
  EXPECT_EQ(f.metadata().size(), 19u + (alignment != 32 ? 1 : 0));
  if (alignment != 32) {
    EXPECT_EQ(Get<uint64_t>(f, "general.alignment", ValueType::kU32), alignment);
  }
  EXPECT_EQ(Get<std::string>(f, "general.architecture", ValueType::kString), "test");
  EXPECT_EQ(Get<uint64_t>(f, "t.u8", ValueType::kU8), 250u);
  EXPECT_EQ(Get<int64_t>(f, "t.i8", ValueType::kI8), -120);
  EXPECT_EQ(Get<uint64_t>(f, "t.u16", ValueType::kU16), 65000u);
  EXPECT_EQ(Get<int64_t>(f, "t.i16", ValueType::kI16), -32000);
  EXPECT_EQ(Get<uint64_t>(f, "t.u32", ValueType::kU32), 4000000000u);
  EXPECT_EQ(Get<int64_t>(f, "t.i32", ValueType::kI32), -2000000000);
  EXPECT_EQ(Get<uint64_t>(f, "t.u64", ValueType::kU64), 18000000000000000000ull);
  EXPECT_EQ(Get<int64_t>(f, "t.i64", ValueType::kI64), -9000000000000000000ll);
  EXPECT_EQ(Get<double>(f, "t.f32", ValueType::kF32), double{0.1f});
  EXPECT_EQ(Get<double>(f, "t.f64", ValueType::kF64), 0.1);
  EXPECT_TRUE(Get<bool>(f, "t.true", ValueType::kBool));
  EXPECT_FALSE(Get<bool>(f, "t.false", ValueType::kBool));
  EXPECT_EQ(Get<std::string>(f, "t.utf8", ValueType::kString), "w\xc3\xb6rld\n");
  EXPECT_EQ(Get<std::string>(f, "t.empty", ValueType::kString), "");
  const auto strings = Get<std::shared_ptr<Array>>(f, "t.strings", ValueType::kArray);
  ASSERT_TRUE(strings);
  EXPECT_EQ(f.Find("t.strings")->array_type, ValueType::kString);
  ASSERT_EQ(strings->size(), 3u);
  EXPECT_EQ(std::get<std::string>((*strings)[1].data), "");
  EXPECT_EQ(std::get<std::string>((*strings)[2].data), "\xc4\xa0the");
  const auto none = Get<std::shared_ptr<Array>>(f, "t.no_strings", ValueType::kArray);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(f.Find("t.no_strings")->array_type, ValueType::kString);
  const auto ints = Get<std::shared_ptr<Array>>(f, "t.ints", ValueType::kArray);
  ASSERT_TRUE(ints);
  EXPECT_EQ(f.Find("t.ints")->array_type, ValueType::kI32);
  ASSERT_EQ(ints->size(), 3u);
  EXPECT_EQ(std::get<int64_t>((*ints)[1].data), -2);
  EXPECT_EQ(std::get<int64_t>((*ints)[2].data), 2147483647);
  const auto nested = Get<std::shared_ptr<Array>>(f, "t.nested", ValueType::kArray);
  ASSERT_TRUE(nested);
  ASSERT_EQ(nested->size(), 1u);
  EXPECT_EQ((*nested)[0].array_type, ValueType::kU8);
  EXPECT_EQ(std::get<std::shared_ptr<Array>>((*nested)[0].data)->size(), 2u);

  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.tensors()[0].name, "a");  // in the order added
  EXPECT_EQ(f.tensors()[1].name, "b.weight");
  const uint8_t* data_section = f.tensors()[0].data;
  for (const TensorInfo& t : f.tensors()) {
    EXPECT_EQ(t.offset % alignment, 0u) << t.name;
    EXPECT_EQ(t.data - data_section, static_cast<ptrdiff_t>(t.offset)) << t.name;
  }
  const TensorInfo* b = f.FindTensor("b.weight");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dims, (std::vector<uint64_t>{5, 7}));
  EXPECT_EQ(b->type, TensorType::kF32);
  ASSERT_EQ(b->bytes, s.b.size() * sizeof(float));
  EXPECT_EQ(std::memcmp(b->data, s.b.data(), b->bytes), 0);
  EXPECT_EQ(std::memcmp(f.FindTensor("a")->data, s.a.data(), 12), 0);
  const TensorInfo* half = f.FindTensor("half");
  EXPECT_EQ(half->type, TensorType::kF16);
  EXPECT_EQ(std::memcmp(half->data, s.half.data(), s.half.size()), 0);
}

TEST(GgufWriter, RoundTripsEveryValueTypeAndTensorsThroughTheReader) {
  for (uint32_t alignment : {32u, 64u, 8u}) {
    SCOPED_TRACE(alignment);
    const Sample s(alignment);
    const std::vector<uint8_t> bytes = s.w.ToBytes();
    EXPECT_EQ(bytes.size() % alignment, 0u);
    ExpectSample(File::Parse(bytes.data(), bytes.size()), s, alignment);
  }
}

TEST(GgufWriter, WritesTheSameBytesToAFile) {
  const Sample s(32);
  const std::string path = TempPath("sample.gguf");
  s.w.Write(path);
  EXPECT_EQ(ReadBytes(path), s.w.ToBytes());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  ExpectSample(File::Open(path), s, 32);
  std::filesystem::remove(path);
}

TEST(GgufWriter, AnEmptyFileIsValid) {
  const Writer w;
  const std::vector<uint8_t> bytes = w.ToBytes();
  const File f = File::Parse(bytes.data(), bytes.size());
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_TRUE(f.tensors().empty());
}

TEST(GgufWriter, RefusesBadArguments) {
  std::vector<float> x(6);
  ExpectError([] { Writer w(48); }, "alignment = 48");
  ExpectError(
      [] {
        Writer w;
        w.SetU32("k", 1);
        w.SetString("k", "again");
      },
      "duplicate metadata key 'k'");
  ExpectError([] { Writer().SetU32("general.alignment", 64); }, "general.alignment");
  ExpectError(
      [] {
        Value v;
        v.type = ValueType::kU8;
        v.data = uint64_t{300};
        Writer().Set("k", v);
      },
      "300 does not fit a u8");
  ExpectError(
      [] {
        Value v;
        v.type = ValueType::kI32;
        v.data = std::string("text");
        Writer().Set("k", v);
      },
      "k: a i32 value must hold a signed integer");
  ExpectError(
      [&] {
        Writer w;
        w.AddTensorF32("t", {6}, x);
        w.AddTensorF32("t", {6}, x);
      },
      "duplicate tensor name 't'");
  ExpectError([&] { Writer().AddTensorF32(std::string(64, 'n'), {6}, x); }, "64 bytes");
  ExpectError([&] { Writer().AddTensorF32("t", {2, 2}, x); }, "24 bytes of data for 4 F32 elements");
  ExpectError([&] { Writer().AddTensorF32("t", {1, 1, 1, 1, 6}, x); }, "5 dimensions");
  ExpectError([&] { Writer().AddTensorF32("t", {0, 6}, x); }, "a dimension is 0");
  ExpectError([&] { Writer().AddTensor("t", {32}, TensorType::kQ8_0, {}); }, "Q8_0 cannot be written");
}

TEST(GgufWriter, AFailedWriteLeavesTheOldFileAndNoTemporary) {
  const std::string path = TempPath("keep.gguf");
  Writer old;
  old.SetString("general.name", "old");
  old.Write(path);
  const std::vector<uint8_t> before = ReadBytes(path);

  Writer next;
  next.SetString("general.name", "new");
  // The temporary file cannot be created: a folder is in its place.
  std::filesystem::create_directory(path + ".tmp");
  ExpectError([&] { next.Write(path); }, "keep.gguf.tmp: cannot create");
  std::filesystem::remove(path + ".tmp");
  EXPECT_EQ(ReadBytes(path), before);
  // A missing folder.
  ExpectError([&] { next.Write(TempPath("no/such/folder.gguf")); }, "cannot create");

  // The rename fails (a non-empty folder at PATH): the temporary file is removed.
  const std::string dir_path = TempPath("a_folder.gguf");
  std::filesystem::create_directories(dir_path + "/inside");
  ExpectError([&] { next.Write(dir_path); }, "renaming the temporary file over it failed");
  EXPECT_FALSE(std::filesystem::exists(dir_path + ".tmp"));
  EXPECT_TRUE(std::filesystem::is_directory(dir_path + "/inside"));
  std::filesystem::remove_all(dir_path);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace attn::gguf
