// The byte-level BPE tokenizer: its mechanics on a small vocabulary built here as GGUF bytes, and
// SmolLM2-135M-Instruct's tokenizer against llama.cpp's ids (tests/fixtures/tokenizer_smollm2.json, made
// by make_tokenizer_fixtures.py with llama-cpp-python).
#include "attn/tokenizer.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "attn/error.h"
#include "format/gguf.h"
#include "format/gguf_writer.h"
#include "tokenizer/unicode.h"

namespace attn {
namespace {

// ---------------------------------------------------------------------------------------------------
// Tokenizer GGUF files are written with gguf::Writer (src/format/gguf_writer.h), no tensors.

std::string ByteChars(const std::string& bytes) {
  std::string out;
  for (char c : bytes) tokenizer::AppendUtf8(tokenizer::ByteToCodepoint(static_cast<uint8_t>(c)), out);
  return out;
}

const std::string kDeepSeekEnd =
    std::string("<\xEF\xBD\x9C") + "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";

// 256 byte tokens (id = byte value), then merged tokens, then specials.
struct TinyVocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;
  TinyVocab() {
    for (int b = 0; b < 256; ++b) tokens.push_back(ByteChars(std::string(1, static_cast<char>(b))));
    types.assign(256, 1);
    // Ranks: "a a" < "b c" < " a" < "aa a"; "h i" makes "hi".
    for (const char* m : {"a a", "b c", "Ġ a", "aa a", "h i", "Ġ hi", "1 2"}) {
      merges.push_back(m);
      std::string merged = m;
      merged.erase(merged.find(' '), 1);
      tokens.push_back(merged);
      types.push_back(1);
    }
    for (const char* s : {"<|im_start|>", "<|im_end|>", "<|im_end|>x"})
      tokens.push_back(s), types.push_back(3);
    tokens.push_back("<user>"), types.push_back(4);
    tokens.push_back(kDeepSeekEnd), types.push_back(1);  // an end-of-generation text typed normal
  }
  int32_t Id(const std::string& text) const {
    for (size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] == text) return static_cast<int32_t>(i);
    return -1;
  }
  gguf::Writer Writer(const std::string& pre = "gpt-2") const {
    gguf::Writer w;
    w.SetString("tokenizer.ggml.model", "gpt2");
    w.SetString("tokenizer.ggml.pre", pre);
    w.SetStrings("tokenizer.ggml.tokens", tokens);
    w.SetI32s("tokenizer.ggml.token_type", types);
    w.SetStrings("tokenizer.ggml.merges", merges);
    w.SetU32("tokenizer.ggml.eos_token_id", Id("<|im_end|>"));
    return w;
  }
};

Tokenizer Load(const std::vector<uint8_t>& bytes) {
  return Tokenizer::FromGGUF(gguf::File::Parse(bytes.data(), bytes.size()));
}

