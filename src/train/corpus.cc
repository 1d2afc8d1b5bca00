// The training corpus: byte tokens, a train/validation split, and reproducible batches.
#include "train/corpus.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "attn/error.h"
#include "core/read_all.h"

namespace attn {
namespace {

// The length of the valid UTF-8 sequence starting at s[0] (n bytes left), or 0 when it is not
// one (RFC 3629, table 3-7 of the Unicode standard: no overlong forms, no surrogates, <= U+10FFFF).
int Utf8SequenceLength(const uint8_t* s, size_t n) {
  const uint8_t b = s[0];
  if (b < 0x80) return 1;
  int len = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (n < static_cast<size_t>(len) || s[1] < lo || s[1] > hi) return 0;
  for (int i = 2; i < len; ++i)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return len;
}

std::string ReadFile(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) throw Error("corpus: " + path + ": no such file");
  if (fs::is_directory(st)) throw Error("corpus: " + path + ": is a directory, not a text file");
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw Error("corpus: " + path + ": cannot open (" + std::strerror(errno) + ")");
  return ReadAll(f.get(), "corpus: " + path);
}

// The golden ratio's fractional part, 0.618...: the phase step between evaluation batches
// (a Weyl sequence, whose prefixes are all close to evenly spread over [0, 1)).
constexpr double kGoldenFraction = 0.6180339887498949;

// A uniform double in [0, 1) from the top 53 bits of one draw.
double UniformUnit(uint64_t& state) { return static_cast<double>(SplitMix64(state) >> 11) * 0x1.0p-53; }

// RepeatedSpans with max_span 0 resolved to context / 2; throws when out of range (the spans
// only when fraction > 0).
RepeatedSpans Resolve(const RepeatedSpans& r, int64_t context, const char* what) {
  const std::string where = std::string("corpus: ") + what + ": repeated spans: ";
  if (!(r.fraction >= 0.0 && r.fraction <= 1.0)) {
    char value[32];
    std::snprintf(value, sizeof value, "%g", r.fraction);
    throw Error(where + "fraction = " + value + " (must be in [0, 1])");
  }
  RepeatedSpans out = r;
  if (out.fraction == 0.0) return out;  // the spans are never drawn
  out.max_span = r.MaxSpan(context);
  if (out.min_span < 1) throw Error(where + "min_span = " + std::to_string(out.min_span) + " (must be >= 1)");
  if (out.max_span < out.min_span || out.max_span > context) {
    throw Error(where + "max_span = " + std::to_string(out.max_span) + " (must be in [min_span = " +
                std::to_string(out.min_span) + ", context = " + std::to_string(context) + "])");
  }
  return out;
}

// A span length drawn uniformly from [min_span, max_span] of resolved spans.
int64_t DrawSpan(const RepeatedSpans& r, uint64_t& state) {
  return r.min_span +
         static_cast<int64_t>(UniformBelow(state, static_cast<uint64_t>(r.max_span - r.min_span + 1)));
}

// Fills dst[0..context] with `span` bytes from src repeated.
void FillRepeated(const uint8_t* src, int64_t span, int64_t context, int32_t* dst) {
  for (int64_t t = 0; t <= context; ++t) dst[t] = src[t % span];
}

}  // namespace

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t UniformBelow(uint64_t& state, uint64_t n) {
  if (n == 0) throw Error("UniformBelow: n = 0 (must be > 0)");
  // Multiply-shift maps 64 random bits to [0, n); rejecting the low products below 2^64 mod n
  // makes every value equally likely.
  unsigned __int128 m = static_cast<unsigned __int128>(SplitMix64(state)) * n;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < n) {
    const uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(SplitMix64(state)) * n;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

Corpus::Corpus(const std::string& path, int64_t context) { Init(ReadFile(path), context, path); }

Corpus Corpus::FromText(std::string text, int64_t context, const std::string& name) {
  Corpus c;
  c.Init(std::move(text), context, name);
  return c;
}

void Corpus::Init(std::string bytes, int64_t context, const std::string& name) {
  const std::string where = "corpus: " + name + ": ";
  if (context < 1) throw Error(where + "context = " + std::to_string(context) + " (must be >= 1)");
  const int64_t n = static_cast<int64_t>(bytes.size());
  if (n == 0) throw Error(where + "the file is empty");
  const auto* s = reinterpret_cast<const uint8_t*>(bytes.data());
  if (const void* nul = std::memchr(s, 0, bytes.size())) {
    throw Error(where + "not a text file: a NUL byte at offset " +
                std::to_string(static_cast<const uint8_t*>(nul) - s));
  }
  int64_t invalid = 0, first_invalid = -1;
  for (int64_t i = 0; i < n;) {
    const int len = Utf8SequenceLength(s + i, static_cast<size_t>(n - i));
    if (len == 0) {
      if (first_invalid < 0) first_invalid = i;
      ++invalid;
      ++i;
    } else {
      i += len;
    }
  }
  if (invalid * 100 > n) {
    throw Error(where + "not UTF-8 text: " + std::to_string(invalid) + " of " + std::to_string(n) +
                " bytes are not valid UTF-8 (more than 1%), the first at byte offset " +
                std::to_string(first_invalid));
  }
  // Validation: the last 5%, but at least one sequence; training must hold one sequence too.
  const int64_t need = context + 1;
  const int64_t validation = std::max<int64_t>(n / 20, need);
  if (n - validation < need) {
    throw Error(where + "too small: " + std::to_string(n) +
                " bytes cannot hold one sequence of context + 1 = " + std::to_string(need) +
                " tokens in both the training and the validation split (needs at least " +
                std::to_string(2 * need) + " bytes, or a smaller context)");
  }
  path_ = name;
  bytes_.assign(s, s + n);
  context_ = context;
  train_size_ = n - validation;
}

std::string_view Corpus::text(bool validation) const {
  const auto* p = reinterpret_cast<const char*>(bytes_.data());
  return validation ? std::string_view(p + train_size_, bytes_.size() - train_size_)
                    : std::string_view(p, train_size_);
}

std::span<const uint8_t> Corpus::Split(bool validation, int64_t batch, int64_t context,
                                       const char* what) const {
  const std::string where = std::string("corpus: ") + what + ": ";
  if (batch < 1) throw Error(where + "batch = " + std::to_string(batch) + " (must be >= 1)");
  if (context < 1) throw Error(where + "context = " + std::to_string(context) + " (must be >= 1)");
  const std::span<const uint8_t> split = validation ? std::span<const uint8_t>(bytes_).subspan(train_size_)
                                                    : std::span<const uint8_t>(bytes_).first(train_size_);
  if (static_cast<int64_t>(split.size()) < context + 1) {
    throw Error(where + "context = " + std::to_string(context) + " needs " + std::to_string(context + 1) +
                " tokens but the " + (validation ? "validation" : "training") + " split of " + path_ +
                " has " + std::to_string(split.size()));
  }
  return split;
}

void Corpus::SampleBatch(bool validation, int64_t batch, int64_t context, uint64_t& rng_state, int32_t* out,
                         const RepeatedSpans& repeat) const {
  const std::span<const uint8_t> split = Split(validation, batch, context, "SampleBatch");
  const RepeatedSpans r = Resolve(repeat, context, "SampleBatch");
  const uint64_t starts = split.size() - static_cast<uint64_t>(context);  // valid starts: [0, starts)
  for (int64_t b = 0; b < batch; ++b) {
    int32_t* dst = out + b * (context + 1);
    if (r.fraction > 0.0 && UniformUnit(rng_state) < r.fraction) {
      const int64_t span = DrawSpan(r, rng_state);
      FillRepeated(split.data() + UniformBelow(rng_state, split.size() - static_cast<uint64_t>(span) + 1),
                   span, context, dst);
      continue;
    }
    const uint8_t* src = split.data() + UniformBelow(rng_state, starts);
    for (int64_t t = 0; t <= context; ++t) dst[t] = src[t];
  }
}

void Corpus::FixedBatch(bool validation, int64_t batch, int64_t context, int64_t index, int32_t* out,
                        const RepeatedSpans& repeat) const {
  const std::span<const uint8_t> split = Split(validation, batch, context, "FixedBatch");
  const RepeatedSpans r = Resolve(repeat, context, "FixedBatch");
  if (index < 0) throw Error("corpus: FixedBatch: index = " + std::to_string(index) + " (must be >= 0)");
  const int64_t starts = static_cast<int64_t>(split.size()) - context;
  // The phase in [0, 1) of batch `index`; fmod of an exact product keeps it reproducible.
  const double phase = std::fmod(static_cast<double>(index) * kGoldenFraction, 1.0);
  for (int64_t b = 0; b < batch; ++b) {
    const double frac = (static_cast<double>(b) + phase) / static_cast<double>(batch);
    const int64_t start = std::min(starts - 1, static_cast<int64_t>(frac * static_cast<double>(starts)));
    const uint8_t* src = split.data() + start;
    int32_t* dst = out + b * (context + 1);
    if (r.fraction > 0.0) {
      uint64_t state = static_cast<uint64_t>(index) * 0xD1B54A32D192ED03ull ^ static_cast<uint64_t>(b);
      if (UniformUnit(state) < r.fraction) {
        FillRepeated(src, DrawSpan(r, state), context, dst);
        continue;
      }
    }
    for (int64_t t = 0; t <= context; ++t) dst[t] = src[t];
  }
}

std::array<int64_t, 256> Corpus::ByteCounts(bool validation) const {
  std::array<int64_t, 256> counts{};
  for (char c : text(validation)) ++counts[static_cast<uint8_t>(c)];
  return counts;
}

std::vector<int32_t> Corpus::OccurringBytes(int64_t min_count) const {
  const std::array<int64_t, 256> counts = ByteCounts(false);
  std::vector<int32_t> out;
  for (int32_t b = 0; b < 256; ++b)
    if (counts[b] >= std::max<int64_t>(min_count, 1)) out.push_back(b);
  return out;
}

}  // namespace attn
