// GBNF grammars (src/model/grammar.h): the parser's rules and errors, the recognizer on valid and
// invalid texts (UTF-8 included), and the vocabulary trie's masks against trying every token.
#include "model/grammar.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "attn/error.h"

namespace attn {
namespace {

// Bytes of `text` accepted before the first refusal; *complete: all accepted and complete().
size_t Accepted(const std::shared_ptr<Grammar>& g, const std::string& text, bool* complete = nullptr) {
  GrammarMatcher m(g);
  size_t i = 0;
  while (i < text.size() && m.Feed(static_cast<uint8_t>(text[i]))) ++i;
  if (complete != nullptr) *complete = i == text.size() && m.complete();
  return i;
}

bool Sentence(const std::shared_ptr<Grammar>& g, const std::string& text) {
  bool complete = false;
  Accepted(g, text, &complete);
  return complete;
}

TEST(Grammar, LiteralsClassesAlternativesAndGroups) {
  const auto g = Grammar::Parse(R"(
# a comment line
root ::= greeting " " name ("!" | "?")   # trailing comment
greeting ::= "hi" | "hello"
name ::= [A-Z] [a-z]*
)");
  for (const char* ok : {"hi Bob!", "hello X?", "hi Al!"}) EXPECT_TRUE(Sentence(g, ok)) << ok;
  for (const char* bad : {"hi bob!", "hey Bob!", "hi Bob", "hi Bob!!", "hiBob!", ""}) {
    EXPECT_FALSE(Sentence(g, bad)) << bad;
  }
  EXPECT_EQ(Accepted(g, "hi bob"), 3u);     // refused at the lower-case 'b'
  EXPECT_EQ(Accepted(g, "hello Bo1"), 8u);  // at the digit
}

TEST(Grammar, RepetitionCounts) {
  const auto g = Grammar::Parse(R"(root ::= "a"{2,4} "b"? "c"+ d{3} e{1,}
d ::= [0-9]
e ::= "e")");
  EXPECT_TRUE(Sentence(g, "aac123e"));
  EXPECT_TRUE(Sentence(g, "aaaabccc999eee"));
  EXPECT_FALSE(Sentence(g, "ac123e"));      // one a
  EXPECT_FALSE(Sentence(g, "aaaaac123e"));  // five
  EXPECT_FALSE(Sentence(g, "aabb c123e"));  // two b
  EXPECT_FALSE(Sentence(g, "aab123e"));     // no c
  EXPECT_FALSE(Sentence(g, "aac12e"));      // two digits
  EXPECT_FALSE(Sentence(g, "aac123"));      // no e
  const auto exact = Grammar::Parse(R"(root ::= ("ab" | "c"){3})");
  EXPECT_TRUE(Sentence(exact, "abcab"));
  EXPECT_FALSE(Sentence(exact, "abc"));
  EXPECT_FALSE(Sentence(exact, "ccccc"));
}

TEST(Grammar, NestedParenthesesSpanLines) {
  const auto g = Grammar::Parse("root ::= (\n  \"x\"\n  | \"y\" (\"z\"\n)*\n)\n");
  EXPECT_TRUE(Sentence(g, "x"));
  EXPECT_TRUE(Sentence(g, "yzzz"));
  EXPECT_FALSE(Sentence(g, "xz"));
}

TEST(Grammar, RecursionThatIsNotLeftRecursion) {
  // Balanced brackets, nested to any depth.
  const auto g = Grammar::Parse(R"g(root ::= item*
item ::= "(" root ")" | "[" root "]")g");
  EXPECT_TRUE(Sentence(g, ""));
  EXPECT_TRUE(Sentence(g, "()[]([()])"));
  EXPECT_TRUE(Sentence(g, std::string(200, '(') + std::string(200, ')')));
  EXPECT_FALSE(Sentence(g, "(]"));
  EXPECT_FALSE(Sentence(g, "(()"));
  EXPECT_EQ(Accepted(g, "([)]"), 2u);
}

TEST(Grammar, EscapesAndUnicode) {
  const auto g = Grammar::Parse(R"(root ::= "\x41\u00e9\U0001F600\t\n\"\\" [\u4e00-\u9fff]+ [^a-z\]]
)");
  const std::string head = "A\xC3\xA9\xF0\x9F\x98\x80\t\n\"\\";
  EXPECT_TRUE(Sentence(g, head + "\xE4\xB8\xAD\xE6\x96\x87" + "Z"));
  EXPECT_TRUE(Sentence(g, head + "\xE4\xB8\xAD" + "\xC3\xA9"));  // a two-byte character for [^a-z\]]
  EXPECT_FALSE(Sentence(g, head + "\xE4\xB8\xAD" + "]"));
  EXPECT_FALSE(Sentence(g, head + "\xE4\xB8\xAD" + "q"));
  // Partial characters: a lead byte that cannot begin any allowed character is refused at once.
  EXPECT_EQ(Accepted(g, "A\xC3\xA8"), 2u);                 // U+00E8, not U+00E9: refused at its last byte
  EXPECT_EQ(Accepted(g, head + "\xC3"), head.size());      // no two-byte character in U+4E00..U+9FFF
  EXPECT_EQ(Accepted(g, head + "\xE4"), head.size() + 1);  // U+4000..U+4FFF meets the class
  // Any character: every code point, by its UTF-8 bytes; malformed bytes are refused.
  const auto any = Grammar::Parse("root ::= .*");
  EXPECT_TRUE(Sentence(any, "plain \xE4\xB8\xAD \xF0\x9F\x98\x80 \xC3\xA9"));
  EXPECT_FALSE(Sentence(any, "\xE4\xB8"));  // cut short: not complete
  for (const char* bad : {"\x80", "\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xFF"}) {
    EXPECT_LT(Accepted(any, bad), std::string(bad).size()) << testing::PrintToString(std::string(bad));
  }
}

TEST(Grammar, EmptyAlternativesAndLiterals) {
  const auto g = Grammar::Parse(R"(root ::= "a" opt "b" ""
opt ::= | "x" | "")");
  EXPECT_TRUE(Sentence(g, "ab"));
  EXPECT_TRUE(Sentence(g, "axb"));
  EXPECT_FALSE(Sentence(g, "axxb"));
}

TEST(Grammar, DeadMatcherRefusesEverything) {
  GrammarMatcher m(Grammar::Parse(R"(root ::= "ab")"));
  EXPECT_FALSE(m.Feed('x'));
  EXPECT_TRUE(m.dead());
  EXPECT_FALSE(m.Feed('a'));
  EXPECT_FALSE(m.complete());
}

TEST(Grammar, ErrorsNameWhatAndWhere) {
  struct Case {
    const char* text;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {"root ::= foo", "line 1, column 10: undefined rule 'foo'"},
           {"rot ::= \"a\"", "no rule named 'root'"},
           {"root ::= \"a\"\nroot ::= \"b\"", "line 2, column 1: rule 'root' is defined twice"},
           {"root = \"a\"", "expected '::='"},
           {"root ::= \"abc", "unterminated literal"},
           {"root ::= [a-", "unterminated character class"},
           {"root ::= [z-a]", "ends before it starts"},
           {"root ::= (\"a\"", "'(' without its ')'"},
           {"root ::= \"a\" )", "unexpected ')'"},
           {"root ::= * \"a\"", "nothing before it to repeat"},
           {"root ::= \"a\"{3,2}", "n < m"},
           {"root ::= \"a\"{1001}", "repetition count over 1000"},
           {"root ::= \"a\"{x}", "expected a repetition count"},
           {"root ::= \"\\q\"", "unknown escape '\\q'"},
           {"root ::= \"\\x4\"", "'\"' is not a hexadecimal digit"},
           {"root ::= \"\\U00110000\"", "past U+10FFFF"},
           {"root ::= <think>", "token references"},
           {"root ::= \"\xC3\"", "not UTF-8"},
           {"root ::= root \"a\"", "left recursion: rule 'root' can begin with itself (root -> root)"},
           {"root ::= a\na ::= b? c\nb ::= \"x\"\nc ::= a \"y\" | \"z\"", "left recursion"},
           {"root ::= (\"a\"?)*", "left recursion"},
       }) {
    SCOPED_TRACE(c.text);
    try {
      Grammar::Parse(c.text);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << e.what();
    }
  }
}

