// Tokenizer::FromGGUF: reading and checking the tokenizer.* keys, then the derived tables llama.cpp's
// llama_vocab::impl::load builds (merge ranks, special-token list, end-of-generation set, pieces).
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "attn/error.h"
#include "attn/tokenizer.h"
#include "format/gguf.h"
#include "tokenizer/jinja.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace attn {
namespace {

using gguf::Value;
using gguf::ValueType;

[[noreturn]] void Fail(const std::string& message) { throw Error("tokenizer: " + message); }

bool IsInteger(ValueType t) {
  switch (t) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kU16:
    case ValueType::kI16:
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kU64:
    case ValueType::kI64:
      return true;
    default:
      return false;
  }
}

int64_t AsInteger(const Value& v) {
  if (const auto* u = std::get_if<uint64_t>(&v.data)) {
    return *u > uint64_t{INT64_MAX} ? INT64_MAX : static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&v.data)) return *i;
  return INT64_MIN;
}

const std::string* FindString(const gguf::File& file, const std::string& key) {
  const Value* v = file.Find(key);
  if (v == nullptr) return nullptr;
  const auto* s = std::get_if<std::string>(&v->data);
  if (v->type != ValueType::kString || s == nullptr) Fail(key + " = " + v->ToString() + " must be a string");
  return s;
}

enum class Elements { kStrings, kIntegers, kFloats };

const gguf::Array* FindArray(const gguf::File& file, const std::string& key, Elements elements) {
  const Value* v = file.Find(key);
  if (v == nullptr) return nullptr;
  const auto* a = std::get_if<std::shared_ptr<gguf::Array>>(&v->data);
  const bool typed = elements == Elements::kStrings ? v->array_type == ValueType::kString
                     : elements == Elements::kIntegers
                         ? IsInteger(v->array_type)
                         : v->array_type == ValueType::kF32 || v->array_type == ValueType::kF64;
  if (v->type != ValueType::kArray || a == nullptr || *a == nullptr || !typed) {
    const char* what = elements == Elements::kStrings    ? "strings"
                       : elements == Elements::kIntegers ? "integers"
                                                         : "floats";
    Fail(key + " = " + v->ToString() + " must be an array of " + what);
  }
  return a->get();
}

// An optional token id key; out-of-range ids are an error (llama.cpp only warns, but such a file is broken).
int32_t FindTokenId(const gguf::File& file, const std::string& key, int32_t n_tokens, int32_t fallback) {
  const Value* v = file.Find(key);
  if (v == nullptr) return fallback;
  const int64_t id = IsInteger(v->type) ? AsInteger(*v) : -1;
  if (id < 0 || id >= n_tokens) {
    Fail(key + " = " + v->ToString() + " is not a token id (vocabulary of " + std::to_string(n_tokens) + ")");
  }
  return static_cast<int32_t>(id);
}

bool FindBool(const gguf::File& file, const std::string& key, bool fallback) {
  const Value* v = file.Find(key);
  if (v == nullptr) return fallback;
  const auto* b = std::get_if<bool>(&v->data);
  if (v->type != ValueType::kBool || b == nullptr) Fail(key + " = " + v->ToString() + " must be a bool");
  return *b;
}

uint8_t AttrOfType(int64_t type) {
  switch (type) {
    case 1:
      return kAttrNormal;
    case 2:
      return kAttrUnknown;
    case 3:
      return kAttrControl;
    case 4:
      return kAttrUserDefined;
    case 5:
      return kAttrUnused;
    case 6:
      return kAttrByte;
    default:
      return kAttrUndefined;
  }
}

// Texts llama.cpp treats as end of generation (llama_vocab::impl::load, special_eog_ids).
bool IsEndOfGenerationText(const std::string& t) {
  static const char* const kTexts[] = {
      "<|eot_id|>",
      "<|im_end|>",
      "<|end|>",
      "<|return|>",
      "<|call|>",
      "<|flush|>",
      "<|calls|>",
      "<end_of_turn>",
      "<|endoftext|>",
      "</s>",
      "<|eom_id|>",
      "<EOT>",
      "_<EOT>",
      "[EOT]",
      "[EOS]",
      "<|end_of_text|>",
      "<end_of_utterance>",
      "<eos>",
      "<turn|>",
      "<|tool_response>",
      "<\uFF5Cend\u2581of\u2581sentence\uFF5C>",  // <｜end▁of▁sentence｜>
      "[e~[",
  };
  return std::find(std::begin(kTexts), std::end(kTexts), t) != std::end(kTexts);
}

