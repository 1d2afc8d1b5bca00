// Tokenizer::Encode: special tokens split out first (llama.cpp's tokenizer_st_partition), then each run
// of plain text pre-tokenized and BPE-merged (llm_tokenizer_bpe_session::tokenize), or, for
// SentencePiece vocabularies, merged by score (llm_tokenizer_spm_session::tokenize).
#include <algorithm>
#include <cstddef>
#include <queue>
#include <string>
#include <string_view>
#include <vector>

#include "attn/tokenizer.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace attn {
namespace {

// A piece of the input: plain text [offset, offset + length), or a special token.
struct Fragment {
  int32_t token;  // -1 for text
  size_t offset, length;
};

// For each special token, longest first, every occurrence in every remaining text fragment becomes that
// token. (This order, not leftmost-longest, is llama.cpp's; they differ only for overlapping specials.)
std::vector<Fragment> SplitSpecial(const tokenizer::Vocab& v, std::string_view text, bool parse_special) {
  std::vector<Fragment> fragments = {{-1, 0, text.size()}};
  if (text.empty()) return {};
  std::vector<Fragment> next;
  for (int32_t id : v.special_tokens) {
    if (!parse_special && (v.attrs[id] & (kAttrControl | kAttrUnknown))) continue;
    const std::string& special = v.tokens[id];
    if (text.find(special) == std::string_view::npos) continue;
    next.clear();
    for (const Fragment& f : fragments) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      size_t begin = f.offset;
      const size_t end = f.offset + f.length;
      while (true) {
        const size_t match = text.substr(0, end).find(special, begin);
        if (match == std::string_view::npos) break;
        if (match > begin) next.push_back({-1, begin, match - begin});
        next.push_back({id, match, special.size()});
        begin = match + special.size();
      }
      if (begin < end) next.push_back({-1, begin, end - begin});
    }
    fragments.swap(next);
  }
  return fragments;
}

// An invalid byte (a unit of one byte >= 0x80, from DecodeKeepingBytes) that no token stands for is kept
// as U+FFFD, as llama.cpp's decoding would have made it. (Bytes of valid UTF-8 without a token are left to
// BPE, which drops them exactly as llama.cpp does, so valid text gets llama.cpp's ids.) The units keep
// their code points, so pre-tokenization is unchanged.
void ReplaceInvalidBytesWithoutToken(const tokenizer::Vocab& v, tokenizer::Units& u) {
  const auto lost = [&](size_t i) {
    const auto byte = static_cast<uint8_t>(u.bytes[u.offsets[i]]);
    return u.offsets[i + 1] - u.offsets[i] == 1 && byte >= 0x80 && v.byte_missing[byte];
  };
  const size_t n = u.cpts.size();
  size_t i = 0;
  while (i < n && !lost(i)) ++i;
  if (i == n) return;
  std::string bytes = u.bytes.substr(0, u.offsets[i]);
  for (; i < n; ++i) {
    const uint32_t begin = u.offsets[i], end = u.offsets[i + 1];
    const bool replace = lost(i);
    u.offsets[i] = static_cast<uint32_t>(bytes.size());
    if (replace) {
      bytes += "\xEF\xBF\xBD";
    } else {
      bytes.append(u.bytes, begin, end - begin);
    }
  }
  u.offsets[n] = static_cast<uint32_t>(bytes.size());
  u.bytes.swap(bytes);
}

// BPE over one pre-token: start from one symbol per byte, repeatedly merge the adjacent pair with the
// lowest rank (leftmost on ties), as llama.cpp's priority queue does.
class BpeWord {
 public:
  explicit BpeWord(const tokenizer::Vocab& v) : v_(v) {}

