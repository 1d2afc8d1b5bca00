// The thinking of reasoning models (DeepSeek R1, Qwen 3, QwQ, ...) apart from their answer, as
// llama.cpp's server returns it with --reasoning-format deepseek: the text inside <think> ...
// </think> at the start of an answer becomes the message's "reasoning_content" (streamed as
// delta.reasoning_content), the rest its "content". Templates that open the think block
// themselves (DeepSeek R1's generation prompt ends with "<think>\n") start the answer inside it.
#pragma once

#include <string>

namespace attn::serve {

// Splits an answer as it streams: Feed each piece, then Finish. What comes out is the same however
// the text is cut into pieces (a tag split across pieces is held back until it is whole).
// Whitespace around the reasoning and before the content is dropped; an answer that does not start
// with <think> (after whitespace) is all content; one cut inside the block is all reasoning.
class ReasoningSplitter {
 public:
  struct Out {
    std::string reasoning, content;
  };
  // open: the prompt ends inside a think block (its last text is "<think>", maybe with whitespace).
  explicit ReasoningSplitter(bool open) : state_(open ? State::kThinking : State::kStart) {}
  Out Feed(const std::string& piece);
  Out Finish();

 private:
  enum class State { kStart, kThinking, kContentStart, kContent };
  State state_;
  std::string held_;              // text not yet placed: a possible tag prefix or trailing whitespace
  bool reasoning_begun_ = false;  // leading whitespace of the reasoning is dropped
};

// The whole answer at once: Feed(text) + Finish().
ReasoningSplitter::Out SplitReasoning(const std::string& text, bool open);

// Whether a prompt ends inside a think block: its last non-whitespace text is "<think>".
bool PromptOpensThinking(const std::string& prompt);

}  // namespace attn::serve