// Fill-in-the-middle pad / repo / file-separator tokens, which llama.cpp also counts as end of generation.
bool IsFimEndText(const std::string& t) {
  static const char* const kTexts[] = {
      "<|fim_pad|>",   "<fim-pad>",  "<fim_pad>", "<PAD>",      "[PAD]",        "<|fim_repo|>",
      "<|repo_name|>", "<fim-repo>", "<REPO>",    "<reponame>", "<|file_sep|>",
  };
  return std::find(std::begin(kTexts), std::end(kTexts), t) != std::end(kTexts);
}

// Fill-in-the-middle prefix / suffix / middle tokens: llama.cpp makes them control tokens.
bool IsFimText(const std::string& t) {
  static const char* const kTexts[] = {
      "<|fim_prefix|>",
      "<fim-prefix>",
      "<fim_prefix>",
      "<PRE>",
      "\u2581<PRE>",
      "<|code_prefix|>",
      "<|prefix|>",
      "<|fim_suffix|>",
      "<fim-suffix>",
      "<fim_suffix>",
      "<SUF>",
      "\u2581<SUF>",
      "<|code_suffix|>",
      "<|suffix|>",
      "<|fim_middle|>",
      "<fim-middle>",
      "<fim_middle>",
      "<MID>",
      "\u2581<MID>",
      "<|code_middle|>",
      "<|middle|>",
      "<\uFF5Cfim\u2581begin\uFF5C>",
      "<\uFF5Cfim\u2581hole\uFF5C>",
      "<\uFF5Cfim\u2581end\uFF5C>",
  };
  return std::find(std::begin(kTexts), std::end(kTexts), t) != std::end(kTexts);
}

// llama_decode_text: each code point of a normal token's text back to its byte. (A code point outside
// GPT-2's 256 is kept as UTF-8; llama.cpp writes "[UNK_BYTE_0x..]" there, which no real vocabulary hits.)
std::string DecodeByteLevel(const std::string& text) {
  const tokenizer::Units u = tokenizer::DecodeKeepingBytes(text);
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < u.cpts.size(); ++i) {
    const int byte = tokenizer::CodepointToByte(u.cpts[i]);
    if (byte >= 0) {
      out.push_back(static_cast<char>(byte));
    } else {
      out.append(text, u.offsets[i], u.offsets[i + 1] - u.offsets[i]);
    }
  }
  return out;
}

std::string PieceOf(const tokenizer::Vocab& v, int32_t id) {
  const uint8_t attr = v.attrs[id];
  const std::string& text = v.tokens[id];
  if (attr & (kAttrUnknown | kAttrControl | kAttrUserDefined)) return text;
  // Unused tokens decode like normal ones (llama.cpp prints nothing for them): attn's own
  // checkpoints mark the bytes training never saw unused, and text with those bytes must still
  // round-trip.
  if (attr & (kAttrNormal | kAttrUnused)) {
    if (!v.spm) return DecodeByteLevel(text);
    std::string out;  // SentencePiece: "\u2581" back to a space
    for (size_t i = 0; i < text.size();) {
      if (text.compare(i, 3, "\xE2\x96\x81") == 0) {
        out.push_back(' ');
        i += 3;
      } else {
        out.push_back(text[i++]);
      }
    }
    return out;
  }
  if ((attr & kAttrByte) && text.size() == 6 && text.compare(0, 3, "<0x") == 0) {
    return std::string(1, static_cast<char>(std::stoi(text.substr(3, 2), nullptr, 16)));
  }
  return "";
}

// The default system message of a ChatML template such as SmolLM2's:
//   {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are ...<|im_end|>\n'
//   }}
std::string DefaultSystemMessage(const std::string& tmpl) {
  if (tmpl.find("!= 'system'") == std::string::npos && tmpl.find("!= \"system\"") == std::string::npos)
    return "";
  const std::string open = "<|im_start|>system";
  const size_t start = tmpl.find(open);
  if (start == std::string::npos) return "";
  size_t pos = start + open.size();
  if (tmpl.compare(pos, 1, "\n") == 0) {
    pos += 1;
  } else if (tmpl.compare(pos, 2, "\\n") == 0) {
    pos += 2;
  } else {
    return "";
  }
  const size_t end = tmpl.find("<|im_end|>", pos);
  if (end == std::string::npos) return "";
  std::string message = tmpl.substr(pos, end - pos);
  // The literal must be plain text (no Jinja expression inside), else we would render it wrong.
  if (message.find_first_of("{}'\"") != std::string::npos) return "";
  return message;
}

