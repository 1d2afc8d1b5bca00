#include "tokenizer/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "attn/error.h"
#include "tokenizer/unicode.h"

namespace attn::jinja {

namespace {
thread_local int64_t* tl_work = nullptr;
thread_local WorkBudget* tl_budget = nullptr;
}  // namespace

WorkBudget::WorkBudget() : outer_(tl_budget) {
  tl_budget = this;
  tl_work = &used_;
}
WorkBudget::~WorkBudget() {
  tl_budget = outer_;
  tl_work = outer_ ? &outer_->used_ : nullptr;
}

void Charge(int64_t units) {
  if (tl_work == nullptr) return;
  *tl_work += units;
  if (*tl_work > kMaxWork)
    throw Error(
        "chat template: the template takes too much work (over 2^30 units: bytes copied or compared, items "
        "visited)");
}

Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}
Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.b_ = b;
  return v;
}
Value Value::Int(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.i_ = i;
  return v;
}
Value Value::Float(double d) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.d_ = d;
  return v;
}
Value Value::String(std::string s) {
  ChargeBytes(s.size());
  Value v;
  v.kind_ = Kind::kString;
  v.s_ = std::make_shared<const std::string>(std::move(s));
  return v;
}
Value Value::Markup(std::string s) {
  Value v = String(std::move(s));
  v.markup_ = true;
  return v;
}
Value Value::MakeArray(Array a) {
  ChargeItems(a.size());
  Value v;
  v.kind_ = Kind::kArray;
  for (const Value& e : a) v.Adopt(e);
  v.a_ = std::make_shared<const Array>(std::move(a));
  return v;
}
Value Value::MakeObject(Object o) {
  ChargeItems(o.size());
  Value v;
  v.kind_ = Kind::kObject;
  for (const auto& [k, e] : o) v.Adopt(k), v.Adopt(e);
  v.o_ = std::make_shared<Object>(std::move(o));
  return v;
}
Value Value::MakeNamespace(Object o) {
  Value v = MakeObject(std::move(o));
  v.namespace_ = true;
  v.holds_namespace_ = true;
  return v;
}
Value Value::MakeGenerator(Array a) {
  Value v = MakeArray(std::move(a));
  v.generator_ = true;
  return v;
}
Value Value::MakeFunction(Function f) {
  Value v;
  v.kind_ = Kind::kFunction;
  v.holds_namespace_ = true;
  v.f_ = std::make_shared<const Function>(std::move(f));
  return v;
}

void Value::Adopt(const Value& child) {
  holds_namespace_ |= child.holds_namespace_;
  if (child.depth_ + 1 > depth_) depth_ = static_cast<uint16_t>(child.depth_ + 1);
  if (depth_ > kMaxValueDepth) throw Error("chat template: a value nested deeper than 256 lists / dicts");
}

Value Value::FromJson(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return None();
    case nlohmann::ordered_json::value_t::boolean:
      return Bool(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Int(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Float(static_cast<double>(u));
      return Int(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Float(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return String(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      Array a;
      a.reserve(j.size());
      for (const auto& e : j) a.push_back(FromJson(e));
      return MakeArray(std::move(a));
    }
    case nlohmann::ordered_json::value_t::object: {
      Object o;
      o.reserve(j.size());
      for (const auto& [k, e] : j.items()) o.emplace_back(String(k), FromJson(e));
      return MakeObject(std::move(o));
    }
    default:
      throw Error("chat template: a context value of JSON type " + std::string(j.type_name()) +
                  " has no Jinja equivalent");
  }
}

Value Value::Get(std::string_view key) const {
  if (kind_ != Kind::kObject) return Value();
  for (const auto& [k, v] : *o_)
    if (k.is_string() && k.str() == key) return v;
  return Value();
}

Value Value::Lookup(const Value& key) const {
  if (kind_ != Kind::kObject) return Value();
  for (const auto& [k, v] : *o_)
    if (Equal(k, key)) return v;
  return Value();
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return b_;
    case Kind::kInt:
      return i_ != 0;
    case Kind::kFloat:
      return d_ != 0;
    case Kind::kString:
      return !s_->empty();
    case Kind::kArray:
      return !a_->empty();
    case Kind::kObject:
      return namespace_ || !o_->empty();
    case Kind::kFunction:
      return true;
  }
  return false;
}

const char* Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kArray:
      return "list";
    case Kind::kObject:
      return namespace_ ? "Namespace" : "dict";
    case Kind::kFunction:
      return "function";
  }
  return "?";
}

std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  // The shortest digits that round-trip, then Python's layout: positional for exponents in
  // [-4, 16), else d[.ddd]e+XX.
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  std::string sign;
  if (sci[0] == '-') sign = "-", sci.erase(0, 1);
  const size_t e = sci.find('e');
  const int exp = std::stoi(sci.substr(e + 1));
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  if (exp < -4 || exp >= 16) {
    std::string out = sign + digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char ebuf[16];
    std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    return out + ebuf;
  }
  if (exp < 0) return sign + "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
  const size_t int_len = static_cast<size_t>(exp) + 1;
  if (digits.size() <= int_len) return sign + digits + std::string(int_len - digits.size(), '0') + ".0";
  return sign + digits.substr(0, int_len) + "." + digits.substr(int_len);
}