void ExpectRejected(const std::vector<uint8_t>& bytes, const std::string& fragment) {
  try {
    Load(bytes);
    ADD_FAILURE() << "accepted; expected an error mentioning '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(TokenizerTiny, MergesLowestRankFirstLeftmostOnTies) {
  const TinyVocab v;
  const Tokenizer t = Load(v.Writer().ToBytes());
  // "aaa": "a a" (rank 0) applies at 0-1 first (leftmost), then "aa a" (rank 3).
  EXPECT_EQ(t.Encode("aaa"), std::vector<int32_t>{v.Id("aaa")});
  // "aaaa": two "aa" (leftmost first), no "aa aa" merge.
  EXPECT_EQ(t.Encode("aaaa"), (std::vector<int32_t>{v.Id("aa"), v.Id("aa")}));
  // " abc": "b c" (rank 1) before "Ġ a" (rank 2); both apply.
  EXPECT_EQ(t.Encode("x abc"), (std::vector<int32_t>{'x', v.Id("Ġa"), v.Id("bc")}));
  EXPECT_EQ(t.Encode(" hi"), std::vector<int32_t>{v.Id("Ġhi")});
}

TEST(TokenizerTiny, PreTokenizerCutsBeforeMerging) {
  const TinyVocab v;
  // gpt-2: "12" is one piece, merged; smollm: digits are pieces of their own, not merged.
  EXPECT_EQ(Load(v.Writer("gpt-2").ToBytes()).Encode("12"), std::vector<int32_t>{v.Id("12")});
  EXPECT_EQ(Load(v.Writer("smollm").ToBytes()).Encode("12"), (std::vector<int32_t>{'1', '2'}));
  // "a a" never merges across the piece boundary of "a" | " a".
  EXPECT_EQ(Load(v.Writer().ToBytes()).Encode("a a"), (std::vector<int32_t>{'a', v.Id("Ġa")}));
  // \s+(?!\S): of three spaces before a word, the last one goes with the word.
  EXPECT_EQ(Load(v.Writer().ToBytes()).Encode("   a"), (std::vector<int32_t>{' ', ' ', v.Id("Ġa")}));
}

TEST(TokenizerTiny, SpecialTokensSplitFirst) {
  const TinyVocab v;
  const Tokenizer t = Load(v.Writer().ToBytes());
  const int32_t start = v.Id("<|im_start|>"), end = v.Id("<|im_end|>"), endx = v.Id("<|im_end|>x");
  EXPECT_EQ(t.Encode("<|im_start|>hi<|im_end|>"), (std::vector<int32_t>{start, v.Id("hi"), end}));
  // The longer special wins where both match.
  EXPECT_EQ(t.Encode("<|im_end|>xa"), (std::vector<int32_t>{endx, 'a'}));
  // Without parse_special, control tokens are plain text, user-defined ones still split out.
  const std::vector<int32_t> plain = t.Encode("<|im_end|><user>", /*parse_special=*/false);
  EXPECT_EQ(plain.back(), v.Id("<user>"));
  EXPECT_GT(plain.size(), 2u);
  EXPECT_EQ(t.Decode(plain), "<|im_end|><user>");
  EXPECT_TRUE(t.IsEndOfGeneration(end));
  EXPECT_TRUE(t.IsControl(start));
  EXPECT_FALSE(t.IsEndOfGeneration('a'));
  // llama.cpp promotes end-of-generation texts to control tokens.
  EXPECT_TRUE(t.IsEndOfGeneration(v.Id(kDeepSeekEnd)));
  EXPECT_TRUE(t.IsControl(v.Id(kDeepSeekEnd)));
  EXPECT_EQ(t.Encode("x" + kDeepSeekEnd), (std::vector<int32_t>{'x', v.Id(kDeepSeekEnd)}));
  EXPECT_EQ(t.TokenToPiece(end), "<|im_end|>");
  EXPECT_EQ(t.eos_id(), end);
  EXPECT_EQ(t.bos_id(), -1);
  EXPECT_FALSE(t.add_bos());
}

TEST(TokenizerTiny, RoundTripsAnyBytes) {
  const TinyVocab v;
  for (const char* pre : {"gpt-2", "smollm", "default", "llama-bpe"}) {
    gguf::Writer w = v.Writer(pre);
    w.SetU32("tokenizer.ggml.bos_token_id", v.Id("<|im_start|>"));  // llama3 adds BOS, so needs one
    const Tokenizer t = Load(w.ToBytes());
    std::mt19937 rng(42);
    for (int trial = 0; trial < 300; ++trial) {
      std::string s(rng() % 40, '\0');
      for (char& c : s) c = static_cast<char>(trial % 2 ? rng() % 256 : " a\n1\t'\xc3\xa9\xff"[rng() % 10]);
      const std::vector<int32_t> ids = t.Encode(s, /*parse_special=*/false);
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t.vocab_size());
      ASSERT_EQ(t.Decode(ids), s) << pre;
    }
  }
}

TEST(TokenizerTiny, EmptyInput) {
  const Tokenizer t = Load(TinyVocab().Writer().ToBytes());
  EXPECT_TRUE(t.Encode("").empty());
  EXPECT_EQ(t.Decode({}), "");
}

TEST(TokenizerTiny, RejectsBadIdsInDecode) {
  const Tokenizer t = Load(TinyVocab().Writer().ToBytes());
  const std::vector<int32_t> bad = {1, t.vocab_size()};
  EXPECT_THROW(t.Decode(bad), Error);
  EXPECT_THROW(t.TokenToPiece(-1), Error);
}

