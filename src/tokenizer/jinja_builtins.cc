#include "tokenizer/jinja_builtins.h"

#include <algorithm>
#include <cmath>
#include <cstring>  // memmem
#include <ctime>
#include <string_view>

#include "attn/error.h"
#include "tokenizer/jinja.h"

namespace attn::jinja {
namespace {

constexpr int64_t kMaxRange = 100000;  // jinja2's sandbox MAX_RANGE

const Value kUndefined;

// Positional argument i, else keyword `name`, else undefined.
const Value& Arg(const Args& a, size_t i, const char* name) {
  if (i < a.positional.size()) return a.positional[i];
  for (const auto& [k, v] : a.keyword)
    if (k == name) return v;
  return kUndefined;
}

// Appends b to out unless that makes a string longer than kMaxStringBytes.
void Append(std::string& out, std::string_view b) {
  if (out.size() + b.size() > kMaxStringBytes) throw Error("string longer than 16 MiB");
  ChargeBytes(b.size());
  out += b;
}

// haystack.find(needle, pos) in linear time (glibc's memmem is two-way; std::string::find can take
// |haystack| x |needle| steps, which a template could make hours).
size_t FindText(std::string_view haystack, std::string_view needle, size_t pos = 0) {
  if (pos > haystack.size()) return std::string::npos;
  if (needle.empty()) return pos;
  const void* p = memmem(haystack.data() + pos, haystack.size() - pos, needle.data(), needle.size());
  return p == nullptr ? std::string::npos
                      : static_cast<size_t>(static_cast<const char*>(p) - haystack.data());
}

bool IsNum(const Value& v) { return v.is_number() || v.kind() == Value::Kind::kBool; }
bool IsIntLike(const Value& v) { return v.kind() == Value::Kind::kInt || v.kind() == Value::Kind::kBool; }
int64_t AsInt(const Value& v) { return v.kind() == Value::Kind::kBool ? v.bool_value() : v.int_value(); }

std::string TypeError(const char* what, const Value& a, const Value& b) {
  return std::string("unsupported operand type(s) for ") + what + ": '" + a.TypeName() + "' and '" +
         b.TypeName() + "'";
}

bool IsSpace(char32_t c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
         c == 0x205f || c == 0x3000;
}

// Python's str.strip / lstrip / rstrip (chars undefined / None: whitespace).
std::string Strip(const std::string& s, const Value& chars, bool left, bool right) {
  const std::u32string cs = Utf8ToCodePoints(s);
  std::u32string set;
  const bool ws = chars.is_undefined() || chars.is_none();
  if (!ws) set = Utf8ToCodePoints(chars.ToString());
  std::sort(set.begin(), set.end());
  auto strip = [&](char32_t c) { return ws ? IsSpace(c) : std::binary_search(set.begin(), set.end(), c); };
  size_t b = 0, e = cs.size();
  if (left)
    while (b < e && strip(cs[b])) ++b;
  if (right)
    while (e > b && strip(cs[e - 1])) --e;
  return CodePointsToUtf8(std::u32string_view(cs).substr(b, e - b));
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
std::string Capitalize(const std::string& s) {
  std::string out = Lower(s);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}
// Python's str.title: a letter after a non-letter is upper case, other letters lower case.
std::string Title(const std::string& s) {
  std::string out = s;
  bool prev_letter = false;
  for (char& c : out) {
    const unsigned char u = static_cast<unsigned char>(c);
    const bool letter = std::isalpha(u) || u >= 0x80;
    if (std::isalpha(u)) c = static_cast<char>(prev_letter ? std::tolower(u) : std::toupper(u));
    prev_letter = letter;
  }
  return out;
}

std::string Replace(const std::string& s, const std::string& old, const std::string& repl, int64_t count) {
  ChargeBytes(s.size());
  if (old.empty()) {  // Python inserts repl around every code point
    const std::u32string cs = Utf8ToCodePoints(s);
    std::string out;
    int64_t n = 0;
    for (size_t i = 0; i <= cs.size(); ++i) {
      if (count < 0 || n < count) Append(out, repl), ++n;
      if (i < cs.size()) out += CodePointsToUtf8(std::u32string_view(cs).substr(i, 1));
    }
    return out;
  }
  std::string out;
  size_t pos = 0;
  int64_t n = 0;
  for (;;) {
    const size_t at = (count >= 0 && n >= count) ? std::string::npos : FindText(s, old, pos);
    if (at == std::string::npos) break;
    out.append(s, pos, at - pos);
    Append(out, repl);
    pos = at + old.size();
    ++n;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

// Python's str.split(sep=None, maxsplit=-1).
Array Split(const std::string& s, const Value& sep, int64_t maxsplit) {
  ChargeBytes(s.size());
  Array out;
  if (sep.is_undefined() || sep.is_none()) {
    const std::u32string cs = Utf8ToCodePoints(s);
    size_t i = 0;
    while (i < cs.size()) {
      while (i < cs.size() && IsSpace(cs[i])) ++i;
      if (i >= cs.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
        std::u32string rest = cs.substr(i);
        while (!rest.empty() && IsSpace(rest.back())) rest.pop_back();
        out.push_back(Value::String(CodePointsToUtf8(rest)));
        return out;
      }
      size_t j = i;
      while (j < cs.size() && !IsSpace(cs[j])) ++j;
      out.push_back(Value::String(CodePointsToUtf8(std::u32string_view(cs).substr(i, j - i))));
      i = j;
    }
    return out;
  }
  const std::string d = sep.ToString();
  if (d.empty()) throw Error("empty separator");
  size_t pos = 0;
  for (;;) {
    const size_t at = (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) ? std::string::npos
                                                                                      : FindText(s, d, pos);
    if (at == std::string::npos) break;
    out.push_back(Value::String(s.substr(pos, at - pos)));
    pos = at + d.size();
  }
  out.push_back(Value::String(s.substr(pos)));
  return out;
}

// Python's str.format with {} / {0} / {name} fields (no format specs, no conversions).
std::string Format(const std::string& f, const Args& a) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    const char c = f[i];
    if (c == '{' && i + 1 < f.size() && f[i + 1] == '{') {
      out += '{', ++i;
    } else if (c == '}' && i + 1 < f.size() && f[i + 1] == '}') {
      out += '}', ++i;
    } else if (c == '{') {
      const size_t close = f.find('}', i);
      if (close == std::string::npos) throw Error("str.format: single '{' encountered in format string");
      const std::string field = f.substr(i + 1, close - i - 1);
      if (field.find_first_of(":!.[") != std::string::npos)
        throw Error("str.format: format specs and conversions are not supported ('" + field + "')");
      if (field.empty()) {
        if (auto_index >= a.positional.size()) throw Error("str.format: not enough arguments");
        Append(out, a.positional[auto_index++].ToString());
      } else if (std::all_of(field.begin(), field.end(),
                             [](char d) { return std::isdigit(static_cast<unsigned char>(d)); })) {
        const size_t k = std::stoul(field);
        if (k >= a.positional.size()) throw Error("str.format: index " + field + " out of range");
        Append(out, a.positional[k].ToString());
      } else {
        const Value& v = Arg(a, SIZE_MAX, field.c_str());
        if (v.is_undefined()) throw Error("str.format: no argument named '" + field + "'");
        Append(out, v.ToString());
      }
      i = close;
    } else if (c == '}') {
      throw Error("str.format: single '}' encountered in format string");
    } else {
      out += c;
    }
  }
  return out;
}

bool StartsOrEnds(const std::string& s, const Value& affix, bool start) {
  auto one = [&](const Value& v) {
    if (!v.is_string())
      throw Error(std::string(start ? "startswith" : "endswith") +
                  " first arg must be str or a tuple of str");
    const std::string& x = v.str();
    return x.size() <= s.size() &&
           (start ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0);
  };
  if (affix.is_array()) return std::any_of(affix.array().begin(), affix.array().end(), one);
  return one(affix);
}

Value StringMethod(const Value& self, const std::string& name) {
  // The methods capture the value (a reference to its text), not a copy of the text.
  using F = std::function<Value(Args&)>;
  F f;
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const bool l = name != "rstrip", r = name != "lstrip";
    f = [self, l, r](Args& a) {
      const std::string& s = self.str();
      return Value::String(Strip(s, Arg(a, 0, "chars"), l, r));
    };
  } else if (name == "split") {
    f = [self](Args& a) {
      const std::string& s = self.str();
      const Value& m = Arg(a, 1, "maxsplit");
      return Value::MakeArray(Split(s, Arg(a, 0, "sep"), IsIntLike(m) ? AsInt(m) : -1));
    };
  } else if (name == "startswith" || name == "endswith") {
    const bool start = name == "startswith";
    f = [self, start](Args& a) {
      const std::string& s = self.str();
      return Value::Bool(StartsOrEnds(s, Arg(a, 0, "prefix"), start));
    };
  } else if (name == "upper") {
    f = [self](Args&) {
      const std::string& s = self.str();
      return Value::String(Upper(s));
    };
  } else if (name == "lower") {
    f = [self](Args&) {
      const std::string& s = self.str();
      return Value::String(Lower(s));
    };
  } else if (name == "title") {
    f = [self](Args&) {
      const std::string& s = self.str();
      return Value::String(Title(s));
    };
  } else if (name == "capitalize") {
    f = [self](Args&) {
      const std::string& s = self.str();
      return Value::String(Capitalize(s));
    };
  } else if (name == "replace") {
    f = [self](Args& a) {
      const std::string& s = self.str();
      const Value& n = Arg(a, 2, "count");
      return Value::String(
          Replace(s, Arg(a, 0, "old").ToString(), Arg(a, 1, "new").ToString(), IsIntLike(n) ? AsInt(n) : -1));
    };
  } else if (name == "find" || name == "rfind" || name == "count") {
    f = [self, name](Args& a) {
      const std::string& s = self.str();
      ChargeBytes(s.size());
      const std::string sub = Arg(a, 0, "sub").ToString();
      if (name == "count") {
        if (sub.empty()) return Value::Int(static_cast<int64_t>(Utf8ToCodePoints(s).size()) + 1);
        int64_t n = 0;
        for (size_t p = FindText(s, sub); p != std::string::npos; p = FindText(s, sub, p + sub.size())) ++n;
        return Value::Int(n);
      }
      size_t at = FindText(s, sub);
      if (name == "rfind")  // the last occurrence: each search starts past the one before
        for (size_t next = at; next != std::string::npos; next = FindText(s, sub, at + 1)) at = next;
      return Value::Int(
          at == std::string::npos ? -1 : static_cast<int64_t>(Utf8ToCodePoints(s.substr(0, at)).size()));
    };
  } else if (name == "join") {
    f = [self](Args& a) {
      const std::string& s = self.str();
      std::string out;
      bool first = true;
      for (const Value& v : Iterate(Arg(a, 0, "iterable"), 0)) {
        if (!v.is_string())
          throw Error(std::string("sequence item: expected str instance, ") + v.TypeName() + " found");
        if (!first) Append(out, s);
        Append(out, v.str());
        first = false;
      }
      return Value::String(std::move(out));
    };
  } else if (name == "format") {
    f = [self](Args& a) {
      const std::string& s = self.str();
      return Value::String(Format(s, a));
    };
  } else if (name == "splitlines") {
    f = [self](Args&) {
      const std::string& s = self.str();
      Array out;
      size_t pos = 0;
      while (pos < s.size()) {
        const size_t nl = s.find_first_of("\r\n", pos);
        if (nl == std::string::npos) {
          out.push_back(Value::String(s.substr(pos)));
          break;
        }
        out.push_back(Value::String(s.substr(pos, nl - pos)));
        pos = nl + (s.compare(nl, 2, "\r\n") == 0 ? 2 : 1);
      }
      return Value::MakeArray(std::move(out));
    };
  } else if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isalnum" ||
             name == "isupper" || name == "islower") {
    f = [self, name](Args&) {
      const std::string& s = self.str();
      if (s.empty()) return Value::Bool(false);
      bool cased = false, ok = true;
      for (const unsigned char c : s) {
        if (name == "isdigit") ok &= std::isdigit(c) != 0;
        if (name == "isalpha") ok &= std::isalpha(c) != 0;
        if (name == "isalnum") ok &= std::isalnum(c) != 0;
        if (name == "isspace") ok &= std::isspace(c) != 0;
        if (name == "isupper") ok &= !std::islower(c), cased |= std::isupper(c) != 0;
        if (name == "islower") ok &= !std::isupper(c), cased |= std::islower(c) != 0;
      }
      return Value::Bool(ok && ((name == "isupper" || name == "islower") ? cased : true));
    };
  } else {
    return Value();
  }
  return Value::MakeFunction(std::move(f));
}

[[noreturn]] void Unsafe(const std::string& name, const Value& obj, int line) {
  Fail(line, "access to attribute '" + name + "' of '" + obj.TypeName() +
                 "' object is unsafe (templates cannot modify values)");
}

Value DictMethod(const Value& self, const std::string& name, int line) {
  if (name == "items")
    return Value::MakeFunction([self](Args&) {
      Array out;
      for (const auto& [k, v] : self.object()) out.push_back(Value::MakeArray({k, v}));
      return Value::MakeArray(std::move(out));
    });
  if (name == "keys")
    return Value::MakeFunction([self](Args&) {
      Array out;
      for (const auto& kv : self.object()) out.push_back(kv.first);
      return Value::MakeArray(std::move(out));
    });
  if (name == "values")
    return Value::MakeFunction([self](Args&) {
      Array out;
      for (const auto& kv : self.object()) out.push_back(kv.second);
      return Value::MakeArray(std::move(out));
    });
  if (name == "get")
    return Value::MakeFunction([self](Args& a) {
      const Value& key = Arg(a, 0, "key");
      const Value v = self.Lookup(key);
      if (!v.is_undefined()) return v;
      const Value& def = Arg(a, 1, "default");
      return def.is_undefined() ? Value::None() : def;
    });
  if (name == "copy") return Value::MakeFunction([self](Args&) { return Value::MakeObject(self.object()); });
  if (name == "pop" || name == "update" || name == "setdefault" || name == "clear" || name == "popitem")
    Unsafe(name, self, line);
  return Value();
}

// A dotted attribute path ("function.name") of an item, as map / sort / selectattr take it.
Value Attribute(const Value& item, const std::string& path, int line) {
  Value v = item;
  size_t pos = 0;
  while (pos <= path.size()) {
    const size_t dot = path.find('.', pos);
    const std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    if (v.is_undefined()) return v;
    v = GetItem(v, Value::String(part), line);
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return v;
}

Value SortKey(const Value& v, bool case_sensitive) {
  if (case_sensitive || !v.is_string()) return v;
  ChargeDecode(v.str().size());
  return Value::String(Lower(v.str()));
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// Jinja's indent filter (jinja2 3.x do_indent).
std::string Indent(const std::string& s, const Value& width, bool first, bool blank) {
  const std::string pad =
      width.is_string()
          ? width.str()
          : std::string(
                static_cast<size_t>(std::clamp<int64_t>(IsIntLike(width) ? AsInt(width) : 4, 0, 1 << 20)),
                ' ');
  std::vector<std::string> lines;
  size_t pos = 0;
  const std::string text = s + "\n";
  while (pos < text.size()) {
    const size_t nl = text.find_first_of("\r\n", pos);
    lines.push_back(text.substr(pos, nl - pos));
    pos = nl + (text.compare(nl, 2, "\r\n") == 0 ? 2 : 1);
  }
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) out += "\n";
    if (i > 0 && (blank || !lines[i].empty())) Append(out, pad);
    out += lines[i];
  }
  return first ? pad + out : out;
}

// a + b for strings, within kMaxStringBytes.
std::string Joined(const std::string& a, const std::string& b, int line) {
  if (a.size() + b.size() > kMaxStringBytes) Fail(line, "string longer than 16 MiB");
  ChargeBytes(a.size() + b.size());
  return a + b;
}

Value Filtered(const std::string& name, const Value& v, Args& args, int line, bool select, bool by_attr) {
  // select(test, args...) / reject / selectattr(attr, test, args...) / rejectattr.
  size_t at = 0;
  std::string attr;
  if (by_attr) attr = Arg(args, at++, "attribute").ToString();
  const Value test = at < args.positional.size() ? args.positional[at] : Value();
  Args test_args;
  for (size_t i = at + 1; i < args.positional.size(); ++i) test_args.positional.push_back(args.positional[i]);
  Array out;
  if (!v.Truthy()) return Value::MakeGenerator({});  // jinja2 skips a false value (None) without iterating
  for (const Value& item : Iterate(v, line)) {
    const Value x = by_attr ? Attribute(item, attr, line) : item;
    const bool pass = test.is_undefined() ? x.Truthy() : ApplyTest(test.ToString(), x, test_args, line);
    if (pass == select) out.push_back(item);
  }
  (void)name;
  return Value::MakeGenerator(std::move(out));
}

}  // namespace

