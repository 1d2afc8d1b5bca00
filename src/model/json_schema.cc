// JSON Schema -> GBNF (json_schema.h). One Converter walks the schema: every schema becomes a GBNF
// expression (a shared primitive rule such as `string`, a literal, or a rule of its own named after
// its property path), every $ref target a rule generated once.
#include "model/json_schema.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "attn/error.h"
#include "tokenizer/unicode.h"

namespace attn {

namespace {

// Keys in the schema's order: properties are written in that order.
using Json = nlohmann::ordered_json;

constexpr int kMaxDepth = 64;  // nested schemas (and nested enum / const values)
// Largest count written as x{m,n}: grammar.h's Grammar::kMaxRepeat. Larger counts are built from
// blocks of x{1000}, up to kMaxCount * kMaxCount.
constexpr long kMaxCount = 1000;
constexpr size_t kMaxNameLength = 48;
// Deepest JSON document taken: nlohmann copies and compares values recursively, so a deeper one
// (a hostile "const") could overflow the stack before kMaxDepth is checked.
constexpr size_t kMaxJsonDepth = 512;

const std::set<std::string, std::less<>> kAnnotations = {
    "title",    "description", "default",  "examples",  "$schema", "$id",
    "$comment", "deprecated",  "readOnly", "writeOnly", "$defs",   "definitions"};
// clang-format off
const std::set<std::string, std::less<>> kSupported = {
    "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref",           // any type
    "properties", "required", "additionalProperties",                     // objects
    "items", "prefixItems", "additionalItems", "minItems", "maxItems",    // arrays
    "minLength", "maxLength", "pattern", "format",                        // strings (format: numbers too)
    "minimum", "exclusiveMinimum"};                                       // numbers (a few values)
// clang-format on
// Keywords that say which type a schema without "type" is about.
const std::set<std::string, std::less<>> kObjectKeywords = {"properties", "required", "additionalProperties"};
const std::set<std::string, std::less<>> kArrayKeywords = {"items", "prefixItems", "additionalItems",
                                                           "minItems", "maxItems"};
const std::set<std::string, std::less<>> kStringKeywords = {"minLength", "maxLength", "pattern"};
const std::set<std::string, std::less<>> kStringFormats = {"date", "time", "date-time", "uuid"};
const std::set<std::string, std::less<>> kNumberFormats = {"int32", "int64", "float", "double"};
const std::set<std::string, std::less<>> kTypes = {"string", "number", "integer", "boolean",
                                                   "null",   "object", "array"};

// The shared rules, written once each where first used. Their names are reserved: rules named
// after properties never take them.
struct Primitive {
  const char* name;
  const char* body;
  std::vector<const char*> deps;
};
const std::vector<Primitive>& Primitives() {
  static const std::vector<Primitive> kPrimitives = {
      // A bounded run: nothing, a space, or a line end and an indentation.
      {"ws", R"(( " " | "\n" [ \t]{0,20} )?)", {}},
      // One character of a JSON string: unescaped (not a quote, backslash or control character)
      // or an escape; a character past U+FFFF escaped is a surrogate pair, one character for
      // minLength / maxLength as it is unescaped (lone surrogates, which are no character, are
      // refused).
      {"char",
       R"([^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" ( [0-9a-cA-Ce-fE-F] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} ) | "u" [dD] [89abAB] [0-9a-fA-F]{2} "\\u" [dD] [c-fC-F] [0-9a-fA-F]{2} ))",
       {}},
      {"string", R"("\"" char* "\"")", {"char"}},
      // JSON's integers with at most 16 digits (doubles hold 15-17 significant ones).
      {"integer", R"("-"? ( "0" | [1-9] [0-9]{0,15} ))", {}},
      {"integer-nonneg", R"("0" | [1-9] [0-9]{0,15})", {}},
      {"integer-positive", R"([1-9] [0-9]{0,15})", {}},
      {"number", R"("-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,16} )?)", {}},
      {"number-nonneg",
       R"(( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,16} )?)",
       {}},
      {"boolean", R"("true" | "false")", {}},
      {"null", R"("null")", {}},
      {"value",
       R"(object | array | string | number | boolean | null)",
       {"object", "array", "string", "number", "boolean", "null"}},
      {"member", R"(string ws ":" ws value)", {"string", "ws", "value"}},
      {"object", R"("{" ws ( member ( ws "," ws member )* ws )? "}")", {"ws", "member"}},
      {"array", R"("[" ws ( value ( ws "," ws value )* ws )? "]")", {"ws", "value"}},
      // RFC 3339's full-date, full-time (a leap second included) and date-time.
      {"date", R"([0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] ))", {}},
      {"time",
       R"(( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" ( [0-5] [0-9] | "60" ) ( "." [0-9]{1,9} )? ( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ))",
       {}},
      {"date-time", R"(date "T" time)", {"date", "time"}},
      {"uuid",
       R"([0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12})",
       {}},
      {"date-string", R"("\"" date "\"")", {"date"}},
      {"time-string", R"("\"" time "\"")", {"time"}},
      {"date-time-string", R"("\"" date-time "\"")", {"date-time"}},
      {"uuid-string", R"("\"" uuid "\"")", {"uuid"}},
  };
  return kPrimitives;
}

