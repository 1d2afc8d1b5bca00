#include "tokenizer/pretokenize.h"

#include <cstddef>
#include <functional>
#include <string_view>

namespace attn::tokenizer {
namespace {

constexpr uint32_t kOutOfRange = 0xFFFFFFFF;

// One piece [begin, end) of the text being refined, with the accessors llama.cpp's matchers use: reads
// outside the piece give kOutOfRange and empty flags, so lookahead stops at piece boundaries.
class Piece {
 public:
  Piece(const Units& u, size_t begin, size_t end, std::vector<uint32_t>& out)
      : u_(u), begin_(begin), end_(end), prev_end_(begin), out_(out) {}

  size_t begin() const { return begin_; }
  size_t end() const { return end_; }
  uint32_t cpt(size_t pos) const { return pos >= begin_ && pos < end_ ? u_.cpts[pos] : kOutOfRange; }
  uint16_t flags(size_t pos) const { return pos >= begin_ && pos < end_ ? u_.flags[pos] : 0; }
  // Ends the current pre-token at `end` (nothing if empty); returns its length.
  size_t Emit(size_t end) {
    const size_t len = end - prev_end_;
    if (len > 0) out_.push_back(static_cast<uint32_t>(len));
    prev_end_ = end;
    return len;
  }

 private:
  const Units& u_;
  size_t begin_, end_, prev_end_;
  std::vector<uint32_t>& out_;
};

bool Is(uint16_t flags, uint16_t bits) { return (flags & bits) != 0; }
uint32_t AsciiLower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// 's|'t|'re|'ve|'m|'ll|'d at pos (case-insensitive when `fold`): the match length, or 0.
size_t Contraction(const Piece& p, size_t pos, bool fold) {
  if (p.cpt(pos) != '\'' || pos + 1 >= p.end()) return 0;
  const auto lower = [&](uint32_t c) { return fold ? AsciiLower(c) : c; };
  const uint32_t next = lower(p.cpt(pos + 1));
  if (next == 's' || next == 't' || next == 'm' || next == 'd') return 2;
  if (pos + 2 >= p.end()) return 0;
  const uint32_t next2 = lower(p.cpt(pos + 2));
  if ((next == 'r' && next2 == 'e') || (next == 'v' && next2 == 'e') || (next == 'l' && next2 == 'l'))
    return 3;
  return 0;
}

// The alternatives that end both the GPT-2 and the Llama 3 regex, at a run of n_ws whitespace
// code points starting at pos: \s+(?!\S) leaves the run's last space to the next word (unless
// the run ends the text), else \s+, else (no alternative matched; unreachable, since every code
// point has a category) one code point. Returns the position after the emitted pre-token.
size_t EmitWhitespaceTail(Piece& p, size_t pos, size_t n_ws) {
  if (n_ws > 1 && p.cpt(pos + n_ws) != kOutOfRange) {
    pos += n_ws - 1;
  } else if (n_ws > 0) {
    pos += n_ws;
  } else {
    ++pos;
  }
  p.Emit(pos);
  return pos;
}

// The GPT-2 regex, as llama.cpp's unicode_regex_split_custom_gpt2 evaluates it.
void SplitGpt2(Piece& p) {
  constexpr uint16_t kWordish = kWhitespace | kLetter | kNumber;
  for (size_t pos = p.begin(); pos < p.end();) {
    const uint32_t cpt = p.cpt(pos);
    if (const size_t n = Contraction(p, pos, /*fold=*/false)) {
      pos += p.Emit(pos + n);
      continue;
    }
    // An optional leading space, then a run of one class.
    uint16_t f = cpt == ' ' ? p.flags(pos + 1) : p.flags(pos);
    if (Is(f, kLetter) || Is(f, kNumber)) {  //  ?\p{L}+ |  ?\p{N}+
      const uint16_t cls = Is(f, kLetter) ? kLetter : kNumber;
      pos += cpt == ' ';
      while (Is(p.flags(pos), cls)) ++pos;
      p.Emit(pos);
      continue;
    }
    if (!Is(f, kWordish) && f != 0) {  //  ?[^\s\p{L}\p{N}]+
      pos += cpt == ' ';
      for (f = p.flags(pos); !Is(f, kWordish) && f != 0; f = p.flags(++pos)) {
      }
      p.Emit(pos);
      continue;
    }
    size_t n_ws = 0;
    while (Is(p.flags(pos + n_ws), kWhitespace)) ++n_ws;
    pos = EmitWhitespaceTail(p, pos, n_ws);
  }
}

// The Llama 3 regex, as llama.cpp's unicode_regex_split_custom_llama3 evaluates it, with numbers cut
// into runs of at most `max_digits` (3: \p{N}{1,3}; Qwen2's regex has \p{N}, i.e. 1).
void SplitLlama3(Piece& p, size_t max_digits) {
  constexpr uint16_t kWordish = kWhitespace | kLetter | kNumber;
  const auto is_newline = [](uint32_t c) { return c == '\r' || c == '\n'; };
  for (size_t pos = p.begin(); pos < p.end();) {
    const uint32_t cpt = p.cpt(pos);
    const uint16_t flags = p.flags(pos);
    if (const size_t n = Contraction(p, pos, /*fold=*/true)) {  // (?i:'s|'t|'re|'ve|'m|'ll|'d)
      pos += p.Emit(pos + n);
      continue;
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!(is_newline(cpt) || Is(flags, kNumber)) && (Is(flags, kLetter) || Is(p.flags(pos + 1), kLetter))) {
      ++pos;
      while (Is(p.flags(pos), kLetter)) ++pos;
      p.Emit(pos);
      continue;
    }
    if (Is(flags, kNumber)) {  // \p{N}{1,max_digits}
      size_t start = pos;
      while (Is(p.flags(pos), kNumber)) {
        if (++pos - start >= max_digits) {
          p.Emit(pos);
          start = pos;
        }
      }
      p.Emit(pos);
      continue;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*   (llama.cpp tests the unshifted flags for "not empty" here)
    uint16_t f = cpt == ' ' ? p.flags(pos + 1) : flags;
    if (!Is(f, kWordish) && flags != 0) {
      pos += cpt == ' ';
      while (!Is(f, kWordish) && f != 0) f = p.flags(++pos);
      while (is_newline(p.cpt(pos))) ++pos;
      p.Emit(pos);
      continue;
    }
    size_t n_ws = 0;
    size_t last_newline_end = 0;
    while (Is(p.flags(pos + n_ws), kWhitespace)) {
      if (is_newline(p.cpt(pos + n_ws))) last_newline_end = pos + n_ws + 1;
      ++n_ws;
    }
    if (last_newline_end > 0) {  // \s*[\r\n]+
      pos = last_newline_end;
      p.Emit(pos);
      continue;
    }
    pos = EmitWhitespaceTail(p, pos, n_ws);
  }
}

// A regex that is one character class, as std::regex_iterator applies it in unicode_regex_split_stl:
// `single` = each matching code point is a match (\p{N}); otherwise maximal runs are (\p{N}+, [...]+).
// Matches and the gaps between them both become pre-tokens.
void SplitClass(Piece& p, const std::function<bool(size_t)>& in_class, bool single) {
  for (size_t pos = p.begin(); pos < p.end();) {
    if (!in_class(pos)) {
      ++pos;
      continue;
    }
    p.Emit(pos);
    ++pos;
    if (!single) {
      while (pos < p.end() && in_class(pos)) ++pos;
    }
    p.Emit(pos);
  }
  p.Emit(p.end());
}

// [0-9][0-9][0-9]: leftmost triples of ASCII digits.
void SplitDigitTriples(Piece& p) {
  const auto digit = [&](size_t pos) { return p.cpt(pos) >= '0' && p.cpt(pos) <= '9'; };
  for (size_t pos = p.begin(); pos + 3 <= p.end();) {
    if (digit(pos) && digit(pos + 1) && digit(pos + 2)) {
      p.Emit(pos);
      pos += 3;
      p.Emit(pos);
    } else {
      ++pos;
    }
  }
  p.Emit(p.end());
}

// Applies `split` to every current piece.
std::vector<uint32_t> Refine(const Units& u, const std::vector<uint32_t>& pieces,
                             const std::function<void(Piece&)>& split) {
  std::vector<uint32_t> out;
  out.reserve(pieces.size() * 2);
  size_t begin = 0;
  for (uint32_t len : pieces) {
    Piece p(u, begin, begin + len, out);
    split(p);
    begin += len;
  }
  return out;
}

// The Tekken and GPT-4o regexes as llama.cpp evaluates them: std::regex over its "collapsed" text, where
// every code point outside ASCII is one byte standing for its category (whitespace first), so a
// letter outside ASCII is both "not a-z" and "not A-Z", and a mark is not a letter. The alternatives
// are tried in order, each with the backtracking an ECMAScript engine does; `gpt4o` adds the optional
// contraction after a word and allows up to three digits per number.
void SplitCased(Piece& p, bool gpt4o) {
  constexpr size_t kNone = static_cast<size_t>(-1);
  const auto in = [&](size_t i) { return i >= p.begin() && i < p.end(); };
  const auto ws = [&](size_t i) { return Is(p.flags(i), kWhitespace); };
  const auto letter = [&](size_t i) { return !ws(i) && Is(p.flags(i), kLetter); };
  const auto number = [&](size_t i) { return !ws(i) && Is(p.flags(i), kNumber); };
  const auto upperish = [&](size_t i) { return letter(i) && !(p.cpt(i) >= 'a' && p.cpt(i) <= 'z'); };
  const auto lowerish = [&](size_t i) { return letter(i) && !(p.cpt(i) >= 'A' && p.cpt(i) <= 'Z'); };
  const auto newline = [&](size_t i) { return p.cpt(i) == '\r' || p.cpt(i) == '\n'; };
  const auto prefix = [&](size_t i) {
    return in(i) && !newline(i) && !letter(i) && !number(i);
  };  // [^\r\n\p{L}\p{N}]
  const auto other = [&](size_t i) {
    return in(i) && !ws(i) && !letter(i) && !number(i);
  };  // [^\s\p{L}\p{N}]
  // U*W+ from q: U* takes all it can, then gives back one at a time until W+ can start.
  const auto upper_then_lower = [&](size_t q) {
    size_t e = q;
    while (upperish(e)) ++e;
    for (size_t k = e + 1; k-- > q;) {
      if (lowerish(k)) {
        while (lowerish(k)) ++k;
        return k;
      }
    }
    return kNone;
  };
  // U+W* from q.
  const auto upper_run = [&](size_t q) {
    size_t e = q;
    while (upperish(e)) ++e;
    if (e == q) return kNone;
    while (lowerish(e)) ++e;
    return e;
  };
  // [^\r\n\p{L}\p{N}]? before either form: with the prefix when there is one, else from pos.
  const auto word = [&](size_t pos, const auto& form) {
    if (prefix(pos)) return form(pos + 1);
    return letter(pos) ? form(pos) : kNone;
  };
  for (size_t pos = p.begin(); pos < p.end();) {
    size_t end = word(pos, upper_then_lower);
    if (end == kNone) end = word(pos, upper_run);
    if (end != kNone) {
      if (gpt4o) end += Contraction(p, end, /*fold=*/true);
      pos = end;
      p.Emit(pos);
      continue;
    }
    if (number(pos)) {  // \p{N} (tekken), \p{N}{1,3} (gpt-4o)
      const size_t max_digits = gpt4o ? 3 : 1;
      size_t n = 1;
      while (n < max_digits && number(pos + n)) ++n;
      pos += n;
      p.Emit(pos);
      continue;
    }
    {  //  ?[^\s\p{L}\p{N}]+[\r\n/]*
      size_t q = pos + (p.cpt(pos) == ' ' && other(pos + 1) ? 1 : 0);
      if (other(q)) {
        while (other(q)) ++q;
        while (newline(q) || p.cpt(q) == '/') ++q;
        pos = q;
        p.Emit(pos);
        continue;
      }
    }
    size_t n_ws = 0;
    while (ws(pos + n_ws)) ++n_ws;
    size_t last_newline = kNone;  // \s*[\r\n]+: up to the run's last \r or \n
    for (size_t i = pos; i < pos + n_ws; ++i)
      if (newline(i)) last_newline = i;
    if (last_newline != kNone) {
      pos = last_newline + 1;
      p.Emit(pos);
      continue;
    }
    pos = EmitWhitespaceTail(p, pos, n_ws);  // \s+(?!\S)|\s+
  }
}

}  // namespace

namespace {
// The names llama.cpp gives each of these splits (its llama-vocab.cpp groups them by name; the
// aliases were checked against its ids on the tokenizer corpus, tests/fixtures/
// tokenizer_smollm2_pre_*.json). smollm's split is StarCoder's: single digits, then GPT-2's pattern.
struct PreTokenizerName {
  std::string_view name;
  PreTokenizer kind;
  // llama.cpp's ignore_merges and add_bos for this name: a pre-token that is a token is taken whole,
  // and BOS is added unless the file says otherwise (its llama3 names and tekken).
  bool whole_tokens = false;
};
constexpr PreTokenizerName kPreTokenizerNames[] = {
    {"default", PreTokenizer::kDefault},
    {"gpt-2", PreTokenizer::kGpt2},
    {"gpt2", PreTokenizer::kGpt2},
    {"phi-2", PreTokenizer::kGpt2},
    {"jina-es", PreTokenizer::kGpt2},
    {"jina-de", PreTokenizer::kGpt2},
    {"jina-v2-es", PreTokenizer::kGpt2},
    {"jina-v2-de", PreTokenizer::kGpt2},
    {"gigachat", PreTokenizer::kGpt2},
    {"a.x-4.0", PreTokenizer::kGpt2},
    {"mellum", PreTokenizer::kGpt2},
    {"modern-bert", PreTokenizer::kGpt2},
    {"smollm", PreTokenizer::kSmollm},
    {"starcoder", PreTokenizer::kSmollm},
    {"refact", PreTokenizer::kSmollm},
    {"command-r", PreTokenizer::kSmollm},
    {"codeshell", PreTokenizer::kSmollm},
    {"exaone", PreTokenizer::kSmollm},
    {"minerva-7b", PreTokenizer::kSmollm},
    {"llama3", PreTokenizer::kLlama3, true},
    {"llama-v3", PreTokenizer::kLlama3, true},
    {"llama-bpe", PreTokenizer::kLlama3, true},
    {"falcon3", PreTokenizer::kLlama3, true},
    {"falcon-h1", PreTokenizer::kLlama3, true},
    {"pixtral", PreTokenizer::kLlama3, true},
    {"midm-2.0", PreTokenizer::kLlama3, true},
    {"lfm2", PreTokenizer::kLlama3, true},
    {"qwen2", PreTokenizer::kQwen2},
    {"deepseek-r1-qwen", PreTokenizer::kQwen2},
    {"megrez", PreTokenizer::kQwen2},
    {"stablelm2", PreTokenizer::kQwen2},
    {"tekken", PreTokenizer::kTekken, true},
    {"gpt-4o", PreTokenizer::kGpt4o},
    {"llama4", PreTokenizer::kGpt4o},
    // The Llama 3 split without taking whole tokens (llama.cpp's DBRX and Smaug types).
    {"dbrx", PreTokenizer::kLlama3},
    {"smaug-bpe", PreTokenizer::kLlama3},
};
}  // namespace

bool ParsePreTokenizer(const std::string& name, PreTokenizer& out, bool* whole_tokens) {
  for (const PreTokenizerName& n : kPreTokenizerNames) {
    if (n.name == name) {
      out = n.kind;
      if (whole_tokens != nullptr) *whole_tokens = n.whole_tokens;
      return true;
    }
  }
  return false;
}

std::string SupportedPreTokenizers() {
  std::string out;
  for (const PreTokenizerName& n : kPreTokenizerNames) {
    if (!out.empty()) out += ", ";
    out += n.name;
  }
  return out;
}

std::vector<uint32_t> PreTokenize(PreTokenizer kind, const Units& u) {
  std::vector<uint32_t> pieces;
  if (u.cpts.empty()) return pieces;
  pieces.push_back(static_cast<uint32_t>(u.cpts.size()));
  const auto gpt2 = [](Piece& p) { SplitGpt2(p); };
  switch (kind) {
    case PreTokenizer::kGpt2:
      return Refine(u, pieces, gpt2);
    case PreTokenizer::kSmollm: {
      const auto number = [&](size_t pos) { return Is(u.flags[pos], kNumber); };
      pieces = Refine(u, pieces, [&](Piece& p) { SplitClass(p, number, /*single=*/true); });
      return Refine(u, pieces, gpt2);
    }
    case PreTokenizer::kLlama3:
      return Refine(u, pieces, [](Piece& p) { SplitLlama3(p, 3); });
    case PreTokenizer::kQwen2:
      return Refine(u, pieces, [](Piece& p) { SplitLlama3(p, 1); });
    case PreTokenizer::kTekken:
      return Refine(u, pieces, [](Piece& p) { SplitCased(p, /*gpt4o=*/false); });
    case PreTokenizer::kGpt4o:
      return Refine(u, pieces, [](Piece& p) { SplitCased(p, /*gpt4o=*/true); });
    case PreTokenizer::kDefault: {
      // [\p{P}\$\+<=>\^~\|]+ as llama.cpp's "collapsed" std::regex sees it: ASCII punctuation and
      // $+<=>^~| by value (so not `), other code points by category.
      const auto punct = [&](size_t pos) {
        const uint32_t c = u.cpts[pos];
        if (c < 0x80)
          return Is(u.flags[pos], kPunctuation) ||
                 std::string_view("$+<=>^~|").find(char(c)) != std::string_view::npos;
        return !Is(u.flags[pos], kWhitespace) && Is(u.flags[pos], kPunctuation);
      };
      const auto number = [&](size_t pos) { return Is(u.flags[pos], kNumber); };
      pieces = Refine(u, pieces, [&](Piece& p) { SplitClass(p, punct, /*single=*/false); });
      pieces = Refine(u, pieces, gpt2);
      pieces = Refine(u, pieces, [&](Piece& p) { SplitClass(p, number, /*single=*/false); });
      return Refine(u, pieces, [](Piece& p) { SplitDigitTriples(p); });
    }
  }
  return pieces;
}

}  // namespace attn::tokenizer
