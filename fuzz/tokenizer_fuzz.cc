// libFuzzer target: SmolLM2's tokenizer on arbitrary bytes, under each pre-tokenizer attn has (its own
// "smollm" and, on the same vocabulary, gpt2, llama-bpe, qwen2, default, tekken and gpt-4o), and a
// SentencePiece tokenizer (tests/fixtures/spm_tiny.gguf); the first byte picks one. Checks that Encode never
// throws or crashes, that every id is in range, that Decode(Encode(s)) == s when s holds no special-token
// text and no byte the vocabulary lacks (see attn/tokenizer.h), and that the llama.cpp-compatible mode
// (InvalidUtf8::kReplace) agrees with the default on valid UTF-8. The model comes from $ATTN_MODEL or
// ~/.cache/attn/models/SmolLM2-135M-Instruct.Q4_1.gguf.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "attn/tokenizer.h"
#include "format/gguf.h"
#include "format/gguf_writer.h"

namespace {

constexpr const char* kPre[] = {"smollm", "gpt2", "llama-bpe", "qwen2", "default", "tekken", "gpt-4o"};
constexpr size_t kNumPre = sizeof(kPre) / sizeof(kPre[0]);

// The tokenizer of pre-tokenizer kPre[i]: the model's tokenizer metadata with tokenizer.ggml.pre
// replaced (built once per process).
const attn::Tokenizer& Get(size_t i = 0) {
  static const std::vector<attn::Tokenizer>* tokenizers = [] {
    std::string path;
    if (const char* env = std::getenv("ATTN_MODEL"); env != nullptr && *env != '\0') {
      path = env;
    } else {
      const char* home = std::getenv("HOME");
      path = std::string(home ? home : "") + "/.cache/attn/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    }
    const attn::gguf::File file = attn::gguf::File::Open(path);
    auto* out = new std::vector<attn::Tokenizer>;
    for (const char* pre : kPre) {
      attn::gguf::Writer w;
      for (const auto& [key, value] : file.metadata())
        if (key.rfind("tokenizer.", 0) == 0 && key != "tokenizer.ggml.pre") w.Set(key, value);
      w.SetString("tokenizer.ggml.pre", pre);
      const std::vector<uint8_t> bytes = w.ToBytes();
      out->push_back(attn::Tokenizer::FromGGUF(attn::gguf::File::Parse(bytes.data(), bytes.size())));
    }
    return out;
  }();
  return (*tokenizers)[i];
}

// Strict UTF-8 validity (what both Encode modes agree on).
bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<uint8_t>(s[i]);
    size_t len = b < 0x80                 ? 1
                 : b >= 0xC2 && b <= 0xDF ? 2
                 : b >= 0xE0 && b <= 0xEF ? 3
                 : b >= 0xF0 && b <= 0xF4 ? 4
                                          : 0;
    if (len == 0 || i + len > s.size()) return false;
    uint32_t cpt = len == 1 ? b : b & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) {
      const auto c = static_cast<uint8_t>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cpt = (cpt << 6) | (c & 0x3F);
    }
    if ((len == 3 && (cpt < 0x800 || (cpt >= 0xD800 && cpt <= 0xDFFF))) ||
        (len == 4 && (cpt < 0x10000 || cpt > 0x10FFFF)))
      return false;
    i += len;
  }
  return true;
}

// Bytes no token stands for (SmolLM2 lacks 21): Decode(Encode(s)) cannot give them back.
const std::vector<bool>& MissingBytes() {
  static const std::vector<bool> missing = [] {
    std::vector<bool> m(256);
    for (int b = 0; b < 256; ++b) {
      const std::string byte(1, static_cast<char>(b));
      m[b] = Get().Decode(Get().Encode(byte)) != byte;
    }
    return m;
  }();
  return missing;
}

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "tokenizer_fuzz: %s\n", what);
    std::abort();
  }
}

}  // namespace

// The SentencePiece vocabulary of tests/fixtures/spm_tiny.gguf (every byte has a byte token).
const attn::Tokenizer& Spm() {
  static const attn::Tokenizer* tokenizer = [] {
    const attn::gguf::File file = attn::gguf::File::Open(std::string(ATTN_FIXTURES_DIR) + "/spm_tiny.gguf");
    return new attn::Tokenizer(attn::Tokenizer::FromGGUF(file));
  }();
  return *tokenizer;
}

// SentencePiece: raw bytes in both modes; valid text without special-token text comes back after
// the space SentencePiece puts in front, with any U+2581 of its own as a space (SentencePiece writes
// spaces as U+2581, so a literal one decodes to a space, in llama.cpp as in attn).
void CheckSpm(std::string_view text, bool parse_special) {
  const attn::Tokenizer& t = Spm();
  const std::vector<int32_t> ids = t.Encode(text, parse_special);
  for (int32_t id : ids) Check(id >= 0 && id < t.vocab_size(), "id out of range (spm)");
  Check(t.Encode(text, parse_special, attn::InvalidUtf8::kReplace) == ids, "spm: kReplace changed the ids");
  if (!text.empty() && IsValidUtf8(text) && text.find('<') == std::string_view::npos) {
    std::string want = " ";
    for (size_t i = 0; i < text.size();) {
      if (text.substr(i, 3) == "\xE2\x96\x81") {
        want += ' ';
        i += 3;
      } else {
        want += text[i++];
      }
    }
    Check(t.Decode(ids) == want, "spm: Decode(Encode(s)) != ' ' + s (U+2581 as spaces)");
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const bool parse_special = size > 0 && (data[0] & 1);
  const size_t choice = size > 0 ? (data[0] >> 1) % (kNumPre + 1) : 0;
  if (choice == kNumPre) {
    CheckSpm(text, parse_special);
    return 0;
  }
  const attn::Tokenizer& t = Get(choice);
  const std::vector<int32_t> ids = t.Encode(text, parse_special);
  for (int32_t id : ids) Check(id >= 0 && id < t.vocab_size(), "id out of range");
  // Special-token text ("<|...|>", "<filename>", ...) always starts with '<'; without it, exact round trip.
  bool representable = true;
  for (size_t i = 0; i < size; ++i) representable = representable && !MissingBytes()[data[i]];
  if (representable && (!parse_special || text.find('<') == std::string_view::npos)) {
    Check(t.Decode(ids) == text, "Decode(Encode(s)) != s");
  }
  const std::vector<int32_t> replaced = t.Encode(text, parse_special, attn::InvalidUtf8::kReplace);
  for (int32_t id : replaced) Check(id >= 0 && id < t.vocab_size(), "id out of range (kReplace)");
  if (IsValidUtf8(text)) Check(replaced == ids, "kReplace differs from kKeepBytes on valid UTF-8");
  return 0;
}