Array Iterate(const Value& v, int line) {
  if (v.is_array()) ChargeItems(v.array().size());
  if (v.is_object()) ChargeItems(v.object().size());
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return {};
    case Value::Kind::kArray:
      return v.array();
    case Value::Kind::kObject: {
      Array keys;
      for (const auto& kv : v.object()) keys.push_back(kv.first);
      return keys;
    }
    case Value::Kind::kString: {
      Array chars;
      for (const char32_t c : Utf8ToCodePoints(v.str()))
        chars.push_back(Value::String(CodePointsToUtf8(std::u32string(1, c))));
      return chars;
    }
    default:
      Fail(line, std::string("'") + v.TypeName() + "' object is not iterable");
  }
}

Value GetAttr(const Value& obj, const std::string& name, int line) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      Fail(line, "attribute '" + name + "' of an undefined value");
    case Value::Kind::kObject: {
      if (!obj.is_namespace()) {
        Value m = DictMethod(obj, name, line);
        if (!m.is_undefined()) return m;
      }
      return obj.Get(name);
    }
    case Value::Kind::kString:
      return StringMethod(obj, name);
    case Value::Kind::kArray:
      if (name == "append" || name == "pop" || name == "extend" || name == "insert" || name == "remove" ||
          name == "clear" || name == "sort" || name == "reverse")
        Unsafe(name, obj, line);
      if (name == "index" || name == "count")
        return Value::MakeFunction([obj, name, line](Args& a) {
          const Value& x = Arg(a, 0, "value");
          int64_t n = 0;
          for (size_t i = 0; i < obj.array().size(); ++i) {
            if (!Equal(obj.array()[i], x)) continue;
            if (name == "index") return Value::Int(static_cast<int64_t>(i));
            ++n;
          }
          if (name == "index") Fail(line, x.Repr() + " is not in list");
          return Value::Int(n);
        });
      return Value();
    default:
      return Value();
  }
}