  void Encode(std::string_view bytes, std::vector<int32_t>& out) {
    if (bytes.empty()) return;
    if (v_.ignore_merges) {  // llama3: a piece that is already a token stays whole
      std::string mapped;
      for (char c : bytes) tokenizer::AppendUtf8(tokenizer::ByteToCodepoint(static_cast<uint8_t>(c)), mapped);
      if (const int32_t id = v_.SymbolOf(mapped); id >= 0) {
        out.push_back(id);
        return;
      }
    }
    symbols_.clear();
    for (size_t i = 0; i < bytes.size(); ++i) {
      const int32_t n = static_cast<int32_t>(bytes.size());
      const int32_t idx = static_cast<int32_t>(i);
      symbols_.push_back(
          {v_.byte_symbol[static_cast<uint8_t>(bytes[i])], idx - 1, idx + 1 < n ? idx + 1 : -1});
    }
    for (int32_t i = 1; i < static_cast<int32_t>(symbols_.size()); ++i) AddPair(i - 1, i);
    while (!queue_.empty()) {
      const Pair p = queue_.top();
      queue_.pop();
      Symbol& left = symbols_[p.left];
      Symbol& right = symbols_[p.right];
      // Stale: one side was merged away or grew since the pair was queued.
      if (left.symbol != p.left_symbol || right.symbol != p.right_symbol || left.next != p.right) continue;
      left.symbol = p.result;
      right.symbol = -1;
      left.next = right.next;
      if (right.next >= 0) symbols_[right.next].prev = p.left;
      AddPair(left.prev, p.left);
      AddPair(p.left, left.next);
    }
    for (int32_t i = 0; i >= 0; i = symbols_[i].next) Emit(symbols_[i].symbol, out);
  }

 private:
  struct Symbol {
    int32_t symbol;  // -1 once merged into its left neighbour
    int32_t prev, next;
  };
  struct Pair {
    int32_t rank, left, right, left_symbol, right_symbol, result;
    // std::priority_queue pops the greatest: "greater" = lower rank, then further left.
    bool operator<(const Pair& o) const { return rank > o.rank || (rank == o.rank && left > o.left); }
  };

  void AddPair(int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const int32_t ls = symbols_[left].symbol, rs = symbols_[right].symbol;
    const auto it = v_.merges.find((uint64_t(uint32_t(ls)) << 32) | uint32_t(rs));
    if (it == v_.merges.end()) return;
    queue_.push({it->second.rank, left, right, ls, rs, it->second.result});
  }

  // A symbol that is not a token (only with merges that leave the vocabulary) falls back to the tokens of
  // its single bytes, skipping those that are none, exactly as llama.cpp.
  void Emit(int32_t symbol, std::vector<int32_t>& out) const {
    if (symbol < v_.n_tokens()) {
      out.push_back(symbol);
      return;
    }
    for (char c : v_.SymbolText(symbol)) {
      if (const int32_t id = v_.SymbolOf(std::string(1, c)); id >= 0) out.push_back(id);
    }
  }

  const tokenizer::Vocab& v_;
  std::vector<Symbol> symbols_;
  std::priority_queue<Pair> queue_;
};

// SentencePiece BPE on one run of text (llama.cpp's llm_tokenizer_spm_session): the text is cut into
// UTF-8 characters (by their lead byte, so invalid bytes are characters of their own), then the
// adjacent pair whose concatenation is the highest-scoring token is merged, leftmost first on ties,
// until no pair is a token. A character that is no token becomes its bytes' byte tokens.
class SpmWord {
 public:
  explicit SpmWord(const tokenizer::Vocab& v) : v_(v) {}