TEST(TokenizerTiny, RejectsBadFiles) {
  const TinyVocab v;
  gguf::Writer w;
  w.SetString("tokenizer.ggml.model", "t5");
  ExpectRejected(w.ToBytes(), "tokenizer.ggml.model = 't5' is not supported");
  ExpectRejected(v.Writer("deepseek-llm").ToBytes(),
                 "tokenizer.ggml.pre = 'deepseek-llm' is not supported (supported: default");
  ExpectRejected(gguf::Writer().ToBytes(), "tokenizer.ggml.model is missing");

  gguf::Writer no_tokens;
  no_tokens.SetString("tokenizer.ggml.model", "gpt2");
  ExpectRejected(no_tokens.ToBytes(), "tokenizer.ggml.tokens is missing");

  gguf::Writer short_types;
  short_types.SetString("tokenizer.ggml.model", "gpt2");
  short_types.SetStrings("tokenizer.ggml.tokens", v.tokens);
  short_types.SetI32s("tokenizer.ggml.token_type", {1, 1});
  ExpectRejected(short_types.ToBytes(), "tokenizer.ggml.token_type has 2 entries");

  gguf::Writer ints_as_tokens;
  ints_as_tokens.SetString("tokenizer.ggml.model", "gpt2");
  ints_as_tokens.SetI32s("tokenizer.ggml.tokens", {1, 2});
  ExpectRejected(ints_as_tokens.ToBytes(), "tokenizer.ggml.tokens");

  gguf::Writer bad_bos = v.Writer();
  bad_bos.SetU32("tokenizer.ggml.bos_token_id", 100000);
  ExpectRejected(bad_bos.ToBytes(), "tokenizer.ggml.bos_token_id = 100000");

  gguf::Writer dup;
  dup.SetString("tokenizer.ggml.model", "gpt2");
  dup.SetStrings("tokenizer.ggml.tokens", {"a", "b", "a"});
  dup.SetStrings("tokenizer.ggml.merges", {});
  ExpectRejected(dup.ToBytes(), "tokenizer.ggml.tokens[2] = 'a' duplicates token 0");
}

TEST(TokenizerTiny, MalformedMergeIsNamed) {
  const TinyVocab v;
  gguf::Writer w;
  w.SetString("tokenizer.ggml.model", "gpt2");
  w.SetStrings("tokenizer.ggml.tokens", v.tokens);
  w.SetStrings("tokenizer.ggml.merges", {"a a", "nospace"});
  ExpectRejected(w.ToBytes(), "tokenizer.ggml.merges[1] = 'nospace'");
}

TEST(TokenizerTiny, ChatTemplateWithoutTemplateIsPlainChatMl) {
  const Tokenizer t = Load(TinyVocab().Writer().ToBytes());
  EXPECT_STREQ(t.chat_format(), "chatml");
  EXPECT_EQ(t.ApplyChatTemplate({{"user", "hi"}}, true),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  try {  // no template to run as Jinja
    t.ApplyChatTemplate({{"user", "hi"}}, true, Tokenizer::ChatTemplateMode::kJinja);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tokenizer.chat_template"), std::string::npos) << e.what();
  }
}

// Formats with no built-in rendering (Phi-4's <|im_sep|> ChatML variant, Zephyr, Vicuna) are run as
// the Jinja programs they are; kBuiltin refuses them, and a template that does not parse is an error
// naming its line.
TEST(TokenizerTiny, OtherChatTemplatesRunAsJinja) {
  const std::vector<Tokenizer::Message> chat = {{"system", "Be kind."}, {"user", "hi"}};
  const std::pair<const char*, const char*> cases[] = {
      {"{% for m in messages %}{{ '<|im_start|>' + m['role'] + '<|im_sep|>' + m['content'] + '<|im_end|>' }}"
       "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}",
       "<|im_start|>system<|im_sep|>Be kind.<|im_end|><|im_start|>user<|im_sep|>hi<|im_end|>"
       "<|im_start|>assistant<|im_sep|>"},
      {"{% for message in messages %}\n{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token "
       "}}\n"
       "{% endfor %}\n{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}",
       "<|system|>\nBe kind.<|im_end|>\n<|user|>\nhi<|im_end|>\n<|assistant|>"},
      {"{{ messages[0]['content'] + ' ' if messages[0]['role'] == 'system' }}{% for m in messages %}"
       "{% if m['role'] == 'user' %}USER: {{ m['content'] }} {% endif %}{% endfor %}ASSISTANT:",
       "Be kind. USER: hi ASSISTANT:"},
  };
  for (const auto& [tmpl, want] : cases) {
    gguf::Writer w = TinyVocab().Writer();
    w.SetString("tokenizer.chat_template", tmpl);
    const Tokenizer t = Load(w.ToBytes());
    EXPECT_STREQ(t.chat_format(), "") << tmpl;
    EXPECT_EQ(t.ApplyChatTemplate(chat, true), want) << tmpl;
    try {
      t.ApplyChatTemplate(chat, true, Tokenizer::ChatTemplateMode::kBuiltin);
      ADD_FAILURE() << "kBuiltin rendered " << tmpl;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no chat format attn knows"), std::string::npos) << e.what();
    }
  }
  gguf::Writer w = TinyVocab().Writer();
  w.SetString("tokenizer.chat_template", "{% for m in messages %}\n{{ m.content }}");
  const Tokenizer broken = Load(w.ToBytes());  // loading never fails on the template
  try {
    broken.ApplyChatTemplate(chat, true);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("does not parse as Jinja: chat template: line 2: template ended inside a "
                                   "block (expected else / endfor)"),
        std::string::npos)
        << e.what();
  }
}

