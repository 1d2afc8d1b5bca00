// The JSON object recognizer of JSON mode (json_constraint.h).
#include "model/json_constraint.h"

namespace attn {

namespace {
bool IsDigit(uint8_t c) { return c >= '0' && c <= '9'; }
bool IsHex(uint8_t c) { return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool IsSpace(uint8_t c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }
}  // namespace

bool JsonRecognizer::Feed(std::string_view text) {
  for (char c : text) {
    if (!Feed(static_cast<uint8_t>(c))) return false;
  }
  return true;
}

std::string JsonRecognizer::StateKey() const {
  std::string key;
  key += static_cast<char>(expect_);
  key += static_cast<char>(ws_);
  switch (expect_) {
    case Expect::kNumber:
      key += static_cast<char>(number_);
      break;
    case Expect::kLiteral:  // the rest of the literal (its text ends it)
      key += literal_;
      break;
    case Expect::kHex:
      key += static_cast<char>(hex_left_);
      [[fallthrough]];
    case Expect::kString:
    case Expect::kEscape:
      key += key_ ? 'k' : 'v';
      break;
    default:
      break;
  }
  key += '|';
  key += stack_;
  return key;
}

bool JsonRecognizer::Whitespace(uint8_t c) {
  if (!IsSpace(c)) return false;
  return ++ws_ <= kMaxWhitespace;
}

bool JsonRecognizer::EndValue() {
  expect_ = stack_.empty() ? Expect::kDone : Expect::kCommaOrClose;
  return true;
}

bool JsonRecognizer::StartValue(uint8_t c) {
  ws_ = 0;
  switch (c) {
    case '{':
    case '[':
      if (static_cast<int>(stack_.size()) >= kMaxDepth) return false;
      stack_.push_back(static_cast<char>(c));
      expect_ = c == '{' ? Expect::kKeyOrClose : Expect::kValueOrClose;
      return true;
    case '"':
      key_ = false;
      expect_ = Expect::kString;
      return true;
    case 't':
      literal_ = "rue";
      expect_ = Expect::kLiteral;
      return true;
    case 'f':
      literal_ = "alse";
      expect_ = Expect::kLiteral;
      return true;
    case 'n':
      literal_ = "ull";
      expect_ = Expect::kLiteral;
      return true;
    case '-':
      number_ = Num::kMinus;
      expect_ = Expect::kNumber;
      return true;
    default:
      if (!IsDigit(c)) return false;
      number_ = c == '0' ? Num::kZero : Num::kInt;
      expect_ = Expect::kNumber;
      return true;
  }
}

bool JsonRecognizer::AfterNumber(uint8_t c) {
  switch (number_) {
    case Num::kMinus:
      if (!IsDigit(c)) return false;
      number_ = c == '0' ? Num::kZero : Num::kInt;
      return true;
    case Num::kZero:
    case Num::kInt:
      if (IsDigit(c) && number_ == Num::kInt) return true;
      if (c == '.') return number_ = Num::kDot, true;
      if (c == 'e' || c == 'E') return number_ = Num::kE, true;
      break;  // the number ends here
    case Num::kDot:
      if (!IsDigit(c)) return false;
      number_ = Num::kFrac;
      return true;
    case Num::kFrac:
      if (IsDigit(c)) return true;
      if (c == 'e' || c == 'E') return number_ = Num::kE, true;
      break;
    case Num::kE:
      if (c == '+' || c == '-') return number_ = Num::kESign, true;
      if (!IsDigit(c)) return false;
      number_ = Num::kExp;
      return true;
    case Num::kESign:
      if (!IsDigit(c)) return false;
      number_ = Num::kExp;
      return true;
    case Num::kExp:
      if (IsDigit(c)) return true;
      break;
  }
  // A complete number ended: c is what follows it.
  EndValue();
  return Feed(c);
}

bool JsonRecognizer::Feed(uint8_t c) {
  switch (expect_) {
    case Expect::kStart:
      if (c != '{') return false;
      return StartValue(c);
    case Expect::kValue:
      return Whitespace(c) || StartValue(c);
    case Expect::kValueOrClose:
      if (c == ']') {
        stack_.pop_back();
        ws_ = 0;
        return EndValue();
      }
      return Whitespace(c) || StartValue(c);
    case Expect::kKeyOrClose:
    case Expect::kKey:
      if (Whitespace(c)) return true;
      if (c == '}' && expect_ == Expect::kKeyOrClose) {
        stack_.pop_back();
        ws_ = 0;
        return EndValue();
      }
      if (c != '"') return false;
      ws_ = 0;
      key_ = true;
      expect_ = Expect::kString;
      return true;
    case Expect::kColon:
      if (Whitespace(c)) return true;
      if (c != ':') return false;
      ws_ = 0;
      expect_ = Expect::kValue;
      return true;
    case Expect::kCommaOrClose:
      if (Whitespace(c)) return true;
      ws_ = 0;
      if (c == ',') {
        expect_ = stack_.back() == '{' ? Expect::kKey : Expect::kValue;
        return true;
      }
      if ((c == '}' && stack_.back() == '{') || (c == ']' && stack_.back() == '[')) {
        stack_.pop_back();
        return EndValue();
      }
      return false;
    case Expect::kString:
      if (c == '"') {
        if (key_) {
          expect_ = Expect::kColon;
          return true;
        }
        return EndValue();
      }
      if (c == '\\') return expect_ = Expect::kEscape, true;
      return c >= 0x20;  // control characters must be escaped; other bytes (UTF-8) pass
    case Expect::kEscape:
      if (c == 'u') {
        hex_left_ = 4;
        expect_ = Expect::kHex;
        return true;
      }
      if (c != '"' && c != '\\' && c != '/' && c != 'b' && c != 'f' && c != 'n' && c != 'r' && c != 't')
        return false;
      expect_ = Expect::kString;
      return true;
    case Expect::kHex:
      if (!IsHex(c)) return false;
      if (--hex_left_ == 0) expect_ = Expect::kString;
      return true;
    case Expect::kNumber:
      return AfterNumber(c);
    case Expect::kLiteral:
      if (c != static_cast<uint8_t>(*literal_)) return false;
      if (*++literal_ == '\0') return EndValue();
      return true;
    case Expect::kDone:
      return Whitespace(c);
  }
  return false;
}

}  // namespace attn
