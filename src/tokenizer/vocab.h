// What a Tokenizer holds: the vocabulary, merge ranks and special tokens read from a GGUF file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "attn/tokenizer.h"
#include "tokenizer/pretokenize.h"

namespace attn {
namespace jinja {
class Template;
}

// Token attributes, from tokenizer.ggml.token_type (1 normal, 2 unknown, 3 control, 4 user-defined,
// 5 unused, 6 byte; anything else undefined), as llama.cpp's llama_token_attr.
enum TokenAttr : uint8_t {
  kAttrUndefined = 0,
  kAttrNormal = 1 << 0,
  kAttrUnknown = 1 << 1,
  kAttrControl = 1 << 2,
  kAttrUserDefined = 1 << 3,
  kAttrUnused = 1 << 4,
  kAttrByte = 1 << 5,
};

namespace tokenizer {

struct Vocab {
  // tokenizer.ggml.model: "gpt2" (byte-level BPE: merges, a pre-tokenizer) or "llama" (SentencePiece
  // BPE: scores, "\u2581" for spaces, byte tokens <0xXX> for what no piece covers).
  bool spm = false;
  std::vector<std::string> tokens;  // id -> text (GPT-2 byte mapping / SentencePiece pieces)
  std::vector<uint8_t> attrs;       // id -> TokenAttr bits
  std::vector<std::string> pieces;  // id -> the bytes it decodes to (TokenToPiece)
  std::vector<bool> end_of_generation;
  std::unordered_map<std::string, int32_t> token_to_id;

  // BPE works on symbols: ids < tokens.size() are tokens; merges whose parts or result are not tokens
  // get extra ids with their text in extra_symbols (llama.cpp merges strings, not tokens).
  std::vector<std::string> extra_symbols;
  std::vector<int32_t> byte_symbol;  // byte -> symbol of its GPT-2 code point
  // Bytes whose GPT-2 code point is not a token (SmolLM2: C0, C1, F5..FF, which UTF-8 never uses).
  std::vector<bool> byte_missing;
  struct Merge {
    int32_t rank;
    int32_t result;  // symbol
  };
  std::unordered_map<uint64_t, Merge> merges;  // (left symbol << 32 | right symbol) -> merge

  // SentencePiece: scores (higher merges first), byte -> its byte token (-1: none), the unknown token,
  // and whether a space goes in front of the text (tokenizer.ggml.add_space_prefix).
  std::vector<float> scores;
  std::vector<int32_t> byte_token;
  int32_t unk = -1;
  bool add_space_prefix = false;

  // Control, user-defined and unknown tokens, longest text first (llama.cpp's cache_special_tokens).
  std::vector<int32_t> special_tokens;

  tokenizer::PreTokenizer pre_kind = tokenizer::PreTokenizer::kDefault;
  std::string pre = "default";
  bool ignore_merges = false;  // llama3: a piece that is a whole token is not merged
  bool add_bos = false;
  int32_t bos = -1, eos = -1;
  std::string chat_template;
  std::string default_system;  // from the chat template; empty when it has none
  // The chat template parsed as Jinja, or why it does not parse (then jinja is null).
  std::shared_ptr<const jinja::Template> jinja;
  std::string jinja_error;
  // The chat format the template is recognized as (ChatML also when the file has no template).
  enum class ChatFormat {
    kChatML,
    kLlama3,
    kGemma,
    kPhi3,
    kMistralV7,
    kMistralV1,
    kMistralV3,
    kMistralV3Tekken,
    kLlama2,
    kLlama2Sys,
    kLlama2SysBos,
    kLlama2SysStrip,
    kGptOss,
    kGranite,
    kUnknown
  };
  ChatFormat chat_format = ChatFormat::kChatML;

  int32_t n_tokens() const { return static_cast<int32_t>(tokens.size()); }
  int32_t SymbolOf(const std::string& text) const {
    auto it = token_to_id.find(text);
    return it == token_to_id.end() ? -1 : it->second;
  }
  const std::string& SymbolText(int32_t symbol) const {
    return symbol < n_tokens() ? tokens[symbol] : extra_symbols[symbol - n_tokens()];
  }
};

}  // namespace tokenizer
}  // namespace attn
