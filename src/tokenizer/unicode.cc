#include "tokenizer/unicode.h"

#include <algorithm>
#include <array>
#include <cstddef>

namespace attn::tokenizer {
namespace {

struct CategoryRange {
  uint32_t first;
  uint16_t flags;
};

#include "tokenizer/unicode_tables.inc"

// llama.cpp (as vendored by llama-cpp-python 0.3.36) classifies code points by Unicode 15.1.
static_assert(kUnicodeVersionMajor == 15 && kUnicodeVersionMinor == 1);

constexpr uint32_t kMaxCodepoint = 0x10FFFF;
constexpr uint32_t kReplacement = 0xFFFD;

// Flags of the first 0x10000 code points in one array (128 KiB), the rest by binary search.
struct FlagTable {
  std::array<uint16_t, 0x10000> bmp{};
  FlagTable() {
    size_t r = 0;
    for (uint32_t cpt = 0; cpt < bmp.size(); ++cpt) {
      while (r + 1 < std::size(kCategoryRanges) && kCategoryRanges[r + 1].first <= cpt) ++r;
      bmp[cpt] = kCategoryRanges[r].flags;
    }
    for (uint32_t cpt : kWhitespaceCodepoints) bmp[cpt] |= kWhitespace;
  }
};

const FlagTable& Flags() {
  static const FlagTable table;
  return table;
}

uint8_t Byte(std::string_view s, size_t i) { return static_cast<uint8_t>(s[i]); }
bool IsContinuation(std::string_view s, size_t i) { return i < s.size() && (Byte(s, i) & 0xC0) == 0x80; }

void Push(Units& u, uint32_t cpt) {
  u.cpts.push_back(cpt);
  u.flags.push_back(CodepointFlags(cpt));
  u.offsets.push_back(static_cast<uint32_t>(u.bytes.size()));
}

}  // namespace

uint16_t CodepointFlags(uint32_t cpt) {
  if (cpt < 0x10000) return Flags().bmp[cpt];
  if (cpt > kMaxCodepoint) return kUndefined;
  // The last range whose first code point is <= cpt (no supplementary code point is whitespace).
  const auto it = std::upper_bound(std::begin(kCategoryRanges), std::end(kCategoryRanges), cpt,
                                   [](uint32_t c, const CategoryRange& r) { return c < r.first; });
  return std::prev(it)->flags;
}

void AppendUtf8(uint32_t cpt, std::string& out) {
  if (cpt < 0x80) {
    out.push_back(static_cast<char>(cpt));
  } else if (cpt < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cpt >> 6)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else if (cpt < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cpt >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cpt >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  }
}

Units DecodeKeepingBytes(std::string_view text) {
  Units u;
  u.cpts.reserve(text.size());
  u.flags.reserve(text.size());
  u.offsets.reserve(text.size() + 1);
  u.bytes.assign(text);
  size_t i = 0;
  while (i < text.size()) {
    const uint8_t b0 = Byte(text, i);
    uint32_t cpt = kReplacement;
    size_t len = 1;
    if (b0 < 0x80) {
      cpt = b0;
    } else if (b0 >= 0xC2 && b0 <= 0xDF && IsContinuation(text, i + 1)) {
      cpt = ((b0 & 0x1Fu) << 6) | (Byte(text, i + 1) & 0x3Fu);
      len = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF && IsContinuation(text, i + 1) && IsContinuation(text, i + 2)) {
      const uint32_t c =
          ((b0 & 0x0Fu) << 12) | ((Byte(text, i + 1) & 0x3Fu) << 6) | (Byte(text, i + 2) & 0x3Fu);
      if (c >= 0x800 && (c < 0xD800 || c > 0xDFFF)) cpt = c, len = 3;
    } else if (b0 >= 0xF0 && b0 <= 0xF4 && IsContinuation(text, i + 1) && IsContinuation(text, i + 2) &&
               IsContinuation(text, i + 3)) {
      const uint32_t c = ((b0 & 0x07u) << 18) | ((Byte(text, i + 1) & 0x3Fu) << 12) |
                         ((Byte(text, i + 2) & 0x3Fu) << 6) | (Byte(text, i + 3) & 0x3Fu);
      if (c >= 0x10000 && c <= kMaxCodepoint) cpt = c, len = 4;
    }
    u.cpts.push_back(cpt);
    u.flags.push_back(CodepointFlags(cpt));
    u.offsets.push_back(static_cast<uint32_t>(i));
    i += len;
  }
  u.offsets.push_back(static_cast<uint32_t>(text.size()));
  return u;
}

// Mirrors llama.cpp's unicode_cpt_from_utf8: the lead byte's high bits give the length, the following
// bytes must be continuation bytes, and nothing else is checked.
Units DecodeLikeLlamaCpp(std::string_view text) {
  Units u;
  u.cpts.reserve(text.size());
  u.flags.reserve(text.size());
  u.offsets.reserve(text.size() + 1);
  u.bytes.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const uint8_t b0 = Byte(text, i);
    uint32_t cpt = kReplacement;
    size_t len = 1;
    if (b0 < 0x80) {
      cpt = b0;
    } else if ((b0 & 0xE0) == 0xC0 && IsContinuation(text, i + 1)) {
      cpt = ((b0 & 0x1Fu) << 6) | (Byte(text, i + 1) & 0x3Fu);
      len = 2;
    } else if ((b0 & 0xF0) == 0xE0 && IsContinuation(text, i + 1) && IsContinuation(text, i + 2)) {
      cpt = ((b0 & 0x0Fu) << 12) | ((Byte(text, i + 1) & 0x3Fu) << 6) | (Byte(text, i + 2) & 0x3Fu);
      len = 3;
    } else if ((b0 & 0xF8) == 0xF0 && IsContinuation(text, i + 1) && IsContinuation(text, i + 2) &&
               IsContinuation(text, i + 3)) {
      cpt = ((b0 & 0x07u) << 18) | ((Byte(text, i + 1) & 0x3Fu) << 12) | ((Byte(text, i + 2) & 0x3Fu) << 6) |
            (Byte(text, i + 3) & 0x3Fu);
      len = 4;
      if (cpt > kMaxCodepoint) cpt = kReplacement;
    }
    // (A failed sequence consumes only its first byte, as llama.cpp's catch does.)
    Push(u, cpt);
    AppendUtf8(cpt, u.bytes);
    i += len;
  }
  u.offsets.push_back(static_cast<uint32_t>(u.bytes.size()));
  return u;
}

namespace {

struct ByteMap {
  std::array<uint32_t, 256> to_cpt{};
  std::array<int16_t, 0x144> to_byte{};
  ByteMap() {
    to_byte.fill(-1);
    auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; };
    uint32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      to_cpt[b] = printable(b) ? static_cast<uint32_t>(b) : next++;
      to_byte[to_cpt[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteMap& Bytes() {
  static const ByteMap map;
  return map;
}

}  // namespace

uint32_t ByteToCodepoint(uint8_t byte) { return Bytes().to_cpt[byte]; }

int CodepointToByte(uint32_t cpt) { return cpt < Bytes().to_byte.size() ? Bytes().to_byte[cpt] : -1; }

}  // namespace attn::tokenizer