Value GetItem(const Value& obj, const Value& key, int line) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      Fail(line, "item " + key.Repr() + " of an undefined value");
    case Value::Kind::kObject: {
      Value v = obj.Lookup(key);
      if (!v.is_undefined() || obj.is_namespace() || !key.is_string()) return v;
      return DictMethod(obj, key.str(), line);
    }
    case Value::Kind::kArray:
    case Value::Kind::kString: {
      if (obj.is_generator()) Fail(line, "'generator' object is not subscriptable");
      if (!IsIntLike(key)) return key.is_string() ? GetAttr(obj, key.str(), line) : Value();
      int64_t i = AsInt(key);
      if (obj.is_array()) {
        const int64_t n = static_cast<int64_t>(obj.array().size());
        if (i < 0) i += n;
        return i >= 0 && i < n ? obj.array()[static_cast<size_t>(i)] : Value();
      }
      const std::u32string cs = Utf8ToCodePoints(obj.str());
      const int64_t n = static_cast<int64_t>(cs.size());
      if (i < 0) i += n;
      return i >= 0 && i < n ? Value::String(CodePointsToUtf8(std::u32string(1, cs[static_cast<size_t>(i)])))
                             : Value();
    }
    default:
      return Value();
  }
}

Value Slice(const Value& obj, const Value& start_v, const Value& stop_v, const Value& step_v, int line) {
  if (!(obj.is_array() || obj.is_string()) || obj.is_generator())
    Fail(line, std::string("'") + obj.TypeName() + "' object is not subscriptable");
  auto given = [](const Value& v) { return !v.is_undefined() && !v.is_none(); };
  for (const Value* v : {&start_v, &stop_v, &step_v})
    if (given(*v) && !IsIntLike(*v)) Fail(line, "slice indices must be integers or None");
  const std::u32string cs = obj.is_string() ? Utf8ToCodePoints(obj.str()) : std::u32string();
  const int64_t n =
      obj.is_array() ? static_cast<int64_t>(obj.array().size()) : static_cast<int64_t>(cs.size());
  const int64_t step = given(step_v) ? AsInt(step_v) : 1;
  if (step == 0) Fail(line, "slice step cannot be zero");
  auto adjust = [&](const Value& v, int64_t def) {
    if (!given(v)) return def;
    int64_t x = AsInt(v);
    if (x < 0) x += n;
    if (step > 0) return std::clamp<int64_t>(x, 0, n);
    return std::clamp<int64_t>(x, -1, n - 1);
  };
  const int64_t start = adjust(start_v, step > 0 ? 0 : n - 1);
  const int64_t stop = adjust(stop_v, step > 0 ? n : -1);
  Array items;
  std::u32string chars;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (obj.is_array()) {
      items.push_back(obj.array()[static_cast<size_t>(i)]);
    } else {
      chars += cs[static_cast<size_t>(i)];
    }
  }
  return obj.is_array() ? Value::MakeArray(std::move(items)) : Value::String(CodePointsToUtf8(chars));
}

