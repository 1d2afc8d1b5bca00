#include "serve/reasoning.h"

#include <algorithm>
#include <string_view>
#include <utility>

namespace attn::serve {
namespace {

constexpr std::string_view kOpen = "<think>", kClose = "</think>";

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

}  // namespace

size_t PartialTag(std::string_view s, std::string_view tag) {
  for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; --n)
    if (s.substr(s.size() - n) == tag.substr(0, n)) return n;
  return 0;
}

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

AnswerSplitter::Out& AnswerSplitter::Out::operator+=(Out other) {
  reasoning += other.reasoning;
  content += other.content;
  for (nlohmann::ordered_json& call : other.calls) calls.push_back(std::move(call));
  for (CallDelta& d : other.call_deltas) call_deltas.push_back(std::move(d));
  return *this;
}

AnswerSplitter::Out AnswerSplitter::Split(const std::string& text) {
  Out a = Feed(text);
  a += Finish();
  return a;
}

AnswerSplitter::Out ChainedSplitter::Then(Out out) {
  Out second = second_->Feed(out.content);
  out.content.clear();
  out += std::move(second);
  return out;
}

AnswerSplitter::Out ChainedSplitter::Feed(const std::string& piece) { return Then(first_->Feed(piece)); }

AnswerSplitter::Out ChainedSplitter::Finish() {
  Out out = Then(first_->Finish());
  out += second_->Finish();
  return out;
}

ReasoningSplitter::Out SplitReasoning(const std::string& text, bool open) {
  return ReasoningSplitter(open).Split(text);
}

namespace {

constexpr std::string_view kChannel = "<|channel|>", kMessage = "<|message|>", kStart = "<|start|>";
constexpr std::string_view kBodyEnds[] = {"<|end|>", "<|return|>", "<|call|>", kStart};

// The earliest of `marks` in s from `from`: (position, length), or (npos, 0).
template <size_t N>
std::pair<size_t, size_t> Earliest(std::string_view s, const std::string_view (&marks)[N]) {
  std::pair<size_t, size_t> best{std::string_view::npos, 0};
  for (std::string_view m : marks) {
    const size_t at = s.find(m);
    if (at < best.first) best = {at, m.size()};
  }
  return best;
}

}  // namespace

HarmonySplitter::Out HarmonySplitter::Feed(const std::string& piece) {
  Out out;
  held_ += piece;
  for (;;) {
    switch (state_) {
      case State::kStart: {  // a header opener, or plain content
        bool maybe = false, header = false;
        for (std::string_view opener :
             {kChannel, std::string_view("to="), std::string_view(" to="), kStart}) {
          if (held_.size() < opener.size()) {
            maybe = maybe || opener.substr(0, held_.size()) == held_;
          } else if (std::string_view(held_).substr(0, opener.size()) == opener) {
            header = opener != kStart;
          }
        }
        if (maybe) return out;  // "<|cha" so far
        state_ = header ? State::kHeader : State::kPlain;
        continue;
      }
      case State::kPlain: {  // up to the first <|start|>
        const size_t at = held_.find(kStart);
        if (at != std::string::npos) {
          out.content += held_.substr(0, at);
          held_.erase(0, at + kStart.size());
          first_ = false;
          state_ = State::kHeader;
          continue;
        }
        const size_t keep = held_.size() - PartialTag(held_, kStart);
        out.content += held_.substr(0, keep);
        held_.erase(0, keep);
        return out;
      }
      case State::kHeader: {
        const size_t msg = held_.find(kMessage), next = held_.find(kStart);
        if (next != std::string::npos && next < msg) {  // a header without a message
          if (first_) out.content += held_.substr(0, next);
          held_.erase(0, next + kStart.size());
          first_ = false;
          continue;
        }
        if (msg == std::string::npos) return out;
        // The channel is the word after <|channel|> (up to a space or the next marker), a call's
        // function the word after "to=functions.".
        const std::string_view header = std::string_view(held_).substr(0, msg);
        auto word_after = [header](std::string_view mark) {
          const size_t at = header.find(mark);
          if (at == std::string_view::npos) return std::string_view();
          const std::string_view word = header.substr(at + mark.size());
          return word.substr(0, word.find_first_of(" <"));
        };
        analysis_ = word_after(kChannel) == "analysis";
        call_ = calls_ ? std::string(word_after("to=functions.")) : std::string();
        if (!call_.empty()) analysis_ = false;
        held_.erase(0, msg + kMessage.size());
        first_ = false;
        if (analysis_ && reasoned_) out.reasoning += "\n";
        state_ = State::kBody;
        continue;
      }
      case State::kBody: {
        const auto [at, len] = Earliest(held_, kBodyEnds);
        if (!call_.empty()) {  // a call's body comes out whole, or streams
          if (stream_) {
            size_t partial = 0;
            for (std::string_view end : kBodyEnds) partial = std::max(partial, PartialTag(held_, end));
            StreamCall(
                std::string_view(held_).substr(0, at == std::string::npos ? held_.size() - partial : at),
                out);
          }
          if (at == std::string::npos) return out;
          out += CallOrContent(held_.substr(0, at));
          held_.erase(0, at + len);
          state_ = State::kHeader;
          continue;
        }
        size_t keep = at;
        if (at == std::string::npos) {
          size_t partial = 0;
          for (std::string_view end : kBodyEnds) partial = std::max(partial, PartialTag(held_, end));
          keep = held_.size() - partial;
        }
        (analysis_ ? out.reasoning : out.content) += held_.substr(0, keep);
        reasoned_ = reasoned_ || (analysis_ && keep > 0);
        if (at == std::string::npos) {
          held_.erase(0, keep);
          return out;
        }
        held_.erase(0, at + len);
        state_ = State::kHeader;
        continue;
      }
    }
  }
}

