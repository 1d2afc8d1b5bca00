// The training corpus of `attn train`: byte tokens, the split, every load error, and batches that
// are reproducible from the generator state or the index alone.
#include "train/corpus.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "attn/error.h"

namespace attn::testing {
namespace {

// A file in a fresh temporary folder, removed with it.
class TempFile {
 public:
  explicit TempFile(const std::string& contents) {
    dir_ = std::filesystem::temp_directory_path() /
           ("attn_corpus_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "text.txt").string();
    std::ofstream(path_, std::ios::binary) << contents;
  }
  ~TempFile() { std::filesystem::remove_all(dir_); }
  const std::string& path() const { return path_; }
  std::string dir() const { return dir_.string(); }

 private:
  static inline int counter_ = 0;
  std::filesystem::path dir_;
  std::string path_;
};

// Text of n bytes cycling through a pangram, so every window is recognisable.
std::string Prose(size_t n) {
  const std::string s = "The quick brown fox jumps over the lazy dog.\n";
  std::string out;
  while (out.size() < n) out += s;
  out.resize(n);
  return out;
}

// Expects `fn` to throw attn::Error whose message contains every fragment.
template <typename Fn>
void ExpectError(Fn fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown, expected one mentioning " << *fragments.begin();
  } catch (const Error& e) {
    for (const std::string& f : fragments)
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
  }
}

TEST(Corpus, LoadsBytesAsTokensAndSplits) {
  const std::string text = Prose(10000);
  TempFile f(text);
  Corpus c(f.path(), 16);
  EXPECT_EQ(c.size(), 10000);
  EXPECT_EQ(c.validation_size(), 500);  // the last 5%
  EXPECT_EQ(c.train_size(), 9500);
  EXPECT_EQ(std::string(c.text(false)) + std::string(c.text(true)), text);
  EXPECT_EQ(c.path(), f.path());
}

TEST(Corpus, ValidationHoldsAtLeastOneSequence) {
  // 5% of 1000 is 50 bytes, less than context + 1 = 101: validation grows to 101.
  Corpus c = Corpus::FromText(Prose(1000), 100);
  EXPECT_EQ(c.validation_size(), 101);
  EXPECT_EQ(c.train_size(), 899);
  // Exactly two sequences' worth is the smallest corpus accepted.
  Corpus small = Corpus::FromText(Prose(202), 100);
  EXPECT_EQ(small.train_size(), 101);
  EXPECT_EQ(small.validation_size(), 101);
}

TEST(Corpus, AcceptsUtf8AndALittleNoise) {
  // Multi-byte characters (2, 3 and 4 bytes) are text.
  std::string text;
  while (text.size() < 4000) text += "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x99\x82 na\xC3\xAFve\n";
  EXPECT_NO_THROW(Corpus::FromText(text, 8));
  // Up to 1% invalid bytes (a stray Latin-1 byte here and there) is tolerated.
  std::string noisy = Prose(10000);
  for (int i = 0; i < 100; ++i) noisy[i * 100 + 7] = '\xE9';
  EXPECT_NO_THROW(Corpus::FromText(noisy, 8));
}

TEST(Corpus, Errors) {
  ExpectError([] { Corpus("/nonexistent/attn/corpus.txt", 8); },
              {"/nonexistent/attn/corpus.txt", "no such file"});
  {
    TempFile f("");
    ExpectError([&] { Corpus(f.dir(), 8); }, {f.dir(), "directory"});
    ExpectError([&] { Corpus(f.path(), 8); }, {f.path(), "empty"});
  }
  if (::geteuid() != 0) {  // root reads anything
    TempFile f(Prose(1000));
    std::filesystem::permissions(f.path(), std::filesystem::perms::none);
    ExpectError([&] { Corpus(f.path(), 8); }, {f.path(), "cannot open"});
  }
  {
    TempFile f(Prose(201));  // one byte short of two sequences of 101
    ExpectError([&] { Corpus(f.path(), 100); }, {f.path(), "too small", "201 bytes", "101", "202"});
  }
  {
    std::string text = Prose(1000);
    text[123] = '\0';
    TempFile f(text);
    ExpectError([&] { Corpus(f.path(), 8); }, {f.path(), "NUL", "offset 123"});
  }
  {
    std::string text = Prose(1000);
    for (int i = 0; i < 11; ++i) text[300 + i * 50] = '\xFF';  // 1.1% invalid
    TempFile f(text);
    ExpectError([&] { Corpus(f.path(), 8); }, {f.path(), "UTF-8", "11 of 1000", "byte offset 300"});
  }
  // Overlong forms, surrogates, stray continuation bytes and truncated sequences are invalid.
  for (const std::string bad : {"\xC0\xAF", "\xED\xA0\x80", "\x80", "\xE2\x82", "\xF4\x90\x80\x80"}) {
    std::string text;
    while (text.size() < 200) text += bad + "ab";
    ExpectError([&] { Corpus::FromText(text, 8, "bad.txt"); }, {"bad.txt", "UTF-8", "byte offset 0"});
  }
  ExpectError([] { Corpus::FromText(Prose(100), 0); }, {"context = 0"});

  Corpus c = Corpus::FromText(Prose(1000), 8);
  std::vector<int32_t> out(1000);
  uint64_t rng = 1;
  ExpectError([&] { c.SampleBatch(false, 0, 8, rng, out.data()); }, {"SampleBatch", "batch = 0"});
  ExpectError([&] { c.SampleBatch(false, 1, -1, rng, out.data()); }, {"SampleBatch", "context = -1"});
  ExpectError([&] { c.SampleBatch(true, 1, 50, rng, out.data()); }, {"SampleBatch", "validation", "51"});
  ExpectError([&] { c.FixedBatch(true, 1, 8, -1, out.data()); }, {"FixedBatch", "index = -1"});
}

TEST(Corpus, SampleBatchIsWindowsOfTheSplit) {
  const std::string text = Prose(5000);
  Corpus c = Corpus::FromText(text, 32);
  const int64_t B = 64, T = 32;
  std::vector<int32_t> out(B * (T + 1));
  for (bool validation : {false, true}) {
    const std::string_view split = c.text(validation);
    uint64_t rng = 42;
    c.SampleBatch(validation, B, T, rng, out.data());
    for (int64_t b = 0; b < B; ++b) {
      std::string row;
      for (int64_t t = 0; t <= T; ++t) {
        ASSERT_GE(out[b * (T + 1) + t], 0);
        ASSERT_LT(out[b * (T + 1) + t], 256);
        row += static_cast<char>(out[b * (T + 1) + t]);
      }
      EXPECT_NE(split.find(row), std::string_view::npos) << row;
    }
  }
}

TEST(Corpus, SampleBatchIsDeterministicAndResumable) {
  std::string text;
  for (int i = 0; i < 4000; ++i) text += static_cast<char>('a' + (i * 7919 % 26));
  Corpus c = Corpus::FromText(text, 16);
  const int64_t B = 8, T = 16;
  std::vector<int32_t> a(B * (T + 1)), b(B * (T + 1)), a2(B * (T + 1));
  uint64_t s1 = 7, s2 = 7;
  c.SampleBatch(false, B, T, s1, a.data());
  c.SampleBatch(false, B, T, s2, b.data());
  EXPECT_EQ(a, b);
  EXPECT_EQ(s1, s2);
  EXPECT_NE(s1, 7u);
  // Saving the state and resuming gives the same next batch as going on.
  const uint64_t saved = s1;
  c.SampleBatch(false, B, T, s1, a2.data());
  uint64_t resumed = saved;
  c.SampleBatch(false, B, T, resumed, b.data());
  EXPECT_EQ(a2, b);
  EXPECT_NE(a, a2);
  // A different seed gives a different batch.
  uint64_t other = 8;
  c.SampleBatch(false, B, T, other, b.data());
  EXPECT_NE(a, b);
}

TEST(Corpus, SampleBatchCoversEveryStart) {
  // 15 bytes of training text at context 4 have 11 possible starts; all of them come up about
  // equally often, the first and the last included.
  Corpus c = Corpus::FromText("0123456789ABCDEFGHIJ", 4);  // validation: last 5 bytes (context+1)
  ASSERT_EQ(c.train_size(), 15);
  std::vector<int32_t> out(5);
  std::vector<int> seen(11, 0);
  uint64_t rng = 0;
  for (int i = 0; i < 2000; ++i) {
    c.SampleBatch(false, 1, 4, rng, out.data());
    const int start = static_cast<int>(std::string("0123456789ABCDEFGHIJ").find(static_cast<char>(out[0])));
    ASSERT_LE(start, 10);
    ++seen[start];
  }
  for (int s = 0; s <= 10; ++s) EXPECT_GT(seen[s], 120) << "start " << s;  // ~182 each
}

TEST(Corpus, UniformBelowIsUniform) {
  uint64_t rng = 123;
  std::vector<int> hist(7, 0);
  for (int i = 0; i < 70000; ++i) ++hist[UniformBelow(rng, 7)];
  for (int h : hist) EXPECT_NEAR(h, 10000, 400);
  EXPECT_EQ(UniformBelow(rng, 1), 0u);
  // splitmix64's published first output for seed 0.
  uint64_t zero = 0;
  EXPECT_EQ(SplitMix64(zero), 0xE220A8397B1DCDAFull);
}

TEST(Corpus, FixedBatchIsDeterministicAndSpread) {
  const std::string text = Prose(20000);
  Corpus c = Corpus::FromText(text, 64);
  const int64_t B = 4, T = 64;
  std::vector<int32_t> a(B * (T + 1)), b(B * (T + 1));
  c.FixedBatch(true, B, T, 3, a.data());
  c.FixedBatch(true, B, T, 3, b.data());
  EXPECT_EQ(a, b);
  // Batch 0 starts at 0 and spaces its rows evenly over the validation split.
  std::string letters;  // random, so that every 9-byte window occurs once
  uint64_t gen = 5;
  for (int i = 0; i < 20000; ++i) letters += static_cast<char>('a' + UniformBelow(gen, 26));
  Corpus d = Corpus::FromText(letters, 8);  // 1000 validation bytes, 993 starts
  std::vector<int32_t> out(4 * 9);
  d.FixedBatch(true, 4, 8, 0, out.data());
  const std::string_view v = d.text(true);
  for (int r = 0; r < 4; ++r) {
    const int64_t start = r * 993 / 4;
    for (int t = 0; t <= 8; ++t)
      EXPECT_EQ(out[r * 9 + t], static_cast<uint8_t>(v[start + t])) << r << " " << t;
  }
  // Different indices start elsewhere, and 32 batches of one row reach every tenth of the split.
  std::set<int> tenths;
  std::vector<int32_t> one(9);
  for (int i = 0; i < 32; ++i) {
    d.FixedBatch(true, 1, 8, i, one.data());
    std::string row;
    for (int32_t t : one) row += static_cast<char>(t);
    tenths.insert(static_cast<int>(v.find(row) * 10 / v.size()));
  }
  EXPECT_EQ(tenths.size(), 10u);
}

// The period of a row: the smallest p with row[t] == row[t - p] for every t >= p.
int64_t Period(const std::vector<int32_t>& row) {
  for (int64_t p = 1; p < static_cast<int64_t>(row.size()); ++p) {
    bool ok = true;
    for (size_t t = static_cast<size_t>(p); t < row.size() && ok; ++t)
      ok = row[t] == row[t - static_cast<size_t>(p)];
    if (ok) return p;
  }
  return static_cast<int64_t>(row.size());
}

TEST(Corpus, RepeatedSpansAreTiledSpansOfTheSplit) {
  std::string letters;  // random, so that a short window pins down its place
  uint64_t gen = 11;
  for (int i = 0; i < 40000; ++i) letters += static_cast<char>('a' + UniformBelow(gen, 26));
  Corpus c = Corpus::FromText(letters, 64);
  const int64_t B = 200, T = 64;
  std::vector<int32_t> out(B * (T + 1));
  for (bool fixed : {false, true}) {
    uint64_t rng = 3;
    const RepeatedSpans all{1.0, 5, 20};
    if (fixed)
      c.FixedBatch(true, B, T, 2, out.data(), all);
    else
      c.SampleBatch(false, B, T, rng, out.data(), all);
    const std::string_view split = c.text(fixed);
    std::set<int64_t> periods;
    for (int64_t b = 0; b < B; ++b) {
      const std::vector<int32_t> row(out.begin() + b * (T + 1), out.begin() + (b + 1) * (T + 1));
      const int64_t p = Period(row);
      ASSERT_GE(p, 5) << "row " << b;
      ASSERT_LE(p, 20) << "row " << b;
      periods.insert(p);
      std::string span;
      for (int64_t t = 0; t < p; ++t) span += static_cast<char>(row[static_cast<size_t>(t)]);
      EXPECT_NE(split.find(span), std::string_view::npos) << "row " << b << ": " << span;
    }
    EXPECT_EQ(periods.size(), 16u) << "every span length from 5 to 20 comes up in 200 rows";
  }
  // The default longest span is context / 2: every row holds its span at least twice.
  uint64_t rng = 4;
  c.SampleBatch(false, B, T, rng, out.data(), RepeatedSpans{1.0, 8, 0});
  for (int64_t b = 0; b < B; ++b) {
    const int64_t p =
        Period(std::vector<int32_t>(out.begin() + b * (T + 1), out.begin() + (b + 1) * (T + 1)));
    EXPECT_GE(p, 8);
    EXPECT_LE(p, 32);
  }
}

TEST(Corpus, RepeatedSpansFractionAndDeterminism) {
  Corpus c = Corpus::FromText(Prose(20000), 32);
  const int64_t B = 400, T = 32;
  std::vector<int32_t> plain(B * (T + 1)), zero(B * (T + 1)), a(B * (T + 1)), b(B * (T + 1));
  // Fraction 0 draws exactly the plain stream.
  uint64_t s1 = 9, s2 = 9;
  c.SampleBatch(false, B, T, s1, plain.data());
  c.SampleBatch(false, B, T, s2, zero.data(), RepeatedSpans{0.0, 8, 0});
  EXPECT_EQ(plain, zero);
  EXPECT_EQ(s1, s2);
  // The same state gives the same batch; about the requested share of rows repeat (Prose's
  // own period is far longer than 16).
  for (bool fixed : {false, true}) {
    uint64_t r1 = 5, r2 = 5;
    const RepeatedSpans quarter{0.25, 4, 16};
    if (fixed) {
      c.FixedBatch(true, B, T, 7, a.data(), quarter);
      c.FixedBatch(true, B, T, 7, b.data(), quarter);
    } else {
      c.SampleBatch(false, B, T, r1, a.data(), quarter);
      c.SampleBatch(false, B, T, r2, b.data(), quarter);
      EXPECT_EQ(r1, r2);
    }
    EXPECT_EQ(a, b);
    int repeating = 0;
    for (int64_t row = 0; row < B; ++row)
      repeating +=
          Period(std::vector<int32_t>(a.begin() + row * (T + 1), a.begin() + (row + 1) * (T + 1))) <= 16;
    EXPECT_GT(repeating, 70) << (fixed ? "FixedBatch" : "SampleBatch");  // ~100 of 400
    EXPECT_LT(repeating, 130) << (fixed ? "FixedBatch" : "SampleBatch");
  }
}

TEST(Corpus, RepeatedSpansErrors) {
  Corpus c = Corpus::FromText(Prose(2000), 16);
  std::vector<int32_t> out(17);
  uint64_t rng = 1;
  ExpectError(
      [&] {
        c.SampleBatch(false, 1, 16, rng, out.data(), RepeatedSpans{1.5, 8, 0});
      },
      {"SampleBatch", "fraction = 1.5", "[0, 1]"});
  ExpectError(
      [&] {
        c.SampleBatch(false, 1, 16, rng, out.data(), RepeatedSpans{-0.1, 8, 0});
      },
      {"fraction = -0.1"});
  ExpectError(
      [&] {
        c.SampleBatch(false, 1, 16, rng, out.data(), RepeatedSpans{std::nan(""), 8, 0});
      },
      {"fraction = nan"});
  ExpectError(
      [&] {
        c.FixedBatch(true, 1, 16, 0, out.data(), RepeatedSpans{0.5, 0, 4});
      },
      {"FixedBatch", "min_span = 0"});
  ExpectError(
      [&] {
        c.SampleBatch(false, 1, 16, rng, out.data(), RepeatedSpans{0.5, 8, 4});
      },
      {"max_span = 4", "min_span = 8"});
  ExpectError(
      [&] {
        c.SampleBatch(false, 1, 16, rng, out.data(), RepeatedSpans{0.5, 8, 17});
      },
      {"max_span = 17", "context = 16"});
}

TEST(Corpus, ByteCounts) {
  Corpus c = Corpus::FromText(std::string(95, 'a') + std::string(5, 'b') + std::string(100, 'c'), 4);
  // 200 bytes: validation is the last 10 (all 'c').
  const auto train = c.ByteCounts(false);
  const auto valid = c.ByteCounts(true);
  EXPECT_EQ(train['a'], 95);
  EXPECT_EQ(train['b'], 5);
  EXPECT_EQ(train['c'], 90);
  EXPECT_EQ(valid['c'], 10);
  EXPECT_EQ(valid['a'], 0);
  EXPECT_EQ(c.OccurringBytes(), (std::vector<int32_t>{'a', 'b', 'c'}));
  EXPECT_EQ(c.OccurringBytes(10), (std::vector<int32_t>{'a', 'c'}));
}

}  // namespace
}  // namespace attn::testing
