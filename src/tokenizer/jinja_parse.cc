// Jinja2 template text -> syntax tree (jinja.h): the tags and their whitespace control as
// jinja2's lexer applies them with trim_blocks and lstrip_blocks, then a recursive-descent parser
// with Jinja's operator precedence (jinja2/parser.py: or < and < not < comparisons < + - < ~ <
// * / // % < ** < unary; filters and tests bind to the primary before any of them).
#include <cctype>
#include <cstring>
#include <set>

#include "attn/error.h"
#include "tokenizer/jinja.h"

namespace attn::jinja {

void Fail(int line, const std::string& what) {
  throw Error("chat template: line " + std::to_string(line) + ": " + what);
}

namespace {

// Nesting depth of blocks and expressions: a hostile template cannot exhaust the stack.
constexpr int kMaxDepth = 200;

struct Tag {
  enum class Kind { kText, kOutput, kStatement, kComment };
  Kind kind;
  std::string text;  // kText: the text; else the tag's inside without its markers and - / +
  int line;
  bool strip_before = false, strip_after = false;  // {%- / -%}
  bool keep_before = false, keep_after = false;    // {%+ / +%}
  size_t begin = 0;                                // source offset of the tag (or text)
};

int LineAt(std::string_view s, size_t pos) {
  int line = 1;
  for (size_t i = 0; i < pos && i < s.size(); ++i) line += s[i] == '\n';
  return line;
}

// Finds the end marker of a tag that starts at `from` (just past "{{" / "{%"), skipping string
// literals, and for {{ }} the braces of dict literals. Returns the offset of the marker.
size_t FindTagEnd(std::string_view s, size_t from, char close, int line) {
  int depth = 0;
  for (size_t i = from; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '\'' || c == '"') {
      for (size_t j = i + 1;; ++j) {
        if (j >= s.size()) Fail(line, "unterminated string in a tag");
        if (s[j] == '\\') {
          ++j;
          continue;
        }
        if (s[j] == c) {
          i = j;
          break;
        }
      }
      continue;
    }
    if (close == '}' && c == '{') ++depth;
    if (c == close && i + 1 < s.size() && s[i + 1] == '}' && (close != '}' || depth == 0)) return i;
    if (close == '}' && c == '}' && depth > 0) --depth;
  }
  Fail(line, std::string("tag not closed (no '") + close + "}')");
}

std::vector<Tag> Scan(std::string_view src) {
  std::vector<Tag> tags;
  size_t pos = 0;
  while (pos <= src.size()) {
    size_t open = src.find('{', pos);
    while (open != std::string_view::npos && open + 1 < src.size() && !std::strchr("{%#", src[open + 1]))
      open = src.find('{', open + 1);
    if (open == std::string_view::npos || open + 1 >= src.size()) {
      if (pos < src.size()) {
        tags.push_back({Tag::Kind::kText, std::string(src.substr(pos)), LineAt(src, pos)});
        tags.back().begin = pos;
      }
      break;
    }
    if (open > pos) {
      tags.push_back({Tag::Kind::kText, std::string(src.substr(pos, open - pos)), LineAt(src, pos)});
      tags.back().begin = pos;
    }
    const char type = src[open + 1];
    const int line = LineAt(src, open);
    Tag tag{type == '{'   ? Tag::Kind::kOutput
            : type == '%' ? Tag::Kind::kStatement
                          : Tag::Kind::kComment,
            "", line};
    tag.begin = open;
    size_t inner = open + 2;
    if (inner < src.size() && src[inner] == '-') tag.strip_before = true, ++inner;
    if (inner < src.size() && src[inner] == '+') tag.keep_before = true, ++inner;
    size_t close;
    if (tag.kind == Tag::Kind::kComment) {
      close = src.find("#}", inner);
      if (close == std::string_view::npos) Fail(line, "comment not closed (no '#}')");
    } else {
      close = FindTagEnd(src, inner, tag.kind == Tag::Kind::kOutput ? '}' : '%', line);
    }
    size_t inner_end = close;
    if (inner_end > inner && src[inner_end - 1] == '-') tag.strip_after = true, --inner_end;
    if (inner_end > inner && src[inner_end - 1] == '+') tag.keep_after = true, --inner_end;
    tag.text = std::string(src.substr(inner, inner_end - inner));
    pos = close + 2;
    // {% raw %}...{% endraw %}: the text between, untouched.
    if (tag.kind == Tag::Kind::kStatement) {
      const size_t a = tag.text.find_first_not_of(" \t\r\n");
      if (a != std::string::npos && tag.text.compare(a, 3, "raw") == 0 &&
          tag.text.find_first_not_of(" \t\r\n", a + 3) == std::string::npos) {
        size_t end = src.find("endraw", pos);
        if (end == std::string_view::npos) Fail(line, "raw block not closed (no endraw)");
        const size_t tag_open = src.rfind('{', end);
        const size_t tag_close = src.find("%}", end);
        if (tag_open == std::string_view::npos || tag_open < pos || tag_close == std::string_view::npos)
          Fail(line, "malformed endraw tag");
        std::string raw(src.substr(pos, tag_open - pos));
        if (src[tag_open + 2] == '-') {
          const size_t keep = raw.find_last_not_of(" \t\r\n");
          raw.erase(keep == std::string::npos ? 0 : keep + 1);
        }
        tags.push_back({Tag::Kind::kText, raw, line});
        tags.back().begin = pos;
        tags.back().keep_before = true;  // marks text not to be trimmed
        pos = tag_close + 2;
        continue;
      }
    }
    tags.push_back(std::move(tag));
  }
  // Whitespace: {%- / -%} strip all whitespace on that side; trim_blocks drops the first newline
  // after a block or comment tag; lstrip_blocks drops spaces and tabs between a line's start and a
  // block or comment tag. jinja2 also drops one newline at the very end (keep_trailing_newline off).
  for (size_t t = 0; t < tags.size(); ++t) {
    Tag& text = tags[t];
    if (text.kind != Tag::Kind::kText || text.keep_before) continue;
    std::string& s = text.text;
    if (t + 1 < tags.size()) {
      const Tag& next = tags[t + 1];
      if (next.strip_before) {
        const size_t keep = s.find_last_not_of(" \t\r\n");
        s.erase(keep == std::string::npos ? 0 : keep + 1);
      } else if (next.kind != Tag::Kind::kOutput && !next.keep_before) {
        const size_t keep = s.find_last_not_of(" \t");
        const size_t run = keep == std::string::npos ? 0 : keep + 1;
        // The run must start a line of the source: after a newline, or at the template's start.
        const size_t run_src = text.begin + run;
        if (run_src == 0 || src[run_src - 1] == '\n') s.erase(run);
      }
    }
    if (t > 0) {
      const Tag& prev = tags[t - 1];
      if (prev.strip_after) {
        s.erase(0, std::min(s.size(), s.find_first_not_of(" \t\r\n")));
      } else if (prev.kind != Tag::Kind::kOutput && prev.kind != Tag::Kind::kText && !prev.keep_after) {
        if (s.compare(0, 2, "\r\n") == 0) {
          s.erase(0, 2);
        } else if (!s.empty() && s[0] == '\n') {
          s.erase(0, 1);
        }
      }
    }
  }
  if (!tags.empty() && tags.back().kind == Tag::Kind::kText && !tags.back().keep_before) {
    std::string& s = tags.back().text;
    if (!s.empty() && s.back() == '\n') s.pop_back();
    if (!s.empty() && s.back() == '\r') s.pop_back();
  }
  return tags;
}

// ---- Expressions ----

struct Token {
  enum class Kind { kName, kString, kInt, kFloat, kOp, kEnd };
  Kind kind;
  std::string text;
  double number = 0;
  int64_t integer = 0;
};

std::vector<Token> Lex(const std::string& s, int line) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Token::Kind::kName, s.substr(i, j - i)});
      i = j;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      bool is_float = false;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) {
          is_float = true;
          j = k;
          while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
        }
      }
      std::string digits;
      for (size_t k = i; k < j; ++k)
        if (s[k] != '_') digits += s[k];
      Token t{is_float ? Token::Kind::kFloat : Token::Kind::kInt, digits};
      try {
        if (is_float) {
          t.number = std::stod(digits);
        } else {
          t.integer = std::stoll(digits);
        }
      } catch (const std::exception&) {
        Fail(line, "number out of range: " + digits);
      }
      out.push_back(std::move(t));
      i = j;
      continue;
    }
    if (c == '\'' || c == '"') {
      std::string text;
      size_t j = i + 1;
      for (;; ++j) {
        if (j >= s.size()) Fail(line, "unterminated string");
        if (s[j] == c) break;
        if (s[j] == '\\' && j + 1 < s.size()) {
          const char e = s[++j];
          switch (e) {
            case 'n':
              text += '\n';
              break;
            case 't':
              text += '\t';
              break;
            case 'r':
              text += '\r';
              break;
            case '\\':
            case '\'':
            case '"':
              text += e;
              break;
            case '\n':
              break;
            default:
              text += '\\', text += e;  // Python keeps unknown escapes as written
          }
          continue;
        }
        text += s[j];
      }
      out.push_back({Token::Kind::kString, text});
      i = j + 1;
      continue;
    }
    static const char* const kOps[] = {"//", "**", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ".",
                                       ",",  ":",  "|",  "~",  "+",  "-",  "*", "/", "%", "<", ">", "="};
    bool matched = false;
    for (const char* op : kOps) {
      const size_t n = std::strlen(op);
      if (s.compare(i, n, op) == 0) {
        out.push_back({Token::Kind::kOp, op});
        i += n;
        matched = true;
        break;
      }
    }
    if (!matched) Fail(line, std::string("unexpected character '") + c + "'");
  }
  if (out.size() > 20000) Fail(line, "tag longer than 20,000 tokens");
  out.push_back({Token::Kind::kEnd, ""});
  return out;
}