Value BinaryOp(const std::string& op, const Value& a, const Value& b, int line) {
  if (op == "==") return Value::Bool(Equal(a, b));
  if (op == "!=") return Value::Bool(!Equal(a, b));
  if (op == "~") return Value::String(Joined(a.ToString(), b.ToString(), line));
  if (op == "in" || op == "not in") {
    bool in = false;
    if (b.is_string()) {
      if (!a.is_string())
        Fail(line, std::string("'in <string>' requires string as left operand, not ") + a.TypeName());
      in = FindText(b.str(), a.str()) != std::string::npos;
    } else if (b.is_array()) {
      in = std::any_of(b.array().begin(), b.array().end(), [&](const Value& x) { return Equal(x, a); });
    } else if (b.is_object()) {
      in = std::any_of(b.object().begin(), b.object().end(),
                       [&](const auto& kv) { return Equal(kv.first, a); });
    } else if (!b.is_undefined()) {
      Fail(line, std::string("argument of type '") + b.TypeName() + "' is not iterable");
    }
    return Value::Bool(in != (op == "not in"));
  }
  if (op == "<" || op == "<=" || op == ">" || op == ">=") {
    int c = 0;
    try {
      c = Compare(a, b);
    } catch (const Error&) {
      Fail(line, "'" + op + "' not supported between instances of '" + a.TypeName() + "' and '" +
                     b.TypeName() + "'");
    }
    return Value::Bool(op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0);
  }
  if (a.is_undefined() || b.is_undefined()) Fail(line, "an undefined value in '" + op + "'");
  if (op == "+") {
    if (a.is_markup() || b.is_markup()) {  // Markup + str escapes the str (markupsafe)
      if (a.is_string() && b.is_string())
        return Value::Markup(Joined(a.is_markup() ? a.str() : HtmlEscape(a.str()),
                                    b.is_markup() ? b.str() : HtmlEscape(b.str()), line));
    }
    if (a.is_string() && b.is_string()) return Value::String(Joined(a.str(), b.str(), line));
    if (a.is_array() && b.is_array() && !a.is_generator() && !b.is_generator()) {
      if (a.array().size() + b.array().size() > kMaxItems) Fail(line, "list longer than 1,048,576 items");
      Array out = a.array();
      out.insert(out.end(), b.array().begin(), b.array().end());
      return Value::MakeArray(std::move(out));
    }
    if (a.is_string() || b.is_string())
      Fail(line, std::string("can only concatenate str (not \"") + (a.is_string() ? b : a).TypeName() +
                     "\") to str");
  }
  if (op == "*") {
    const Value* seq = a.is_string() || a.is_array() ? &a : b.is_string() || b.is_array() ? &b : nullptr;
    const Value* count = seq == &a ? &b : &a;
    if (seq && IsIntLike(*count)) {
      const int64_t n = std::max<int64_t>(0, AsInt(*count));
      const size_t unit = seq->is_string() ? seq->str().size() : seq->array().size();
      if (unit && static_cast<uint64_t>(n) > (seq->is_string() ? kMaxStringBytes : kMaxItems) / unit)
        Fail(line, "repetition too large");
      if (seq->is_string()) {
        std::string out;
        for (int64_t i = 0; i < n; ++i) out += seq->str();
        return Value::String(std::move(out));
      }
      Array out;
      for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq->array().begin(), seq->array().end());
      return Value::MakeArray(std::move(out));
    }
  }
  if (!IsNum(a) || !IsNum(b)) Fail(line, TypeError(op.c_str(), a, b));
  const bool ints = IsIntLike(a) && IsIntLike(b);
  const double x = a.number(), y = b.number();
  if (op == "/") {
    if (y == 0) Fail(line, "division by zero");
    return Value::Float(x / y);
  }
  if (ints) {
    const int64_t i = AsInt(a), j = AsInt(b);
    int64_t r = 0;
    if (op == "+" && !__builtin_add_overflow(i, j, &r)) return Value::Int(r);
    if (op == "-" && !__builtin_sub_overflow(i, j, &r)) return Value::Int(r);
    if (op == "*" && !__builtin_mul_overflow(i, j, &r)) return Value::Int(r);
    if (op == "//" || op == "%") {
      if (j == 0) Fail(line, "integer division or modulo by zero");
      if (i == INT64_MIN && j == -1) Fail(line, "integer overflow");
      int64_t q = i / j, m = i % j;
      if (m != 0 && ((m < 0) != (j < 0))) --q, m += j;
      return Value::Int(op == "//" ? q : m);
    }
    if (op == "**" && j >= 0) {
      int64_t p = 1;
      bool overflow = false;
      for (int64_t k = 0; k < j && !overflow; ++k) overflow = __builtin_mul_overflow(p, i, &p);
      if (!overflow) return Value::Int(p);
    }
    if (op == "+" || op == "-" || op == "*" || op == "**") Fail(line, "integer overflow in '" + op + "'");
  }
  if (op == "+") return Value::Float(x + y);
  if (op == "-") return Value::Float(x - y);
  if (op == "*") return Value::Float(x * y);
  if (op == "**") return Value::Float(std::pow(x, y));
  if (op == "//" || op == "%") {
    if (y == 0) Fail(line, "float division by zero");
    double m = std::fmod(x, y);
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    return Value::Float(op == "%" ? m : std::floor((x - m) / y + 0.5));
  }
  Fail(line, "unknown operator '" + op + "'");
}

