// JSON mode's recognizer (src/model/json_constraint.h): every prefix of a valid object is accepted
// and only the whole object is complete; each kind of invalid byte is refused where it occurs.
#include "model/json_constraint.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "model/grammar.h"

namespace attn {
namespace {

// Feeds `text` byte by byte: the number of bytes accepted before the first refusal.
size_t Accepted(const std::string& text, bool* complete = nullptr) {
  JsonRecognizer r;
  size_t i = 0;
  while (i < text.size() && r.Feed(static_cast<uint8_t>(text[i]))) ++i;
  if (complete != nullptr) *complete = i == text.size() && r.complete();
  return i;
}

TEST(JsonRecognizer, ValidObjectsAreCompleteOnlyAtTheirEnd) {
  for (const std::string& text :
       {std::string(R"({})"), std::string(R"({"a": 1})"),
        std::string("{ \"a\" : [1, -2.5e+3, 0, 0.25, 1E9] }"),
        std::string(R"({"s": "caf\u00e9 \"q\" \\ \/ \n", "t": true, "f": false, "n": null})"),
        std::string("{\"nested\": {\"deep\": [[], [{}], {\"x\": []}]}, \"utf8\": \"h\xC3\xA9\"}"),
        std::string("{\"a\":1}\n\n")}) {
    SCOPED_TRACE(text);
    JsonRecognizer r;
    for (size_t i = 0; i < text.size(); ++i) {
      ASSERT_TRUE(r.Feed(static_cast<uint8_t>(text[i]))) << "byte " << i;
      const bool closed = i >= text.rfind('}');  // the last byte but whitespace
      EXPECT_EQ(r.complete(), closed) << "after byte " << i;
    }
  }
}

TEST(JsonRecognizer, InvalidBytesAreRefusedWhereTheyOccur) {
  struct Case {
    const char* text;
    size_t accepted;
  };
  for (const Case& c : {
           Case{"[1]", 0},           // the top level is an object
           Case{" {}", 0},           // no whitespace before it
           Case{"{\"a\" 1}", 5},     // a key needs its colon
           Case{"{a: 1}", 1},        // keys are strings
           Case{"{\"a\": 01}", 7},   // no leading zero
           Case{"{\"a\": +1}", 6},   // no plus
           Case{"{\"a\": .5}", 6},   // no bare point
           Case{"{\"a\": 1.}", 8},   // digits after the point
           Case{"{\"a\": 1e}", 8},   // digits in the exponent
           Case{"{\"a\": -}", 7},    // digits after the minus
           Case{"{\"a\": tru}", 9},  // literals spelled out
           Case{"{\"a\": nul1}", 9},
           Case{"{\"a\": \"x\ny\"}", 8},      // a raw newline in a string
           Case{"{\"a\": \"\\x\"}", 8},       // an unknown escape
           Case{"{\"a\": \"\\u12g4\"}", 11},  // a bad hex digit
           Case{"{\"a\": [1,]}", 9},          // a value after the comma
           Case{"{\"a\": [1}", 8},            // brackets match
           Case{"{\"a\": 1,}", 8},            // a key after the comma
           Case{"{}}", 2},                    // nothing after the object but whitespace
           Case{"{},", 2},
       }) {
    SCOPED_TRACE(c.text);
    EXPECT_EQ(Accepted(c.text), c.accepted);
  }
}

TEST(JsonRecognizer, WhitespaceRunsAndDepthAreBounded) {
  const std::string ws(JsonRecognizer::kMaxWhitespace, ' ');
  bool complete = false;
  EXPECT_EQ(Accepted("{" + ws + "\"a\":" + ws + "1" + ws + "}" + ws, &complete), 4 * ws.size() + 7);
  EXPECT_TRUE(complete);
  EXPECT_EQ(Accepted("{" + ws + " "), ws.size() + 1);  // one more is refused
  std::string deep;
  for (int i = 0; i < JsonRecognizer::kMaxDepth; ++i) deep += i == 0 ? "{\"a\":" : "[";
  EXPECT_EQ(Accepted(deep + "["), deep.size());
}

// JSON mode keeps masks by StateKey: two states with one key must allow the same tokens. Random
// walks through JSON texts (each step a random allowed token of a vocabulary of single bytes and
// JSON-ish pieces) compare every step's mask with the first mask met under the same key.
TEST(JsonRecognizer, StatesWithOneKeyAllowTheSameTokens) {
  std::vector<std::string> pieces;
  for (int c = 0x20; c < 0x7f; ++c) pieces.push_back(std::string(1, static_cast<char>(c)));
  for (const char* p :
       {"\n", "  ",  "    ", "{\"", "\":", "\": ", "\",", "\", \"", "\"}",  "}}", "}]",   "]}",    "}}}",
        "[[", "[{",  "\\u",  "\\n", "00",  "1.",   "e-",  "E+",     "tr",   "ue", "true", "false", "null",
        "nu", "ll}", "al",   "se,", "123", "0.5",  "-1",  "\u00e9", "\"\"", "{}", "[]",   ", ",    ": "})
    pieces.push_back(p);
  const TokenTrie trie(pieces);
  std::map<std::string, std::vector<uint8_t>> seen;
  int64_t compared = 0;
  for (uint32_t seed = 0; seed < 40; ++seed) {
    std::mt19937 rng(seed);
    JsonRecognizer json;
    for (int step = 0; step < 200; ++step) {
      std::vector<uint8_t> allowed(pieces.size());
      trie.Allowed(json, allowed);
      const auto [it, inserted] = seen.emplace(json.StateKey(), allowed);
      if (!inserted) {
        ASSERT_EQ(it->second, allowed) << "seed " << seed << " step " << step;
        ++compared;
      }
      std::vector<size_t> ids;
      for (size_t i = 0; i < pieces.size(); ++i)
        if (allowed[i]) ids.push_back(i);
      if (ids.empty() || json.complete()) break;
      ASSERT_TRUE(json.Feed(pieces[ids[rng() % ids.size()]]));
    }
  }
  EXPECT_GT(compared, 2000);
  EXPECT_GT(seen.size(), 100u);
}

}  // namespace
}  // namespace attn