// The chat format of a Jinja template, by the markers its family writes, in the order llama.cpp
// looks for them (so that both read a template as the same format: tests/fixtures/
// make_chat_fixtures.py checks it on a template text of every format).
tokenizer::Vocab::ChatFormat DetectChatFormat(const std::string& tmpl) {
  using F = tokenizer::Vocab::ChatFormat;
  const auto has = [&](const char* marker) { return tmpl.find(marker) != std::string::npos; };
  if (has("<|im_start|>")) {  // <|im_sep|>: Phi-4's variant; <end_of_utterance>: SmolVLM's
    return has("<|im_sep|>") || has("<end_of_utterance>") ? F::kUnknown : F::kChatML;
  }
  if (tmpl.rfind("mistral", 0) == 0 || has("[INST]")) {
    if (has("[SYSTEM_PROMPT]")) return F::kMistralV7;
    if (has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]")) {  // Mistral's official v1 / v3
      if (has(" [INST]")) return F::kMistralV1;
      return has("\"[INST]\"") ? F::kMistralV3Tekken : F::kMistralV3;
    }
    if (has("content.strip()")) return F::kLlama2SysStrip;
    if (has("bos_token + '[INST]")) return F::kLlama2SysBos;
    return has("<<SYS>>") ? F::kLlama2Sys : F::kLlama2;
  }
  if (has("<|assistant|>") && has("<|end|>")) return F::kPhi3;
  // Formats llama.cpp looks for before Gemma's and Llama 3's, which attn does not render (GLM,
  // Falcon 3, Zephyr, Monarch; then Orion, OpenChat, Vicuna, DeepSeek Coder, Command R).
  if (has("[gMASK]<sop>") || (has("<|assistant|>") && has("<|user|>")) ||
      (has("<|user|>") && has("<|endoftext|>")) || has("bos_token + message['role']"))
    return F::kUnknown;
  if (has("<start_of_turn>")) return F::kGemma;
  if (has("'\\n\\nAssistant: ' + eos_token") || has("GPT4 Correct ") ||
      (has("USER: ") && has("ASSISTANT: ")) || (has("### Instruction:") && has("<|EOT|>")) ||
      (has("<|START_OF_TURN_TOKEN|>") && has("<|USER_TOKEN|>")))
    return F::kUnknown;
  if (has("<|start_header_id|>") && has("<|end_header_id|>")) return F::kLlama3;
  if (has("<|channel|>")) return F::kGptOss;  // harmony (gpt-oss)
  if (has("<|start_of_role|>")) return F::kGranite;
  return F::kUnknown;
}

// Byte-level BPE: the merge table "left right" (rank = position; the first occurrence of a pair wins,
// as llama.cpp's emplace) over symbols, and each byte's symbol.
void LoadMerges(const gguf::File& file, tokenizer::Vocab& v) {
  const int32_t n = v.n_tokens();
  const gguf::Array* merges = FindArray(file, "tokenizer.ggml.merges", Elements::kStrings);
  if (merges == nullptr) Fail("tokenizer.ggml.merges is missing");
  if (merges->size() > size_t{INT32_MAX}) Fail("tokenizer.ggml.merges is too long");
  std::unordered_map<std::string, int32_t> extra_ids;
  auto symbol = [&](const std::string& text) -> int32_t {
    if (int32_t id = v.SymbolOf(text); id >= 0) return id;
    auto [it, added] = extra_ids.emplace(text, n + static_cast<int32_t>(v.extra_symbols.size()));
    if (added) v.extra_symbols.push_back(text);
    return it->second;
  };
  v.byte_symbol.resize(256);
  for (int b = 0; b < 256; ++b) {
    std::string text;
    tokenizer::AppendUtf8(tokenizer::ByteToCodepoint(static_cast<uint8_t>(b)), text);
    v.byte_symbol[b] = symbol(text);
  }
  v.byte_missing.resize(256);
  for (int b = 0; b < 256; ++b) v.byte_missing[b] = v.byte_symbol[b] >= n;
  v.merges.reserve(merges->size());
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const std::string& m = std::get<std::string>((*merges)[rank].data);
    const size_t space = m.find(' ', 1);
    if (space == std::string::npos) {
      Fail("tokenizer.ggml.merges[" + std::to_string(rank) + "] = '" + m + "' is not 'left right'");
    }
    const std::string left = m.substr(0, space), right = m.substr(space + 1);
    const uint64_t key = (uint64_t(uint32_t(symbol(left))) << 32) | uint32_t(symbol(right));
    v.merges.emplace(key, tokenizer::Vocab::Merge{static_cast<int32_t>(rank), symbol(left + right)});
  }
}

