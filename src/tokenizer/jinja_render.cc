// Rendering a parsed chat template (jinja.h): statements, expressions with Python's semantics,
// and the attribute / item lookup of jinja2's sandbox (dict attributes fall back to items; a
// missing item is undefined, and using an undefined value is an error).
#include <algorithm>
#include <cmath>
#include <ctime>
#include <unordered_map>

#include "attn/error.h"
#include "tokenizer/jinja.h"
#include "tokenizer/jinja_builtins.h"

namespace attn::jinja {
namespace {

constexpr int kMaxCallDepth = 64;

enum class Flow { kNormal, kBreak, kContinue };

class Renderer {
 public:
  Renderer(const RenderOptions& options, std::string* out) : options_(options), out_(out) {}

  void PushScope() { scopes_.emplace_back(); }
  void PopScope() { scopes_.pop_back(); }
  void Define(const std::string& name, Value v) { scopes_.back()[name] = std::move(v); }

  Value Lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      const auto found = it->find(name);
      if (found != it->end()) return found->second;
    }
    return Value();
  }

  void Emit(const std::string& s, int line) {
    if (out_->size() + s.size() > kMaxStringBytes) Fail(line, "output larger than 16 MiB");
    *out_ += s;
  }

  void Step(int line) {
    if (++steps_ > kMaxSteps) Fail(line, "the template ran more than 5,000,000 steps");
    Charge(64);
  }