TEST(Grammar, ExpansionIsBounded) {
  // Repetitions copy their item: a long literal repeated a thousand times is refused by size,
  // whereas a group (one rule, referenced) repeats cheaply.
  const std::string long_literal = "\"" + std::string(2000, 'a') + "\"";
  for (const std::string& text :
       {"root ::= " + long_literal + "{1000}", "root ::= " + long_literal + "{0,1000}"}) {
    try {
      Grammar::Parse(text);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("expands to more than"), std::string::npos) << e.what();
    }
  }
  const auto g = Grammar::Parse("root ::= (((\"ab\"){10}){10}){10}");
  EXPECT_TRUE(Sentence(g, [] {
    std::string s;
    for (int i = 0; i < 1000; ++i) s += "ab";
    return s;
  }()));
}

TEST(Grammar, TooManyParsesIsAnError) {
  // Each 'a' can belong to any of the outer and inner repetitions' slots: the parses multiply.
  GrammarMatcher m(Grammar::Parse(R"(root ::= ("a"{0,1000}){0,1000})"));
  try {
    for (int i = 0; i < 100; ++i) m.Feed('a');
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than 4096 possible parses"), std::string::npos) << e.what();
  }
}

TEST(Grammar, GeneratedRuleNamesNeverTakeTheTextsNames) {
  // A group or repetition makes a rule named after its rule (root-1, ...): never one the text
  // defines or refers to later.
  struct Case {
    const char* text;
    const char* sentence;
    const char* not_sentence;
  };
  for (const Case& c : std::vector<Case>{
           {"root ::= \"a\"* root-1\nroot-1 ::= \"c\"", "aac", "aa"},
           {"root ::= (\"a\" | \"b\") root-1\nroot-1 ::= \"c\"", "bc", "ab"},
           {"root ::= \"a\"{0,2} root-1 root-2\nroot-1 ::= \"c\"\nroot-2 ::= \"d\"", "acd", "aaacd"},
       }) {
    SCOPED_TRACE(c.text);
    const auto g = Grammar::Parse(c.text);
    EXPECT_TRUE(Sentence(g, c.sentence));
    EXPECT_FALSE(Sentence(g, c.not_sentence));
    const auto printed = Grammar::Parse(g->ToString());
    EXPECT_TRUE(Sentence(printed, c.sentence)) << g->ToString();
    EXPECT_FALSE(Sentence(printed, c.not_sentence));
  }
  // A reference to an undefined root-1 is an error, not the generated rule.
  EXPECT_THROW(Grammar::Parse("root ::= (\"a\" root-1)"), Error);
}

