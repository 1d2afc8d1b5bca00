// JSON mode (OpenAI's response_format {"type": "json_object"}, llama.cpp's json grammar): a byte-
// level recognizer of one JSON object, used to keep generation on valid JSON by masking every
// token whose text would leave it. Whitespace runs are limited to kMaxWhitespace bytes so that a
// model cannot pad forever; strings take any bytes but control characters (UTF-8 passes through),
// with JSON's escapes; numbers follow JSON's grammar (no leading zeros, no '+', no bare '.').
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace attn {

class JsonRecognizer {
 public:
  static constexpr int kMaxWhitespace = 20;
  static constexpr int kMaxDepth = 64;

  // Feeds one byte; false (and the state unchanged in meaning: do not use it further) when the
  // byte cannot continue a valid JSON object.
  bool Feed(uint8_t c);
  // Feeds every byte of `text`; false at the first one refused.
  bool Feed(std::string_view text);
  // Whether the bytes so far are one complete JSON object (trailing whitespace allowed).
  bool complete() const { return expect_ == Expect::kDone; }
  // What decides which bytes may follow, and nothing else: two recognizers with the same key
  // accept the same continuations (so a token mask can be kept per key). The fields a state
  // sets on entry (the number's, literal's and escape's progress, whether a string is a key)
  // count only in the states that read them, so that, for one, the key inside a string value
  // does not depend on the number before it.
  std::string StateKey() const;

 private:
  enum class Expect : uint8_t {
    kStart,         // before the top-level '{'
    kValue,         // a value (after ':' or ',' in an array)
    kKeyOrClose,    // after '{'
    kKey,           // after ',' in an object
    kColon,         // after a key
    kValueOrClose,  // after '['
    kCommaOrClose,  // after a value
    kString,        // inside a string
    kEscape,        // after '\' in a string
    kHex,           // inside \uXXXX
    kNumber,        // inside a number (number_ says where)
    kLiteral,       // inside true / false / null
    kDone,          // after the top-level '}'
  };
  enum class Num : uint8_t { kMinus, kZero, kInt, kDot, kFrac, kE, kESign, kExp };
  bool EndValue();              // a value ended: what may follow
  bool AfterNumber(uint8_t c);  // c ends a number (or continues it)
  bool StartValue(uint8_t c);   // c begins a value
  bool Whitespace(uint8_t c);   // c is whitespace where whitespace is allowed

  Expect expect_ = Expect::kStart;
  Num number_ = Num::kZero;
  bool key_ = false;               // the current string is an object key
  int hex_left_ = 0;               // \uXXXX digits to come
  const char* literal_ = nullptr;  // the rest of true / false / null to come
  int ws_ = 0;                     // whitespace bytes in the current run
  std::string stack_;              // '{' and '[' of the open containers
};

}  // namespace attn
