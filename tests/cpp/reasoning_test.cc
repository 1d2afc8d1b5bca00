// serve::ReasoningSplitter (src/serve/reasoning.h): the think block of a reasoning model's answer
// apart from its content, the same however the answer streams in.
#include "serve/reasoning.h"

#include <gtest/gtest.h>

#include <string>

namespace attn::serve {
namespace {

struct Case {
  const char* text;
  bool open;
  const char* reasoning;
  const char* content;
};

const Case kCases[] = {
    {"<think>\nLet me see.\n</think>\n\nParis.", false, "Let me see.", "Paris."},
    {"  <think>a b</think>c", false, "a b", "c"},
    {"Let me see.\n</think>\n\nParis.", true, "Let me see.", "Paris."},   // the prompt opened the block
    {"<think>\n\n</think>\n\nParis.", false, "", "Paris."},               // Qwen3 without thinking
    {"Paris. <think>no</think>", false, "", "Paris. <think>no</think>"},  // not at the start
    {"  Paris.", false, "", "  Paris."},                                  // no block: the text as it is
    {"<thin", false, "", "<thin"},                                        // cut in the tag
    {"<think>still thinking, cut by max_tokens  ", false, "still thinking, cut by max_tokens", ""},
    {"<think>a </thi", false, "a </thi", ""},
    {"<think>x < y and </b> tags</think>ok", false, "x < y and </b> tags", "ok"},
    {"", false, "", ""},
    {"", true, "", ""},
};

TEST(Reasoning, SplitsTheThinkBlock) {
  for (const Case& c : kCases) {
    const ReasoningSplitter::Out out = SplitReasoning(c.text, c.open);
    EXPECT_EQ(out.reasoning, c.reasoning) << c.text;
    EXPECT_EQ(out.content, c.content) << c.text;
  }
}

TEST(Reasoning, StreamingGivesTheSameAtEveryCut) {
  for (const Case& c : kCases) {
    const std::string text = c.text;
    for (size_t a = 0; a <= text.size(); ++a) {
      for (size_t b = a; b <= text.size(); ++b) {
        ReasoningSplitter s(c.open);
        std::string reasoning, content;
        for (const std::string& piece : {text.substr(0, a), text.substr(a, b - a), text.substr(b)}) {
          const ReasoningSplitter::Out out = s.Feed(piece);
          reasoning += out.reasoning, content += out.content;
        }
        const ReasoningSplitter::Out out = s.Finish();
        reasoning += out.reasoning, content += out.content;
        EXPECT_EQ(reasoning, c.reasoning) << c.text << " cut at " << a << ", " << b;
        EXPECT_EQ(content, c.content) << c.text << " cut at " << a << ", " << b;
      }
    }
  }
}

TEST(Reasoning, PromptsThatOpenTheBlock) {
  EXPECT_TRUE(PromptOpensThinking("<|Assistant|><think>\n"));
  EXPECT_TRUE(PromptOpensThinking("<think>"));
  EXPECT_FALSE(PromptOpensThinking("<think>\n\n</think>\n\n"));
  EXPECT_FALSE(PromptOpensThinking("<|im_start|>assistant\n"));
}

}  // namespace
}  // namespace attn::serve
