// The training text of `attn train`: a file read as byte tokens (vocab 256, token = byte value),
// split into training and validation bytes, and batches drawn from either split.
//
// Batches are reproducible: random ones come from a splitmix64 generator whose 64-bit state the
// caller owns (a trainer saves it in its checkpoint and resumes the same stream), evaluation ones
// are a pure function of their index.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace attn {

// splitmix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number generators", 2014):
// advances `state` by the golden-ratio increment and returns the mixed 64-bit output.
uint64_t SplitMix64(uint64_t& state);

// A uniform integer in [0, n) from SplitMix64, without modulo bias (Lemire 2019, "Fast random
// integer generation in an interval"). n must be > 0.
uint64_t UniformBelow(uint64_t& state, uint64_t n);

// Rows that repeat a span of the text. With probability `fraction` a row of a batch is not a
// window of the text but a span of it, `min_span` to `max_span` bytes long (uniform; max_span 0
// stands for context / 2, so the span occurs at least twice), repeated until the row is full.
// On such rows the next token is predictable by looking back at the span's earlier copy, which is
// what an induction head does: a small model trained on plain text rarely gains enough from
// copying to learn it, one trained with some repeated rows learns it within minutes (README).
struct RepeatedSpans {
  double fraction = 0.0;  // in [0, 1]; 0 = plain windows only
  int64_t min_span = 8;
  int64_t max_span = 0;
  // The longest span for this context (max_span, or context / 2 when it is 0).
  int64_t MaxSpan(int64_t context) const {
    return max_span != 0 ? max_span : std::max<int64_t>(context / 2, 1);
  }
};

class Corpus {
 public:
  static constexpr int64_t kVocabSize = 256;

  // Reads `path`. `context` is the training sequence length: each split must hold at least
  // context + 1 tokens. Throws attn::Error naming the file and the problem when it is missing
  // or unreadable, empty, too small for the context, or not text (a NUL byte, or more than 1%
  // of its bytes not valid UTF-8; the message gives the first bad byte's offset).
  Corpus(const std::string& path, int64_t context);

  // The same checks on text held in memory; `name` stands for the file in error messages.
  static Corpus FromText(std::string text, int64_t context, const std::string& name = "<text>");

  const std::string& path() const { return path_; }
  int64_t context() const { return context_; }
  int64_t size() const { return static_cast<int64_t>(bytes_.size()); }
  // The validation split is the last 5% of the bytes (at least context + 1), training the rest.
  int64_t train_size() const { return train_size_; }
  int64_t validation_size() const { return size() - train_size_; }
  std::string_view text(bool validation) const;

  // Fills `out` with `batch` rows of context + 1 tokens, row-major, each a window of the split
  // starting at a uniformly random offset drawn with UniformBelow(rng_state, ...); advances
  // rng_state by exactly `batch` draws' worth. context may differ from the constructor's but
  // context + 1 must fit in the split. With repeat.fraction > 0 each row first draws whether it
  // repeats a span, and a repeating row draws its span's length and start (see RepeatedSpans);
  // with fraction 0 the stream of draws is the plain one. Throws attn::Error when `repeat` is
  // out of range (fraction outside [0, 1], min_span < 1, max_span < min_span or > context).
  void SampleBatch(bool validation, int64_t batch, int64_t context, uint64_t& rng_state, int32_t* out,
                   const RepeatedSpans& repeat = {}) const;

  // Deterministic evaluation batch number `index` (>= 0): the rows' starts are evenly spaced over
  // the split (row r at (r + phase) / batch of the way), and the phase moves by the golden ratio
  // from one index to the next, so any number of consecutive batches stays spread out evenly.
  // With repeat.fraction > 0, whether row r repeats a span and the span's length are a pure
  // function of (index, r); its span starts where the plain row would.
  void FixedBatch(bool validation, int64_t batch, int64_t context, int64_t index, int32_t* out,
                  const RepeatedSpans& repeat = {}) const;

  // How often each byte value occurs in a split.
  std::array<int64_t, 256> ByteCounts(bool validation = false) const;
  // The byte values occurring at least `min_count` times in the training split, ascending (to
  // draw probe tokens from bytes that actually occur).
  std::vector<int32_t> OccurringBytes(int64_t min_count = 1) const;

 private:
  Corpus() = default;
  void Init(std::string bytes, int64_t context, const std::string& name);
  // The split's bytes; throws attn::Error when batch, context or index is out of range.
  std::span<const uint8_t> Split(bool validation, int64_t batch, int64_t context, const char* what) const;

  std::string path_;
  std::vector<uint8_t> bytes_;
  int64_t context_ = 0;
  int64_t train_size_ = 0;
};

}  // namespace attn