namespace {

// Python's repr() of a str: single quotes unless the text has ' and no ".
std::string StringRepr(const std::string& s) {
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (const unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == static_cast<unsigned char>(q)) {
      out += '\\', out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + q;
}

// One byte of a JSON string as json.dumps writes it: quotes, backslashes and control characters escaped.
void JsonByte(unsigned char c, std::string& out) {
  switch (c) {
    case '"':
      out += "\\\"";
      return;
    case '\\':
      out += "\\\\";
      return;
    case '\n':
      out += "\\n";
      return;
    case '\r':
      out += "\\r";
      return;
    case '\t':
      out += "\\t";
      return;
    case '\b':
      out += "\\b";
      return;
    case '\f':
      out += "\\f";
      return;
    default:
      if (c < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out += buf;
      } else {
        out += static_cast<char>(c);
      }
  }
}

void JsonString(const std::string& s, bool ensure_ascii, std::string& out) {
  ChargeBytes(s.size());
  out += '"';
  if (ensure_ascii) {  // every code point past ASCII as \uXXXX (astral ones as a surrogate pair)
    for (const char32_t c : Utf8ToCodePoints(s)) {
      char buf[16];
      if (c < 0x80) {
        JsonByte(static_cast<unsigned char>(c), out);
        continue;
      }
      if (c >= 0x10000) {
        const uint32_t v = static_cast<uint32_t>(c) - 0x10000;
        std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
      } else {
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      }
      out += buf;
    }
  } else {
    for (const unsigned char c : s) JsonByte(c, out);
  }
  out += '"';
}

void ToJsonAt(const Value& v, const Value::JsonOptions& opt, int depth, std::string& out) {
  const int indent = opt.indent;
  const char* item_sep = opt.item_separator ? opt.item_separator : indent >= 0 ? "," : ", ";
  const char* key_sep = opt.key_separator ? opt.key_separator : ": ";
  if (depth > 512) throw Error("chat template: tojson: value nested too deeply");
  if (out.size() > kMaxStringBytes) throw Error("chat template: tojson: longer than 16 MiB");
  ChargeItems(1);
  auto newline = [&](int d) {
    out += '\n';
    out.append(static_cast<size_t>(indent * d), ' ');
  };
  switch (v.kind()) {
    case Value::Kind::kNone:
      out += "null";
      return;
    case Value::Kind::kUndefined:
      throw Error("chat template: tojson: Object of type Undefined is not JSON serializable");
    case Value::Kind::kBool:
      out += v.bool_value() ? "true" : "false";
      return;
    case Value::Kind::kInt:
      out += std::to_string(v.int_value());
      return;
    case Value::Kind::kFloat: {
      const double d = v.number();
      out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : FloatRepr(d);
      return;
    }
    case Value::Kind::kString:
      JsonString(v.str(), opt.ensure_ascii, out);
      return;
    case Value::Kind::kArray: {
      if (v.is_generator())
        throw Error("chat template: tojson: Object of type generator is not JSON serializable");
      if (v.array().empty()) {
        out += "[]";
        return;
      }
      out += '[';
      bool first = true;
      for (const Value& e : v.array()) {
        if (!first) out += item_sep;
        first = false;
        if (indent >= 0) newline(depth + 1);
        ToJsonAt(e, opt, depth + 1, out);
      }
      if (indent >= 0) newline(depth);
      out += ']';
      return;
    }
    case Value::Kind::kObject: {
      if (v.object().empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<Value, Value>*> items;
      for (const auto& kv : v.object()) items.push_back(&kv);
      if (opt.sort_keys)
        std::stable_sort(items.begin(), items.end(),
                         [](auto* a, auto* b) { return Compare(a->first, b->first) < 0; });
      out += '{';
      bool first = true;
      for (const auto* kv : items) {
        if (!first) out += item_sep;
        first = false;
        if (indent >= 0) newline(depth + 1);
        // json.dumps writes keys as strings: 1 -> "1", True -> "true", None -> "null".
        const Value& key = kv->first;
        std::string key_text = key.is_string()                    ? key.str()
                               : key.kind() == Value::Kind::kBool ? (key.bool_value() ? "true" : "false")
                               : key.is_none()                    ? "null"
                                                                  : key.Repr();
        JsonString(key_text, opt.ensure_ascii, out);
        out += key_sep;
        ToJsonAt(kv->second, opt, depth + 1, out);
      }
      if (indent >= 0) newline(depth);
      out += '}';
      return;
    }
    case Value::Kind::kFunction:
      throw Error("chat template: tojson: a function is not JSON serializable");
  }
}

}  // namespace

std::string Value::ToString() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kString:
      return *s_;
    default:
      return Repr();
  }
}