class ExprParser {
 public:
  ExprParser(std::vector<Token> tokens, int line) : t_(std::move(tokens)), line_(line) {}

  const Token& Peek(size_t ahead = 0) const { return t_[std::min(pos_ + ahead, t_.size() - 1)]; }
  bool AtEnd() const { return Peek().kind == Token::Kind::kEnd; }
  bool IsOp(const char* op, size_t ahead = 0) const {
    return Peek(ahead).kind == Token::Kind::kOp && Peek(ahead).text == op;
  }
  bool IsName(const char* name, size_t ahead = 0) const {
    return Peek(ahead).kind == Token::Kind::kName && Peek(ahead).text == name;
  }
  bool AcceptOp(const char* op) {
    if (!IsOp(op)) return false;
    ++pos_;
    return true;
  }
  bool AcceptName(const char* name) {
    if (!IsName(name)) return false;
    ++pos_;
    return true;
  }
  void ExpectOp(const char* op) {
    if (!AcceptOp(op)) Fail(line_, std::string("expected '") + op + "', got '" + Peek().text + "'");
  }
  std::string ExpectName() {
    if (Peek().kind != Token::Kind::kName) Fail(line_, "expected a name, got '" + Peek().text + "'");
    return t_[pos_++].text;
  }
  void ExpectEnd() {
    if (!AtEnd()) Fail(line_, "unexpected '" + Peek().text + "'");
  }

