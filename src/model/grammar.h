// Grammar-constrained generation: GBNF grammars (llama.cpp's grammar format) parsed into rules,
// a recognizer of their sentences fed byte by byte, and the token mask that keeps generation on
// them (every token whose text would leave the grammar is masked; end of generation only where a
// sentence is complete).
//
// The GBNF dialect (as llama.cpp's grammars/README.md describes it):
//   name ::= alternatives          one rule per line; a rule goes on past line ends only inside
//                                  parentheses; names are [A-Za-z0-9-]+; # starts a comment
//   "literal"  [a-z0-9_]  [^"\\]   literals and character classes (ranges, ^ negates), escapes
//                                  \n \r \t \\ \" \[ \] \- \^ \xHH \uHHHH \UHHHHHHHH
//   .                              any character
//   ( ... )  a | b                 grouping and alternatives; an empty alternative matches nothing
//   x*  x+  x?  x{m}  x{m,}  x{m,n} repetition
// Characters are Unicode code points: the recognizer decodes UTF-8 (a character class matches one
// code point, whatever its byte length) and refuses bytes that are not UTF-8 (overlong forms,
// surrogates, code points past U+10FFFF).
//
// Recognition follows the grammar's pushdown automaton: the state is the set of stacks of
// grammar positions still possible (each stack interned once in the grammar's table, so that
// states are small arrays of ids and a token mask can be walked through a trie of the vocabulary
// cheaply). Left recursion (a rule that can begin with itself) is refused at parse time, because
// such a grammar has no finite set of stacks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace attn {

class Grammar {
 public:
  // Parses GBNF text with `root` as its start rule. Throws attn::Error naming the line and column
  // and what was wrong (a syntax error, an undefined rule, a missing root, left recursion, a
  // repetition count over kMaxRepeat).
  static std::shared_ptr<Grammar> Parse(std::string_view text, std::string_view root = "root");

  static constexpr int kMaxRepeat = 1000;  // largest count of x{m,n}
  // Stacks of one state: more, and feeding throws attn::Error (a grammar that ambiguous, such as
  // ("a"?){0,1000}, makes every byte cost as much as its parses).
  static constexpr size_t kMaxStacks = 4096;
  static constexpr size_t kMaxStackIds = 1 << 22;  // interned stacks of one grammar

  // The rules after parsing, in GBNF (repetitions rewritten into generated rules), for error
  // messages and debugging.
  std::string ToString() const;
  int num_rules() const { return static_cast<int>(rule_start_.size()); }

  // Recognition states seen so far are numbered, with their transitions per byte filled in as
  // they are first taken (a deterministic automaton built lazily), so that feeding a byte is
  // mostly one table lookup. When more than `limit` states are numbered, the table is dropped
  // (before the next feed or mask) and rebuilt as needed; matchers keep their own states.
  static constexpr size_t kMaxAutomatonStates = 1 << 14;  // 256 transitions of 4 bytes each
  void SetAutomatonLimit(size_t limit) { automaton_limit_ = limit; }
  size_t automaton_states() const { return dfa_states_.size(); }

 private:
  friend class GrammarMatcher;
  friend class GrammarParser;
  friend class TokenTrie;
  Grammar() = default;

  // One element of a rule's flat program: a rule's alternatives are sequences of elements, each
  // ended by kEndAlt, the rule by kEndRule.
  enum class Op : uint8_t { kEndRule, kEndAlt, kRef, kChars };
  struct Elem {
    Op op;
    uint32_t arg;  // kRef: the rule; kChars: the class
  };
  struct CharClass {
    bool negated = false;
    std::vector<std::pair<uint32_t, uint32_t>> ranges;  // inclusive code point ranges
    bool Matches(uint32_t cp) const;
    bool Intersects(uint32_t lo, uint32_t hi) const;  // any code point in [lo, hi] matches
  };
  // An interned stack: `pos` (the element to match next, a kChars element) on top of `parent`
  // (0: the empty stack, which is the id of an accepting state's stack).
  struct StackNode {
    uint32_t pos;
    uint32_t parent;
  };

  static bool IsEndOp(Op op) { return op == Op::kEndAlt || op == Op::kEndRule; }
  uint32_t Push(uint32_t parent, uint32_t pos);
  // The stacks whose tops are character classes (or the empty stack) reached from `stack` with
  // positions `pos` pushed on it, expanding rule references (appended to `out`).
  void Expand(uint32_t parent, uint32_t pos, std::vector<uint32_t>& out);
  void ExpandStack(uint32_t stack, std::vector<uint32_t>& out);  // `stack` itself, expanded
  // The stacks after the top class of `stack` matched a code point (expanded).
  const std::vector<uint32_t>& Advance(uint32_t stack);
  void CheckLeftRecursion() const;

  // A recognition state: the sorted ids of the stacks still possible, and the UTF-8 character
  // being read (its bits so far, the continuation bytes still to come, its length).
  struct State {
    std::vector<uint32_t> stacks;
    uint32_t partial = 0;
    int8_t partial_left = 0, partial_len = 0;
  };
  // One byte into `s`; false when no stack can take it (s is then meaningless).
  bool Step(State& s, uint8_t byte);
  bool AcceptCodePoint(State& s, uint32_t cp);
  bool PartialViable(const State& s) const;
  // The automaton: a state's number (interned), the number after a byte (kDead: refused).
  static constexpr int32_t kUnknown = -1, kDead = -2;
  int32_t StateId(const State& s);
  int32_t Next(int32_t id, uint8_t byte);
  void ResetAutomatonIfFull();

