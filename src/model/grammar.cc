// GBNF grammars: the parser, the pushdown recognizer and the vocabulary trie (grammar.h).
#include "model/grammar.h"

#include <algorithm>
#include <functional>

#include "attn/error.h"
#include "tokenizer/unicode.h"

namespace attn {

namespace {

constexpr uint32_t kMaxCodePoint = 0x10FFFF;
// Largest program (elements over all rules) a grammar may expand to: repetitions copy their item,
// and x{1000}{1000} would otherwise build a million copies.
constexpr size_t kMaxProgram = 1 << 20;

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

std::string Escape(uint32_t cp, bool in_class) {
  if (cp == '"' && !in_class) return "\\\"";
  if ((cp == ']' || cp == '[' || cp == '-' || cp == '^') && in_class) return std::string("\\") + char(cp);
  if (cp == '\\') return "\\\\";
  if (cp == '\n') return "\\n";
  if (cp == '\r') return "\\r";
  if (cp == '\t') return "\\t";
  static const char kHex[] = "0123456789ABCDEF";
  if (cp < 0x20 || cp == 0x7F) return std::string("\\x") + kHex[cp >> 4] + kHex[cp & 15];
  if (cp >= 0xD800 && cp <= 0xDFFF) {  // a surrogate (a class may name one): UTF-8 cannot write it
    std::string out = "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(cp >> shift) & 15];
    return out;
  }
  std::string out;
  tokenizer::AppendUtf8(cp, out);
  return out;
}

}  // namespace

// ---------------------------------------------------------------- character classes

bool Grammar::CharClass::Matches(uint32_t cp) const {
  bool in = false;
  for (const auto& [lo, hi] : ranges) {
    if (cp >= lo && cp <= hi) {
      in = true;
      break;
    }
  }
  return in != negated;
}

bool Grammar::CharClass::Intersects(uint32_t lo, uint32_t hi) const {
  if (!negated) {
    for (const auto& [a, b] : ranges) {
      if (a <= hi && b >= lo) return true;
    }
    return false;
  }
  // Negated: some code point of [lo, hi] outside every range (ranges are sorted and merged).
  uint32_t next = lo;
  for (const auto& [a, b] : ranges) {
    if (b < next) continue;
    if (a > next) return true;
    if (b >= hi) return false;
    next = b + 1;
  }
  return next <= hi;
}

// ---------------------------------------------------------------- the parser

class GrammarParser {
 public:
  explicit GrammarParser(std::string_view text) : text_(text) {}

  std::shared_ptr<Grammar> Run(std::string_view root_name) {
    std::shared_ptr<Grammar> g(new Grammar());
    g_ = g.get();
    SkipSpace(true);
    while (pos_ < text_.size()) {
      ParseRule();
      SkipSpace(true);
    }
    NameGenerated();
    for (size_t r = 0; r < rules_.size(); ++r) {
      if (!defined_[r]) {
        Fail(uses_[r], "undefined rule '" + g_->rule_name_[r] + "'");
      }
    }
    const auto root = ids_.find(std::string(root_name));
    if (root == ids_.end() || !defined_[root->second]) {
      throw Error("grammar: no rule named '" + std::string(root_name) + "' (the start rule)");
    }
    g_->root_ = root->second;
    for (const auto& body : rules_) {
      g_->rule_start_.push_back(static_cast<uint32_t>(g_->program_.size()));
      g_->program_.insert(g_->program_.end(), body.begin(), body.end());
    }
    g_->CheckLeftRecursion();
    // The initial state: the root rule's alternatives on the empty stack.
    std::vector<uint32_t> out;
    for (uint32_t a : Alternatives(g_->root_)) {
      if (IsEnd(g_->program_[a].op)) {
        out.push_back(0);
      } else {
        g_->Expand(0, a, out);
      }
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    g_->initial_ = std::move(out);
    return g;
  }

 private:
  using Elem = Grammar::Elem;
  using Op = Grammar::Op;
  static bool IsEnd(Op op) { return op == Op::kEndAlt || op == Op::kEndRule; }

  std::vector<uint32_t> Alternatives(uint32_t rule) const {
    std::vector<uint32_t> starts;
    uint32_t p = g_->rule_start_[rule];
    while (g_->program_[p].op != Op::kEndRule) {
      starts.push_back(p);
      while (g_->program_[p].op != Op::kEndAlt) ++p;
      ++p;
    }
    return starts;
  }

  [[noreturn]] void Fail(size_t at, const std::string& what) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    throw Error("grammar: line " + std::to_string(line) + ", column " + std::to_string(col) + ": " + what);
  }

