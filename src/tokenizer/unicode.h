// The Unicode pieces byte-level BPE needs: code point categories (llama.cpp's grouping, Unicode 15.1,
// generated into unicode_tables.inc by scripts/gen_unicode_tables.py), UTF-8 decoding of arbitrary bytes,
// and GPT-2's byte <-> printable code point mapping.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace attn::tokenizer {

// Category bits of a code point (one of the first eight), plus kWhitespace. The same values as
// llama.cpp's unicode_cpt_flags, so the regex matchers read like the patterns they implement.
enum : uint16_t {
  kUndefined = 0x0001,    // Cn (unassigned)
  kNumber = 0x0002,       // \p{N}
  kLetter = 0x0004,       // \p{L}
  kSeparator = 0x0008,    // \p{Z}
  kMark = 0x0010,         // \p{M}
  kPunctuation = 0x0020,  // \p{P}
  kSymbol = 0x0040,       // \p{S}
  kControl = 0x0080,      // \p{C} other than Cn
  kWhitespace = 0x0100,   // \s: the White_Space property
};

// Category bits | kWhitespace of `cpt`; code points past U+10FFFF are kUndefined.
uint16_t CodepointFlags(uint32_t cpt);

// Text split into code points ("units"), each remembering the bytes it stands for:
// bytes[offsets[i], offsets[i + 1]) is unit i. cpts[i] is the code point its category is read from.
struct Units {
  std::vector<uint32_t> cpts;
  std::vector<uint16_t> flags;    // CodepointFlags(cpts[i])
  std::vector<uint32_t> offsets;  // size cpts.size() + 1
  std::string bytes;              // what the units spell, byte for byte
};

// Strict UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF). Every byte that does not start
// a valid sequence becomes a unit of its own holding that byte, classified as U+FFFD would be, so that
// the units spell `text` exactly and pre-tokenization cuts where llama.cpp cuts.
Units DecodeKeepingBytes(std::string_view text);

// llama.cpp's unicode_cpts_from_utf8 followed by re-encoding (what its tokenizer actually feeds to BPE):
// lenient decoding (overlong forms and surrogates accepted), each byte that fails becomes U+FFFD.
// Code points past U+10FFFF (which llama.cpp cannot re-encode and throws on) also become U+FFFD.
Units DecodeLikeLlamaCpp(std::string_view text);

// Appends the UTF-8 encoding of `cpt` (no validation: callers pass code points <= U+10FFFF).
void AppendUtf8(uint32_t cpt, std::string& out);

// GPT-2's bytes_to_unicode(): printable bytes map to themselves, the other 68 to U+0100.. in order.
uint32_t ByteToCodepoint(uint8_t byte);
// The inverse; -1 for a code point that is not one of the 256.
int CodepointToByte(uint32_t cpt);

}  // namespace attn::tokenizer
