// The values of the Jinja interpreter (jinja.h): what Python gives a chat template to work with.
//
// Chat templates are Jinja2 run by Python (Hugging Face transformers), so values follow Python's
// rules: dicts keep insertion order, `{{ x }}` prints Python's str() (True, None, ['a', 1]),
// truthiness of empty strings / lists / dicts is false, strings are sequences of code points.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace attn::jinja {

class Value;
constexpr int kMaxValueDepth = 256;
constexpr size_t kMaxStringBytes = size_t{16} << 20;
constexpr size_t kMaxItems = size_t{1} << 20;
using Array = std::vector<Value>;
using Object = std::vector<std::pair<Value, Value>>;  // insertion order, keys unique (str, int, ...)

// The arguments of a call: positional, then keyword.
struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};
using Function = std::function<Value(Args&)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kArray, kObject, kFunction };

  Value() = default;  // undefined
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double d);
  static Value String(std::string s);
  // markupsafe's Markup (what |safe and |escape return): adding a plain str to it escapes the str.
  static Value Markup(std::string s);
  static Value MakeArray(Array a);
  static Value MakeObject(Object o);
  // A namespace() object: the one kind whose attributes a template may assign.
  static Value MakeNamespace(Object o);
  static Value MakeFunction(Function f);
  // What jinja2's map / select / reject / selectattr / rejectattr return: a Python generator, which
  // can be iterated but has no length and is not JSON (templates that rely on either fail in
  // jinja2, and so here).
  static Value MakeGenerator(Array a);
  static Value FromJson(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_markup() const { return kind_ == Kind::kString && markup_; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_namespace() const { return kind_ == Kind::kObject && namespace_; }
  bool is_function() const { return kind_ == Kind::kFunction; }
  bool is_generator() const { return kind_ == Kind::kArray && generator_; }
  // Whether a namespace or a function (which may capture one) is in this value: such a value cannot
  // be stored in a namespace, which keeps values acyclic (namespaces are the only mutable values).
  bool holds_namespace() const { return holds_namespace_; }

  bool bool_value() const { return b_; }
  int64_t int_value() const { return i_; }
  double number() const {
    return kind_ == Kind::kFloat ? d_ : kind_ == Kind::kBool ? b_ : static_cast<double>(i_);
  }
  const std::string& str() const { return *s_; }
  const Array& array() const { return *a_; }
  const Object& object() const { return *o_; }
  Object& mutable_object() const { return *o_; }  // namespaces only
  const Function& function() const { return *f_; }

  // A dict's value for a str key / any key, or undefined.
  Value Get(std::string_view key) const;
  Value Lookup(const Value& key) const;
  bool Truthy() const;
  // Python's str() (what `{{ x }}` prints; undefined prints nothing) and repr().
  std::string ToString() const;
  std::string Repr() const;
  // json.dumps(x, ensure_ascii=..., indent=indent (< 0: None), separators=..., sort_keys=...), as
  // transformers' tojson filter; separators default to (", ", ": "), or (",", ": ") when indenting.
  struct JsonOptions {
    int indent = -1;
    bool ensure_ascii = false;
    bool sort_keys = false;
    const char* item_separator = nullptr;
    const char* key_separator = nullptr;
  };
  std::string ToJson(const JsonOptions& options) const;
  const char* TypeName() const;

 private:
  void Adopt(const Value& child);  // a list's or dict's element: depth and holds_namespace

  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  bool namespace_ = false;
  bool generator_ = false;
  bool markup_ = false;
  bool holds_namespace_ = false;
  uint16_t depth_ = 0;  // nesting of lists and dicts, at most kMaxValueDepth
  int64_t i_ = 0;
  double d_ = 0;
  std::shared_ptr<const std::string> s_;
  std::shared_ptr<const Array> a_;
  std::shared_ptr<Object> o_;
  std::shared_ptr<const Function> f_;
};

// The work of one render on this thread, in units of about a byte copied or compared, or an item
// visited: every primitive whose cost grows with its data charges it, so that a hostile template
// (sorting a million copies of a 16 MiB string, printing them) ends with attn::Error instead of
// running for hours. WorkBudget installs a fresh budget for its lifetime (Template::Render);
// Charge outside one does nothing.
// A unit is about a nanosecond of this machine's time, so the budget is about a second.
constexpr int64_t kMaxWork = int64_t{1} << 30;
void Charge(int64_t units);
inline void ChargeBytes(size_t n) { Charge(static_cast<int64_t>(n / 4) + 1); }   // copied, compared
inline void ChargeDecode(size_t n) { Charge(2 * static_cast<int64_t>(n) + 1); }  // UTF-8 <-> code points
inline void ChargeItems(size_t n) { Charge(16 * static_cast<int64_t>(n) + 1); }  // values copied
class WorkBudget {
 public:
  WorkBudget();
  ~WorkBudget();
  WorkBudget(const WorkBudget&) = delete;
  WorkBudget& operator=(const WorkBudget&) = delete;

 private:
  int64_t used_ = 0;
  WorkBudget* outer_;
};

// Python's ==, and <, > for numbers and strings (a TypeError otherwise: attn::Error).
bool Equal(const Value& a, const Value& b);
int Compare(const Value& a, const Value& b);

// Python's repr() of a float (shortest round trip: 1.0, 0.1, 1e-05, 1e+16).
std::string FloatRepr(double d);

// UTF-8 <-> code points (Python indexes strings by code point). Invalid bytes map to U+FFFD.
std::u32string Utf8ToCodePoints(std::string_view s);
std::string CodePointsToUtf8(std::u32string_view s);

}  // namespace attn::jinja
