#include "serve/reasoning.h"

#include <string_view>

namespace attn::serve {
namespace {

constexpr std::string_view kOpen = "<think>", kClose = "</think>";

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

// The length of the longest suffix of s that is a proper prefix of tag.
size_t PartialTag(std::string_view s, std::string_view tag) {
  for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; --n)
    if (s.substr(s.size() - n) == tag.substr(0, n)) return n;
  return 0;
}

}  // namespace

ReasoningSplitter::Out ReasoningSplitter::Feed(const std::string& piece) {
  Out out;
  held_ += piece;
  for (;;) {
    switch (state_) {
      case State::kStart: {  // whitespace, then "<think>" or anything else (then all is content)
        const size_t b = held_.find_first_not_of(" \n\r\t");
        if (b == std::string::npos) return out;
        const std::string_view rest = std::string_view(held_).substr(b);
        if (rest.substr(0, kOpen.size()) == kOpen) {
          held_.erase(0, b + kOpen.size());
          state_ = State::kThinking;
          continue;
        }
        if (kOpen.substr(0, rest.size()) == rest) return out;  // maybe "<thi" so far
        state_ = State::kContent;
        continue;
      }
      case State::kThinking: {
        if (!reasoning_begun_) {
          const size_t b = held_.find_first_not_of(" \n\r\t");
          held_.erase(0, b == std::string::npos ? held_.size() : b);
          if (held_.empty()) return out;
          reasoning_begun_ = true;
        }
        const size_t close = held_.find(kClose);
        if (close != std::string::npos) {
          std::string_view r = std::string_view(held_).substr(0, close);
          while (!r.empty() && IsSpace(r.back())) r.remove_suffix(1);
          out.reasoning += r;
          held_.erase(0, close + kClose.size());
          state_ = State::kContentStart;
          continue;
        }
        // Hold back a possible start of "</think>" and the whitespace before it.
        size_t keep = held_.size() - PartialTag(held_, kClose);
        while (keep > 0 && IsSpace(held_[keep - 1])) --keep;
        out.reasoning += held_.substr(0, keep);
        held_.erase(0, keep);
        return out;
      }
      case State::kContentStart: {
        const size_t b = held_.find_first_not_of(" \n\r\t");
        if (b == std::string::npos) {
          held_.clear();
          return out;
        }
        held_.erase(0, b);
        state_ = State::kContent;
        continue;
      }
      case State::kContent:
        out.content += held_;
        held_.clear();
        return out;
    }
  }
}

ReasoningSplitter::Out ReasoningSplitter::Finish() {
  Out out;
  if (state_ == State::kStart) {
    out.content = held_;  // only whitespace or the start of "<think>": an answer, not reasoning
  } else if (state_ == State::kThinking) {
    std::string_view r = held_;
    while (!r.empty() && IsSpace(r.back())) r.remove_suffix(1);
    if (reasoning_begun_) out.reasoning = r;
  } else if (state_ == State::kContent) {
    out.content = held_;
  }
  held_.clear();
  return out;
}

ReasoningSplitter::Out SplitReasoning(const std::string& text, bool open) {
  ReasoningSplitter s(open);
  ReasoningSplitter::Out a = s.Feed(text);
  const ReasoningSplitter::Out b = s.Finish();
  a.reasoning += b.reasoning;
  a.content += b.content;
  return a;
}

bool PromptOpensThinking(const std::string& prompt) {
  std::string_view p = prompt;
  while (!p.empty() && IsSpace(p.back())) p.remove_suffix(1);
  return p.size() >= kOpen.size() && p.substr(p.size() - kOpen.size()) == kOpen;
}

}  // namespace attn::serve