namespace {

// Repr into out, within kMaxStringBytes (a list of a million references to one long string is
// small in memory, not in print).
void ReprTo(const Value& v, std::string& out) {
  if (out.size() > kMaxStringBytes) throw Error("chat template: a value printed longer than 16 MiB");
  ChargeItems(1);
  switch (v.kind()) {
    case Value::Kind::kArray:
      if (v.is_generator()) {
        out += "<generator object>";
        return;
      }
      out += '[';
      for (size_t i = 0; i < v.array().size(); ++i) {
        if (i) out += ", ";
        ReprTo(v.array()[i], out);
      }
      out += ']';
      return;
    case Value::Kind::kObject:
      out += v.is_namespace() ? "<Namespace {" : "{";
      for (size_t i = 0; i < v.object().size(); ++i) {
        if (i) out += ", ";
        ReprTo(v.object()[i].first, out);
        out += ": ";
        ReprTo(v.object()[i].second, out);
      }
      out += v.is_namespace() ? "}>" : "}";
      return;
    default: {
      const std::string s = v.Repr();
      ChargeBytes(s.size());
      out += s;
    }
  }
}

}  // namespace

std::string Value::Repr() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return b_ ? "True" : "False";
    case Kind::kInt:
      return std::to_string(i_);
    case Kind::kFloat:
      return FloatRepr(d_);
    case Kind::kString:
      return StringRepr(*s_);
    case Kind::kArray:
    case Kind::kObject: {
      std::string out;
      ReprTo(*this, out);
      return out;
    }
    case Kind::kFunction:
      return "<function>";
  }
  return "";
}

std::string Value::ToJson(const JsonOptions& options) const {
  std::string out;
  ToJsonAt(*this, options, 0, out);
  return out;
}

bool Equal(const Value& a, const Value& b) {
  Charge(8);
  using K = Value::Kind;
  const bool a_num = a.is_number() || a.kind() == K::kBool, b_num = b.is_number() || b.kind() == K::kBool;
  if (a_num && b_num) {
    if (a.kind() != K::kFloat && b.kind() != K::kFloat) {
      const int64_t x = a.kind() == K::kBool ? a.bool_value() : a.int_value();
      const int64_t y = b.kind() == K::kBool ? b.bool_value() : b.int_value();
      return x == y;
    }
    return a.number() == b.number();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::kUndefined:
    case K::kNone:
      return true;
    case K::kString:
      ChargeBytes(std::min(a.str().size(), b.str().size()));
      return a.str() == b.str();
    case K::kArray: {
      if (a.array().size() != b.array().size()) return false;
      for (size_t i = 0; i < a.array().size(); ++i)
        if (!Equal(a.array()[i], b.array()[i])) return false;
      return true;
    }
    case K::kObject: {
      if (a.object().size() != b.object().size()) return false;
      for (const auto& [k, v] : a.object()) {
        const Value w = b.Lookup(k);
        if (w.is_undefined() || !Equal(v, w)) return false;
      }
      return true;
    }
    default:
      return &a == &b;
  }
}

int Compare(const Value& a, const Value& b) {
  Charge(8);
  using K = Value::Kind;
  const bool a_num = a.is_number() || a.kind() == K::kBool, b_num = b.is_number() || b.kind() == K::kBool;
  if (a_num && b_num) {
    const double x = a.number(), y = b.number();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    ChargeBytes(std::min(a.str().size(), b.str().size()));
    return a.str().compare(b.str()) < 0 ? -1 : a.str() == b.str() ? 0 : 1;
  }
  if (a.is_array() && b.is_array()) {
    const size_t n = std::min(a.array().size(), b.array().size());
    for (size_t i = 0; i < n; ++i) {
      if (!Equal(a.array()[i], b.array()[i])) return Compare(a.array()[i], b.array()[i]);
    }
    return a.array().size() < b.array().size() ? -1 : a.array().size() > b.array().size() ? 1 : 0;
  }
  throw Error(std::string("chat template: '<' not supported between instances of '") + a.TypeName() +
              "' and '" + b.TypeName() + "'");
}

std::u32string Utf8ToCodePoints(std::string_view s) {
  ChargeDecode(s.size());
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
    bool ok = len > 0 && i + static_cast<size_t>(len) <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((cc >> 6) != 2) ok = false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (!ok) {
      out += U'\uFFFD';
      ++i;
      continue;
    }
    out += static_cast<char32_t>(cp);
    i += static_cast<size_t>(len);
  }
  return out;
}

std::string CodePointsToUtf8(std::u32string_view s) {
  ChargeDecode(s.size());
  std::string out;
  out.reserve(s.size());
  for (const char32_t c : s) tokenizer::AppendUtf8(static_cast<uint32_t>(c), out);
  return out;
}

}  // namespace attn::jinja
