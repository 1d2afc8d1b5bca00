// attn serve's reading of a model's own tool-call format (<tool_call> templates, serve/tools.h) and
// the messages it gives a Jinja chat template.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "attn/error.h"
#include "serve/tools.h"

namespace attn::serve {
namespace {

using json = nlohmann::json;

TEST(ToolCallTags, HermesJsonCalls) {
  bool calls = false;
  const json m = ToolCallTagAnswerMessage(
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"add\", \"arguments\": \"{\\\"a\\\": 1, \\\"b\\\": 2}\"}\n</tool_call>",
      "x", &calls);
  ASSERT_TRUE(calls);
  EXPECT_TRUE(m["content"].is_null());
  ASSERT_EQ(m["tool_calls"].size(), 2u);
  EXPECT_EQ(m["tool_calls"][0]["id"], "call_x_0");
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(m["tool_calls"][0]["function"]["arguments"].get<std::string>()),
            json({{"city", "Paris"}}));
  EXPECT_EQ(json::parse(m["tool_calls"][1]["function"]["arguments"].get<std::string>()),
            json({{"a", 1}, {"b", 2}}));
}

TEST(ToolCallTags, QwenCoderXmlCallsAndLeadingText) {
  bool calls = false;
  const json m = ToolCallTagAnswerMessage(
      "<think>\nweather\n</think>\n\nLet me "
      "look.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n"
      "</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
      "y", &calls);
  ASSERT_TRUE(calls);
  EXPECT_EQ(m["content"], "<think>\nweather\n</think>\n\nLet me look.");
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(m["tool_calls"][0]["function"]["arguments"].get<std::string>()),
            json({{"city", "Paris"}, {"days", 3}}));
}

TEST(ToolCallTags, AnythingElseIsContent) {
  for (const char* text : {"Just an answer.", "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": ",
                           "<tool_call>not json</tool_call>", "<tool_call>{\"arguments\": {}}</tool_call>",
                           "<tool_call>{\"name\": \"f\"}</tool_call> and then more text"}) {
    bool calls = true;
    const json m = ToolCallTagAnswerMessage(text, "z", &calls);
    EXPECT_FALSE(calls) << text;
    EXPECT_EQ(m["content"], text);
    EXPECT_FALSE(m.contains("tool_calls")) << text;
  }
  bool calls = false;  // a last call cut at the end of the turn, without its closing tag
  ToolCallTagAnswerMessage("<tool_call>{\"name\": \"f\", \"arguments\": {}}", "z", &calls);
  EXPECT_TRUE(calls);
  EXPECT_TRUE(IsToolCallTagTemplate("{{- '<tool_call>\\n' }}"));
  EXPECT_FALSE(IsToolCallTagTemplate("{{ '<|python_tag|>' }}"));
}

TEST(ToolCallTags, TemplateMessagesCarryStructuredCalls) {
  const json assistant = json::parse(R"({"role": "assistant", "content": null, "tool_calls": [{"id": "c1",
      "type": "function", "function": {"name": "add", "arguments": "{\"a\": 1}"}}]})");
  const nlohmann::ordered_json m = TemplateMessage(assistant, 1, "assistant", "");
  EXPECT_EQ(
      m.dump(),
      R"({"role":"assistant","content":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"add","arguments":{"a":1}}}]})");
  const json tool = json::parse(R"({"role": "tool", "tool_call_id": "c1", "content": "3"})");
  EXPECT_EQ(TemplateMessage(tool, 2, "tool", "3").dump(),
            R"({"role":"tool","content":"3","tool_call_id":"c1"})");
  EXPECT_THROW(TemplateMessage(json::parse(R"({"role": "tool", "name": 5})"), 3, "tool", ""), Error);
}

}  // namespace
}  // namespace attn::serve