  // Spaces and comments; newlines only where `newlines` (between rules, inside parentheses).
  void SkipSpace(bool newlines) {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == ' ' || c == '\t' || ((c == '\n' || c == '\r') && newlines)) {
        ++pos_;
      } else if (c == '#') {
        while (pos_ < text_.size() && text_[pos_] != '\n') ++pos_;
      } else {
        break;
      }
    }
  }

  uint32_t RuleId(const std::string& name, size_t at) {
    const auto [it, added] = ids_.emplace(name, static_cast<uint32_t>(rules_.size()));
    if (added) {
      rules_.emplace_back();
      defined_.push_back(false);
      uses_.push_back(at);
      g_->rule_name_.push_back(name);
    }
    return it->second;
  }

  // A rule for a group or a repetition; named once every rule of the text is known (NameGenerated),
  // so that its name cannot take one the text defines or refers to later.
  uint32_t NewRule(const std::string& base) {
    const auto id = static_cast<uint32_t>(rules_.size());
    rules_.emplace_back();
    defined_.push_back(true);
    uses_.push_back(pos_);
    g_->rule_name_.emplace_back();
    generated_.emplace_back(id, base);
    return id;
  }

  void NameGenerated() {
    std::unordered_map<std::string, int> counters;
    for (const auto& [id, base] : generated_) {
      std::string name;
      do {
        name = base + "-" + std::to_string(++counters[base]);
      } while (ids_.count(name) != 0);
      ids_.emplace(name, id);
      g_->rule_name_[id] = name;
    }
  }

  std::string ParseName() {
    const size_t start = pos_;
    while (pos_ < text_.size() && IsNameChar(text_[pos_])) ++pos_;
    if (pos_ == start) Fail(start, "expected a rule name");
    return std::string(text_.substr(start, pos_ - start));
  }

  void ParseRule() {
    const size_t at = pos_;
    const std::string name = ParseName();
    SkipSpace(false);
    if (text_.substr(pos_, 3) != "::=") Fail(pos_, "expected '::=' after rule name '" + name + "'");
    pos_ += 3;
    SkipSpace(true);  // the body may start on the next line (as llama.cpp allows)
    const uint32_t id = RuleId(name, at);
    if (defined_[id]) Fail(at, "rule '" + name + "' is defined twice");
    defined_[id] = true;
    current_ = name;
    std::vector<Elem> body;
    ParseAlternatives(body, false);
    rules_[id] = std::move(body);
    SkipSpace(false);
    if (pos_ < text_.size() && text_[pos_] != '\n' && text_[pos_] != '\r') {
      Fail(pos_, std::string("unexpected '") + text_[pos_] + "'");
    }
  }

  // Alternatives into `out`, each ended by kEndAlt, the list by kEndRule.
  void ParseAlternatives(std::vector<Elem>& out, bool nested) {
    for (;;) {
      ParseSequence(out, nested);
      out.push_back({Op::kEndAlt, 0});
      if (pos_ < text_.size() && text_[pos_] == '|') {
        ++pos_;
        SkipSpace(true);  // an alternative may start on the next line
        continue;
      }
      break;
    }
    out.push_back({Op::kEndRule, 0});
  }

  // A code point of the grammar text (UTF-8) or an escape, inside a literal or a class.
  uint32_t ParseChar() {
    const size_t at = pos_;
    const auto byte = [&](size_t i) { return static_cast<uint8_t>(text_[i]); };
    if (text_[pos_] == '\\') {
      if (++pos_ >= text_.size()) Fail(at, "an escape at the end of the grammar");
      const char e = text_[pos_++];
      int digits = 0;
      switch (e) {
        case 'n':
          return '\n';
        case 'r':
          return '\r';
        case 't':
          return '\t';
        case '\\':
        case '"':
        case '[':
        case ']':
        case '-':
        case '^':
        case '/':
        case '\'':
          return static_cast<uint8_t>(e);
        case 'x':
          digits = 2;
          break;
        case 'u':
          digits = 4;
          break;
        case 'U':
          digits = 8;
          break;
        default:
          Fail(at, std::string("unknown escape '\\") + e + "'");
      }
      uint32_t value = 0;
      for (int i = 0; i < digits; ++i) {
        if (pos_ >= text_.size()) Fail(at, "a \\" + std::string(1, e) + " escape cut short");
        const char h = text_[pos_++];
        int v;
        if (h >= '0' && h <= '9') {
          v = h - '0';
        } else if (h >= 'a' && h <= 'f') {
          v = h - 'a' + 10;
        } else if (h >= 'A' && h <= 'F') {
          v = h - 'A' + 10;
        } else {
          Fail(pos_ - 1, std::string("'") + h + "' is not a hexadecimal digit");
        }
        value = value * 16 + static_cast<uint32_t>(v);
      }
      if (value > kMaxCodePoint) Fail(at, "code point past U+10FFFF");
      return value;
    }
    const uint8_t b0 = byte(pos_);
    int len = b0 < 0x80                  ? 1
              : b0 >= 0xC2 && b0 <= 0xDF ? 2
              : b0 >= 0xE0 && b0 <= 0xEF ? 3
              : b0 >= 0xF0 && b0 <= 0xF4 ? 4
                                         : 0;
    if (len == 0 || pos_ + static_cast<size_t>(len) > text_.size()) Fail(at, "the grammar is not UTF-8");
    uint32_t cp = len == 1 ? b0 : len == 2 ? b0 & 0x1Fu : len == 3 ? b0 & 0x0Fu : b0 & 0x07u;
    for (int i = 1; i < len; ++i) {
      const uint8_t b = byte(pos_ + static_cast<size_t>(i));
      if ((b & 0xC0) != 0x80) Fail(at, "the grammar is not UTF-8");
      cp = cp << 6 | (b & 0x3Fu);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > kMaxCodePoint)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      Fail(at, "the grammar is not UTF-8");
    }
    pos_ += static_cast<size_t>(len);
    return cp;
  }

  uint32_t AddClass(Grammar::CharClass c) {
    std::sort(c.ranges.begin(), c.ranges.end());
    std::vector<std::pair<uint32_t, uint32_t>> merged;
    for (const auto& r : c.ranges) {
      if (!merged.empty() && r.first <= merged.back().second + 1) {
        merged.back().second = std::max(merged.back().second, r.second);
      } else {
        merged.push_back(r);
      }
    }
    c.ranges = std::move(merged);
    for (size_t i = 0; i < g_->classes_.size(); ++i) {
      if (g_->classes_[i].negated == c.negated && g_->classes_[i].ranges == c.ranges)
        return static_cast<uint32_t>(i);
    }
    g_->classes_.push_back(std::move(c));
    return static_cast<uint32_t>(g_->classes_.size() - 1);
  }

  void CheckSize(const std::vector<Elem>& out) const {
    size_t total = out.size();
    for (const auto& r : rules_) total += r.size();
    if (total > kMaxProgram)
      Fail(pos_, "the grammar expands to more than " + std::to_string(kMaxProgram) + " elements");
  }

  int ParseCount() {
    const size_t at = pos_;
    int64_t v = 0;
    if (pos_ >= text_.size() || text_[pos_] < '0' || text_[pos_] > '9')
      Fail(at, "expected a repetition count");
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      v = v * 10 + (text_[pos_++] - '0');
      if (v > Grammar::kMaxRepeat) Fail(at, "repetition count over " + std::to_string(Grammar::kMaxRepeat));
    }
    return static_cast<int>(v);
  }

  // Rewrites the item out[start..] repeated between lo and hi times (hi < 0: unbounded) into
  // copies and generated rules (x* is R ::= x R | ; x{0,k} nests k optional copies).
  void Repeat(std::vector<Elem>& out, size_t start, int lo, int hi) {
    const std::vector<Elem> item(out.begin() + static_cast<std::ptrdiff_t>(start), out.end());
    out.resize(start);
    for (int i = 0; i < lo; ++i) {
      out.insert(out.end(), item.begin(), item.end());
      CheckSize(out);
    }
    if (hi < 0) {
      const uint32_t r = NewRule(current_);
      std::vector<Elem> body = item;
      body.push_back({Op::kRef, r});
      body.push_back({Op::kEndAlt, 0});
      body.push_back({Op::kEndAlt, 0});  // the empty alternative
      body.push_back({Op::kEndRule, 0});
      rules_[r] = std::move(body);
      out.push_back({Op::kRef, r});
    } else if (hi > lo) {
      uint32_t inner = 0;
      for (int k = 0; k < hi - lo; ++k) {
        const uint32_t r = NewRule(current_);
        std::vector<Elem> body = item;
        if (k > 0) body.push_back({Op::kRef, inner});
        body.push_back({Op::kEndAlt, 0});
        body.push_back({Op::kEndAlt, 0});
        body.push_back({Op::kEndRule, 0});
        rules_[r] = std::move(body);
        CheckSize(out);
        inner = r;
      }
      out.push_back({Op::kRef, inner});
    }
  }

  void ParseSequence(std::vector<Elem>& out, bool nested) {
    size_t last = std::string::npos;  // where the last item began in out
    for (;;) {
      SkipSpace(nested);
      if (pos_ >= text_.size()) return;
      const size_t at = pos_;
      const char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        last = out.size();
        while (pos_ < text_.size() && text_[pos_] != '"') {
          if (text_[pos_] == '\n') Fail(at, "a literal runs past the end of its line");
          const uint32_t cp = ParseChar();
          out.push_back({Op::kChars, AddClass({false, {{cp, cp}}})});
        }
        if (pos_ >= text_.size()) Fail(at, "unterminated literal");
        ++pos_;
        if (out.size() == last) last = std::string::npos;  // "" matches nothing
      } else if (c == '[') {
        ++pos_;
        Grammar::CharClass cls;
        if (pos_ < text_.size() && text_[pos_] == '^') {
          cls.negated = true;
          ++pos_;
        }
        while (pos_ < text_.size() && text_[pos_] != ']') {
          if (text_[pos_] == '\n') Fail(at, "a character class runs past the end of its line");
          const uint32_t a = ParseChar();
          uint32_t b = a;
          if (pos_ + 1 < text_.size() && text_[pos_] == '-' && text_[pos_ + 1] != ']') {
            ++pos_;
            b = ParseChar();
            if (b < a) Fail(at, "a character range that ends before it starts");
          }
          cls.ranges.emplace_back(a, b);
        }
        if (pos_ >= text_.size()) Fail(at, "unterminated character class");
        ++pos_;
        last = out.size();
        out.push_back({Op::kChars, AddClass(std::move(cls))});
      } else if (c == '.') {
        ++pos_;
        last = out.size();
        out.push_back({Op::kChars, AddClass({true, {}})});
      } else if (IsNameChar(c)) {
        const std::string name = ParseName();
        last = out.size();
        out.push_back({Op::kRef, RuleId(name, at)});
      } else if (c == '(') {
        ++pos_;
        const uint32_t r = NewRule(current_);
        std::vector<Elem> body;
        ParseAlternatives(body, true);
        SkipSpace(true);
        if (pos_ >= text_.size() || text_[pos_] != ')') Fail(at, "'(' without its ')'");
        ++pos_;
        rules_[r] = std::move(body);
        last = out.size();
        out.push_back({Op::kRef, r});
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (last == std::string::npos) Fail(at, std::string("'") + c + "' with nothing before it to repeat");
        ++pos_;
        int lo = 0, hi = -1;
        if (c == '+') {
          lo = 1;
        } else if (c == '?') {
          hi = 1;
        } else if (c == '{') {
          SkipSpace(false);
          lo = ParseCount();
          SkipSpace(false);
          hi = lo;
          if (pos_ < text_.size() && text_[pos_] == ',') {
            ++pos_;
            SkipSpace(false);
            hi = pos_ < text_.size() && text_[pos_] == '}' ? -1 : ParseCount();
            SkipSpace(false);
          }
          if (pos_ >= text_.size() || text_[pos_] != '}') Fail(at, "'{' without its '}'");
          ++pos_;
          if (hi >= 0 && hi < lo) Fail(at, "a repetition {m,n} with n < m");
        }
        Repeat(out, last, lo, hi);
        last = std::string::npos;  // x** is not allowed
      } else if (c == '|' || c == ')' || c == '\n' || c == '\r') {
        return;
      } else if (c == '<') {
        Fail(at, "token references (<...>) are not supported");
      } else {
        Fail(at, std::string("unexpected '") + c + "'");
      }
      CheckSize(out);
    }
  }

  std::string_view text_;
  size_t pos_ = 0;
  Grammar* g_ = nullptr;
  std::vector<std::vector<Elem>> rules_;
  std::unordered_map<std::string, uint32_t> ids_;
  std::vector<bool> defined_;
  std::vector<size_t> uses_;  // where each rule was first named
  std::string current_;       // the rule being parsed (names its generated rules)
  std::vector<std::pair<uint32_t, std::string>> generated_;  // rule id, base of its name
};