// SentencePiece BPE: the scores, each byte's byte token, the unknown token and the space prefix.
void LoadSentencePiece(const gguf::File& file, tokenizer::Vocab& v) {
  const int32_t n = v.n_tokens();
  v.scores.assign(n, 0.0f);
  if (const gguf::Array* scores = FindArray(file, "tokenizer.ggml.scores", Elements::kFloats)) {
    if (scores->size() != static_cast<size_t>(n)) {
      Fail("tokenizer.ggml.scores has " + std::to_string(scores->size()) +
           " entries, tokenizer.ggml.tokens " + std::to_string(n));
    }
    for (int32_t id = 0; id < n; ++id) {
      const double score = std::get<double>((*scores)[id].data);
      if (!std::isfinite(score)) Fail("tokenizer.ggml.scores[" + std::to_string(id) + "] is not finite");
      v.scores[id] = static_cast<float>(score);
    }
  }
  // llama.cpp's byte_to_token: "<0xXX>" (upper-case hex), else the byte as a one-byte token.
  v.byte_token.assign(256, -1);
  static const char kHex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    const std::string name = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
    v.byte_token[b] = v.SymbolOf(name);
    if (v.byte_token[b] < 0) v.byte_token[b] = v.SymbolOf(std::string(1, static_cast<char>(b)));
  }
  v.unk = FindTokenId(file, "tokenizer.ggml.unknown_token_id", n, n > 0 ? 0 : -1);
  v.add_space_prefix = FindBool(file, "tokenizer.ggml.add_space_prefix", true);
}

}  // namespace

namespace {

// A chat template's text, format, default system message and parsed Jinja (or why it does not
// parse: that only matters when it is used).
void SetChatTemplate(tokenizer::Vocab& v, const std::string& tmpl) {
  v.chat_template = tmpl;
  v.chat_format = DetectChatFormat(tmpl);
  v.default_system = DefaultSystemMessage(tmpl);
  v.jinja.reset();
  v.jinja_error.clear();
  try {
    v.jinja = std::make_shared<const jinja::Template>(tmpl);
  } catch (const Error& e) {
    v.jinja_error = e.what();
  }
}

}  // namespace

