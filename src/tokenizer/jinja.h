// A Jinja2 interpreter for the chat templates that GGUF files carry (tokenizer.chat_template).
//
// A model's chat template is a Jinja2 program that Hugging Face transformers renders with
// ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) and the loopcontrols
// extension, plus a tojson filter (json.dumps, ensure_ascii=False), raise_exception(msg) and
// strftime_now(format). This is the subset of Jinja2 such templates use: text with {{ }}, {% %} and
// {# #} tags and their whitespace control; if / elif / else, for (loop.*, else, a filter clause,
// unpacking), set (names, namespace attributes, blocks), macro, break / continue, generation;
// Python literals, operators, slices, calls with keyword arguments, Python's str / list / dict
// methods, and Jinja's common filters and tests. Output is checked against jinja2 on the real
// templates of tests/fixtures/chat_templates/.
//
// Templates are untrusted (they come from the model file): parsing and rendering fail with
// attn::Error naming the line, never crash; recursion and output size are bounded.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/jinja_value.h"

namespace attn::jinja {

struct Expr;
struct Node;
using ExprPtr = std::unique_ptr<Expr>;
using Body = std::vector<Node>;

struct Expr {
  enum class Kind {
    kLiteral,    // value
    kName,       // name
    kList,       // [args...]
    kTuple,      // (args...)
    kDict,       // {args[2i]: args[2i+1]}
    kAttr,       // args[0].name
    kItem,       // args[0][args[1]]
    kSlice,      // args[0][args[1]:args[2]:args[3]] (null parts absent)
    kCall,       // args[0](args[1..], kwargs)
    kFilter,     // args[0] | name(args[1..], kwargs)
    kTest,       // args[0] is [not] name(args[1..])
    kUnary,      // op args[0]: "-", "+", "not"
    kBinary,     // args[0] op args[1]: + - * / // % ** ~ == != < <= > >= in "not in" and or
    kCondition,  // args[0] if args[1] else args[2] (args[2] may be null)
  };
  Kind kind = Kind::kLiteral;
  int line = 0;
  Value value;
  std::string name;  // name, attribute, filter, test, operator
  bool negated = false;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Node {
  enum class Kind {
    kText,
    kOutput,
    kIf,
    kFor,
    kSet,
    kSetBlock,
    kMacro,
    kBreak,
    kContinue,
    kBlock,
    kFilterBlock
  };
  Kind kind = Kind::kText;
  int line = 0;
  std::string text;  // kText: the text; kSet / kSetBlock / kMacro: the name; kSet on ns.attr: ns;
                     // kFilterBlock: the filter
  std::string attr;  // kSet on a namespace attribute
  std::vector<std::string> targets;                     // kFor loop variables; kSet unpacking
  ExprPtr expr;                                         // kOutput, kSet value, kFor iterable
  ExprPtr filter;                                       // kFor's "if" clause
  std::vector<std::pair<ExprPtr, Body>> branches;       // kIf: (condition or null for else, body)
  Body body;                                            // kFor, kSetBlock, kMacro, kBlock, kFilterBlock
  Body else_body;                                       // kFor
  std::vector<std::pair<std::string, ExprPtr>> params;  // kMacro: name, default (or null)
};

// Bounds on what a template may build or do: a chat template renders kilobytes in thousands of
// steps, a hostile one must end with an error rather than exhaust memory, stack or time.
// (kMaxStringBytes: any string, the output included; kMaxItems: any list; jinja_value.h.)
constexpr int64_t kMaxSteps = 5'000'000;  // statements run plus loop iterations
constexpr int kMaxExprDepth = 256;        // nesting of one expression's syntax tree

// Throws attn::Error("chat template: line N: what").
[[noreturn]] void Fail(int line, const std::string& what);

// Parses a template: attn::Error "chat template: line N: ..." on a syntax error.
Body Parse(std::string_view source);

struct RenderOptions {
  // What strftime_now(format) formats: "YYYY-MM-DD HH:MM:SS" for a fixed time (tests), or ""
  // for the current local time.
  std::string now;
};

class Template {
 public:
  explicit Template(std::string_view source);
  // The template rendered with the context's keys as variables (messages, add_generation_prompt,
  // bos_token, tools, ...). Throws attn::Error on an error in the template or what it raised.
  std::string Render(const nlohmann::ordered_json& context, const RenderOptions& options = {}) const;

 private:
  std::shared_ptr<const Body> body_;
};

}  // namespace attn::jinja