std::shared_ptr<Grammar> Grammar::Parse(std::string_view text, std::string_view root) {
  return GrammarParser(text).Run(root);
}

// ---------------------------------------------------------------- analysis

void Grammar::CheckLeftRecursion() const {
  const size_t n = rule_start_.size();
  // Nullable rules (can match nothing), to a fixed point.
  std::vector<bool> nullable(n, false);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t r = 0; r < n; ++r) {
      if (nullable[r]) continue;
      uint32_t p = rule_start_[r];
      bool alt_null = true;
      for (;; ++p) {
        const Elem& e = program_[p];
        if (e.op == Op::kEndRule) break;
        if (e.op == Op::kEndAlt) {
          if (alt_null) {
            nullable[r] = changed = true;
            break;
          }
          alt_null = true;
          continue;
        }
        if (e.op == Op::kChars || !nullable[e.arg]) alt_null = false;
      }
    }
  }
  // The rules each rule can begin with: its alternatives' references up to the first element
  // that cannot match nothing.
  std::vector<std::vector<uint32_t>> first(n);
  for (size_t r = 0; r < n; ++r) {
    bool open = true;
    for (uint32_t p = rule_start_[r]; program_[p].op != Op::kEndRule; ++p) {
      const Elem& e = program_[p];
      if (e.op == Op::kEndAlt) {
        open = true;
      } else if (open && e.op == Op::kRef) {
        first[r].push_back(e.arg);
        open = nullable[e.arg];
      } else {
        open = false;
      }
    }
  }
  // A cycle in that graph is left recursion.
  std::vector<int> mark(n, 0);  // 0 new, 1 on the path, 2 done
  std::vector<uint32_t> path;
  std::function<void(uint32_t)> visit = [&](uint32_t r) {
    mark[r] = 1;
    path.push_back(r);
    for (uint32_t s : first[r]) {
      if (mark[s] == 1) {
        std::string cycle;
        for (auto it = std::find(path.begin(), path.end(), s); it != path.end(); ++it)
          cycle += rule_name_[*it] + " -> ";
        throw Error("grammar: left recursion: rule '" + rule_name_[s] + "' can begin with itself (" + cycle +
                    rule_name_[s] + ")");
      }
      if (mark[s] == 0) visit(s);
    }
    path.pop_back();
    mark[r] = 2;
  };
  for (uint32_t r = 0; r < n; ++r) {
    if (mark[r] == 0) visit(r);
  }
}