TEST(Grammar, LineBreaksAfterDefinitionAndBar) {
  // As llama.cpp's bundled grammars write them: the body on the next line, one alternative a line.
  const auto g = Grammar::Parse("root ::=\n  item\nitem ::= \"a\" |\n  \"b\" |\n  \"c\"\n");
  EXPECT_TRUE(Sentence(g, "b"));
  EXPECT_TRUE(Sentence(g, "c"));
  EXPECT_FALSE(Sentence(g, ""));
}

// The example grammars in grammars/ parse, and judge texts as their comments say.
TEST(Grammar, ShippedGrammarsParseAndJudgeExamples) {
  struct Case {
    const char* file;
    std::vector<std::string> sentences, not_sentences;
  };
  const std::vector<Case> cases = {
      {"json.gbnf",
       {R"({"a": [1, -2.5e3, true, null, "x\u00e9\n"], "b": {}})", "[]", R"("cafÃ©")", "0.5",
        "{\n  \"k\": {\n    \"n\": 12\n  }\n}"},
       {R"({"a" 1})", "[1,]", "01", "{'a': 1}", R"({"a": 1} x)", "\"tab\there\""}},
      {"list.gbnf", {"- bread\n- cheese and wine\n"}, {"- \n", "bread\n", "- bread"}},
      {"yes_no.gbnf", {"yes.", "no."}, {"maybe.", "yes"}},
      {"arithmetic.gbnf", {"(1+2)*3/4-5", "((7))"}, {"1+", "1++2", "(1", "1 + 2"}},
      {"chess.gbnf", {"1. e4 e5 2. Nf3 Nc6 3. Bb5 a6 4. O-O Nf6 5. exd5 Qxd5+"}, {"1. e9 e5", "1. e4"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    std::ifstream in(std::string(ATTN_FIXTURES_DIR) + "/../../grammars/" + c.file);
    ASSERT_TRUE(in) << "missing grammars/" << c.file;
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto g = Grammar::Parse(text);
    for (const std::string& t : c.sentences) EXPECT_TRUE(Sentence(g, t)) << t;
    for (const std::string& t : c.not_sentences) EXPECT_FALSE(Sentence(g, t)) << t;
  }
}

TEST(Grammar, OtherStartRule) {
  const auto g = Grammar::Parse("a ::= \"x\" b\nb ::= \"y\"", "b");
  EXPECT_TRUE(Sentence(g, "y"));
  EXPECT_FALSE(Sentence(g, "xy"));
}

TEST(Grammar, ToStringShowsTheRewrittenRules) {
  const auto g = Grammar::Parse("root ::= \"ab\" [^\\n]* | x\nx ::= \"q\"");
  const std::string s = g->ToString();
  EXPECT_NE(s.find("root ::= \"a\" \"b\" root-1 | x"), std::string::npos) << s;
  EXPECT_NE(s.find("root-1 ::= [^\\n] root-1 | \"\"\n"), std::string::npos) << s;
  // The printed grammar parses to one that accepts the same texts.
  const auto again = Grammar::Parse(s);
  EXPECT_TRUE(Sentence(again, "ab cd"));
  EXPECT_FALSE(Sentence(again, "ab\n"));
  // A class may name surrogates (U+D800-DFFF), which UTF-8 cannot write: they are printed as
  // escapes (grammar_fuzz found them printed as bytes the parser refuses).
  for (const char* text : {"root ::= [\\u4e00-\\udf9f]+", "root ::= \"\\ud800\" [\\udc00-\\udfff]"}) {
    const auto surrogates = Grammar::Parse(text);
    const std::string printed = surrogates->ToString();
    EXPECT_NE(printed.find("\\uD"), std::string::npos) << printed;
    const auto reparsed = Grammar::Parse(printed);
    EXPECT_EQ(Sentence(reparsed, "\u4e00\u9fa5"), Sentence(surrogates, "\u4e00\u9fa5")) << printed;
  }
  EXPECT_TRUE(
      Sentence(Grammar::Parse(Grammar::Parse("root ::= [\\u4e00-\\udf9f]+")->ToString()), "\u4e00\u9fa5"));
}

// The trie's mask equals trying each token on a copy of the matcher, at every step of a text; with
// the automaton's table kept, and dropped before every feed and mask (limit 0) or often (3).
class TokenTrieLimits : public testing::TestWithParam<size_t> {};

TEST_P(TokenTrieLimits, MaskEqualsTryingEveryToken) {
  const auto g = Grammar::Parse(R"(root ::= "{" ws pair ("," ws pair)* "}"
pair ::= "\"" [a-z\u00e9]+ "\"" ws ":" ws num ws
num ::= "-"? [0-9]{1,3}
ws ::= " "?)");
  g->SetAutomatonLimit(GetParam());
  std::mt19937 rng(7);
  const std::string alphabet = "{}\",: -0123456789abcxyz\xC3\xA9";
  std::vector<std::string> pieces = {"",     "{",        "}",     "\"",    ",",  ":",    " ",
                                     "-",    "\"a",      "ab\"",  "\": 1", "12", "1234", "\xC3",
                                     "\xA9", "\xC3\xA9", "x\xC3", "}}",    "{\""};
  for (int i = 0; i < 400; ++i) {
    std::string p;
    const int len = 1 + static_cast<int>(rng() % 5);
    for (int k = 0; k < len; ++k) p += alphabet[rng() % alphabet.size()];
    pieces.push_back(p);
  }
  const TokenTrie trie(pieces);
  const std::string text = "{\"a\xC3\xA9\": -12, \"b\":7}";
  GrammarMatcher m(g);
  TokenMaskCache cache;
  for (size_t step = 0; step <= text.size(); ++step) {
    std::vector<uint8_t> allowed(pieces.size(), 9), cached(pieces.size(), 9);
    trie.Allowed(m, allowed);
    trie.Allowed(m, cached, &cache);  // a hit from the second step on, where the state repeats
    EXPECT_EQ(cached, allowed) << "step " << step;
    int n_allowed = 0;
    for (size_t id = 0; id < pieces.size(); ++id) {
      if (pieces[id].empty()) {
        EXPECT_EQ(allowed[id], 9) << "empty pieces are left alone";
        continue;
      }
      GrammarMatcher trial = m;
      EXPECT_EQ(allowed[id], trial.Feed(pieces[id]) ? 1 : 0) << "step " << step << " piece " << pieces[id];
      n_allowed += allowed[id];
    }
    if (step < text.size()) {
      EXPECT_GT(n_allowed, 0) << "step " << step;
      ASSERT_TRUE(m.Feed(static_cast<uint8_t>(text[step])));
    }
  }
  EXPECT_TRUE(m.complete());
  if (GetParam() == Grammar::kMaxAutomatonStates) {
    EXPECT_GT(g->automaton_states(), 10u);
  } else if (GetParam() == 0) {
    EXPECT_LT(g->automaton_states(), 300u);  // what one mask's walk numbers
  }
}

INSTANTIATE_TEST_SUITE_P(Grammar, TokenTrieLimits,
                         testing::Values(Grammar::kMaxAutomatonStates, size_t{0}, size_t{3}));

}  // namespace
}  // namespace attn