// A GBNF literal of `bytes` (UTF-8 passes through).
std::string Literal(std::string_view bytes) {
  std::string out = "\"";
  for (char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"') {
      out += "\\\"";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      static const char kHex[] = "0123456789ABCDEF";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

// The pieces that are not empty, separated by spaces.
std::string Seq(std::initializer_list<std::string> parts) {
  std::string out;
  for (const std::string& part : parts) {
    if (part.empty()) continue;
    if (!out.empty()) out += ' ';
    out += part;
  }
  return out;
}

std::string Join(const std::vector<std::string>& parts, const char* separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i > 0 ? separator : "") + parts[i];
  return out;
}

// A JSON pointer token (RFC 6901: "~" -> "~0", "/" -> "~1").
std::string PointerToken(std::string_view key) {
  std::string out;
  for (char c : key) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

std::string Quote(std::string_view text) { return Json(std::string(text)).dump(); }

[[noreturn]] void Fail(const std::string& path, const std::string& what) {
  throw Error("json_schema: " + what + " at " + (path.empty() ? std::string("the root") : path));
}

// Whether `value` is of the type `type` (JSON Schema's: 1.0 is an integer).
bool HasType(const Json& value, const std::string& type) {
  if (type == "integer") {
    if (value.is_number_integer()) return true;
    return value.is_number_float() && std::isfinite(value.get<double>()) &&
           std::floor(value.get<double>()) == value.get<double>();
  }
  if (type == "number") return value.is_number();
  if (type == "string") return value.is_string();
  if (type == "boolean") return value.is_boolean();
  if (type == "null") return value.is_null();
  if (type == "object") return value.is_object();
  return value.is_array();
}

// ---------------------------------------------------------------- "pattern"

// Sets of code points: sorted, disjoint, non-adjacent inclusive ranges.
using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;
constexpr uint32_t kMaxCodePoint = 0x10FFFF;

Ranges Normalize(Ranges r) {
  std::sort(r.begin(), r.end());
  Ranges out;
  for (const auto& [lo, hi] : r) {
    if (!out.empty() && lo <= out.back().second + 1) {
      out.back().second = std::max(out.back().second, hi);
    } else {
      out.push_back({lo, hi});
    }
  }
  return out;
}

Ranges Complement(const Ranges& r) {  // r normalized
  Ranges out;
  uint32_t next = 0;
  for (const auto& [lo, hi] : r) {
    if (lo > next) out.push_back({next, lo - 1});
    next = hi + 1;
  }
  if (next <= kMaxCodePoint) out.push_back({next, kMaxCodePoint});
  return out;
}

Ranges Intersect(const Ranges& a, const Ranges& b) {
  Ranges out;
  for (const auto& [alo, ahi] : a) {
    for (const auto& [blo, bhi] : b) {
      const uint32_t lo = std::max(alo, blo), hi = std::min(ahi, bhi);
      if (lo <= hi) out.push_back({lo, hi});
    }
  }
  return Normalize(out);
}

bool Contains(const Ranges& r, uint32_t c) {
  return std::any_of(r.begin(), r.end(),
                     [c](const auto& range) { return range.first <= c && c <= range.second; });
}

std::string Utf8(uint32_t c) {
  std::string out;
  tokenizer::AppendUtf8(c, out);
  return out;
}

// A code point inside a GBNF character class: ASCII letters and digits as they are, the rest
// escaped (\xHH, \uHHHH, \UHHHHHHHH).
std::string ClassChar(uint32_t c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
    return std::string(1, char(c));
  static const char kHex[] = "0123456789ABCDEF";
  const int digits = c < 0x80 ? 2 : c < 0x10000 ? 4 : 8;
  std::string out = c < 0x80 ? "\\x" : c < 0x10000 ? "\\u" : "\\U";
  for (int i = digits - 1; i >= 0; --i) out += kHex[(c >> (4 * i)) & 15];
  return out;
}

std::string ClassExpr(const Ranges& r, bool negated) {
  std::string out = negated ? "[^" : "[";
  for (const auto& [lo, hi] : r) {
    out += ClassChar(lo);
    if (hi != lo) {
      if (hi != lo + 1) out += '-';
      out += ClassChar(hi);
    }
  }
  return out + "]";
}

// Translates an ECMA-262 regular expression (json_schema.h lists the subset) into a GBNF
// expression of the contents of the JSON strings that match it: each character of the regex's
// alphabet as JSON text writes it (json_schema.h says which spellings are admitted).
class PatternTranslator {
 public:
  PatternTranslator(const std::string& pattern, const std::string& path) : pattern_(pattern), path_(path) {
    for (size_t i = 0; i < pattern.size();) {
      const auto b = static_cast<unsigned char>(pattern[i]);
      const int n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
      if (n == 0 || i + n > pattern.size()) Fail("it is not UTF-8");
      uint32_t c = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
      for (int k = 1; k < n; ++k) c = (c << 6) | (static_cast<unsigned char>(pattern[i + k]) & 0x3F);
      text_.push_back(c);
      i += n;
    }
  }

  // The expression (empty: the empty string), and whether it uses the primitive `char` (the
  // unanchored ends).
  std::string Translate() {
    std::vector<Piece> alternatives;
    while (true) {
      const bool anchored_start = Eat('^');
      bool anchored_end = false;
      Piece body = Sequence(true, &anchored_end);
      std::vector<Piece> parts;
      const Piece any = {"char*", false, std::nullopt, true};
      if (!anchored_start) parts.push_back(any);
      parts.push_back(body);
      if (!anchored_end && (anchored_start || !body.expr.empty())) parts.push_back(any);
      uses_char_ = uses_char_ || !anchored_start || !anchored_end;
      alternatives.push_back(Concat(parts));
      if (AtEnd()) break;
      if (Eat('|')) continue;
      Fail("unbalanced parenthesis \")\"");
    }
    return Alternation(alternatives).expr;
  }
  bool uses_char() const { return uses_char_; }

 private:
  struct Piece {
    std::string expr;                 // GBNF; empty: the empty string
    bool atomic;                      // may take a postfix operator as it is
    std::optional<std::string> text;  // the one JSON text it matches, where it is one literal
    bool nullable;                    // matches the empty string
  };
  // A regex atom of one character: a code point, or a set (a class, \d, .).
  struct Atom {
    Ranges set;
    bool single;
  };

  [[noreturn]] void Fail(const std::string& what) const {
    std::string message = "pattern ";
    message += Quote(pattern_);
    message += ": ";
    message += what;
    attn::Fail(path_, message);
  }
  [[noreturn]] void Unsupported(const std::string& what) const {
    std::string message = what;
    message += " is not supported";
    Fail(message);
  }

  bool AtEnd() const { return pos_ >= text_.size(); }
  uint32_t Peek(size_t ahead = 0) const {
    return pos_ + ahead < text_.size() ? text_[pos_ + ahead] : 0xFFFFFFFF;
  }
  bool Eat(uint32_t c) {
    if (Peek() != c) return false;
    ++pos_;
    return true;
  }

  static Piece Empty() { return {"", true, std::string(), true}; }

  // Concatenation; adjacent literals merge into one.
  static Piece Concat(const std::vector<Piece>& parts) {
    std::vector<Piece> merged;
    for (const Piece& p : parts) {
      if (p.expr.empty()) continue;
      if (!merged.empty() && merged.back().text && p.text) {
        *merged.back().text += *p.text;
        merged.back().expr = Literal(*merged.back().text);
      } else {
        merged.push_back(p);
      }
    }
    if (merged.empty()) return Empty();
    if (merged.size() == 1) return merged[0];
    Piece out = {"", false, std::nullopt, true};
    for (const Piece& p : merged) {
      if (!out.expr.empty()) out.expr += ' ';
      out.expr += p.expr;
      out.nullable = out.nullable && p.nullable;
    }
    return out;
  }

  static Piece Alternation(const std::vector<Piece>& alternatives) {
    std::vector<std::string> exprs;
    bool optional = false, nullable = false;
    for (const Piece& p : alternatives) {
      if (p.expr.empty()) {
        optional = true;
        continue;
      }
      nullable = nullable || p.nullable;
      if (std::find(exprs.begin(), exprs.end(), p.expr) == exprs.end()) exprs.push_back(p.expr);
    }
    if (exprs.empty()) return Empty();
    if (exprs.size() == 1 && !optional) {
      for (const Piece& p : alternatives) {
        if (!p.expr.empty()) return p;
      }
    }
    std::string expr;
    if (exprs.size() == 1) {
      const Piece& only = *std::find_if(alternatives.begin(), alternatives.end(),
                                        [](const Piece& p) { return !p.expr.empty(); });
      expr = only.atomic ? only.expr : "( " + only.expr + " )";
    } else {
      expr = "( " + Join(exprs, " | ") + " )";
    }
    if (!optional) return {expr, true, std::nullopt, nullable};
    return {expr + "?", false, std::nullopt, true};
  }

  // The JSON text of the characters of `set`: raw where JSON allows (not a quote, a backslash,
  // a control character or DEL), else escaped: \" \\ \b \f \n \r \t, \u00XX for the other control
  // characters and DEL; "/" also as \/.
  Piece SetPiece(const Ranges& set) const {
    if (set.empty()) Fail("a character class that matches no character");
    static const Ranges kRaw = {{0x20, 0x21}, {0x23, 0x5B}, {0x5D, 0x7E}, {0x80, kMaxCodePoint}};
    const Ranges raw = Intersect(set, kRaw);
    std::vector<std::string> alternatives;
    std::optional<std::string> text;
    if (!raw.empty()) {
      if (raw.size() == 1 && raw[0].first == raw[0].second) {
        text = Utf8(raw[0].first);
        alternatives.push_back(Literal(*text));
      } else {
        const Ranges complement = Complement(raw);
        alternatives.push_back(complement.size() < raw.size() ? ClassExpr(complement, true)
                                                              : ClassExpr(raw, false));
      }
    }
    Ranges shorts;  // the letters after the backslash
    const std::pair<uint32_t, uint32_t> kShort[] = {{'"', '"'}, {'\\', '\\'}, {'/', '/'}, {8, 'b'},
                                                    {12, 'f'},  {10, 'n'},    {13, 'r'},  {9, 't'}};
    for (const auto& [c, letter] : kShort) {
      if (Contains(set, c)) shorts.push_back({letter, letter});
    }
    std::vector<std::string> escapes;
    if (!shorts.empty()) {
      shorts = Normalize(shorts);
      escapes.push_back(shorts.size() == 1 && shorts[0].first == shorts[0].second
                            ? Literal(std::string(1, char(shorts[0].first)))
                            : ClassExpr(shorts, false));
    }
    static const char kHex[] = "0123456789abcdef";
    for (uint32_t high = 0; high < 2; ++high) {
      Ranges lows;
      for (uint32_t low = 0; low < 16; ++low) {
        const uint32_t c = high * 16 + low;
        if (c == 8 || c == 9 || c == 10 || c == 12 || c == 13 || !Contains(set, c)) continue;
        lows.push_back({uint32_t(kHex[low]), uint32_t(kHex[low])});
        if (low >= 10) lows.push_back({uint32_t(kHex[low] - 'a' + 'A'), uint32_t(kHex[low] - 'a' + 'A')});
      }
      if (lows.empty()) continue;
      std::string u = "u00";
      u += char('0' + high);
      escapes.push_back(Literal(u) + " " + ClassExpr(Normalize(lows), false));
    }
    if (Contains(set, 0x7F)) escapes.push_back(R"("u007" [fF])");
    if (!escapes.empty()) {
      std::string escape = Literal("\\");
      escape += ' ';
      escape += escapes.size() == 1 ? escapes[0] : "( " + Join(escapes, " | ") + " )";
      alternatives.push_back(escape);
      if (set.size() == 1 && set[0].first == set[0].second && shorts.size() == 1 && set[0].first != '/') {
        text = "\\" + std::string(1, char(shorts[0].first));
        alternatives.back() = Literal(*text);
      }
    }
    if (alternatives.size() > 1) return {"( " + Join(alternatives, " | ") + " )", true, std::nullopt, false};
    const bool atomic = alternatives[0].find(' ') == std::string::npos || text.has_value();
    return {alternatives[0], atomic, text, false};
  }

  // Terms up to "|", ")" or the end. At the top (not in a group) a final "$" anchors the end.
  Piece Sequence(bool top, bool* anchored_end) {
    std::vector<Piece> parts;
    while (!AtEnd() && Peek() != '|' && Peek() != ')') {
      if (Peek() == '$') {
        if (top && (pos_ + 1 == text_.size() || Peek(1) == '|')) {
          ++pos_;
          *anchored_end = true;
          break;
        }
        Unsupported("the anchor \"$\" before the end");
      }
      parts.push_back(Term());
    }
    return Concat(parts);
  }

  Piece Group() {
    if (++depth_ > kMaxDepth) Fail("groups nested deeper than " + std::to_string(kMaxDepth));
    std::vector<Piece> alternatives;
    bool unused = false;
    while (true) {
      alternatives.push_back(Sequence(false, &unused));
      if (Eat('|')) continue;
      if (Eat(')')) break;
      Fail("unbalanced parenthesis \"(\"");
    }
    --depth_;
    return Alternation(alternatives);
  }

  // A quantifier {m}, {m,}, {m,n} at pos_: whether there is one (read, with its counts).
  bool Braces(long* min, long* max) {
    size_t at = pos_;
    if (at >= text_.size() || text_[at] != '{') return false;
    ++at;
    auto number = [&](long* out) {
      const size_t start = at;
      long value = 0;
      while (at < text_.size() && text_[at] >= '0' && text_[at] <= '9') {
        value = std::min(value * 10 + long(text_[at] - '0'), 1000000L);
        ++at;
      }
      *out = value;
      return at > start;
    };
    if (!number(min)) return false;
    *max = *min;
    if (at < text_.size() && text_[at] == ',') {
      ++at;
      if (!number(max)) *max = -1;
    }
    if (at >= text_.size() || text_[at] != '}') return false;
    pos_ = at + 1;
    return true;
  }

  Piece Term() {
    Piece atom = AtomPiece();
    long min = 0, max = 0;
    if (Eat('*')) {
      min = 0, max = -1;
    } else if (Eat('+')) {
      min = 1, max = -1;
    } else if (Eat('?')) {
      min = 0, max = 1;
    } else if (Braces(&min, &max)) {
      if (min > kMaxCount || max > kMaxCount) Fail("a count over " + std::to_string(kMaxCount));
      if (max != -1 && max < min) Fail("a quantifier {m,n} with n < m");
    } else {
      return atom;
    }
    Eat('?');  // lazy: the same strings
    if (atom.expr.empty() || max == 0) return Empty();
    if (max == -1 && atom.nullable) {
      Unsupported("a repetition (*, + or {m,}) of what can match the empty string");
    }
    if (min == 1 && max == 1) return atom;
    std::string x = atom.atomic ? atom.expr : "( " + atom.expr + " )";
    if (min == max) {
      x += "{" + std::to_string(min) + "}";
    } else if (max == -1) {
      x += min == 0 ? "*" : min == 1 ? "+" : "{" + std::to_string(min) + ",}";
    } else if (min == 0 && max == 1) {
      x += "?";
    } else {
      x += "{" + std::to_string(min) + "," + std::to_string(max) + "}";
    }
    return {x, false, std::nullopt, atom.nullable || min == 0};
  }

  Piece AtomPiece() {
    const uint32_t c = Peek();
    if (c == '(') {
      ++pos_;
      if (Eat('?')) {
        if (Eat(':')) return Group();
        if (Peek() == '=' || Peek() == '!') Unsupported("lookahead (?" + Utf8(Peek()));
        if (Peek() == '<' && (Peek(1) == '=' || Peek(1) == '!'))
          Unsupported("lookbehind (?<" + Utf8(Peek(1)));
        if (Peek() == '<') Unsupported("the named group (?<");
        Unsupported("the group (?" + (AtEnd() ? std::string() : Utf8(Peek())));
      }
      return Group();
    }
    if (c == '^') Unsupported("the anchor \"^\" after the start");
    if (c == '*' || c == '+' || c == '?') Fail("nothing to repeat before \"" + Utf8(c) + "\"");
    if (c == '{') {
      long min, max;
      if (Braces(&min, &max)) Fail("nothing to repeat before \"{\"");
    }
    if (c == '[') return SetPiece(Class());
    if (c == '.') {
      ++pos_;  // any character but the line terminators
      return SetPiece(Complement(Normalize({{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}})));
    }
    if (c == '\\') {
      ++pos_;
      return SetPiece(Escape(false).set);
    }
    ++pos_;
    return SetPiece({{c, c}});
  }

  // After "[": the set of the class, through "]".
  Ranges Class() {
    ++pos_;
    const bool negated = Eat('^');
    Ranges set;
    if (Eat(']')) {
      if (negated) return {{0, kMaxCodePoint}};
      Fail("an empty class [] (it matches no character)");
    }
    while (true) {
      if (AtEnd()) Fail("unbalanced bracket \"[\"");
      if (Eat(']')) break;
      const Atom lo = ClassAtom();
      if (Peek() == '-' && pos_ + 1 < text_.size() && Peek(1) != ']') {
        ++pos_;
        const Atom hi = ClassAtom();
        if (!lo.single || !hi.single) Unsupported("a range of a class escape (such as [\\d-z])");
        if (lo.set[0].first > hi.set[0].first) Fail("a range out of order in a class");
        set.push_back({lo.set[0].first, hi.set[0].first});
      } else {
        set.insert(set.end(), lo.set.begin(), lo.set.end());
      }
    }
    set = Normalize(set);
    return negated ? Complement(set) : set;
  }

  Atom ClassAtom() {
    const uint32_t c = Peek();
    ++pos_;
    if (c == '\\') return Escape(true);
    return {{{c, c}}, true};
  }

  uint32_t Hex(int digits) {
    uint32_t value = 0;
    for (int i = 0; i < digits; ++i) {
      const uint32_t d = Peek();
      int v;
      if (d >= '0' && d <= '9') {
        v = int(d - '0');
      } else if (d >= 'a' && d <= 'f') {
        v = int(d - 'a' + 10);
      } else if (d >= 'A' && d <= 'F') {
        v = int(d - 'A' + 10);
      } else {
        Unsupported(digits == 4 ? "an escape \\u not followed by 4 hex digits (or \\u{...})"
                                : "an escape \\x not followed by 2 hex digits");
      }
      value = value * 16 + uint32_t(v);
      ++pos_;
    }
    return value;
  }

  // After "\": the escape's character or set.
  Atom Escape(bool in_class) {
    if (AtEnd()) Fail("a \"\\\" at the end");
    const uint32_t c = Peek();
    ++pos_;
    static const Ranges kDigit = {{'0', '9'}};
    static const Ranges kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
    static const Ranges kSpace = Normalize({{9, 13},
                                            {' ', ' '},
                                            {0xA0, 0xA0},
                                            {0x1680, 0x1680},
                                            {0x2000, 0x200A},
                                            {0x2028, 0x2029},
                                            {0x202F, 0x202F},
                                            {0x205F, 0x205F},
                                            {0x3000, 0x3000},
                                            {0xFEFF, 0xFEFF}});
    auto one = [](uint32_t cp) { return Atom{{{cp, cp}}, true}; };
    switch (c) {
      case 'd':
        return {kDigit, false};
      case 'D':
        return {Complement(kDigit), false};
      case 'w':
        return {kWord, false};
      case 'W':
        return {Complement(kWord), false};
      case 's':
        return {kSpace, false};
      case 'S':
        return {Complement(kSpace), false};
      case 'n':
        return one('\n');
      case 't':
        return one('\t');
      case 'r':
        return one('\r');
      case 'f':
        return one('\f');
      case 'v':
        return one('\v');
      case 'b':
        if (in_class) return one('\b');
        Unsupported("the word boundary \\b");
      case 'B':
        Unsupported("the word boundary \\B");
      case 'x':
        return one(Hex(2));
      case 'u': {
        const uint32_t unit = Hex(4);
        if (unit >= 0xD800 && unit <= 0xDBFF && Peek() == '\\' && Peek(1) == 'u') {
          pos_ += 2;
          const uint32_t low = Hex(4);
          if (low < 0xDC00 || low > 0xDFFF) Fail("a \\u surrogate without its pair");
          return one(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00));
        }
        if (unit >= 0xD800 && unit <= 0xDFFF) Fail("a \\u surrogate without its pair");
        return one(unit);
      }
      case '0':
        if (Peek() < '0' || Peek() > '9') return one(0);
        Unsupported("the octal escape \\0" + Utf8(Peek()));
      case 'k':
        Unsupported("the named backreference \\k");
      case 'c':
        Unsupported("the control escape \\c");
      case 'p':
      case 'P':
        Unsupported("the Unicode property escape \\" + Utf8(c));
      default:
        break;
    }
    if (c >= '1' && c <= '9') Unsupported("the backreference \\" + Utf8(c));
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) Unsupported("the escape \\" + Utf8(c));
    return one(c);  // \. \\ \/ \- \[ ... and other identity escapes
  }

  const std::string& pattern_;
  const std::string& path_;
  std::vector<uint32_t> text_;
  size_t pos_ = 0;
  int depth_ = 0;
  bool uses_char_ = false;
};