  std::vector<Elem> program_;
  std::vector<uint32_t> rule_start_;  // rule -> first element
  std::vector<std::string> rule_name_;
  std::vector<CharClass> classes_;
  uint32_t root_ = 0;
  // Interned stacks (node 0: the empty stack) and their cached advances.
  std::vector<StackNode> nodes_{{0, 0}};
  std::unordered_map<uint64_t, uint32_t> node_ids_;
  std::unordered_map<uint32_t, std::vector<uint32_t>> advanced_;
  std::vector<uint32_t> initial_;  // the expanded stacks of the root rule
  std::vector<State> dfa_states_;
  std::vector<int32_t> dfa_next_;  // [state * 256 + byte]
  std::unordered_map<std::string, int32_t> dfa_ids_;
  uint64_t dfa_epoch_ = 0;  // counts the table's resets
  size_t automaton_limit_ = kMaxAutomatonStates;
};

// The state of recognizing one text with a Grammar. Copies are cheap (a few ids) and share the
// grammar, whose stack table they extend: a matcher and its copies are for one thread at a time.
class GrammarMatcher {
 public:
  explicit GrammarMatcher(std::shared_ptr<Grammar> grammar);

  // Feeds one byte: false when it cannot continue a sentence of the grammar (the matcher is then
  // dead: it refuses everything after). Throws attn::Error past Grammar::kMaxStacks parses.
  bool Feed(uint8_t byte);
  bool Feed(std::string_view text);
  // Whether the bytes so far are a complete sentence (no partial UTF-8 character pending).
  bool complete() const;
  bool dead() const { return dead_; }

 private:
  friend class TokenTrie;
  int32_t Id() const;  // the state's number in the grammar's automaton now

  std::shared_ptr<Grammar> grammar_;
  Grammar::State state_;
  bool dead_ = false;
  mutable int32_t id_ = Grammar::kUnknown;  // state_'s number, valid while the epoch is
  mutable uint64_t epoch_ = 0;
};

// Masks by automaton state (TokenTrie::Allowed), for one grammar and one epoch of its automaton.
struct TokenMaskCache {
  const Grammar* grammar = nullptr;
  uint64_t epoch = 0;
  std::unordered_map<int32_t, std::vector<uint8_t>> masks;
};

// The vocabulary as a byte trie, for masks: tokens sharing a prefix are tried together.
class TokenTrie {
 public:
  // pieces[id]: the token's text; empty ones (control tokens) are not in the trie.
  explicit TokenTrie(const std::vector<std::string>& pieces);

  // allowed[id] = 1 for every token whose text keeps `recognizer` alive, else 0 (allowed has one
  // entry per piece; entries of empty pieces are left as they are). A recognizer is a GrammarMatcher
  // or anything with a `bool Feed(uint8_t)` that refuses for good, copied once per trie level.
  template <class Recognizer>
  void Allowed(const Recognizer& recognizer, std::vector<uint8_t>& allowed) const;
  // The same for a grammar, through its automaton (states as numbers, no copies). A state's mask
  // depends on nothing else: with a cache, the masks of the last kMaskCache states are kept.
  static constexpr size_t kMaskCache = 64;
  void Allowed(const GrammarMatcher& matcher, std::vector<uint8_t>& allowed,
               TokenMaskCache* cache = nullptr) const;

 private:
  // Depth-first over the trie from `root`: advance(parent, byte, child) sets the state after a
  // byte and says whether it lives; every token at a live node is allowed, all others not.
  template <class State, class Advance>
  void Walk(const State& root, const Advance& advance, std::vector<uint8_t>& allowed) const;

  struct Node {
    uint32_t first_child = 0, num_children = 0;  // into children_
    uint32_t first_token = 0, num_tokens = 0;    // into tokens_
  };
  struct Edge {
    uint8_t byte;
    uint32_t node;
  };
  std::vector<Node> nodes_;
  std::vector<Edge> children_;
  std::vector<int32_t> tokens_;
};

// A model's vocabulary for constraints (Model::constraint_vocabulary).
struct ConstraintVocabulary {
  std::vector<std::string> pieces;  // every token's text; control and unused tokens empty
  TokenTrie trie;
  std::vector<int32_t> textless;  // the ids whose piece is empty (not in the trie)
};

template <class State, class Advance>
void TokenTrie::Walk(const State& root, const Advance& advance, std::vector<uint8_t>& allowed) const {
  for (int32_t id : tokens_) allowed[static_cast<size_t>(id)] = 0;
  // Depth-first, one state per depth (its storage reused between siblings).
  std::vector<State> states{root};
  struct Frame {
    uint32_t node, next_child;
  };
  std::vector<Frame> path{{0, 0}};
  while (!path.empty()) {
    Frame& f = path.back();
    const Node& n = nodes_[f.node];
    if (f.next_child == n.num_children) {
      path.pop_back();
      continue;
    }
    const Edge& edge = children_[n.first_child + f.next_child++];
    const size_t depth = path.size();
    if (states.size() <= depth) states.resize(depth + 1, root);
    if (!advance(states[depth - 1], edge.byte, states[depth])) continue;
    const Node& child = nodes_[edge.node];
    for (uint32_t t = 0; t < child.num_tokens; ++t)
      allowed[static_cast<size_t>(tokens_[child.first_token + t])] = 1;
    path.push_back({edge.node, 0});
  }
}

template <class Recognizer>
void TokenTrie::Allowed(const Recognizer& recognizer, std::vector<uint8_t>& allowed) const {
  Walk(
      recognizer,
      [](const Recognizer& parent, uint8_t byte, Recognizer& child) {
        child = parent;
        return child.Feed(byte);
      },
      allowed);
}

}  // namespace attn