  // expression: or_expr ["if" or_expr ["else" expression]]
  ExprPtr Expression() {
    Guard g(this);
    ExprPtr e = Or();
    if (AcceptName("if")) {
      auto c = Make(Expr::Kind::kCondition);
      c->args.push_back(std::move(e));
      c->args.push_back(Or());
      c->args.push_back(AcceptName("else") ? Expression() : nullptr);
      return c;
    }
    return e;
  }
  // A comma-separated list without brackets (for x in a, b / set x = a, b) becomes a tuple.
  ExprPtr TupleOrExpression() {
    ExprPtr first = Expression();
    if (!IsOp(",")) return first;
    auto t = Make(Expr::Kind::kTuple);
    t->args.push_back(std::move(first));
    while (AcceptOp(",") && !AtEnd()) t->args.push_back(Expression());
    return t;
  }

 private:
  struct Guard {
    explicit Guard(ExprParser* p) : p(p) {
      if (++p->depth_ > kMaxDepth) Fail(p->line_, "expression nested too deeply");
    }
    ~Guard() { --p->depth_; }
    ExprParser* p;
  };

  ExprPtr Make(Expr::Kind kind) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line_;
    return e;
  }
  ExprPtr Binary(const std::string& op, ExprPtr a, ExprPtr b) {
    auto e = Make(Expr::Kind::kBinary);
    e->name = op;
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  ExprPtr Or() {
    ExprPtr e = And();
    while (AcceptName("or")) e = Binary("or", std::move(e), And());
    return e;
  }
  ExprPtr And() {
    ExprPtr e = Not();
    while (AcceptName("and")) e = Binary("and", std::move(e), Not());
    return e;
  }
  ExprPtr Not() {
    if (AcceptName("not")) {
      Guard g(this);
      auto e = Make(Expr::Kind::kUnary);
      e->name = "not";
      e->args.push_back(Not());
      return e;
    }
    return Comparison();
  }
  ExprPtr Comparison() {
    ExprPtr e = Sum();
    for (;;) {
      std::string op;
      if (Peek().kind == Token::Kind::kOp &&
          (IsOp("==") || IsOp("!=") || IsOp("<") || IsOp("<=") || IsOp(">") || IsOp(">="))) {
        op = t_[pos_++].text;
      } else if (AcceptName("in")) {
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        pos_ += 2;
        op = "not in";
      } else {
        return e;
      }
      e = Binary(op, std::move(e), Sum());
    }
  }
  ExprPtr Sum() {
    ExprPtr e = Concat();
    while (IsOp("+") || IsOp("-")) {
      const std::string op = t_[pos_++].text;
      e = Binary(op, std::move(e), Concat());
    }
    return e;
  }
  ExprPtr Concat() {
    ExprPtr e = Product();
    while (AcceptOp("~")) e = Binary("~", std::move(e), Product());
    return e;
  }
  ExprPtr Product() {
    ExprPtr e = Power();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const std::string op = t_[pos_++].text;
      e = Binary(op, std::move(e), Power());
    }
    return e;
  }
  ExprPtr Power() {
    ExprPtr e = Unary();
    while (AcceptOp("**")) e = Binary("**", std::move(e), Unary());
    return e;
  }
  // As jinja2's parse_unary: the operand of - / + takes no filters, the whole does (-x|abs is 3).
  ExprPtr Unary(bool with_filters = true) {
    Guard g(this);
    ExprPtr e;
    if (IsOp("-") || IsOp("+")) {
      e = Make(Expr::Kind::kUnary);
      e->name = t_[pos_++].text;
      e->args.push_back(Unary(false));
    } else {
      e = Postfix(Primary());
    }
    return with_filters ? FiltersAndTests(std::move(e)) : std::move(e);
  }

  ExprPtr Primary() {
    Guard g(this);
    const Token& t = Peek();
    switch (t.kind) {
      case Token::Kind::kString: {
        // Adjacent literals concatenate, as in Python.
        std::string s;
        while (Peek().kind == Token::Kind::kString) s += t_[pos_++].text;
        auto e = Make(Expr::Kind::kLiteral);
        e->value = Value::String(std::move(s));
        return e;
      }
      case Token::Kind::kInt: {
        auto e = Make(Expr::Kind::kLiteral);
        e->value = Value::Int(t_[pos_++].integer);
        return e;
      }
      case Token::Kind::kFloat: {
        auto e = Make(Expr::Kind::kLiteral);
        e->value = Value::Float(t_[pos_++].number);
        return e;
      }
      case Token::Kind::kName: {
        const std::string n = t_[pos_++].text;
        auto e = Make(Expr::Kind::kLiteral);
        if (n == "true" || n == "True") {
          e->value = Value::Bool(true);
        } else if (n == "false" || n == "False") {
          e->value = Value::Bool(false);
        } else if (n == "none" || n == "None") {
          e->value = Value::None();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = n;
        }
        return e;
      }
      case Token::Kind::kOp:
        if (AcceptOp("(")) {
          if (AcceptOp(")")) return Make(Expr::Kind::kTuple);
          ExprPtr first = Expression();
          if (AcceptOp(")")) return first;
          auto tup = Make(Expr::Kind::kTuple);
          tup->args.push_back(std::move(first));
          while (AcceptOp(",")) {
            if (IsOp(")")) break;
            tup->args.push_back(Expression());
          }
          ExpectOp(")");
          return tup;
        }
        if (AcceptOp("[")) {
          auto list = Make(Expr::Kind::kList);
          while (!AcceptOp("]")) {
            list->args.push_back(Expression());
            if (!AcceptOp(",")) {
              ExpectOp("]");
              break;
            }
          }
          return list;
        }
        if (AcceptOp("{")) {
          auto dict = Make(Expr::Kind::kDict);
          while (!AcceptOp("}")) {
            dict->args.push_back(Expression());
            ExpectOp(":");
            dict->args.push_back(Expression());
            if (!AcceptOp(",")) {
              ExpectOp("}");
              break;
            }
          }
          return dict;
        }
        break;
      case Token::Kind::kEnd:
        Fail(line_, "unexpected end of expression");
    }
    Fail(line_, "unexpected '" + t.text + "'");
  }

  ExprPtr Postfix(ExprPtr e) {
    for (;;) {
      if (AcceptOp(".")) {
        auto a = Make(Expr::Kind::kAttr);
        if (Peek().kind == Token::Kind::kInt) {  // x.0 is x[0] in Jinja
          a->kind = Expr::Kind::kItem;
          a->args.push_back(std::move(e));
          auto idx = Make(Expr::Kind::kLiteral);
          idx->value = Value::Int(t_[pos_++].integer);
          a->args.push_back(std::move(idx));
          e = std::move(a);
          continue;
        }
        a->name = ExpectName();
        a->args.push_back(std::move(e));
        e = std::move(a);
      } else if (AcceptOp("[")) {
        ExprPtr parts[3];
        bool slice = false;
        if (!IsOp(":")) parts[0] = Expression();
        if (AcceptOp(":")) {
          slice = true;
          if (!IsOp("]") && !IsOp(":")) parts[1] = Expression();
          if (AcceptOp(":") && !IsOp("]")) parts[2] = Expression();
        }
        ExpectOp("]");
        auto s = Make(slice ? Expr::Kind::kSlice : Expr::Kind::kItem);
        s->args.push_back(std::move(e));
        for (int k = 0; k < (slice ? 3 : 1); ++k) s->args.push_back(std::move(parts[k]));
        e = std::move(s);
      } else if (IsOp("(")) {
        auto c = Make(Expr::Kind::kCall);
        c->args.push_back(std::move(e));
        CallArgs(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  // "(" [arg {"," arg}] ")" where arg is an expression or name=expression.
  void CallArgs(Expr& call) {
    ExpectOp("(");
    while (!AcceptOp(")")) {
      if (Peek().kind == Token::Kind::kName && IsOp("=", 1)) {
        std::string key = t_[pos_].text;
        pos_ += 2;
        call.kwargs.emplace_back(std::move(key), Expression());
      } else {
        if (!call.kwargs.empty()) Fail(line_, "positional argument after a keyword argument");
        call.args.push_back(Expression());
      }
      if (!AcceptOp(",")) {
        ExpectOp(")");
        break;
      }
    }
  }

  ExprPtr FiltersAndTests(ExprPtr e) {
    for (;;) {
      if (AcceptOp("|")) {
        auto f = Make(Expr::Kind::kFilter);
        f->name = ExpectName();
        f->args.push_back(std::move(e));
        if (IsOp("(")) CallArgs(*f);
        e = std::move(f);
      } else if (AcceptName("is")) {
        auto t = Make(Expr::Kind::kTest);
        t->negated = AcceptName("not");
        t->name = ExpectName();
        t->args.push_back(std::move(e));
        if (IsOp("(")) {
          CallArgs(*t);
        } else if (!AtEnd() && Peek().kind != Token::Kind::kOp && !IsName("and") && !IsName("or") &&
                   !IsName("if") && !IsName("else") && !IsName("is") && !IsName("in") && !IsName("not")) {
          t->args.push_back(Primary());  // `is divisibleby 3`, `is sameas none`
        }
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t pos_ = 0;
  int line_;
  int depth_ = 0;
};

// Rejects expressions nested deeper than kMaxExprDepth (long operator chains such as 1+1+...+1
// are built without recursion, but evaluating them recurses). Iterative, so any depth is safe.
void CheckExprDepth(const Expr* root) {
  std::vector<std::pair<const Expr*, int>> stack = {{root, 1}};
  while (!stack.empty()) {
    const auto [e, depth] = stack.back();
    stack.pop_back();
    if (!e) continue;
    if (depth > kMaxExprDepth) Fail(e->line, "expression nested too deeply");
    for (const ExprPtr& a : e->args) stack.emplace_back(a.get(), depth + 1);
    for (const auto& kv : e->kwargs) stack.emplace_back(kv.second.get(), depth + 1);
  }
}

void CheckDepth(const Body& body) {
  for (const Node& n : body) {
    CheckExprDepth(n.expr.get());
    CheckExprDepth(n.filter.get());
    for (const auto& [cond, b] : n.branches) {
      CheckExprDepth(cond.get());
      CheckDepth(b);
    }
    for (const auto& p : n.params) CheckExprDepth(p.second.get());
    CheckDepth(n.body);
    CheckDepth(n.else_body);
  }
}

// ---- Statements ----

class Parser {
 public:
  explicit Parser(std::vector<Tag> tags) : tags_(std::move(tags)) {}

  Body Document() {
    std::string end;
    Body body = ParseBody({}, &end, 0);
    return body;
  }

 private:
  // Parses nodes until a statement whose keyword is in `ends` (returned in *end, its parser
  // positioned after the keyword in *rest), or the end of the template when `ends` is empty.
  Body ParseBody(const std::set<std::string>& ends, std::string* end, int depth) {
    if (depth > kMaxDepth)
      Fail(tags_.empty() ? 0 : tags_[std::min(i_, tags_.size() - 1)].line, "blocks nested too deeply");
    Body body;
    while (i_ < tags_.size()) {
      const Tag& tag = tags_[i_++];
      switch (tag.kind) {
        case Tag::Kind::kComment:
          continue;
        case Tag::Kind::kText:
          if (!tag.text.empty()) {
            Node n;
            n.kind = Node::Kind::kText;
            n.line = tag.line;
            n.text = tag.text;
            body.push_back(std::move(n));
          }
          continue;
        case Tag::Kind::kOutput: {
          ExprParser p(Lex(tag.text, tag.line), tag.line);
          Node n;
          n.kind = Node::Kind::kOutput;
          n.line = tag.line;
          n.expr = p.TupleOrExpression();
          p.ExpectEnd();
          body.push_back(std::move(n));
          continue;
        }
        case Tag::Kind::kStatement:
          break;
      }
      auto p = std::make_unique<ExprParser>(Lex(tag.text, tag.line), tag.line);
      const std::string keyword = p->ExpectName();
      if (ends.count(keyword)) {
        *end = keyword;
        rest_ = std::move(p);
        return body;
      }
      body.push_back(Statement(keyword, *p, tag.line, depth));
    }
    if (!ends.empty()) {
      std::string want;
      for (const std::string& e : ends) want += (want.empty() ? "" : " / ") + e;
      Fail(tags_.empty() ? 0 : tags_.back().line, "template ended inside a block (expected " + want + ")");
    }
    return body;
  }

  Node Statement(const std::string& keyword, ExprParser& p, int line, int depth) {
    Node n;
    n.line = line;
    if (keyword == "if") {
      n.kind = Node::Kind::kIf;
      ExprPtr cond = p.Expression();
      p.ExpectEnd();
      for (;;) {
        std::string end;
        Body body = ParseBody({"elif", "else", "endif"}, &end, depth + 1);
        n.branches.emplace_back(std::move(cond), std::move(body));
        if (end == "endif") {
          rest_->ExpectEnd();
          break;
        }
        if (end == "else") {
          rest_->ExpectEnd();
          Body else_body = ParseBody({"endif"}, &end, depth + 1);
          rest_->ExpectEnd();
          n.branches.emplace_back(nullptr, std::move(else_body));
          break;
        }
        cond = rest_->Expression();
        rest_->ExpectEnd();
      }
    } else if (keyword == "for") {
      n.kind = Node::Kind::kFor;
      n.targets.push_back(p.ExpectName());
      while (p.AcceptOp(",")) n.targets.push_back(p.ExpectName());
      if (!p.AcceptName("in")) Fail(line, "expected 'in' in a for statement");
      n.expr = p.Expression();
      // `for x in xs if cond`: Expression() took "xs if cond" as a conditional without else.
      if (n.expr->kind == Expr::Kind::kCondition && !n.expr->args[2]) {
        n.filter = std::move(n.expr->args[1]);
        n.expr = std::move(n.expr->args[0]);
      }
      p.AcceptName("recursive");
      p.ExpectEnd();
      std::string end;
      n.body = ParseBody({"else", "endfor"}, &end, depth + 1);
      rest_->ExpectEnd();
      if (end == "else") {
        n.else_body = ParseBody({"endfor"}, &end, depth + 1);
        rest_->ExpectEnd();
      }
    } else if (keyword == "set") {
      std::string name = p.ExpectName();
      if (p.AcceptOp(".")) {
        n.kind = Node::Kind::kSet;
        n.text = std::move(name);
        n.attr = p.ExpectName();
        p.ExpectOp("=");
        n.expr = p.TupleOrExpression();
        p.ExpectEnd();
      } else if (p.AtEnd()) {
        n.kind = Node::Kind::kSetBlock;
        n.text = std::move(name);
        std::string end;
        n.body = ParseBody({"endset"}, &end, depth + 1);
        rest_->ExpectEnd();
      } else {
        n.kind = Node::Kind::kSet;
        n.targets.push_back(std::move(name));
        while (p.AcceptOp(",")) n.targets.push_back(p.ExpectName());
        p.ExpectOp("=");
        n.expr = p.TupleOrExpression();
        p.ExpectEnd();
      }
    } else if (keyword == "macro") {
      n.kind = Node::Kind::kMacro;
      n.text = p.ExpectName();
      p.ExpectOp("(");
      while (!p.AcceptOp(")")) {
        std::string param = p.ExpectName();
        ExprPtr def = p.AcceptOp("=") ? p.Expression() : nullptr;
        n.params.emplace_back(std::move(param), std::move(def));
        if (!p.AcceptOp(",")) {
          p.ExpectOp(")");
          break;
        }
      }
      p.ExpectEnd();
      std::string end;
      n.body = ParseBody({"endmacro"}, &end, depth + 1);
      if (!rest_->AtEnd()) rest_->ExpectName();  // {% endmacro name %}
      rest_->ExpectEnd();
    } else if (keyword == "break" || keyword == "continue") {
      n.kind = keyword == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
      p.ExpectEnd();
    } else if (keyword == "generation") {  // transformers' AssistantTracker: renders its body as is
      n.kind = Node::Kind::kBlock;
      p.ExpectEnd();
      std::string end;
      n.body = ParseBody({"endgeneration"}, &end, depth + 1);
      rest_->ExpectEnd();
    } else if (keyword == "filter") {  // {% filter name %}...{% endfilter %}: the body through a filter
      n.kind = Node::Kind::kFilterBlock;
      n.text = p.ExpectName();
      p.ExpectEnd();
      std::string end;
      n.body = ParseBody({"endfilter"}, &end, depth + 1);
      rest_->ExpectEnd();
    } else {
      Fail(line, "unknown or unsupported statement '" + keyword + "'");
    }
    return n;
  }

  std::vector<Tag> tags_;
  size_t i_ = 0;
  std::unique_ptr<ExprParser> rest_;  // the closing tag's parser, after its keyword
};

}  // namespace

Body Parse(std::string_view source) {
  Body body = Parser(Scan(source)).Document();
  CheckDepth(body);
  return body;
}

}  // namespace attn::jinja