class Converter {
 public:
  explicit Converter(const Json& root) : root_(root) {
    for (const Primitive& p : Primitives()) names_.insert(p.name);
    names_.insert("root");
    index_["root"] = 0;
    rules_.push_back({"root", ""});
    refs_["#"] = "root";
    ref_of_rule_["root"] = "#";
  }

  std::string Run() {
    {
      HeadScope heads(this, &ref_heads_["root"]);
      const std::string root = "root";
      Visit(root_, "", root, &root);
    }
    CheckLeftRecursion();
    std::string out;
    for (const Rule& rule : rules_) out += rule.name + " ::= " + rule.body + "\n";
    return out;
  }

 private:
  struct Rule {
    std::string name;
    std::string body;
  };

  // Collects the $ref rules an expression may begin with (before it reads a character) into
  // `set`, for the left-recursion check; inside "{" or "[" nothing is collected.
  class HeadScope {
   public:
    HeadScope(Converter* c, std::set<std::string>* set) : c_(c), saved_(c->heads_) { c->heads_ = set; }
    explicit HeadScope(Converter* c) : HeadScope(c, nullptr) { c_->heads_ = &scratch_; }
    ~HeadScope() { c_->heads_ = saved_; }

   private:
    Converter* c_;
    std::set<std::string>* saved_;
    std::set<std::string> scratch_;
  };