Value ApplyFilter(const std::string& name, const Value& v, Args& a, int line) {
  try {
    if (name == "trim") {
      std::string s = Strip(v.ToString(), Arg(a, 0, "chars"), true, true);
      return v.is_markup() ? Value::Markup(std::move(s)) : Value::String(std::move(s));
    }
    if (name == "length" || name == "count") {
      if (v.is_generator()) Fail(line, "object of type 'generator' has no len()");
      if (v.is_string()) return Value::Int(static_cast<int64_t>(Utf8ToCodePoints(v.str()).size()));
      if (v.is_array()) return Value::Int(static_cast<int64_t>(v.array().size()));
      if (v.is_object()) return Value::Int(static_cast<int64_t>(v.object().size()));
      if (v.is_undefined()) return Value::Int(0);
      Fail(line, std::string("object of type '") + v.TypeName() + "' has no len()");
    }
    if (name == "tojson") {
      Value::JsonOptions o;
      o.ensure_ascii = Arg(a, 0, "ensure_ascii").Truthy();
      const Value& indent = Arg(a, 1, "indent");
      if (IsIntLike(indent)) o.indent = static_cast<int>(std::clamp<int64_t>(AsInt(indent), 0, 64));
      const Value& seps = Arg(a, 2, "separators");
      std::string item_sep, key_sep;
      if (seps.is_array() && seps.array().size() == 2) {
        item_sep = seps.array()[0].ToString(), key_sep = seps.array()[1].ToString();
        o.item_separator = item_sep.c_str(), o.key_separator = key_sep.c_str();
      }
      o.sort_keys = Arg(a, 3, "sort_keys").Truthy();
      // A generator (map / select's result) is written as the list of its items, as llama.cpp's
      // engine does (templates written for it, e.g. its DeepSeek R1 one, rely on it); jinja2 raises.
      if (v.is_generator()) return Value::String(Value::MakeArray(Iterate(v, line)).ToJson(o));
      return Value::String(v.ToJson(o));
    }
    if (name == "string") return v.is_string() ? v : Value::String(v.ToString());
    if (name == "safe") return v.is_markup() ? v : Value::Markup(v.ToString());
    if (name == "escape" || name == "e") return v.is_markup() ? v : Value::Markup(HtmlEscape(v.ToString()));
    if (name == "upper") return Value::String(Upper(v.ToString()));
    if (name == "lower") return Value::String(Lower(v.ToString()));
    if (name == "capitalize") return Value::String(Capitalize(v.ToString()));
    if (name == "title") return Value::String(Title(v.ToString()));
    if (name == "replace") {
      const Value& n = Arg(a, 2, "count");
      return Value::String(Replace(v.ToString(), Arg(a, 0, "old").ToString(), Arg(a, 1, "new").ToString(),
                                   IsIntLike(n) ? AsInt(n) : -1));
    }
    if (name == "default" || name == "d") {
      const bool boolean = Arg(a, 1, "boolean").Truthy();
      if (v.is_undefined() || (boolean && !v.Truthy())) {
        const Value& def = Arg(a, 0, "default_value");
        return def.is_undefined() ? Value::String("") : def;
      }
      return v;
    }
    if (name == "first" || name == "last") {
      const Array items = Iterate(v, line);
      if (items.empty()) return Value();
      return name == "first" ? items.front() : items.back();
    }
    if (name == "join") {
      const std::string sep = Arg(a, 0, "d").is_undefined() ? "" : Arg(a, 0, "d").ToString();
      const Value& attr = Arg(a, 1, "attribute");
      std::string out;
      bool first = true;
      for (const Value& item : Iterate(v, line)) {
        if (!first) Append(out, sep);
        Append(out, (attr.is_undefined() ? item : Attribute(item, attr.ToString(), line)).ToString());
        first = false;
      }
      return Value::String(std::move(out));
    }
    if (name == "list") return Value::MakeArray(Iterate(v, line));
    if (name == "items") {
      if (v.is_undefined()) return Value::MakeArray({});
      if (!v.is_object()) Fail(line, std::string("items filter: '") + v.TypeName() + "' is not a mapping");
      Array out;
      for (const auto& [k, x] : v.object()) out.push_back(Value::MakeArray({k, x}));
      return Value::MakeArray(std::move(out));
    }
    if (name == "dictsort") {
      if (!v.is_object()) Fail(line, std::string("dictsort: '") + v.TypeName() + "' is not a mapping");
      const bool cs = Arg(a, 0, "case_sensitive").Truthy();
      const bool by_value = Arg(a, 1, "by").is_string() && Arg(a, 1, "by").str() == "value";
      const bool reverse = Arg(a, 2, "reverse").Truthy();
      Object items = v.object();
      std::stable_sort(items.begin(), items.end(), [&](const auto& x, const auto& y) {
        const Value kx = SortKey(by_value ? x.second : x.first, cs);
        const Value ky = SortKey(by_value ? y.second : y.first, cs);
        return reverse ? Compare(ky, kx) < 0 : Compare(kx, ky) < 0;
      });
      Array out;
      for (const auto& [k, x] : items) out.push_back(Value::MakeArray({k, x}));
      return Value::MakeArray(std::move(out));
    }
    if (name == "sort" || name == "unique" || name == "min" || name == "max") {
      const bool is_sort = name == "sort";
      const bool reverse = is_sort && Arg(a, 0, "reverse").Truthy();
      const bool cs = Arg(a, is_sort ? 1 : 0, "case_sensitive").Truthy();
      const Value& attr = Arg(a, is_sort ? 2 : 1, "attribute");
      Array items = Iterate(v, line);
      // Each item's key once (lower-cased copies are not cheap), then the items in key order.
      std::vector<Value> keys;
      keys.reserve(items.size());
      for (const Value& x : items)
        keys.push_back(SortKey(attr.is_undefined() ? x : Attribute(x, attr.ToString(), line), cs));
      if (name == "unique") {
        Array out, seen;
        for (size_t i = 0; i < items.size(); ++i) {
          if (std::none_of(seen.begin(), seen.end(), [&](const Value& k) { return Equal(k, keys[i]); }))
            seen.push_back(keys[i]), out.push_back(items[i]);
        }
        return Value::MakeGenerator(std::move(out));
      }
      if (items.empty()) return Value();
      std::vector<size_t> order(items.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
        return reverse ? Compare(keys[y], keys[x]) < 0 : Compare(keys[x], keys[y]) < 0;
      });
      Array sorted;
      sorted.reserve(items.size());
      for (const size_t i : order) sorted.push_back(items[i]);
      items = std::move(sorted);
      if (name == "min") return items.front();
      if (name == "max") return items.back();
      return Value::MakeArray(std::move(items));
    }
    if (name == "reverse") {
      if (v.is_string()) {
        std::u32string cs = Utf8ToCodePoints(v.str());
        std::reverse(cs.begin(), cs.end());
        return Value::String(CodePointsToUtf8(cs));
      }
      Array items = Iterate(v, line);
      std::reverse(items.begin(), items.end());
      return Value::MakeGenerator(std::move(items));
    }
    if (name == "map") {
      Array out;
      const Value& attr = Arg(a, SIZE_MAX, "attribute");
      Args rest;
      for (size_t i = 1; i < a.positional.size(); ++i) rest.positional.push_back(a.positional[i]);
      for (const Value& item : v.Truthy() ? Iterate(v, line) : Array()) {
        if (!attr.is_undefined()) {
          Value x = Attribute(item, attr.ToString(), line);
          if (x.is_undefined()) x = Arg(a, SIZE_MAX, "default");
          out.push_back(x);
        } else {
          if (a.positional.empty()) Fail(line, "map: needs a filter name or attribute=");
          out.push_back(ApplyFilter(a.positional[0].ToString(), item, rest, line));
        }
      }
      return Value::MakeGenerator(std::move(out));
    }
    if (name == "select" || name == "reject") return Filtered(name, v, a, line, name == "select", false);
    if (name == "selectattr" || name == "rejectattr")
      return Filtered(name, v, a, line, name == "selectattr", true);
    if (name == "sum") {
      const Value& attr = Arg(a, 0, "attribute");
      Value total = Arg(a, 1, "start").is_undefined() ? Value::Int(0) : Arg(a, 1, "start");
      for (const Value& item : Iterate(v, line))
        total =
            BinaryOp("+", total, attr.is_undefined() ? item : Attribute(item, attr.ToString(), line), line);
      return total;
    }
    if (name == "int" || name == "float") {
      const Value& def = Arg(a, 0, "default");
      const Value fallback = def.is_undefined() ? (name == "int" ? Value::Int(0) : Value::Float(0)) : def;
      double d = 0;
      if (IsNum(v)) {
        d = v.number();
        if (name == "int" && IsIntLike(v)) return Value::Int(AsInt(v));
      } else if (v.is_string()) {
        const std::string s = Strip(v.str(), Value(), true, true);
        char* end = nullptr;
        d = std::strtod(s.c_str(), &end);
        if (s.empty() || end != s.c_str() + s.size()) return fallback;
      } else {
        return fallback;
      }
      if (name == "float") return Value::Float(d);
      if (!std::isfinite(d) || std::fabs(d) > 9.2e18) return fallback;
      return Value::Int(static_cast<int64_t>(d));
    }
    if (name == "abs") {
      if (IsIntLike(v)) return Value::Int(std::llabs(AsInt(v)));
      if (v.is_number()) return Value::Float(std::fabs(v.number()));
      Fail(line, std::string("bad operand type for abs(): '") + v.TypeName() + "'");
    }
    if (name == "round") {
      const int64_t precision = IsIntLike(Arg(a, 0, "precision")) ? AsInt(Arg(a, 0, "precision")) : 0;
      const std::string method = Arg(a, 1, "method").is_string() ? Arg(a, 1, "method").str() : "common";
      const double scale = std::pow(10.0, static_cast<double>(std::clamp<int64_t>(precision, -300, 300)));
      const double x = v.number() * scale;
      const double r = method == "ceil"    ? std::ceil(x)
                       : method == "floor" ? std::floor(x)
                                           : std::nearbyint(x);
      return Value::Float(r / scale);
    }
    if (name == "indent")
      return Value::String(
          Indent(v.ToString(), Arg(a, 0, "width"), Arg(a, 1, "first").Truthy(), Arg(a, 2, "blank").Truthy()));
  } catch (const Error& e) {
    const std::string m = e.what();
    if (m.rfind("chat template", 0) == 0) throw;
    Fail(line, name + " filter: " + m);
  }
  Fail(line, "no filter named '" + name + "'");
}