std::string Grammar::ToString() const {
  std::string out;
  for (size_t r = 0; r < rule_start_.size(); ++r) {
    out += rule_name_[r] + " ::=";
    for (uint32_t p = rule_start_[r]; program_[p].op != Op::kEndRule; ++p) {
      const Elem& e = program_[p];
      if (e.op == Op::kEndAlt) {
        const bool empty = p == rule_start_[r] || program_[p - 1].op == Op::kEndAlt;
        if (empty) out += " \"\"";  // (an alternative may go on at the next line)
        if (program_[p + 1].op != Op::kEndRule) out += " |";
        continue;
      }
      if (e.op == Op::kRef) {
        out += " " + rule_name_[e.arg];
      } else {
        const CharClass& c = classes_[e.arg];
        if (!c.negated && c.ranges.size() == 1 && c.ranges[0].first == c.ranges[0].second) {
          out += " \"";
          out += Escape(c.ranges[0].first, false);
          out += '"';
        } else {
          out += c.negated ? " [^" : " [";
          for (const auto& [lo, hi] : c.ranges) {
            out += Escape(lo, true);
            if (hi != lo) {
              out += '-';
              out += Escape(hi, true);
            }
          }
          out += "]";
        }
      }
    }
    out += "\n";
  }
  return out;
}