  class DepthGuard {
   public:
    DepthGuard(Converter* c, const std::string& path) : c_(c) {
      if (++c_->depth_ > kMaxDepth) Fail(path, "schema nested deeper than " + std::to_string(kMaxDepth));
    }
    ~DepthGuard() { --c_->depth_; }

   private:
    Converter* c_;
  };

  // ---------------------------------------------------------------- rules

  std::string UniqueName(const std::string& hint) {
    std::string base;
    for (char c : hint) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
      if (ok) {
        base += c;
      } else if (!base.empty() && base.back() != '-') {
        base += '-';
      }
    }
    if (base.size() > kMaxNameLength) base.resize(kMaxNameLength);
    while (!base.empty() && base.back() == '-') base.pop_back();
    if (base.empty()) base = "rule";
    std::string name = base;
    for (int i = 1; names_.count(name) > 0; ++i) name = base + "-" + std::to_string(i);
    names_.insert(name);
    return name;
  }

  // Defines the rule `name` reserved before (by UniqueName or the constructor).
  void Define(const std::string& name, const std::string& body) {
    if (auto it = index_.find(name); it != index_.end()) {
      rules_[it->second].body = body;
    } else {
      index_[name] = rules_.size();
      rules_.push_back({name, body});
    }
    by_body_.emplace(body, name);
  }

  // A rule for `body`, named after `hint`, or the one that has that body already.
  std::string MakeRule(const std::string& hint, const std::string& body) {
    if (auto it = by_body_.find(body); it != by_body_.end()) return it->second;
    const std::string name = UniqueName(hint);
    Define(name, body);
    return name;
  }

  // The end of every Visit: `body` as a rule (the one named *define_as, if given).
  std::string Finish(const std::string& hint, const std::string& body, const std::string* define_as) {
    if (define_as != nullptr) {
      Define(*define_as, body);
      return *define_as;
    }
    return MakeRule(hint, body);
  }
  // Same, for an expression that may stand as it is (a rule name, a literal).
  std::string Inline(const std::string& expr, const std::string* define_as) {
    if (define_as == nullptr) return expr;
    Define(*define_as, expr);
    return *define_as;
  }

  std::string Use(const std::string& primitive) {
    if (used_.insert(primitive).second) {
      for (const Primitive& p : Primitives()) {
        if (primitive != p.name) continue;
        index_[p.name] = rules_.size();
        rules_.push_back({p.name, p.body});
        by_body_.emplace(p.body, p.name);
        for (const char* dep : p.deps) Use(dep);
      }
    }
    return primitive;
  }

  // x{min,max} (max -1: unbounded) for an atom x; counts over kMaxCount are built of blocks of
  // x{1000}, whose rule is named after `hint`.
  std::string Repeat(const std::string& x, long min, long max, const std::string& hint) {
    if (max == 0) return "";
    if (min <= kMaxCount && max <= kMaxCount) {
      if (min == max) return min == 1 ? x : x + "{" + std::to_string(min) + "}";
      if (max == -1) {
        if (min == 0) return x + "*";
        if (min == 1) return x + "+";
        return x + "{" + std::to_string(min) + ",}";
      }
      if (min == 0 && max == 1) return x + "?";
      return x + "{" + std::to_string(min) + "," + std::to_string(max) + "}";
    }
    const std::string block = MakeRule(hint + "-block", x + "{" + std::to_string(kMaxCount) + "}");
    auto exactly = [&](long n) {
      return Seq(
          {Repeat(block, n / kMaxCount, n / kMaxCount, hint), Repeat(x, n % kMaxCount, n % kMaxCount, hint)});
    };
    const std::string head = exactly(min);
    if (max == -1) return Seq({head, x + "*"});
    // x{0,up_to}, up_to = q * 1000 + r: fewer than q blocks and up to 999 more, or q blocks and up to r
    // more (two ways of reading the same prefix, but a bounded number of stacks).
    const long up_to = max - min;
    if (up_to <= kMaxCount) return Seq({head, Repeat(x, 0, up_to, hint)});
    const long q = up_to / kMaxCount, r = up_to % kMaxCount;
    return Seq({head, "( " + Seq({Repeat(block, 0, q - 1, hint), Repeat(x, 0, kMaxCount - 1, hint)}) + " | " +
                          Seq({Repeat(block, q, q, hint), Repeat(x, 0, r, hint)}) + " )"});
  }

  // A count keyword's value: a non-negative integer, or `fallback` when absent.
  static long Count(const Json& s, const char* key, long fallback, const std::string& path) {
    auto it = s.find(key);
    if (it == s.end()) return fallback;
    if (!HasType(*it, "integer") || it->get<double>() < 0) {
      Fail(path, std::string("\"") + key + "\" must be a non-negative integer, not " + it->dump());
    }
    const double value = it->get<double>();
    if (value > static_cast<double>(kMaxCount * kMaxCount)) {
      Fail(path, std::string("\"") + key + "\" = " + it->dump() + " is over " +
                     std::to_string(kMaxCount * kMaxCount));
    }
    return static_cast<long>(value);
  }

  // ---------------------------------------------------------------- schemas

  // The expression of the values `s` admits (at `path` in the schema, its rules named after
  // `hint`); with define_as, defines that rule as it.
  std::string Visit(const Json& s, const std::string& path, const std::string& hint,
                    const std::string* define_as = nullptr) {
    DepthGuard depth(this, path);
    if (s.is_boolean()) {
      if (!s.get<bool>()) Fail(path, "schema false admits no value");
      return Inline(Use("value"), define_as);
    }
    if (!s.is_object()) Fail(path, "a schema must be an object or a boolean, not " + s.dump());
    for (const auto& [key, value] : s.items()) {
      if (kAnnotations.count(key) == 0 && kSupported.count(key) == 0) {
        Fail(path, "unsupported keyword " + Quote(key));
      }
    }
    auto only_with_annotations = [&](const char* keyword) {
      for (const auto& [key, value] : s.items()) {
        if (key != keyword && kAnnotations.count(key) == 0) {
          Fail(path, "keyword " + Quote(key) + " beside \"" + keyword + "\" is not supported");
        }
      }
    };

    if (s.contains("$ref")) {
      only_with_annotations("$ref");
      return Inline(Ref(s["$ref"], path), define_as);
    }
    for (const char* keyword : {"anyOf", "oneOf"}) {
      if (!s.contains(keyword)) continue;
      only_with_annotations(keyword);
      const Json& alternatives = s[keyword];
      if (!alternatives.is_array() || alternatives.empty()) {
        Fail(path, std::string("\"") + keyword + "\" must be a non-empty array");
      }
      std::vector<std::string> exprs;
      for (size_t i = 0; i < alternatives.size(); ++i) {
        if (alternatives[i] == Json(false)) continue;  // admits nothing
        const std::string expr = Visit(alternatives[i], path + "/" + keyword + "/" + std::to_string(i),
                                       hint + "-" + std::to_string(i));
        if (std::find(exprs.begin(), exprs.end(), expr) == exprs.end()) exprs.push_back(expr);
      }
      if (exprs.empty()) Fail(path, std::string("no alternative of \"") + keyword + "\" admits a value");
      if (exprs.size() == 1) return Inline(exprs[0], define_as);
      return Finish(hint, Join(exprs, " | "), define_as);
    }
    if (s.contains("allOf")) return Visit(MergeAllOf(s, path), path, hint, define_as);
    if (s.contains("enum") || s.contains("const")) return Values(s, path, hint, define_as);

    std::vector<std::string> types = Types(s, path);
    if (types.empty()) return Inline(Use("value"), define_as);
    if (types.size() == 1) return VisitType(s, types[0], path, hint, define_as);
    std::vector<std::string> exprs;
    for (const std::string& type : types)
      exprs.push_back(VisitType(s, type, path, hint + "-" + type, nullptr));
    return Finish(hint, Join(exprs, " | "), define_as);
  }

  // The types the schema admits: "type", or those its keywords are about; none: any value.
  std::vector<std::string> Types(const Json& s, const std::string& path) {
    std::vector<std::string> types;
    if (auto it = s.find("type"); it != s.end()) {
      const Json list = it->is_array() ? *it : Json::array({*it});
      for (const Json& type : list) {
        if (!type.is_string())
          Fail(path, "\"type\" must be a string or an array of strings, not " + it->dump());
        if (kTypes.count(type.get<std::string>()) == 0) Fail(path, "unsupported type " + type.dump());
        types.push_back(type.get<std::string>());
      }
      if (types.empty()) Fail(path, "\"type\" is an empty array");
    } else {
      auto any_of = [&](const std::set<std::string, std::less<>>& keywords) {
        return std::any_of(keywords.begin(), keywords.end(),
                           [&](const std::string& k) { return s.contains(k); });
      };
      const std::string format =
          s.contains("format") && s["format"].is_string() ? s["format"].get<std::string>() : "";
      if (any_of(kObjectKeywords)) types.push_back("object");
      if (any_of(kArrayKeywords)) types.push_back("array");
      if (any_of(kStringKeywords) || (s.contains("format") && kNumberFormats.count(format) == 0)) {
        types.push_back("string");
      }
      if (s.contains("minimum") || s.contains("exclusiveMinimum") || kNumberFormats.count(format) > 0) {
        types.push_back(format.rfind("int", 0) == 0 ? "integer" : "number");
      }
    }
    // number includes integer.
    if (std::find(types.begin(), types.end(), "number") != types.end()) {
      types.erase(std::remove(types.begin(), types.end(), "integer"), types.end());
    }
    std::vector<std::string> unique;
    for (const std::string& type : types) {
      if (std::find(unique.begin(), unique.end(), type) == unique.end()) unique.push_back(type);
    }
    return unique;
  }

  std::string VisitType(const Json& s, const std::string& type, const std::string& path,
                        const std::string& hint, const std::string* define_as) {
    if (type == "string") return VisitString(s, path, hint, define_as);
    if (type == "integer" || type == "number") return VisitNumber(s, type == "integer", path, define_as);
    if (type == "boolean" || type == "null") return Inline(Use(type), define_as);
    if (type == "object") return VisitObject(s, path, hint, define_as);
    return VisitArray(s, path, hint, define_as);
  }

  std::string VisitString(const Json& s, const std::string& path, const std::string& hint,
                          const std::string* define_as) {
    if (auto it = s.find("pattern"); it != s.end()) {
      if (!it->is_string()) Fail(path, "\"pattern\" must be a string, not " + it->dump());
      for (const char* key : {"format", "minLength", "maxLength"}) {
        if (s.contains(key)) Fail(path, std::string("\"") + key + "\" beside \"pattern\" is not supported");
      }
      const std::string pattern = it->get<std::string>();
      PatternTranslator translator(pattern, path);
      const std::string body = translator.Translate();
      if (translator.uses_char()) Use("char");
      return Finish(hint, Seq({R"("\"")", body, R"("\"")"}), define_as);
    }
    if (auto it = s.find("format"); it != s.end()) {
      if (!it->is_string() || kStringFormats.count(it->get<std::string>()) == 0) {
        Fail(path, "unsupported format " + it->dump());
      }
      for (const char* key : {"minLength", "maxLength"}) {
        if (s.contains(key)) Fail(path, std::string("\"") + key + "\" beside \"format\" is not supported");
      }
      return Inline(Use(it->get<std::string>() + "-string"), define_as);
    }
    const long min = Count(s, "minLength", 0, path);
    const long max = Count(s, "maxLength", -1, path);
    if (max != -1 && min > max) {
      Fail(path, "minLength = " + std::to_string(min) + " is over maxLength = " + std::to_string(max));
    }
    if (min == 0 && max == -1) return Inline(Use("string"), define_as);
    return Finish(hint, Seq({R"("\"")", Repeat(Use("char"), min, max, hint), R"("\"")"}), define_as);
  }

  std::string VisitNumber(const Json& s, bool integer, const std::string& path,
                          const std::string* define_as) {
    // The lower bounds that only drop the minus sign (and for positive integers, zero).
    enum Lower { kNone, kNonNegative, kPositive } lower = kNone;
    if (auto it = s.find("minimum"); it != s.end()) {
      if (it->is_number() && it->get<double>() == 0) {
        lower = kNonNegative;
      } else if (integer && it->is_number() && it->get<double>() == 1) {
        lower = kPositive;
      } else {
        Fail(path, "unsupported keyword \"minimum\" (only 0 on numbers, 0 or 1 on integers), " + it->dump());
      }
    }
    if (auto it = s.find("exclusiveMinimum"); it != s.end()) {
      if (integer && it->is_number() && it->get<double>() == -1) {
        lower = std::max(lower, kNonNegative);
      } else if (integer && it->is_number() && it->get<double>() == 0) {
        lower = kPositive;
      } else {
        Fail(path, "unsupported keyword \"exclusiveMinimum\" (only -1 or 0 on integers), " + it->dump());
      }
    }
    if (auto it = s.find("format"); it != s.end()) {
      if (!it->is_string() || kNumberFormats.count(it->get<std::string>()) == 0) {
        Fail(path, "unsupported format " + it->dump());
      }
    }
    if (!integer) return Inline(Use(lower == kNone ? "number" : "number-nonneg"), define_as);
    return Inline(Use(lower == kNone          ? "integer"
                      : lower == kNonNegative ? "integer-nonneg"
                                              : "integer-positive"),
                  define_as);
  }

  std::string VisitObject(const Json& s, const std::string& path, const std::string& hint,
                          const std::string* define_as) {
    HeadScope inside(this);
    const Json no_properties = Json::object();
    const Json* properties = &no_properties;
    if (auto it = s.find("properties"); it != s.end()) {
      if (!it->is_object()) Fail(path, "\"properties\" must be an object");
      properties = &*it;
    }
    std::set<std::string> required;
    if (auto it = s.find("required"); it != s.end()) {
      if (!it->is_array()) Fail(path, "\"required\" must be an array of property names");
      for (const Json& name : *it) {
        if (!name.is_string())
          Fail(path, "\"required\" must be an array of property names, not " + it->dump());
        if (!properties->contains(name.get<std::string>())) {
          Fail(path, "required property " + name.dump() + " is not in \"properties\"");
        }
        required.insert(name.get<std::string>());
      }
    }
    // Further members: absent admits them only where no properties are listed.
    Json additional = !s.contains("properties");
    if (auto it = s.find("additionalProperties"); it != s.end()) additional = *it;
    if (!s.contains("properties") && additional == Json(true)) return Inline(Use("object"), define_as);

    struct Member {
      std::string name;
      std::string kv;  // "\"name\"" ws ":" ws value
      bool required;
    };
    std::vector<Member> members;
    for (const auto& [name, sub] : properties->items()) {
      const bool is_required = required.count(name) > 0;
      if (sub == Json(false)) {  // never present
        if (is_required) Fail(path, "required property " + Quote(name) + " has the schema false");
        continue;
      }
      const std::string value =
          Visit(sub, path + "/properties/" + PointerToken(name), hint == "root" ? name : hint + "-" + name);
      members.push_back(
          {name, Seq({Literal(Json(name).dump()), Use("ws"), R"(":")", "ws", value}), is_required});
    }
    std::string additional_kv;  // string ws ":" ws value
    if (additional != Json(false)) {
      const std::string value = Visit(additional, path + "/additionalProperties", hint + "-additional");
      additional_kv = Seq({Use("string"), Use("ws"), R"(":")", "ws", value});
    }
    if (members.empty() && additional_kv.empty())
      return Finish(hint, Seq({R"("{")", Use("ws"), R"("}")"}), define_as);
    Use("ws");
    const std::string comma = R"(ws "," ws)";
    const std::string more_additional =
        additional_kv.empty() ? "" : "( " + Seq({comma, additional_kv}) + " )*";

    // The members from i on after one was written, each after a comma.
    auto tail = [&](size_t i) {
      std::string out;
      for (; i < members.size(); ++i) {
        const std::string member = Seq({comma, members[i].kv});
        out = Seq({out, members[i].required ? member : "( " + member + " )?"});
      }
      return Seq({out, more_additional});
    };
    const size_t n = members.size();
    const size_t first_required =
        std::find_if(members.begin(), members.end(), [](const Member& m) { return m.required; }) -
        members.begin();
    if (first_required == 0 && n > 0) {  // always a member: the first one is required
      return Finish(hint, Seq({R"("{")", "ws", members[0].kv, tail(1), "ws", R"("}")"}), define_as);
    }
    // The members before the first required one are optional, and which of them comes first
    // decides where the commas go: after(i) is the members from i on once one was written (each
    // after a comma), from(i) at least one member, the first of them i or later.
    std::vector<std::string> after(first_required + 1);
    if (first_required > 0) {
      const std::string last = tail(first_required);
      if (!last.empty())
        after[first_required] = MakeRule(hint + "-after-" + members[first_required - 1].name, last);
      for (size_t i = first_required - 1; i >= 1; --i) {
        after[i] = MakeRule(hint + "-after-" + members[i - 1].name,
                            Seq({"( " + Seq({comma, members[i].kv}) + " )?", after[i + 1]}));
      }
    }
    std::string from;  // from(first_required): the first required member, or the first further one
    if (first_required < n) {
      from = Seq({members[first_required].kv, tail(first_required + 1)});
    } else if (!additional_kv.empty()) {
      from = Seq({additional_kv, more_additional});
    }
    for (size_t i = first_required; i-- > 0;) {
      const std::string first = Seq({members[i].kv, after[i + 1]});
      if (from.empty()) {
        from = first;
      } else {
        from = first + " | " +
               MakeRule(hint + "-from-" + (i + 1 < n ? members[i + 1].name : "additional"), from);
      }
    }
    // All optional: the object may be empty.
    const std::string body = first_required < n ? Seq({R"("{")", "ws", "( " + from + " )", "ws", R"("}")"})
                                                : Seq({R"("{")", "ws", "( ( " + from + " ) ws )?", R"("}")"});
    return Finish(hint, body, define_as);
  }

  std::string VisitArray(const Json& s, const std::string& path, const std::string& hint,
                         const std::string* define_as) {
    HeadScope inside(this);
    // The tuple's schemas and the schema of the items after them.
    std::vector<const Json*> prefix;
    std::vector<std::string> prefix_paths;
    Json items = true;
    std::string items_path = path + "/items";
    if (auto it = s.find("prefixItems"); it != s.end()) {
      if (!it->is_array()) Fail(path, "\"prefixItems\" must be an array of schemas");
      for (size_t i = 0; i < it->size(); ++i) {
        prefix.push_back(&(*it)[i]);
        prefix_paths.push_back(path + "/prefixItems/" + std::to_string(i));
      }
      if (s.contains("additionalItems"))
        Fail(path, "\"additionalItems\" beside \"prefixItems\" is not supported");
      if (s.contains("items")) items = s["items"];
    } else if (s.contains("items") && s["items"].is_array()) {  // draft 4-7's tuples
      for (size_t i = 0; i < s["items"].size(); ++i) {
        prefix.push_back(&s["items"][i]);
        prefix_paths.push_back(path + "/items/" + std::to_string(i));
      }
      if (s.contains("additionalItems")) items = s["additionalItems"];
      items_path = path + "/additionalItems";
    } else {
      if (s.contains("additionalItems"))
        Fail(path, "\"additionalItems\" without a tuple in \"items\" is not supported");
      if (s.contains("items")) items = s["items"];
    }
    const long min = Count(s, "minItems", 0, path);
    long max = Count(s, "maxItems", -1, path);
    if (max != -1 && min > max) {
      Fail(path, "minItems = " + std::to_string(min) + " is over maxItems = " + std::to_string(max));
    }
    const long k = static_cast<long>(prefix.size());
    if (items == Json(false) && (max == -1 || max > k)) max = k;
    if (max != -1 && min > max) {
      Fail(path, "minItems = " + std::to_string(min) + " but the items admit at most " + std::to_string(max));
    }
    Use("ws");
    if (max == 0) return Finish(hint, R"("[" ws "]")", define_as);

    std::vector<std::string> tuple;
    for (long i = 0; i < k && (max == -1 || i < max); ++i) {
      tuple.push_back(Visit(*prefix[i], prefix_paths[i], hint + "-" + std::to_string(i)));
    }
    const std::string comma = R"(ws "," ws)";
    std::string item;
    if (max == -1 || max > k) item = Visit(items, items_path, hint + "-item");
    const std::string more_items = item.empty() ? "" : "( " + Seq({comma, item}) + " )";

    // after(j): what follows the j-th element.
    auto extra = [&](long written) {
      return more_items.empty() ? std::string()
                                : Repeat(more_items, std::max(min - written, 0L),
                                         max == -1 ? -1 : max - written, hint + "-items");
    };
    std::string elements;
    if (tuple.empty()) {
      elements = Seq({item, extra(1)});
    } else {
      std::string after = extra(static_cast<long>(tuple.size()));
      for (long j = static_cast<long>(tuple.size()) - 1; j >= 1; --j) {
        const std::string next = Seq({comma, tuple[j], after});
        after = j < min ? next : "( " + next + " )?";
      }
      elements = Seq({tuple[0], after});
    }
    const std::string body = min > 0 ? Seq({R"("[")", "ws", elements, "ws", R"("]")"})
                                     : Seq({R"("[")", "ws", "( " + elements + " ws )?", R"("]")"});
    return Finish(hint, body, define_as);
  }

  // enum and const: the values, each as its tokens with whitespace between them.
  std::string Values(const Json& s, const std::string& path, const std::string& hint,
                     const std::string* define_as) {
    Json values = Json::array();
    if (auto it = s.find("enum"); it != s.end()) {
      if (!it->is_array()) Fail(path, "\"enum\" must be an array");
      values = *it;
    }
    if (auto it = s.find("const"); it != s.end()) {
      if (s.contains("enum")) {
        // Both: the values of enum equal to const.
        Json both = Json::array();
        for (const Json& v : values) {
          if (nlohmann::json(v) == nlohmann::json(*it)) both.push_back(v);
        }
        values = both;
      } else {
        values = Json::array({*it});
      }
    }
    const std::vector<std::string> types = s.contains("type") ? Types(s, path) : std::vector<std::string>();
    std::vector<std::string> exprs;
    bool structured = false;
    for (const Json& value : values) {
      if (!types.empty() &&
          std::none_of(types.begin(), types.end(), [&](const std::string& t) { return HasType(value, t); })) {
        continue;
      }
      const std::string expr = ValueExpr(value, path, 0);
      if (std::find(exprs.begin(), exprs.end(), expr) == exprs.end()) exprs.push_back(expr);
      structured = structured || value.is_structured();
    }
    if (exprs.empty()) Fail(path, "no value of \"enum\" / \"const\" has the schema's type");
    if (exprs.size() == 1 && !structured) return Inline(exprs[0], define_as);
    return Finish(hint, Join(exprs, " | "), define_as);
  }

  std::string ValueExpr(const Json& value, const std::string& path, int depth) {
    if (depth > kMaxDepth) Fail(path, "enum / const value nested deeper than " + std::to_string(kMaxDepth));
    if (!value.is_structured()) return Literal(value.dump());
    Use("ws");
    const bool object = value.is_object();
    std::string out = object ? R"("{" ws)" : R"("[" ws)";
    bool first = true;
    for (const auto& [key, element] : value.items()) {
      if (!first) out += R"( ws "," ws)";
      first = false;
      if (object) out += " " + Literal(Json(key).dump()) + R"( ws ":" ws)";
      out += " " + ValueExpr(element, path, depth + 1);
    }
    if (!first) out += " ws";
    return out + (object ? R"( "}")" : R"( "]")");
  }

  // allOf over object schemas, as one object schema: properties in order, required lists joined,
  // additionalProperties intersected (absent: false where the part lists properties, else true).
  Json MergeAllOf(const Json& s, const std::string& path) {
    if (!s["allOf"].is_array() || s["allOf"].empty()) Fail(path, "\"allOf\" must be a non-empty array");
    std::vector<std::pair<const Json*, std::string>> parts;
    Json rest = Json::object();  // the keywords beside allOf: one more part
    for (const auto& [key, value] : s.items()) {
      if (key != "allOf" && kAnnotations.count(key) == 0) rest[key] = value;
    }
    for (size_t i = 0; i < s["allOf"].size(); ++i)
      parts.push_back({&s["allOf"][i], path + "/allOf/" + std::to_string(i)});
    if (!rest.empty()) parts.push_back({&rest, path});

    Json merged = {{"type", "object"}};
    Json properties = Json::object();
    Json required = Json::array();
    Json additional = true;
    bool any_properties = false;
    for (size_t i = 0; i < parts.size(); ++i) {
      const Json* part = parts[i].first;
      const std::string& part_path = parts[i].second;
      DepthGuard depth(this, part_path);
      for (int hops = 0; part->is_object() && part->contains("$ref"); ++hops) {
        if (hops == kMaxDepth) Fail(part_path, "$ref chain longer than " + std::to_string(kMaxDepth));
        part = &Resolve((*part)["$ref"], part_path).first;
      }
      if (*part == Json(true)) continue;
      if (!part->is_object()) Fail(part_path, "\"allOf\" is supported only over object schemas");
      if (part->contains("allOf")) {  // nested: merged first
        merged_parts_.push_back(MergeAllOf(*part, part_path));
        parts.push_back({&merged_parts_.back(), part_path});
        continue;
      }
      for (const auto& [key, value] : part->items()) {
        const bool object_keyword = key == "properties" || key == "required" ||
                                    key == "additionalProperties" || (key == "type" && value == "object");
        if (!object_keyword && kAnnotations.count(key) == 0) {
          Fail(part_path, "\"allOf\" is supported only over object schemas, not with " + Quote(key));
        }
      }
      Json part_additional = !part->contains("properties");
      if (part->contains("additionalProperties")) part_additional = (*part)["additionalProperties"];
      if (part_additional == Json(false) || additional == Json(false)) {
        additional = false;
      } else if (additional == Json(true)) {
        additional = part_additional;
      } else if (part_additional != Json(true) &&
                 nlohmann::json(part_additional) != nlohmann::json(additional)) {
        Fail(part_path, "\"allOf\" of different \"additionalProperties\" schemas is not supported");
      }
      if (auto it = part->find("properties"); it != part->end()) {
        if (!it->is_object()) Fail(part_path, "\"properties\" must be an object");
        any_properties = true;
        for (const auto& [name, sub] : it->items()) {
          if (properties.contains(name) && nlohmann::json(properties[name]) != nlohmann::json(sub)) {
            Fail(part_path, "property " + Quote(name) + " has different schemas in \"allOf\"");
          }
          properties[name] = sub;
        }
      }
      if (auto it = part->find("required"); it != part->end()) {
        if (!it->is_array()) Fail(part_path, "\"required\" must be an array of property names");
        for (const Json& name : *it) required.push_back(name);
      }
    }
    if (any_properties) merged["properties"] = properties;
    if (!required.empty()) merged["required"] = required;
    merged["additionalProperties"] = additional;
    return merged;
  }

  // ---------------------------------------------------------------- $ref

  // The schema a local $ref points to, and its path.
  std::pair<const Json&, std::string> Resolve(const Json& ref, const std::string& path) {
    if (!ref.is_string()) Fail(path, "\"$ref\" must be a string, not " + ref.dump());
    const std::string text = ref.get<std::string>();
    if (text.empty() || text[0] != '#' || (text.size() > 1 && text[1] != '/')) {
      Fail(path, "$ref " + Quote(text) + " is not supported (only references into this schema, \"#/...\")");
    }
    const Json* target = &root_;
    std::string target_path;
    size_t pos = 1;
    while (pos < text.size()) {
      const size_t end = std::min(text.find('/', pos + 1), text.size());
      std::string token;
      for (size_t i = pos + 1; i < end; ++i) {
        if (text[i] == '~' && i + 1 < end && (text[i + 1] == '0' || text[i + 1] == '1')) {
          token += text[++i] == '0' ? '~' : '/';
        } else {
          token += text[i];
        }
      }
      if (target->is_object() && target->contains(token)) {
        target = &(*target)[token];
      } else if (target->is_array() && !token.empty() &&
                 std::all_of(token.begin(), token.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
                 token.size() < 10 && std::stoul(token) < target->size()) {
        target = &(*target)[std::stoul(token)];
      } else {
        Fail(path, "$ref " + Quote(text) + " points to nothing");
      }
      target_path += '/';  // (appending "/" + token trips GCC 12's -Wrestrict at -O3)
      target_path += PointerToken(token);
      pos = end;
    }
    return {*target, target_path};
  }

  // The rule of the schema `ref` points to, generated on first use.
  std::string Ref(const Json& ref, const std::string& path) {
    if (ref.is_string()) {
      if (auto it = refs_.find(ref.get<std::string>()); it != refs_.end()) {
        if (heads_ != nullptr) heads_->insert(it->second);
        return it->second;
      }
    }
    const auto [target, target_path] = Resolve(ref, path);
    const std::string text = ref.get<std::string>();
    const std::string name = UniqueName(text.substr(text.rfind('/') + 1));
    refs_[text] = name;
    ref_of_rule_[name] = text;
    index_[name] = rules_.size();
    rules_.push_back({name, ""});  // first, so that the rules read in order of use
    if (heads_ != nullptr) heads_->insert(name);
    HeadScope heads(this, &ref_heads_[name]);
    Visit(target, target_path, name, &name);
    return name;
  }

  // A $ref rule that may begin with itself (through others) would match no finite text, and is
  // refused by GBNF parsers: refuse the schema instead.
  void CheckLeftRecursion() const {
    std::map<std::string, int> state;  // 1: on the path, 2: done
    std::vector<std::string> stack;
    std::function<void(const std::string&)> visit = [&](const std::string& rule) {
      state[rule] = 1;
      stack.push_back(rule);
      if (auto it = ref_heads_.find(rule); it != ref_heads_.end()) {
        for (const std::string& next : it->second) {
          if (state[next] == 1) {
            std::string cycle;
            for (auto at = std::find(stack.begin(), stack.end(), next); at != stack.end(); ++at) {
              cycle += ref_of_rule_.at(*at) + " -> ";
            }
            throw Error("json_schema: $ref cycle " + cycle + ref_of_rule_.at(next) +
                        " reads no character (left recursion: no finite value)");
          }
          if (state[next] == 0) visit(next);
        }
      }
      stack.pop_back();
      state[rule] = 2;
    };
    for (const auto& [rule, heads] : ref_heads_) {
      if (state[rule] == 0) visit(rule);
    }
  }

  const Json& root_;
  std::vector<Rule> rules_;                        // in order of first use; the root first
  std::unordered_map<std::string, size_t> index_;  // rule -> its place in rules_
  std::unordered_map<std::string, std::string> by_body_;
  std::set<std::string> names_;
  std::set<std::string> used_;                              // primitives written
  std::map<std::string, std::string> refs_;                 // $ref text -> rule
  std::map<std::string, std::string> ref_of_rule_;          // rule -> $ref text
  std::map<std::string, std::set<std::string>> ref_heads_;  // $ref rule -> $ref rules it may begin with
  std::set<std::string>* heads_ = nullptr;
  std::list<Json> merged_parts_;  // parts of nested allOf (a list: their addresses stay)
  int depth_ = 0;
};

// Throws if `document` nests deeper than kMaxJsonDepth (walked without recursion).
template <typename AnyJson>
void CheckJsonDepth(const AnyJson& document) {
  std::vector<std::pair<const AnyJson*, size_t>> stack = {{&document, 1}};
  while (!stack.empty()) {
    const auto [value, depth] = stack.back();
    stack.pop_back();
    if (depth > kMaxJsonDepth) {
      throw Error("json_schema: the schema's JSON nests deeper than " + std::to_string(kMaxJsonDepth));
    }
    if (value->is_structured()) {
      for (const AnyJson& element : *value) stack.push_back({&element, depth + 1});
    }
  }
}

}  // namespace

std::string GbnfLiteral(std::string_view bytes) { return Literal(bytes); }

std::string JsonSchemaToGbnf(const nlohmann::ordered_json& schema) {
  CheckJsonDepth(schema);
  try {
    return Converter(schema).Run();
  } catch (const nlohmann::json::exception& e) {  // e.g. a string that is not UTF-8
    throw Error(std::string("json_schema: ") + e.what());
  }
}

std::string JsonSchemaToGbnf(const nlohmann::json& schema) {
  CheckJsonDepth(schema);
  return JsonSchemaToGbnf(Json(schema));
}

std::string JsonSchemaToGbnf(std::string_view schema_text) {
  // Nesting past kMaxJsonDepth is refused while parsing, before a deep value is built (and would
  // be destroyed recursively).
  const Json::parser_callback_t depth_limit = [](int depth, nlohmann::json::parse_event_t, Json&) {
    if (static_cast<size_t>(depth) > kMaxJsonDepth) {
      throw Error("json_schema: the schema's JSON nests deeper than " + std::to_string(kMaxJsonDepth));
    }
    return true;
  };
  Json schema;
  try {
    schema = Json::parse(schema_text, depth_limit);
  } catch (const nlohmann::json::exception& e) {  // a syntax error, a number out of range, ...
    throw Error(std::string("json_schema: not valid JSON: ") + e.what());
  }
  return JsonSchemaToGbnf(schema);
}

}  // namespace attn