HarmonySplitter::Out HarmonySplitter::Finish() {
  Out out;
  if (state_ == State::kStart || state_ == State::kPlain || (state_ == State::kHeader && first_)) {
    out.content = held_;
  } else if (state_ == State::kBody && !call_.empty()) {
    if (stream_) StreamCall(held_, out);
    out += CallOrContent(held_);
  } else if (state_ == State::kBody) {
    (analysis_ ? out.reasoning : out.content) = held_;
  }
  held_.clear();
  return out;
}

void HarmonySplitter::StreamCall(std::string_view body, Out& out) {
  if (!stream_calls_.started()) {
    const size_t at = body.find_first_not_of(" \t\r\n");
    if (at == std::string_view::npos || body[at] != '{') return;
    stream_calls_.Start(call_, at, out);
  }
  stream_calls_.Stream(body, out);
}

HarmonySplitter::Out HarmonySplitter::CallOrContent(const std::string& body) {
  Out out;
  std::optional<nlohmann::ordered_json> call;
  try {
    nlohmann::ordered_json args = nlohmann::ordered_json::parse(body);
    if (args.is_object()) call = nlohmann::ordered_json{{"name", call_}, {"arguments", std::move(args)}};
  } catch (const nlohmann::json::exception&) {
  }
  if (stream_calls_.started()) {
    stream_calls_.Close(body, std::move(call), out);
  } else if (call) {
    stream_calls_.Whole(std::move(*call), out);
  } else {
    out.content = body;
  }
  return out;
}

size_t ScanJsonValue(std::string_view raw, std::string* compact) {
  bool in_string = false, escaped = false, begun = false;
  int depth = 0;
  for (size_t i = 0; i < raw.size(); ++i) {
    const char c = raw[i];
    if (in_string) {
      if (compact != nullptr) *compact += c;
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
        if (depth == 0) return i + 1;
      }
      continue;
    }
    if (IsSpace(c)) {
      if (begun && depth == 0) return i;
      continue;
    }
    if (begun && depth == 0 && (c == ',' || c == '}' || c == ']' || c == ':')) return i;  // a scalar's end
    begun = true;
    if (compact != nullptr) *compact += c;
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if ((c == '}' || c == ']') && --depth <= 0) {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

std::string CompactJson(std::string_view raw) {
  std::string out;
  ScanJsonValue(raw, &out);
  return out;
}

void CallStream::Start(std::string name, size_t args, AnswerSplitter::Out& out) {
  started_ = true;
  name_ = std::move(name);
  args_ = args;
  sent_ = 0;
  out.call_deltas.push_back({calls_, name_, ""});
}

void CallStream::Stream(std::string_view block, AnswerSplitter::Out& out) {
  if (!started_ || block.size() < args_) return;
  const std::string args = CompactJson(block.substr(args_));
  if (args.size() > sent_) out.call_deltas.push_back({calls_, "", args.substr(sent_)});
  sent_ = std::max(sent_, args.size());
}

void CallStream::Close(std::string_view block, std::optional<nlohmann::ordered_json> parsed,
                       AnswerSplitter::Out& out) {
  Stream(block, out);
  const std::string args = CompactJson(block.substr(std::min(args_, block.size())));
  if (!parsed) {  // the arguments as an object where they are one
    nlohmann::ordered_json value = nlohmann::ordered_json::object();
    try {
      nlohmann::ordered_json v = nlohmann::ordered_json::parse(args);
      if (v.is_object()) value = std::move(v);
    } catch (const nlohmann::json::exception&) {
    }
    parsed = nlohmann::ordered_json{{"name", name_}, {"arguments", std::move(value)}};
  }
  nlohmann::ordered_json call = std::move(*parsed);
  call["arguments_text"] = args;
  out.calls.push_back(std::move(call));
  ++calls_;
  started_ = false;
}

void CallStream::Whole(nlohmann::ordered_json call, AnswerSplitter::Out& out) {
  out.calls.push_back(std::move(call));
  ++calls_;
}

bool PromptOpensThinking(const std::string& prompt) {
  std::string_view p = prompt;
  while (!p.empty() && IsSpace(p.back())) p.remove_suffix(1);
  return p.ends_with(kOpen) || p.ends_with("<|START_THINKING|>");
}

}  // namespace attn::serve