// ---------------------------------------------------------------- stacks

uint32_t Grammar::Push(uint32_t parent, uint32_t pos) {
  const uint64_t key = uint64_t{parent} << 32 | pos;
  const auto [it, added] = node_ids_.emplace(key, static_cast<uint32_t>(nodes_.size()));
  if (added) {
    if (nodes_.size() >= kMaxStackIds) {
      node_ids_.erase(it);
      throw Error("grammar: more than " + std::to_string(kMaxStackIds) + " distinct parse stacks");
    }
    nodes_.push_back({pos, parent});
  }
  return it->second;
}

void Grammar::Expand(uint32_t parent, uint32_t pos, std::vector<uint32_t>& out) {
  const Elem& e = program_[pos];
  if (e.op == Op::kChars) {
    out.push_back(Push(parent, pos));
    return;
  }
  // A reference: the rest of this sequence waits under each alternative of the rule.
  const uint32_t rest = IsEndOp(program_[pos + 1].op) ? parent : Push(parent, pos + 1);
  uint32_t p = rule_start_[e.arg];
  while (program_[p].op != Op::kEndRule) {
    if (program_[p].op == Op::kEndAlt) {  // an empty alternative: on with the rest
      ExpandStack(rest, out);
    } else {
      Expand(rest, p, out);
      while (program_[p].op != Op::kEndAlt) ++p;
    }
    ++p;
  }
}

