// The thinking of reasoning models (DeepSeek R1, Qwen 3, QwQ, gpt-oss, ...) apart from their answer, as
// llama.cpp's server returns it with --reasoning-format deepseek: the text inside <think> ...
// </think> at the start of an answer becomes the message's "reasoning_content" (streamed as
// delta.reasoning_content), the rest its "content". Templates that open the think block
// themselves (DeepSeek R1's generation prompt ends with "<think>\n") start the answer inside it.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace attn::serve {

// An answer split into reasoning, content and tool calls as it streams: Feed each piece, then
// Finish. What comes out is the same however the text is cut into pieces (a tag split across
// pieces is held back until it is whole). Each call is {"name", "arguments" (an object)}, given
// once whole. (The tool formats' splitters are in serve/tools.h.)
class AnswerSplitter {
 public:
  // A piece of a call as it streams (ToolSplitter with stream_arguments): the call's number in the
  // answer, its name on the call's first piece (empty on the others), the next text of its
  // arguments.
  struct CallDelta {
    size_t index = 0;
    std::string name, arguments;
    bool operator==(const CallDelta&) const = default;
  };
  struct Out {
    std::string reasoning, content;
    std::vector<nlohmann::ordered_json> calls;
    std::vector<CallDelta> call_deltas;
    Out& operator+=(Out other);
  };
  virtual ~AnswerSplitter() = default;
  virtual Out Feed(const std::string& piece) = 0;
  virtual Out Finish() = 0;
  // The whole answer at once: Feed(text) + Finish().
  Out Split(const std::string& text);
};

// The JSON value at the start of `raw` (after whitespace): the length of the text up to its end,
// npos while it is not complete; with `compact`, its text without the whitespace between its tokens
// (or what there is of it so far) appended there. A scalar (number, true, false, null) ends where
// whitespace, ",", ":", "}" or "]" follows it.
size_t ScanJsonValue(std::string_view raw, std::string* compact = nullptr);
// ScanJsonValue's compact text: what a call's arguments stream as. The compaction of a prefix of a
// text is a prefix of the text's.
std::string CompactJson(std::string_view raw);

// The calls of a splitter with stream_arguments, numbered as they come: a call started (its name
// and where its arguments begin in its block are known) streams its arguments as the block grows
// and is a call once the block ends, its arguments as written (arguments_text); calls read whole
// are numbered too (AnswerSplitter::CallDelta's index).
class CallStream {
 public:
  bool started() const { return started_; }
  // Starts call `name`, its arguments at offset `args` of its block's text.
  void Start(std::string name, size_t args, AnswerSplitter::Out& out);
  // The block's text so far: the arguments written since the last time, as deltas.
  void Stream(std::string_view block, AnswerSplitter::Out& out);
  // The started call's block ended: the call (`parsed`, as the block reads whole, when it does; else
  // the name and its arguments, {} where they are not an object), with arguments_text as streamed.
  void Close(std::string_view block, std::optional<nlohmann::ordered_json> parsed, AnswerSplitter::Out& out);
  // A call read whole.
  void Whole(nlohmann::ordered_json call, AnswerSplitter::Out& out);

 private:
  size_t calls_ = 0;  // calls so far
  bool started_ = false;
  std::string name_;
  size_t args_ = 0, sent_ = 0;  // where the arguments start; bytes of them streamed
};

// DeepSeek's <think> block. Whitespace around the reasoning and before the content is dropped; an
// answer that does not start with <think> (after whitespace) is all content; one cut inside the
// block is all reasoning.
class ReasoningSplitter : public AnswerSplitter {
 public:
  // open: the prompt ends inside a think block (its last text is "<think>", maybe with whitespace).
  explicit ReasoningSplitter(bool open) : state_(open ? State::kThinking : State::kStart) {}
  Out Feed(const std::string& piece) override;
  Out Finish() override;

 private:
  enum class State { kStart, kThinking, kContentStart, kContent };
  State state_;
  std::string held_;              // text not yet placed: a possible tag prefix or trailing whitespace
  bool reasoning_begun_ = false;  // leading whitespace of the reasoning is dropped
};

// The whole answer at once.
ReasoningSplitter::Out SplitReasoning(const std::string& text, bool open);

// gpt-oss's harmony answers: messages "[HEADER]<|message|>BODY" ended by <|end|>,
// <|return|>, <|call|> or <|start|> (which opens the next message's header). The bodies of the
// analysis channel ("<|channel|>analysis" in the header) are the reasoning, joined by "\n"; every
// other message's body (the final channel, commentary) is content, headers and markers dropped.
// An answer that does not open with a header ("<|channel|>", "to=" or " to=") starts with plain
// content up to its first <|start|>; a first header that never reaches <|message|> is content as
// written (an answer cut short), a later one is dropped. With `calls` (a request with tools), a
// message whose header names "to=functions.NAME" is a call of NAME, its body the arguments (a JSON
// object; a body that is not one is content). stream_arguments: as ToolSplitter's (a call's body
// streams once it opens with "{").
class HarmonySplitter : public AnswerSplitter {
 public:
  explicit HarmonySplitter(bool calls = false, bool stream_arguments = false)
      : calls_(calls), stream_(calls && stream_arguments) {}
  Out Feed(const std::string& piece) override;
  Out Finish() override;

 private:
  enum class State { kStart, kPlain, kHeader, kBody };
  // A call of call_ with `body` as its arguments, or the body as content when they are not an object
  // (a streamed call is a call whatever its body).
  Out CallOrContent(const std::string& body);
  void StreamCall(std::string_view body, Out& out);  // the call's arguments written so far
  State state_ = State::kStart;
  std::string held_;
  bool first_ = true;      // still in the answer's first segment
  bool analysis_ = false;  // the current body is the analysis channel's
  bool reasoned_ = false;  // some reasoning has come out (the next analysis body starts with "\n")
  bool calls_;
  std::string call_;  // the function the current body calls, when it is a call
  bool stream_;
  CallStream stream_calls_;
};

// Two splitters in turn: `second` reads the content of `first` (the think block apart, then the
// tool calls in what follows it).
class ChainedSplitter : public AnswerSplitter {
 public:
  ChainedSplitter(std::unique_ptr<AnswerSplitter> first, std::unique_ptr<AnswerSplitter> second)
      : first_(std::move(first)), second_(std::move(second)) {}
  Out Feed(const std::string& piece) override;
  Out Finish() override;

 private:
  Out Then(Out out);
  std::unique_ptr<AnswerSplitter> first_, second_;
};

// The length of the longest suffix of s that is a proper prefix of tag: text to hold back, since
// the next piece may complete the tag.
size_t PartialTag(std::string_view s, std::string_view tag);

// Whether a prompt ends inside a think block: its last non-whitespace text is "<think>" (or Command
// R7B's "<|START_THINKING|>").
bool PromptOpensThinking(const std::string& prompt);

}  // namespace attn::serve