  void Encode(std::string_view text, std::vector<int32_t>& out) {
    text_ = text;
    symbols_.clear();
    for (size_t offset = 0; offset < text.size();) {
      static constexpr uint8_t kLength[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
      const size_t len =
          std::min<size_t>(kLength[static_cast<uint8_t>(text[offset]) >> 4], text.size() - offset);
      const int32_t i = static_cast<int32_t>(symbols_.size());
      symbols_.push_back({offset, len, i - 1, offset + len == text.size() ? -1 : i + 1});
      offset += len;
    }
    for (int32_t i = 1; i < static_cast<int32_t>(symbols_.size()); ++i) TryPair(i - 1, i);
    while (!queue_.empty()) {
      const Pair p = queue_.top();
      queue_.pop();
      Symbol& left = symbols_[p.left];
      Symbol& right = symbols_[p.right];
      if (left.len == 0 || right.len == 0 || left.len + right.len != p.len) continue;  // stale
      left.len += right.len;
      right.len = 0;
      left.next = right.next;
      if (right.next >= 0) symbols_[right.next].prev = p.left;
      TryPair(left.prev, p.left);
      TryPair(p.left, left.next);
    }
    for (int32_t i = symbols_.empty() ? -1 : 0; i != -1; i = symbols_[i].next) {
      const Symbol& s = symbols_[i];
      if (const int32_t id = v_.SymbolOf(std::string(text_.substr(s.offset, s.len))); id >= 0) {
        out.push_back(id);
        continue;
      }
      // Byte fallback. (Without a byte token llama.cpp throws; attn writes the unknown token.)
      for (size_t k = 0; k < s.len; ++k) {
        const int32_t id = v_.byte_token[static_cast<uint8_t>(text_[s.offset + k])];
        if (id >= 0 || v_.unk >= 0) out.push_back(id >= 0 ? id : v_.unk);
      }
    }
  }

 private:
  struct Symbol {
    size_t offset, len;  // len 0: merged into the symbol on its left
    int32_t prev, next;
  };
  struct Pair {
    float score;
    int32_t left, right;
    size_t len;
    bool operator<(const Pair& o) const {  // the top is the highest score, then the leftmost
      return score < o.score || (score == o.score && left > o.left);
    }
  };

  void TryPair(int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = symbols_[left];
    const int32_t id = v_.SymbolOf(std::string(text_.substr(l.offset, l.len + symbols_[right].len)));
    if (id < 0) return;
    queue_.push({v_.scores[id], left, right, l.len + symbols_[right].len});
  }

  const tokenizer::Vocab& v_;
  std::string_view text_;
  std::vector<Symbol> symbols_;
  std::priority_queue<Pair> queue_;
};

// SentencePiece encoding of the fragments, as llama.cpp's llama_vocab::impl::tokenize for SPM: every
// text fragment that starts the input or follows a special token gets a leading space (with
// add_space_prefix), and spaces become U+2581.
void EncodeSpm(const tokenizer::Vocab& v, std::string_view text, const std::vector<Fragment>& fragments,
               std::vector<int32_t>& out) {
  SpmWord spm(v);
  bool after_special = true;
  std::string escaped;
  for (const Fragment& f : fragments) {
    if (f.token >= 0) {
      out.push_back(f.token);
      after_special = true;
      continue;
    }
    escaped.clear();
    if (v.add_space_prefix && after_special) escaped = "\xE2\x96\x81";
    for (char c : text.substr(f.offset, f.length)) {
      if (c == ' ') {
        escaped += "\xE2\x96\x81";
      } else {
        escaped.push_back(c);
      }
    }
    spm.Encode(escaped, out);
    after_special = false;
  }
}

}  // namespace

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool parse_special, InvalidUtf8 invalid) const {
  const tokenizer::Vocab& v = *vocab_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (v.spm) {  // raw bytes throughout, as llama.cpp: no UTF-8 decoding, so `invalid` changes nothing
    EncodeSpm(v, text, SplitSpecial(v, text, parse_special), out);
    return out;
  }
  BpeWord bpe(v);
  for (const Fragment& f : SplitSpecial(v, text, parse_special)) {
    if (f.token >= 0) {
      out.push_back(f.token);
      continue;
    }
    const std::string_view part = text.substr(f.offset, f.length);
    tokenizer::Units units;
    if (invalid == InvalidUtf8::kReplace) {
      units = tokenizer::DecodeLikeLlamaCpp(part);
    } else {
      units = tokenizer::DecodeKeepingBytes(part);
      ReplaceInvalidBytesWithoutToken(v, units);
    }
    size_t unit = 0;
    for (uint32_t len : tokenizer::PreTokenize(v.pre_kind, units)) {
      const size_t begin = units.offsets[unit], end = units.offsets[unit + len];
      bpe.Encode(std::string_view(units.bytes).substr(begin, end - begin), out);
      unit += len;
    }
  }
  return out;
}

std::vector<int32_t> Tokenizer::EncodePrompt(std::string_view text) const {
  std::vector<int32_t> ids;
  if (add_bos() && bos_id() >= 0) ids.push_back(bos_id());
  const std::vector<int32_t> body = Encode(text, /*parse_special=*/true);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

}  // namespace attn