void Grammar::ExpandStack(uint32_t stack, std::vector<uint32_t>& out) {
  if (stack == 0) {
    out.push_back(0);
    return;
  }
  Expand(nodes_[stack].parent, nodes_[stack].pos, out);
}

const std::vector<uint32_t>& Grammar::Advance(uint32_t stack) {
  const auto found = advanced_.find(stack);
  if (found != advanced_.end()) return found->second;
  const StackNode node = nodes_[stack];
  std::vector<uint32_t> out;
  if (IsEndOp(program_[node.pos + 1].op)) {
    ExpandStack(node.parent, out);
  } else {
    Expand(node.parent, node.pos + 1, out);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return advanced_.emplace(stack, std::move(out)).first->second;
}

// ---------------------------------------------------------------- recognition

bool Grammar::AcceptCodePoint(State& s, uint32_t cp) {
  thread_local std::vector<uint32_t> next;
  next.clear();
  for (uint32_t stack : s.stacks) {
    if (stack == 0 || !classes_[program_[nodes_[stack].pos].arg].Matches(cp)) continue;
    const std::vector<uint32_t>& adv = Advance(stack);
    next.insert(next.end(), adv.begin(), adv.end());
  }
  std::sort(next.begin(), next.end());
  next.erase(std::unique(next.begin(), next.end()), next.end());
  if (next.empty()) return false;
  if (next.size() > kMaxStacks) {
    throw Error(
        "grammar: the text so far has more than " + std::to_string(kMaxStacks) +
        " possible parses (an ambiguous grammar, such as a repetition of something that can be empty)");
  }
  s.stacks.assign(next.begin(), next.end());
  return true;
}

bool Grammar::PartialViable(const State& s) const {
  const int shift = 6 * s.partial_left;
  uint32_t lo = s.partial << shift, hi = lo | ((1u << shift) - 1);
  if (s.partial_len == 3) lo = std::max(lo, 0x800u);
  if (s.partial_len == 4) lo = std::max(lo, 0x10000u), hi = std::min(hi, kMaxCodePoint);
  if (lo > hi || (lo >= 0xD800 && hi <= 0xDFFF)) return false;
  for (uint32_t stack : s.stacks) {
    if (stack != 0 && classes_[program_[nodes_[stack].pos].arg].Intersects(lo, hi)) return true;
  }
  return false;
}

bool Grammar::Step(State& s, uint8_t b) {
  if (s.partial_left == 0) {
    if (b < 0x80) return AcceptCodePoint(s, b);
    if (b >= 0xC2 && b <= 0xDF) {
      s.partial = b & 0x1Fu, s.partial_left = 1, s.partial_len = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      s.partial = b & 0x0Fu, s.partial_left = 2, s.partial_len = 3;
    } else if (b >= 0xF0 && b <= 0xF4) {
      s.partial = b & 0x07u, s.partial_left = 3, s.partial_len = 4;
    } else {
      return false;
    }
    return PartialViable(s);
  }
  if ((b & 0xC0) != 0x80) return false;
  s.partial = s.partial << 6 | (b & 0x3Fu);
  if (--s.partial_left > 0) return PartialViable(s);
  const uint32_t cp = s.partial;
  s.partial = 0;
  const bool overlong = (s.partial_len == 3 && cp < 0x800) || (s.partial_len == 4 && cp < 0x10000);
  s.partial_len = 0;
  if (overlong || cp > kMaxCodePoint || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
  return AcceptCodePoint(s, cp);
}

int32_t Grammar::StateId(const State& s) {
  std::string key(reinterpret_cast<const char*>(s.stacks.data()), s.stacks.size() * sizeof(uint32_t));
  key += static_cast<char>(s.partial_left);
  key += static_cast<char>(s.partial_len);
  key.append(reinterpret_cast<const char*>(&s.partial), sizeof(s.partial));
  const auto [it, added] = dfa_ids_.emplace(std::move(key), static_cast<int32_t>(dfa_states_.size()));
  if (added) {
    dfa_states_.push_back(s);
    dfa_next_.resize(dfa_next_.size() + 256, kUnknown);
  }
  return it->second;
}

int32_t Grammar::Next(int32_t id, uint8_t byte) {
  const size_t at = static_cast<size_t>(id) * 256 + byte;
  if (dfa_next_[at] != kUnknown) return dfa_next_[at];
  State s = dfa_states_[static_cast<size_t>(id)];
  const int32_t next = Step(s, byte) ? StateId(s) : kDead;
  dfa_next_[at] = next;  // (after StateId, which may grow the table)
  return next;
}

void Grammar::ResetAutomatonIfFull() {
  if (dfa_states_.size() <= automaton_limit_) return;
  dfa_states_.clear();
  dfa_next_.clear();
  dfa_ids_.clear();
  ++dfa_epoch_;
}

GrammarMatcher::GrammarMatcher(std::shared_ptr<Grammar> grammar) : grammar_(std::move(grammar)) {
  if (!grammar_) throw Error("GrammarMatcher: no grammar");
  state_.stacks = grammar_->initial_;
  dead_ = state_.stacks.empty();
}

int32_t GrammarMatcher::Id() const {
  if (id_ == Grammar::kUnknown || epoch_ != grammar_->dfa_epoch_) {
    id_ = grammar_->StateId(state_);
    epoch_ = grammar_->dfa_epoch_;
  }
  return id_;
}

bool GrammarMatcher::complete() const {
  return !dead_ && state_.partial_left == 0 && !state_.stacks.empty() && state_.stacks[0] == 0;
}

bool GrammarMatcher::Feed(std::string_view text) {
  for (char c : text) {
    if (!Feed(static_cast<uint8_t>(c))) return false;
  }
  return true;
}

bool GrammarMatcher::Feed(uint8_t byte) {
  if (dead_) return false;
  grammar_->ResetAutomatonIfFull();
  const int32_t next = grammar_->Next(Id(), byte);
  if (next == Grammar::kDead) {
    dead_ = true;
    state_.stacks.clear();
    return false;
  }
  state_ = grammar_->dfa_states_[static_cast<size_t>(next)];
  id_ = next;
  return true;
}

// ---------------------------------------------------------------- the vocabulary trie

TokenTrie::TokenTrie(const std::vector<std::string>& pieces) {
  // Sorted pieces make every node's children contiguous: build depth-first from the sorted list.
  std::vector<int32_t> order;
  for (size_t id = 0; id < pieces.size(); ++id) {
    if (!pieces[id].empty()) order.push_back(static_cast<int32_t>(id));
  }
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return pieces[a] < pieces[b]; });
  // Recursive construction over [lo, hi) of `order` sharing the first `depth` bytes.
  nodes_.push_back({});
  std::function<void(uint32_t, size_t, size_t, size_t)> build = [&](uint32_t node, size_t lo, size_t hi,
                                                                    size_t depth) {
    size_t i = lo;
    nodes_[node].first_token = static_cast<uint32_t>(tokens_.size());
    while (i < hi && pieces[order[i]].size() == depth) tokens_.push_back(order[i++]);
    nodes_[node].num_tokens = static_cast<uint32_t>(tokens_.size()) - nodes_[node].first_token;
    // Children: runs of the same byte at `depth`.
    std::vector<std::pair<uint8_t, std::pair<size_t, size_t>>> runs;
    while (i < hi) {
      const uint8_t byte = static_cast<uint8_t>(pieces[order[i]][depth]);
      size_t j = i;
      while (j < hi && static_cast<uint8_t>(pieces[order[j]][depth]) == byte) ++j;
      runs.push_back({byte, {i, j}});
      i = j;
    }
    nodes_[node].first_child = static_cast<uint32_t>(children_.size());
    nodes_[node].num_children = static_cast<uint32_t>(runs.size());
    for (const auto& run : runs) {
      children_.push_back({run.first, static_cast<uint32_t>(nodes_.size())});
      nodes_.push_back({});
    }
    for (size_t k = 0; k < runs.size(); ++k) {
      build(children_[nodes_[node].first_child + k].node, runs[k].second.first, runs[k].second.second,
            depth + 1);
    }
  };
  build(0, 0, order.size(), 0);
}