bool ApplyTest(const std::string& name, const Value& v, Args& a, int line) {
  using K = Value::Kind;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return IsNum(v);
  if (name == "integer") return v.kind() == K::kInt;
  if (name == "float") return v.kind() == K::kFloat;
  if (name == "boolean") return v.kind() == K::kBool;
  if (name == "true") return v.kind() == K::kBool && v.bool_value();
  if (name == "false") return v.kind() == K::kBool && !v.bool_value();
  if (name == "mapping") return v.is_object() && !v.is_namespace();
  if (name == "iterable") return v.is_string() || v.is_array() || v.is_object() || v.is_undefined();
  if (name == "sequence")
    return v.is_string() || (v.is_array() && !v.is_generator()) || v.is_object() || v.is_undefined();
  if (name == "callable") return v.is_function();
  if (name == "lower") return v.is_string() && Lower(v.str()) == v.str();
  if (name == "upper") return v.is_string() && Upper(v.str()) == v.str();
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!IsIntLike(v)) Fail(line, "test '" + name + "' needs an integer, got " + v.TypeName());
    if (name == "divisibleby") {
      const Value& d = Arg(a, 0, "num");
      if (!IsIntLike(d) || AsInt(d) == 0) Fail(line, "divisibleby needs a non-zero integer");
      return AsInt(v) % AsInt(d) == 0;
    }
    return (AsInt(v) % 2 != 0) == (name == "odd");
  }
  const Value& other = Arg(a, 0, "other");
  if (name == "eq" || name == "equalto" || name == "==") return Equal(v, other);
  if (name == "ne" || name == "!=") return !Equal(v, other);
  if (name == "sameas") return Equal(v, other) && v.kind() == other.kind();
  if (name == "in") return BinaryOp("in", v, other, line).bool_value();
  if (name == "lt" || name == "lessthan" || name == "<") return BinaryOp("<", v, other, line).bool_value();
  if (name == "le" || name == "<=") return BinaryOp("<=", v, other, line).bool_value();
  if (name == "gt" || name == "greaterthan" || name == ">") return BinaryOp(">", v, other, line).bool_value();
  if (name == "ge" || name == ">=") return BinaryOp(">=", v, other, line).bool_value();
  Fail(line, "no test named '" + name + "'");
}