  Flow Exec(const Body& body) {
    for (const Node& n : body) {
      Step(n.line);
      const Flow f = ExecNode(n);
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

  // Renders body into a string of its own (macros, set blocks, filter blocks).
  std::string Capture(const Body& body, int line) {
    std::string captured;
    std::string* saved = out_;
    out_ = &captured;
    try {
      const Flow f = Exec(body);
      if (f != Flow::kNormal) Fail(line, "break / continue outside a loop");
    } catch (...) {
      out_ = saved;
      throw;
    }
    out_ = saved;
    return captured;
  }

  Value Eval(const Expr& e);

 private:
  Flow ExecNode(const Node& n);
  Flow ExecFor(const Node& n);
  Value CallMacro(const Node& macro, Args& args, int line);

  const RenderOptions& options_;
  std::string* out_;
  std::vector<std::unordered_map<std::string, Value>> scopes_;
  int call_depth_ = 0;
  int64_t steps_ = 0;
};

Flow Renderer::ExecNode(const Node& n) {
  switch (n.kind) {
    case Node::Kind::kText:
      Emit(n.text, n.line);
      return Flow::kNormal;
    case Node::Kind::kOutput:
      Emit(Eval(*n.expr).ToString(), n.line);
      return Flow::kNormal;
    case Node::Kind::kIf:
      for (const auto& [cond, body] : n.branches) {
        if (!cond || Eval(*cond).Truthy()) return Exec(body);
      }
      return Flow::kNormal;
    case Node::Kind::kFor:
      return ExecFor(n);
    case Node::Kind::kSet: {
      Value v = Eval(*n.expr);
      if (!n.attr.empty()) {
        const Value ns = Lookup(n.text);
        if (!ns.is_namespace())
          Fail(n.line, "cannot assign attribute '" + n.attr + "' of '" + n.text + "' (not a namespace)");
        if (v.holds_namespace())
          Fail(n.line, "cannot store a namespace or function in namespace attribute '" + n.attr + "'");
        Object& o = ns.mutable_object();
        for (auto& [k, old] : o) {
          if (k.is_string() && k.str() == n.attr) {
            old = std::move(v);
            return Flow::kNormal;
          }
        }
        o.emplace_back(Value::String(n.attr), std::move(v));
        return Flow::kNormal;
      }
      if (n.targets.size() == 1) {
        Define(n.targets[0], std::move(v));
        return Flow::kNormal;
      }
      const Array items = Iterate(v, n.line);
      if (items.size() != n.targets.size())
        Fail(n.line, "cannot unpack " + std::to_string(items.size()) + " values into " +
                         std::to_string(n.targets.size()) + " names");
      for (size_t i = 0; i < items.size(); ++i) Define(n.targets[i], items[i]);
      return Flow::kNormal;
    }
    case Node::Kind::kSetBlock:
      Define(n.text, Value::String(Capture(n.body, n.line)));
      return Flow::kNormal;
    case Node::Kind::kMacro: {
      const Node* macro = &n;
      Define(n.text,
             Value::MakeFunction([this, macro](Args& args) { return CallMacro(*macro, args, macro->line); }));
      return Flow::kNormal;
    }
    case Node::Kind::kBreak:
      return Flow::kBreak;
    case Node::Kind::kContinue:
      return Flow::kContinue;
    case Node::Kind::kBlock:
      return Exec(n.body);
    case Node::Kind::kFilterBlock: {
      Args none;
      Emit(ApplyFilter(n.text, Value::String(Capture(n.body, n.line)), none, n.line).ToString(), n.line);
      return Flow::kNormal;
    }
  }
  return Flow::kNormal;
}

Flow Renderer::ExecFor(const Node& n) {
  const Value seq = Eval(*n.expr);
  Array items = Iterate(seq, n.line);
  PushScope();
  struct Pop {
    Renderer* r;
    ~Pop() { r->PopScope(); }
  } pop{this};
  auto bind = [&](const Value& item) {
    if (n.targets.size() == 1) {
      Define(n.targets[0], item);
      return;
    }
    const Array parts = Iterate(item, n.line);
    if (parts.size() != n.targets.size())
      Fail(n.line, "cannot unpack " + std::to_string(parts.size()) + " values into " +
                       std::to_string(n.targets.size()) + " loop variables");
    for (size_t i = 0; i < parts.size(); ++i) Define(n.targets[i], parts[i]);
  };
  if (n.filter) {  // `for x in xs if cond`: the loop (and loop.length) sees only the items that pass
    Array kept;
    for (const Value& item : items) {
      bind(item);
      if (Eval(*n.filter).Truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  const int64_t length = static_cast<int64_t>(items.size());
  // One loop object per loop, its values updated in place each iteration (building one per
  // iteration was most of a loop's cost). Keys in order: index, index0, revindex, revindex0,
  // first, last, length, depth, depth0, previtem, nextitem, cycle.
  auto at = std::make_shared<int64_t>(0);
  Object fields;
  for (const char* key : {"index", "index0", "revindex", "revindex0", "first", "last", "length", "depth",
                          "depth0", "previtem", "nextitem"})
    fields.emplace_back(Value::String(key), Value());
  fields.emplace_back(Value::String("cycle"), Value::MakeFunction([at](Args& a) {
                        if (a.positional.empty()) throw Error("chat template: loop.cycle() needs arguments");
                        return a.positional[static_cast<size_t>(*at) % a.positional.size()];
                      }));
  const Value loop = Value::MakeObject(std::move(fields));
  Object& f = loop.mutable_object();
  for (int64_t i = 0; i < length; ++i) {
    Step(n.line);
    bind(items[static_cast<size_t>(i)]);
    *at = i;
    f[0].second = Value::Int(i + 1);
    f[1].second = Value::Int(i);
    f[2].second = Value::Int(length - i);
    f[3].second = Value::Int(length - i - 1);
    f[4].second = Value::Bool(i == 0);
    f[5].second = Value::Bool(i == length - 1);
    f[6].second = Value::Int(length);
    f[7].second = Value::Int(1);
    f[8].second = Value::Int(0);
    f[9].second = i > 0 ? items[static_cast<size_t>(i - 1)] : Value();
    f[10].second = i + 1 < length ? items[static_cast<size_t>(i + 1)] : Value();
    Define("loop", loop);
    if (Exec(n.body) == Flow::kBreak) break;
  }
  if (length == 0) Exec(n.else_body);
  return Flow::kNormal;
}

Value Renderer::CallMacro(const Node& macro, Args& args, int line) {
  if (call_depth_ >= kMaxCallDepth) Fail(line, "macro calls nested too deeply (recursion?)");
  if (args.positional.size() > macro.params.size())
    Fail(line, "macro '" + macro.text + "' takes " + std::to_string(macro.params.size()) +
                   " arguments, got " + std::to_string(args.positional.size()));
  PushScope();
  ++call_depth_;
  struct Restore {
    Renderer* r;
    ~Restore() {
      --r->call_depth_;
      r->PopScope();
    }
  } restore{this};
  for (size_t i = 0; i < macro.params.size(); ++i) {
    const auto& [name, def] = macro.params[i];
    Value v;
    bool given = false;
    if (i < args.positional.size()) {
      v = args.positional[i];
      given = true;
    }
    for (const auto& [k, kv] : args.keyword) {
      if (k == name) v = kv, given = true;
    }
    if (!given && def) v = Eval(*def);
    Define(name, std::move(v));
  }
  for (const auto& [k, kv] : args.keyword) {
    bool known = false;
    for (const auto& p : macro.params) known |= p.first == k;
    if (!known) Fail(line, "macro '" + macro.text + "' has no parameter '" + k + "'");
  }
  return Value::String(Capture(macro.body, line));
}

Value Renderer::Eval(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::kLiteral:
      return e.value;
    case Expr::Kind::kName:
      return Lookup(e.name);
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      Array a;
      a.reserve(e.args.size());
      for (const ExprPtr& x : e.args) a.push_back(Eval(*x));
      return Value::MakeArray(std::move(a));
    }
    case Expr::Kind::kDict: {
      Object o;
      for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
        Value key = Eval(*e.args[i]);
        if (key.is_undefined() || key.is_array() || key.is_object())
          Fail(e.line, std::string("unhashable dict key: ") + key.TypeName());
        Value v = Eval(*e.args[i + 1]);
        bool replaced = false;
        for (auto& [ok, ov] : o) {
          if (Equal(ok, key)) ov = v, replaced = true;
        }
        if (!replaced) o.emplace_back(std::move(key), std::move(v));
      }
      return Value::MakeObject(std::move(o));
    }
    case Expr::Kind::kAttr:
      return GetAttr(Eval(*e.args[0]), e.name, e.line);
    case Expr::Kind::kItem:
      return GetItem(Eval(*e.args[0]), Eval(*e.args[1]), e.line);
    case Expr::Kind::kSlice: {
      Value parts[3];
      for (int k = 0; k < 3; ++k)
        if (e.args[static_cast<size_t>(k) + 1]) parts[k] = Eval(*e.args[static_cast<size_t>(k) + 1]);
      return Slice(Eval(*e.args[0]), parts[0], parts[1], parts[2], e.line);
    }
    case Expr::Kind::kCall: {
      const Value callee = Eval(*e.args[0]);
      Args args;
      for (size_t i = 1; i < e.args.size(); ++i) args.positional.push_back(Eval(*e.args[i]));
      for (const auto& [k, x] : e.kwargs) args.keyword.emplace_back(k, Eval(*x));
      if (!callee.is_function()) {
        const std::string what = e.args[0]->kind == Expr::Kind::kName   ? "'" + e.args[0]->name + "'"
                                 : e.args[0]->kind == Expr::Kind::kAttr ? "'" + e.args[0]->name + "'"
                                                                        : "the value";
        Fail(e.line,
             what + (callee.is_undefined() ? " is undefined"
                                           : " is not callable (" + std::string(callee.TypeName()) + ")"));
      }
      try {
        return callee.function()(args);
      } catch (const Error& err) {
        const std::string m = err.what();
        if (m.rfind("chat template", 0) == 0) throw;
        Fail(e.line, m);
      }
    }
    case Expr::Kind::kFilter: {
      const Value v = Eval(*e.args[0]);
      Args args;
      for (size_t i = 1; i < e.args.size(); ++i) args.positional.push_back(Eval(*e.args[i]));
      for (const auto& [k, x] : e.kwargs) args.keyword.emplace_back(k, Eval(*x));
      return ApplyFilter(e.name, v, args, e.line);
    }
    case Expr::Kind::kTest: {
      const Value v = Eval(*e.args[0]);
      Args args;
      for (size_t i = 1; i < e.args.size(); ++i) args.positional.push_back(Eval(*e.args[i]));
      return Value::Bool(ApplyTest(e.name, v, args, e.line) != e.negated);
    }
    case Expr::Kind::kUnary: {
      const Value v = Eval(*e.args[0]);
      if (e.name == "not") return Value::Bool(!v.Truthy());
      if (v.kind() == Value::Kind::kInt) return Value::Int(e.name == "-" ? -v.int_value() : v.int_value());
      if (v.kind() == Value::Kind::kBool)
        return Value::Int(e.name == "-" ? -int64_t{v.bool_value()} : v.bool_value());
      if (v.kind() == Value::Kind::kFloat) return Value::Float(e.name == "-" ? -v.number() : v.number());
      Fail(e.line, "bad operand type for unary " + e.name + ": '" + v.TypeName() + "'");
    }
    case Expr::Kind::kBinary: {
      const Value a = Eval(*e.args[0]);
      if (e.name == "and") return a.Truthy() ? Eval(*e.args[1]) : a;
      if (e.name == "or") return a.Truthy() ? a : Eval(*e.args[1]);
      return BinaryOp(e.name, a, Eval(*e.args[1]), e.line);
    }
    case Expr::Kind::kCondition:
      if (Eval(*e.args[1]).Truthy()) return Eval(*e.args[0]);
      return e.args[2] ? Eval(*e.args[2]) : Value();
  }
  return Value();
}

}  // namespace

Template::Template(std::string_view source) : body_(std::make_shared<const Body>(Parse(source))) {}

std::string Template::Render(const nlohmann::ordered_json& context, const RenderOptions& options) const {
  if (!context.is_object()) throw Error("chat template: the context must be a JSON object");
  std::string out;
  WorkBudget budget;
  Renderer r(options, &out);
  r.PushScope();  // globals
  r.Define("raise_exception", Value::MakeFunction([](Args& a) -> Value {
             throw Error("chat template raised an exception: " +
                         (a.positional.empty() ? std::string() : a.positional[0].ToString()));
           }));
  r.Define("strftime_now", Value::MakeFunction([&options](Args& a) {
             if (a.positional.empty() || !a.positional[0].is_string())
               throw Error("strftime_now() takes a format string");
             return Value::String(StrftimeNow(a.positional[0].str(), options.now));
           }));
  r.Define("range", Value::MakeFunction(Range));
  r.Define("namespace", Value::MakeFunction(MakeNamespace));
  r.Define("dict", Value::MakeFunction([](Args& a) {
             Object o;
             for (auto& [k, v] : a.keyword) o.emplace_back(Value::String(k), v);
             return Value::MakeObject(std::move(o));
           }));
  r.PushScope();  // the context
  for (const auto& [key, value] : context.items()) r.Define(key, Value::FromJson(value));
  r.PushScope();  // the template's own variables
  if (r.Exec(*body_) != Flow::kNormal) throw Error("chat template: break / continue outside a loop");
  return out;
}

}  // namespace attn::jinja