void TokenTrie::Allowed(const GrammarMatcher& matcher, std::vector<uint8_t>& allowed,
                        TokenMaskCache* cache) const {
  if (matcher.dead()) {
    for (int32_t id : tokens_) allowed[static_cast<size_t>(id)] = 0;
    return;
  }
  Grammar& g = *matcher.grammar_;
  g.ResetAutomatonIfFull();
  const int32_t start = matcher.Id();
  if (cache != nullptr) {
    if (cache->grammar != &g || cache->epoch != g.dfa_epoch_ || cache->masks.size() >= kMaskCache) {
      cache->masks.clear();
      cache->grammar = &g;
      cache->epoch = g.dfa_epoch_;
    }
    if (const auto hit = cache->masks.find(start); hit != cache->masks.end()) {
      for (int32_t id : tokens_) allowed[static_cast<size_t>(id)] = hit->second[static_cast<size_t>(id)];
      return;
    }
  }
  // Depth-first over the trie with the automaton's state numbers.
  Walk(
      start,
      [&g](int32_t parent, uint8_t byte, int32_t& child) {
        child = g.Next(parent, byte);
        return child != Grammar::kDead;
      },
      allowed);
  if (cache != nullptr && cache->epoch == g.dfa_epoch_) cache->masks.emplace(start, allowed);
}

}  // namespace attn