Value Range(Args& a) {
  int64_t start = 0, stop = 0, step = 1;
  for (const Value& v : a.positional)
    if (!IsIntLike(v)) throw Error(std::string("range() takes integers, got ") + v.TypeName());
  if (a.positional.size() == 1) {
    stop = AsInt(a.positional[0]);
  } else if (a.positional.size() == 2 || a.positional.size() == 3) {
    start = AsInt(a.positional[0]), stop = AsInt(a.positional[1]);
    if (a.positional.size() == 3) step = AsInt(a.positional[2]);
  } else {
    throw Error("range() takes 1 to 3 arguments");
  }
  if (step == 0) throw Error("range() arg 3 must not be zero");
  Array out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (static_cast<int64_t>(out.size()) >= kMaxRange)
      throw Error("range() too big (more than 100000 items)");
    out.push_back(Value::Int(i));
  }
  return Value::MakeArray(std::move(out));
}

Value MakeNamespace(Args& a) {
  Object o;
  auto put = [&](const Value& k, const Value& v) {
    for (auto& [ok, ov] : o)
      if (Equal(ok, k)) {
        ov = v;
        return;
      }
    o.emplace_back(k, v);
  };
  for (const Value& p : a.positional) {
    if (!p.is_object()) throw Error("namespace() takes a dict or keyword arguments");
    for (const auto& [k, v] : p.object()) put(k, v);
  }
  for (const auto& [k, v] : a.keyword) put(Value::String(k), v);
  return Value::MakeNamespace(std::move(o));
}

std::string StrftimeNow(const std::string& format, const std::string& now) {
  std::tm tm{};
  if (now.empty()) {
    const std::time_t t = std::time(nullptr);
    localtime_r(&t, &tm);
  } else {
    int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
    if (std::sscanf(now.c_str(), "%d-%d-%d%*c%d:%d:%d", &y, &mo, &d, &h, &mi, &s) != 6)
      throw Error("strftime_now: the fixed time '" + now + "' is not YYYY-MM-DD HH:MM:SS");
    tm.tm_year = y - 1900, tm.tm_mon = mo - 1, tm.tm_mday = d, tm.tm_hour = h, tm.tm_min = mi, tm.tm_sec = s;
    const std::time_t t = timegm(&tm);  // fills in the weekday and day of the year
    gmtime_r(&t, &tm);
  }
  if (format.size() > 256) throw Error("strftime_now: format longer than 256 bytes");
  char buf[1024];
  const size_t n = std::strftime(buf, sizeof buf, format.c_str(), &tm);
  return std::string(buf, n);
}

}  // namespace attn::jinja
