// serve::ReasoningSplitter and HarmonySplitter (src/serve/reasoning.h): the think block of a reasoning
// model's answer (gpt-oss: its analysis channel) apart from its content, the same however the
// answer streams in.
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

// Feeds `text` cut at a and b (three pieces), then finishes.
template <typename Splitter>
AnswerSplitter::Out FeedInThree(Splitter s, const std::string& text, size_t a, size_t b) {
  AnswerSplitter::Out all;
  for (const std::string& piece : {text.substr(0, a), text.substr(a, b - a), text.substr(b)})
    all += s.Feed(piece);
  all += s.Finish();
  return all;
}

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
        const AnswerSplitter::Out out = FeedInThree(ReasoningSplitter(c.open), text, a, b);
        EXPECT_EQ(out.reasoning, c.reasoning) << c.text << " cut at " << a << ", " << b;
        EXPECT_EQ(out.content, c.content) << c.text << " cut at " << a << ", " << b;
      }
    }
  }
}

// gpt-oss's harmony channels.
struct HarmonyCase {
  const char* text;
  const char* reasoning;
  const char* content;
};

const HarmonyCase kHarmonyCases[] = {
    {"<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>Paris.", "Easy.",
     "Paris."},
    {"<|channel|>analysis<|message|>A<|end|><|start|>assistant<|channel|>analysis<|message|>B<|end|>"
     "<|start|>assistant<|channel|>final<|message|>C<|return|>",
     "A\nB", "C"},
    {"<|channel|>final<|message|>Only an answer.<|return|>", "", "Only an answer."},
    {"<|channel|>commentary<|message|>Let me check.<|end|><|start|>assistant<|channel|>final<|message|>Done.",
     "", "Let me check.Done."},
    {"<|channel|>analysisx<|message|>not analysis<|end|>", "", "not analysis"},
    {"<|channel|>analysis <|constrain|>x<|message|>spaced<|end|>", "spaced", ""},
    {"<|channel|>analysis<|message|>cut short", "cut short", ""},
    {"<|channel|>analysis<|message|>a <|en", "a <|en", ""},  // a marker cut short stays text
    {"<|channel|>analysis", "", "<|channel|>analysis"},      // no message at all: as written
    {"Plain text < and <| marks.", "", "Plain text < and <| marks."},
    {"Plain<|start|>assistant<|channel|>final<|message|>then final", "", "Plainthen final"},
    {"<|start|>assistant<|channel|>final<|message|>x<|end|><|start|>assistant", "", "x"},
    {" to=functions.f<|channel|>commentary json<|message|>{\"a\":1}<|call|>", "", "{\"a\":1}"},
    {"<|channel|>analysis<|message|><|end|><|start|>assistant<|channel|>analysis<|message|>B<|end|>", "B",
     ""},
    {"<|chan", "", "<|chan"},
    {"", "", ""},
};

TEST(Harmony, SplitsTheChannelsTheSameAtEveryCut) {
  for (const HarmonyCase& c : kHarmonyCases) {
    const std::string text = c.text;
    const AnswerSplitter::Out whole = HarmonySplitter().Split(text);
    EXPECT_EQ(whole.reasoning, c.reasoning) << c.text;
    EXPECT_EQ(whole.content, c.content) << c.text;
    for (size_t a = 0; a <= text.size(); ++a) {
      for (size_t b = a; b <= text.size(); ++b) {
        const AnswerSplitter::Out out = FeedInThree(HarmonySplitter(), text, a, b);
        ASSERT_EQ(out.reasoning, c.reasoning) << c.text << " cut at " << a << ", " << b;
        ASSERT_EQ(out.content, c.content) << c.text << " cut at " << a << ", " << b;
      }
    }
  }
}

TEST(Reasoning, PromptsThatOpenTheBlock) {
  EXPECT_TRUE(PromptOpensThinking("<|Assistant|><think>\n"));
  EXPECT_TRUE(PromptOpensThinking("<think>"));
  EXPECT_TRUE(PromptOpensThinking("<|CHATBOT_TOKEN|><|START_THINKING|>"));
  EXPECT_FALSE(PromptOpensThinking("<think>\n\n</think>\n\n"));
  EXPECT_FALSE(PromptOpensThinking("<|im_start|>assistant\n"));
}

}  // namespace
}  // namespace attn::serve
