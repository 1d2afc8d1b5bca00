// Pre-tokenization: cutting text into the pieces BPE runs on, with hand-written matchers over code
// points for the regexes llama.cpp uses (its unicode.cpp: unicode_regex_split and the custom gpt2 and
// llama3 splitters). Each regex of a pre-tokenizer refines the pieces the previous one produced; a piece
// boundary is never crossed, which matters for the lookahead \s+(?!\S).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/unicode.h"

namespace attn::tokenizer {

enum class PreTokenizer {
  // tokenizer.ggml.pre "default" (and a missing key): [\p{P}$+<=>^~|]+, then the GPT-2 regex, then
  // \p{N}+, then [0-9][0-9][0-9].
  kDefault,
  // "gpt-2" (and the alias "gpt2"):
  //   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kGpt2,
  // "smollm": every \p{N} on its own, then the GPT-2 regex.
  kSmollm,
  // "llama3", "llama-v3", "llama-bpe":
  //   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|
  //   \s+(?!\S)|\s+
  kLlama3,
  // "qwen2" (Qwen2, Qwen2.5, Qwen3): the Llama 3 regex with single digits (\p{N} for \p{N}{1,3}).
  // llama.cpp runs it through std::regex rather than a custom splitter; the fixture
  // tests/fixtures/tokenizer_qwen2_pre.json checks that both agree on a varied corpus.
  kQwen2,
  // "tekken" (Mistral Nemo, Mistral Small 3), as llama.cpp rewrites its cased letter classes (ASCII
  // case only; a letter outside ASCII counts as both):
  //   [^\r\n\p{L}\p{N}]?U*W+|[^\r\n\p{L}\p{N}]?U+W*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|
  //   \s+(?!\S)|\s+      (U: a letter not in a-z, W: a letter not in A-Z)
  kTekken,
  // "gpt-4o", "llama4": the same with an optional (?i:'s|'t|'re|'ve|'m|'ll|'d) after each word and
  // \p{N}{1,3}.
  kGpt4o,
};

// Maps tokenizer.ggml.pre to a PreTokenizer; false for names not supported.
// whole_tokens (optional) receives llama.cpp's ignore_merges / add_bos default for the name.
bool ParsePreTokenizer(const std::string& name, PreTokenizer& out, bool* whole_tokens = nullptr);
// The names ParsePreTokenizer accepts, for error messages.
std::string SupportedPreTokenizers();

// The pre-tokens of `units`, as lengths in units, in order; they add up to units.cpts.size().
std::vector<uint32_t> PreTokenize(PreTokenizer kind, const Units& units);

}  // namespace attn::tokenizer
