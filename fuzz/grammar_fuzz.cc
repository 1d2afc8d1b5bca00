// libFuzzer target for GBNF grammars (src/model/grammar.h): the input is a grammar, a NUL byte, and
// a text. The grammar is parsed (attn::Error is the only way to refuse it); a grammar that parses is
// printed (Grammar::ToString) and parsed again, and both must judge every prefix of the text alike;
// then the vocabulary trie's mask over pieces cut from the text must equal feeding each piece to a
// copy of the matcher. Repetition counts over 99 and texts over 256 bytes are skipped: counted
// repetition of a nullable item costs count^2 per byte by design (grammar.h), not a bug to find.
// Seeds: fuzz/corpus/grammar/.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "attn/error.h"
#include "model/grammar.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string grammar_text = input.substr(0, nul);
  const std::string text = nul == std::string::npos ? std::string() : input.substr(nul + 1);
  if (text.size() > 256) return 0;
  int digits = 0;
  for (char c : grammar_text) {
    digits = (c >= '0' && c <= '9') ? digits + 1 : 0;
    if (digits > 2) return 0;
  }
  std::shared_ptr<attn::Grammar> g;
  try {
    g = attn::Grammar::Parse(grammar_text);
  } catch (const attn::Error&) {
    return 0;
  }
  std::shared_ptr<attn::Grammar> again;
  try {
    again = attn::Grammar::Parse(g->ToString());
  } catch (const attn::Error&) {
    std::abort();  // the printed rules must parse
  }
  try {
    attn::GrammarMatcher a(g), b(again);
    for (char c : text) {
      const bool fa = a.Feed(static_cast<uint8_t>(c)), fb = b.Feed(static_cast<uint8_t>(c));
      if (fa != fb || a.complete() != b.complete()) std::abort();
      if (!fa) break;
    }
    // Pieces: the text cut every 1-4 bytes (lengths from its own bytes), with some repeats.
    std::vector<std::string> pieces;
    for (size_t i = 0; i < text.size();) {
      const size_t len = 1 + static_cast<uint8_t>(text[i]) % 4;
      pieces.push_back(text.substr(i, len));
      i += len;
    }
    pieces.push_back("");
    const attn::TokenTrie trie(pieces);
    attn::GrammarMatcher m(g);
    for (size_t step = 0; step < 4 && !m.dead(); ++step) {
      std::vector<uint8_t> allowed(pieces.size(), 2);
      trie.Allowed(m, allowed);
      for (size_t id = 0; id < pieces.size(); ++id) {
        if (pieces[id].empty()) {
          if (allowed[id] != 2) std::abort();
          continue;
        }
        attn::GrammarMatcher trial = m;
        if (allowed[id] != (trial.Feed(pieces[id]) ? 1 : 0)) std::abort();
      }
      if (step < text.size()) m.Feed(static_cast<uint8_t>(text[step]));
    }
  } catch (const attn::Error&) {
    // more parses than Grammar::kMaxStacks: the documented error
  }
  return 0;
}