Tokenizer Tokenizer::FromGGUF(const gguf::File& file) {
  auto v = std::make_shared<tokenizer::Vocab>();

  const std::string* model = FindString(file, "tokenizer.ggml.model");
  if (model == nullptr) Fail("tokenizer.ggml.model is missing");
  if (*model != "gpt2" && *model != "llama") {
    Fail("tokenizer.ggml.model = '" + *model +
         "' is not supported ('gpt2', byte-level BPE, and 'llama', SentencePiece BPE, are)");
  }
  v->spm = *model == "llama";
  if (const std::string* pre = FindString(file, "tokenizer.ggml.pre")) v->pre = *pre;
  bool whole_tokens = false;
  if (!v->spm &&
      !tokenizer::ParsePreTokenizer(v->pre, v->pre_kind, &whole_tokens)) {  // SentencePiece has none
    Fail("tokenizer.ggml.pre = '" + v->pre +
         "' is not supported (supported: " + tokenizer::SupportedPreTokenizers() + ")");
  }
  // llama.cpp's defaults for some names: a pre-token that is a token is taken whole, and BOS is added.
  if (whole_tokens) v->ignore_merges = v->add_bos = true;
  if (v->spm) v->add_bos = true;  // llama.cpp's default for SentencePiece vocabularies

  // Tokens and their types.
  const gguf::Array* tokens = FindArray(file, "tokenizer.ggml.tokens", Elements::kStrings);
  if (tokens == nullptr) Fail("tokenizer.ggml.tokens is missing");
  if (tokens->empty() || tokens->size() > size_t{INT32_MAX}) {
    Fail("tokenizer.ggml.tokens has " + std::to_string(tokens->size()) + " entries");
  }
  const int32_t n = static_cast<int32_t>(tokens->size());
  const gguf::Array* types = FindArray(file, "tokenizer.ggml.token_type", Elements::kIntegers);
  if (types != nullptr && types->size() != tokens->size()) {
    Fail("tokenizer.ggml.token_type has " + std::to_string(types->size()) +
         " entries, tokenizer.ggml.tokens " + std::to_string(tokens->size()));
  }
  v->tokens.resize(n);
  v->attrs.assign(n, kAttrNormal);
  v->token_to_id.reserve(n);
  for (int32_t id = 0; id < n; ++id) {
    std::string text = std::get<std::string>((*tokens)[id].data);
    if (text.empty()) text = "[EMPTY_" + std::to_string(id) + "]";  // as llama.cpp
    if (!v->token_to_id.emplace(text, id).second) {
      Fail("tokenizer.ggml.tokens[" + std::to_string(id) + "] = '" + text + "' duplicates token " +
           std::to_string(v->token_to_id[text]));
    }
    v->tokens[id] = std::move(text);
    if (types != nullptr) v->attrs[id] = AttrOfType(AsInteger((*types)[id]));
  }

  if (v->spm) {
    LoadSentencePiece(file, *v);
  } else {
    LoadMerges(file, *v);
  }

  // Special ids and flags.
  // SentencePiece files without the keys get llama.cpp's defaults, <s> = 1 and </s> = 2.
  v->bos = FindTokenId(file, "tokenizer.ggml.bos_token_id", n, v->spm && n > 1 ? 1 : -1);
  v->eos = FindTokenId(file, "tokenizer.ggml.eos_token_id", n, v->spm && n > 2 ? 2 : -1);
  const int32_t eot = FindTokenId(file, "tokenizer.ggml.eot_token_id", n, -1);
  const int32_t eom = FindTokenId(file, "tokenizer.ggml.eom_token_id", n, -1);
  v->add_bos = FindBool(file, "tokenizer.ggml.add_bos_token", v->add_bos);
  if (v->add_bos && v->bos < 0)
    Fail("tokenizer.ggml.add_bos_token is true, but tokenizer.ggml.bos_token_id is not set");

  // End of generation, as llama.cpp: these texts, eos, eot, eom; such tokens become control tokens.
  v->end_of_generation.assign(n, false);
  for (int32_t id = 0; id < n; ++id) {
    if (IsEndOfGenerationText(v->tokens[id]) || IsFimEndText(v->tokens[id]) || id == eot || id == eom) {
      v->end_of_generation[id] = true;
      v->attrs[id] |= kAttrControl;
    }
    if (IsFimText(v->tokens[id])) v->attrs[id] |= kAttrControl;
    // llama.cpp always renders gpt-oss's channel markers (user-defined).
    const std::string& t = v->tokens[id];
    if (t == "<|channel|>" || t == "<|message|>" || t == "<|start|>" || t == "<|constrain|>") {
      v->attrs[id] = kAttrUserDefined;
    }
  }
  if (v->eos >= 0) v->end_of_generation[v->eos] = true;
  // gpt-oss and solar-open: "<|end|>" ends a message, not the generation, when "<|return|>"/"<|call|>" exist.
  const int32_t end_id = v->SymbolOf("<|end|>");
  const bool has_call = v->SymbolOf("<|call|>") >= 0 || v->SymbolOf("<|calls|>") >= 0;
  if (end_id >= 0 && has_call && (v->SymbolOf("<|return|>") >= 0 || v->SymbolOf("<|flush|>") >= 0) &&
      end_id != v->eos && end_id != eot && end_id != eom) {
    v->end_of_generation[end_id] = false;
    v->attrs[end_id] = kAttrUserDefined;
  }

  // Special tokens, longest first (stable, so equal lengths keep id order).
  for (int32_t id = 0; id < n; ++id) {
    if (v->attrs[id] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) v->special_tokens.push_back(id);
  }
  std::stable_sort(v->special_tokens.begin(), v->special_tokens.end(),
                   [&](int32_t a, int32_t b) { return v->tokens[a].size() > v->tokens[b].size(); });

  v->pieces.resize(n);
  for (int32_t id = 0; id < n; ++id) v->pieces[id] = PieceOf(*v, id);

  if (const std::string* tmpl = FindString(file, "tokenizer.chat_template")) SetChatTemplate(*v, *tmpl);

  Tokenizer t;
  t.vocab_ = std::move(v);
  return t;
}

Tokenizer Tokenizer::WithChatTemplate(const std::string& chat_template) const {
  if (chat_template.empty()) throw Error("chat template: the text is empty");
  auto v = std::make_shared<tokenizer::Vocab>(*vocab_);
  SetChatTemplate(*v, chat_template);
  if (!v->jinja) throw Error("chat template: " + v->jinja_error);
  Tokenizer t;
  t.vocab_ = std::move(v);
  return t;
}

}  // namespace attn