// RenderChatTemplate runs a real model's template (Qwen2.5's, from tests/fixtures/chat_templates/)
// on a context with tools and tool calls exactly as jinja2 does (chat_templates_jinja.json).
TEST(TokenizerTiny, RenderChatTemplateMatchesJinja2WithTools) {
  const std::string dir = ATTN_FIXTURES_DIR;
  std::ifstream fixture_in(dir + "/chat_templates_jinja.json");
  ASSERT_TRUE(fixture_in);
  const nlohmann::ordered_json fixture = nlohmann::ordered_json::parse(fixture_in);
  std::ifstream tmpl_in(dir + "/chat_templates/Qwen-Qwen2.5-7B-Instruct.jinja");
  const std::string tmpl((std::istreambuf_iterator<char>(tmpl_in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(tmpl.empty());
  gguf::Writer w = TinyVocab().Writer();
  w.SetString("tokenizer.chat_template", tmpl);
  const Tokenizer t = Load(w.ToBytes());
  EXPECT_STREQ(t.chat_format(), "chatml");  // its markers make it ChatML for the built-in path
  int checked = 0;
  for (const auto& entry : fixture["templates"]) {
    if (entry["file"] != "Qwen-Qwen2.5-7B-Instruct.jinja") continue;
    for (const auto& c : entry["cases"]) {
      if (!c.contains("rendered")) continue;
      EXPECT_EQ(t.RenderChatTemplate(c["context"].dump()), c["rendered"].get<std::string>()) << c["name"];
      ++checked;
    }
  }
  EXPECT_GE(checked, 9);
  const std::pair<const char*, const char*> bad[] = {
      {"[1]", "the context must be a JSON object"},
      {"{", "the context is not JSON"},
      {"{\"messages\": [{\"role\": \"user\"}]}", "an undefined value in '+'"}};  // no content
  for (const auto& [context, fragment] : bad) {
    try {
      t.RenderChatTemplate(context);
      ADD_FAILURE() << "rendered " << context;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  }
}

// Every chat format against llama.cpp's built-in rendering of it (tests/fixtures/make_chat_fixtures.py):
// each fixture template, a text with its family's markers, is recognized as that format and renders
// every conversation byte for byte as llama.cpp did.
TEST(TokenizerTiny, ChatFormatsMatchLlamaCpp) {
  const std::string path = std::string(ATTN_FIXTURES_DIR) + "/chat_templates_llamacpp.json";
  std::ifstream in(path);
  ASSERT_TRUE(in) << path << " is missing: run tests/fixtures/make_chat_fixtures.py";
  const nlohmann::json fixture = nlohmann::json::parse(in);
  int conversations = 0;
  for (const auto& t : fixture["templates"]) {
    gguf::Writer w = TinyVocab().Writer();
    w.SetString("tokenizer.chat_template", t["chat_template"].get<std::string>());
    const Tokenizer tok = Load(w.ToBytes());
    const std::string format = t["format"];
    EXPECT_EQ(tok.chat_format(), format);
    for (const auto& chat : t["chats"]) {
      std::vector<Tokenizer::Message> messages;
      for (const auto& m : chat["messages"]) messages.push_back({m["role"], m["content"]});
      EXPECT_EQ(tok.ApplyChatTemplate(messages, chat["add_generation_prompt"]),
                chat["rendered"].get<std::string>())
          << format << ", conversation " << conversations;
      ++conversations;
    }
  }
  EXPECT_GE(conversations, 24);
}

// ---------------------------------------------------------------------------------------------------
// SmolLM2-135M-Instruct against llama.cpp.

std::string ModelPath() {
  if (const char* env = std::getenv("ATTN_MODEL"); env != nullptr && *env != '\0') return env;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/attn/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// What Decode(Encode(s)) gives back: s, except for bytes no token stands for (SmolLM2 lacks 13 bytes
// that never occur in UTF-8, the ASCII controls 04 06 13 14 16 1D, and the lead bytes F1 F2): an
// invalid one becomes U+FFFD, one inside valid UTF-8 is dropped (as llama.cpp drops it).
std::string Representable(const Tokenizer& t, const std::string& s) {
  const auto has_token = [&](char c) { return t.Decode(t.Encode(std::string(1, c))) == std::string(1, c); };
  const tokenizer::Units u = tokenizer::DecodeKeepingBytes(s);
  std::string out;
  for (size_t i = 0; i < u.cpts.size(); ++i) {
    const std::string unit = s.substr(u.offsets[i], u.offsets[i + 1] - u.offsets[i]);
    if (unit.size() == 1 && static_cast<uint8_t>(unit[0]) >= 0x80) {  // an invalid byte
      out += has_token(unit[0]) ? unit : "\xEF\xBF\xBD";
      continue;
    }
    for (char c : unit) {
      if (has_token(c)) out.push_back(c);
    }
  }
  return out;
}

class TokenizerSmolLM2 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = ModelPath();
    if (!std::filesystem::exists(path)) {
      error_ = "model file " + path + " is missing: run scripts/setup.sh (or set ATTN_MODEL)";
      return;
    }
    const std::string fixture = std::string(ATTN_FIXTURES_DIR) + "/tokenizer_smollm2.json";
    std::ifstream in(fixture);
    if (!in) {
      error_ = fixture + " is missing: run tests/fixtures/make_tokenizer_fixtures.py";
      return;
    }
    fixture_ = new nlohmann::json(nlohmann::json::parse(in));
    file_ = new gguf::File(gguf::File::Open(path));
    tokenizer_ = new Tokenizer(Tokenizer::FromGGUF(*file_));
  }
  static void TearDownTestSuite() {
    delete fixture_;
    delete tokenizer_;
    delete file_;
    fixture_ = nullptr, tokenizer_ = nullptr, file_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(tokenizer_, nullptr) << error_; }
  static inline std::string error_;
  static inline gguf::File* file_ = nullptr;
  static inline Tokenizer* tokenizer_ = nullptr;
  static inline nlohmann::json* fixture_ = nullptr;
};

TEST_F(TokenizerSmolLM2, ReadsTheVocabulary) {
  const Tokenizer& t = *tokenizer_;
  EXPECT_EQ(t.vocab_size(), 49152);
  EXPECT_EQ(t.vocab_size(), (*fixture_)["vocab_size"].get<int>());
  EXPECT_EQ(t.bos_id(), (*fixture_)["bos_id"].get<int>());
  EXPECT_EQ(t.eos_id(), (*fixture_)["eos_id"].get<int>());
  EXPECT_EQ(t.pre(), "smollm");
  EXPECT_FALSE(t.add_bos());
  EXPECT_EQ(t.TokenToPiece(t.eos_id()), "<|im_end|>");
  EXPECT_TRUE(t.IsEndOfGeneration(t.eos_id()));
  EXPECT_TRUE(t.IsEndOfGeneration(t.Encode("<|endoftext|>").at(0)));
  EXPECT_FALSE(t.IsEndOfGeneration(t.Encode("<|im_start|>").at(0)));
  EXPECT_FALSE(t.IsEndOfGeneration(t.Encode("hello").at(0)));
}

// The file's own Jinja template and the built-in ChatML rendering (with SmolLM2's default system
// message) agree on every conversation shape.
TEST_F(TokenizerSmolLM2, JinjaTemplateAgreesWithBuiltInChatMl) {
  const Tokenizer& t = *tokenizer_;
  ASSERT_FALSE(t.chat_template().empty());
  const std::vector<std::vector<Tokenizer::Message>> chats = {
      {{"user", "Hi"}},
      {{"system", "You are terse."}, {"user", " Hi there! "}, {"assistant", "Hello."}, {"user", "2+2?"}},
      {{"user", "Caf\u00e9 \u65e5\u672c"}, {"assistant", "Oui.\n"}}};
  for (const auto& chat : chats) {
    for (const bool gen : {true, false}) {
      EXPECT_EQ(t.ApplyChatTemplate(chat, gen, Tokenizer::ChatTemplateMode::kJinja),
                t.ApplyChatTemplate(chat, gen, Tokenizer::ChatTemplateMode::kBuiltin))
          << chat.size() << " messages, add_generation_prompt " << gen;
    }
  }
}

TEST_F(TokenizerSmolLM2, MatchesLlamaCppOnEveryFixtureString) {
  const Tokenizer& t = *tokenizer_;
  int matched = 0, total = 0;
  for (const auto& c : (*fixture_)["cases"]) {
    const std::string name = c["name"];
    const std::string text = FromHex(c["text_hex"]);
    const bool special = c["parse_special"];
    const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    // llama.cpp replaces invalid UTF-8; kReplace reproduces that, the default keeps the bytes.
    const std::vector<int32_t> got = t.Encode(text, special, InvalidUtf8::kReplace);
    EXPECT_EQ(got, want) << name;
    if (c["valid_utf8"].get<bool>()) {
      EXPECT_EQ(t.Encode(text, special), want) << name;
    }
    EXPECT_EQ(t.Decode(got), FromHex(c["detokenized_hex"])) << name;
    EXPECT_EQ(t.Decode(t.Encode(text, special)), Representable(t, text)) << name;
    matched += got == want;
    ++total;
  }
  EXPECT_GE(total, 40);
  std::cout << "[ tokenizer ] " << matched << " / " << total << " fixture strings match llama.cpp\n";
}

// Other pre-tokenizers on SmolLM2's vocabulary and merges: llama.cpp tokenized the corpus from a
// copy of the model whose tokenizer.ggml.pre was replaced (make_tokenizer_fixtures.py --pre NAME).
TEST_F(TokenizerSmolLM2, OtherPreTokenizersMatchLlamaCpp) {
  // qwen2 and one alias of each split llama.cpp gives several names (starcoder: smollm's split).
  for (const char* pre :
       {"qwen2", "deepseek-r1-qwen", "falcon3", "phi-2", "starcoder", "tekken", "gpt-4o", "llama4"}) {
    const bool smollm_split = std::string(pre) == "starcoder";
    const std::string path = std::string(ATTN_FIXTURES_DIR) + "/tokenizer_smollm2_pre_" + pre + ".json";
    std::ifstream in(path);
    ASSERT_TRUE(in) << path << " is missing: run make_tokenizer_fixtures.py --pre " << pre;
    const nlohmann::json fixture = nlohmann::json::parse(in);
    gguf::Writer w;
    for (const auto& [key, value] : file_->metadata())
      if (key.rfind("tokenizer.", 0) == 0 && key != "tokenizer.ggml.pre") w.Set(key, value);
    w.SetString("tokenizer.ggml.pre", pre);
    const std::vector<uint8_t> bytes = w.ToBytes();
    const Tokenizer t = Load(bytes);
    EXPECT_EQ(t.pre(), pre);
    int total = 0, differ_from_smollm = 0;
    for (const auto& c : fixture["cases"]) {
      const std::string text = FromHex(c["text_hex"]);
      const bool special = c["parse_special"];
      const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
      EXPECT_EQ(t.Encode(text, special, InvalidUtf8::kReplace), want) << pre << ": " << c["name"];
      differ_from_smollm += tokenizer_->Encode(text, special, InvalidUtf8::kReplace) != want;
      ++total;
    }
    EXPECT_GE(total, 40);
    if (smollm_split) {
      EXPECT_EQ(differ_from_smollm, 0) << pre;
    } else {
      EXPECT_GT(differ_from_smollm, 5) << pre << " should cut some texts differently from smollm";
    }
  }
}

// Digit runs and cased words, where the pre-tokenizers differ most, with two-to-four-digit tokens added
// to the vocabulary (SmolLM2 has none): every split against llama.cpp's ids.
TEST_F(TokenizerSmolLM2, DigitRunsMatchLlamaCppWithDigitTokens) {
  std::ifstream in(std::string(ATTN_FIXTURES_DIR) + "/tokenizer_smollm2_digits.json");
  ASSERT_TRUE(in) << "run make_tokenizer_fixtures.py --digits";
  const nlohmann::json fixture = nlohmann::json::parse(in);
  const auto strings = [&](const std::string& key) {
    std::vector<std::string> out;
    for (const gguf::Value& v : *std::get<std::shared_ptr<gguf::Array>>(file_->Find(key)->data))
      out.push_back(std::get<std::string>(v.data));
    return out;
  };
  std::vector<std::string> tokens = strings("tokenizer.ggml.tokens"),
                           merges = strings("tokenizer.ggml.merges");
  std::vector<int32_t> types;
  for (const gguf::Value& v :
       *std::get<std::shared_ptr<gguf::Array>>(file_->Find("tokenizer.ggml.token_type")->data))
    types.push_back(static_cast<int32_t>(std::get<int64_t>(v.data)));
  for (const auto& t : fixture["extra_tokens"]) tokens.push_back(t), types.push_back(1);
  for (const auto& m : fixture["extra_merges"]) merges.push_back(m);
  std::vector<std::string> first = fixture["first_merges"].get<std::vector<std::string>>();
  merges.insert(merges.begin(), first.begin(), first.end());
  int distinct = 0;
  std::set<std::vector<int32_t>> seen;
  for (const auto& [pre, all_ids] : fixture["ids"].items()) {
    gguf::Writer w;
    const std::set<std::string> replaced = {"tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                                            "tokenizer.ggml.token_type", "tokenizer.ggml.merges"};
    for (const auto& [key, value] : file_->metadata())
      if (key.rfind("tokenizer.", 0) == 0 && replaced.count(key) == 0) w.Set(key, value);
    w.SetString("tokenizer.ggml.pre", pre);
    w.SetStrings("tokenizer.ggml.tokens", tokens);
    w.SetI32s("tokenizer.ggml.token_type", types);
    w.SetStrings("tokenizer.ggml.merges", merges);
    const Tokenizer t = Load(w.ToBytes());
    std::vector<int32_t> all;
    for (size_t i = 0; i < all_ids.size(); ++i) {
      const std::string text = FromHex(fixture["texts_hex"][i]);
      const std::vector<int32_t> want = all_ids[i].get<std::vector<int32_t>>();
      EXPECT_EQ(t.Encode(text, /*parse_special=*/false, InvalidUtf8::kReplace), want) << pre << ": " << text;
      all.insert(all.end(), want.begin(), want.end());
      all.push_back(-1);
    }
    distinct += seen.insert(all).second;
  }
  EXPECT_GE(distinct, 5) << "the texts should tell the splits apart";
}

TEST_F(TokenizerSmolLM2, ChatTemplateMatchesJinja) {
  for (const auto& chat : (*fixture_)["chats"]) {
    std::vector<Tokenizer::Message> messages;
    for (const auto& m : chat["messages"]) messages.push_back({m["role"], m["content"]});
    EXPECT_EQ(tokenizer_->ApplyChatTemplate(messages, chat["add_generation_prompt"]),
              chat["rendered"].get<std::string>());
  }
}

TEST_F(TokenizerSmolLM2, RoundTripsRandomBytes) {
  const Tokenizer& t = *tokenizer_;
  std::mt19937 rng(7);
  const std::string alphabet = "ab 1\n\t'.\xc3\xa9\xe4\xbd\xa0\xf0\x9f\x98\x80";
  for (int trial = 0; trial < 500; ++trial) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(trial % 2 ? rng() % 256 : alphabet[rng() % alphabet.size()]);
    if (s.find("<") != std::string::npos) continue;  // no special-token text
    const std::vector<int32_t> ids = t.Encode(s);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t.vocab_size());
    ASSERT_EQ(t.Decode(ids), Representable(t, s));
  }
}

TEST_F(TokenizerSmolLM2, BytesWithoutTokens) {
  const Tokenizer& t = *tokenizer_;
  std::string missing;
  for (int b = 0; b < 256; ++b) {
    const std::string byte(1, static_cast<char>(b));
    const std::string back = t.Decode(t.Encode(byte));
    if (back == byte) continue;
    missing += byte;
    // An ASCII byte is valid UTF-8: dropped, as llama.cpp does. Any other is invalid alone: U+FFFD.
    EXPECT_EQ(back, b < 0x80 ? "" : "\xEF\xBF\xBD") << b;
    EXPECT_EQ(t.Encode(byte, true, InvalidUtf8::kReplace), t.Encode(b < 0x80 ? "" : "\xEF\xBF\xBD")) << b;
  }
  EXPECT_EQ(
      missing,
      std::string("\x04\x06\x13\x14\x16\x1D\xC0\xC1\xF1\xF2\xF5\xF6\xF7\xF8\xF9\xFA\xFB\xFC\xFD\xFE\xFF"));
  // U+40000 (F1 80 80 80) is valid UTF-8: its F1 has no token and is dropped, as llama.cpp drops it.
  EXPECT_EQ(t.Decode(t.Encode("a\xF1\x80\x80\x80")), "a\x80\x80\x80");
  EXPECT_EQ(t.Encode("a\xF1\x80\x80\x80"), t.Encode("a\xF1\x80\x80\x80", true, InvalidUtf8::kReplace));
}

TEST_F(TokenizerSmolLM2, EncodesLargeText) {
  std::string text;
  while (text.size() < 100'000)
    text += "The quick brown fox, 1234 times: jumps! \xe4\xbd\xa0\xe5\xa5\xbd\n  ";
  const std::vector<int32_t> ids = tokenizer_->Encode(text);
  EXPECT_GT(ids.size(), 10'000u);
  EXPECT_EQ(tokenizer_->Decode(ids), text);
}

// ---------------------------------------------------------------------------------------------------
// A SentencePiece ("llama") vocabulary against llama.cpp (tests/fixtures/make_spm_fixture.py: trained
// with sentencepiece as Llama's tokenizer was, written as GGUF as llama.cpp's converter does).

TEST(TokenizerSpm, MatchesLlamaCppOnEveryFixtureString) {
  const std::string dir = ATTN_FIXTURES_DIR;
  std::ifstream in(dir + "/tokenizer_spm_tiny.json");
  ASSERT_TRUE(in) << "tokenizer_spm_tiny.json is missing: run tests/fixtures/make_spm_fixture.py";
  const nlohmann::json fixture = nlohmann::json::parse(in);
  const gguf::File file = gguf::File::Open(dir + "/" + fixture["file"].get<std::string>());
  const Tokenizer t = Tokenizer::FromGGUF(file);
  EXPECT_EQ(t.vocab_size(), fixture["vocab_size"].get<int>());
  EXPECT_EQ(t.bos_id(), fixture["bos_id"].get<int>());
  EXPECT_EQ(t.eos_id(), fixture["eos_id"].get<int>());
  EXPECT_TRUE(t.add_bos());
  EXPECT_EQ(t.EncodePrompt("x").front(), t.bos_id());
  int total = 0, round_trips = 0;
  for (const auto& c : fixture["cases"]) {
    const std::string name = c["name"];
    const std::string text = FromHex(c["text_hex"]);
    const bool special = c["parse_special"];
    const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> got = t.Encode(text, special);
    EXPECT_EQ(got, want) << name;
    EXPECT_EQ(t.Encode(text, special, InvalidUtf8::kReplace), want) << name;  // bytes stay bytes
    EXPECT_EQ(t.Decode(got), FromHex(c["detokenized_hex"])) << name;
    // Every byte has a byte token, so valid text without special tokens comes back exactly, after
    // the space SentencePiece puts in front. (In invalid UTF-8 a lead byte takes the next bytes into
    // its character, so a space after it can come back as the bytes of U+2581, as in llama.cpp.)
    if (!text.empty() && text.find('<') == std::string::npos && c["valid_utf8"].get<bool>()) {
      EXPECT_EQ(t.Decode(got), " " + text) << name;
      ++round_trips;
    }
    ++total;
  }
  EXPECT_GE(total, 200);
  EXPECT_GE(round_trips, 90);
  // A literal U+2581 in the text is what SentencePiece writes for a space: it decodes as one (the
  // fuzzer's first finding against a round-trip check that had forgotten it).
  EXPECT_EQ(t.Decode(t.Encode("a\xE2\x96\x81"
                              "b")),
            " a b");
}

TEST(TokenizerSpm, RejectsBadScores) {
  gguf::Writer w;
  w.SetString("tokenizer.ggml.model", "llama");
  w.SetStrings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>",
                                         "\xE2\x96\x81"
                                         "a"});
  gguf::Value scores;
  scores.type = gguf::ValueType::kArray;
  scores.array_type = gguf::ValueType::kF32;
  auto array = std::make_shared<gguf::Array>();
  for (double x : {0.0, 0.0, 0.0}) {
    gguf::Value e;
    e.type = gguf::ValueType::kF32;
    e.data = x;
    array->push_back(e);
  }
  scores.data = array;
  w.Set("tokenizer.ggml.scores", scores);
  ExpectRejected(w.ToBytes(), "tokenizer.ggml.scores has 3 entries, tokenizer.ggml.tokens 4");
}

}  // namespace
}  // namespace attn
