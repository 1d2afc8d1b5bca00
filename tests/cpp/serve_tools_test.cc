// attn serve's reading of a model's own tool-call format (<tool_call> templates, serve/tools.h) and
// the messages it gives a Jinja chat template.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>

#include "attn/error.h"
#include "serve/tools.h"

namespace attn::serve {
namespace {

using json = nlohmann::json;

TEST(ToolCallTags, HermesJsonCalls) {
  bool calls = false;
  const json m = NativeToolAnswerMessage(
      ToolFormat::kToolCallTags,
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
  const json m =
      NativeToolAnswerMessage(ToolFormat::kToolCallTags,
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
    const json m = NativeToolAnswerMessage(ToolFormat::kToolCallTags, text, "z", &calls);
    EXPECT_FALSE(calls) << text;
    EXPECT_EQ(m["content"], text);
    EXPECT_FALSE(m.contains("tool_calls")) << text;
  }
  bool calls = false;  // a last call cut at the end of the turn, without its closing tag
  NativeToolAnswerMessage(ToolFormat::kToolCallTags, "<tool_call>{\"name\": \"f\", \"arguments\": {}}", "z",
                          &calls);
  EXPECT_TRUE(calls);
}

// Which format each family's real template asks for (tests/fixtures/chat_templates/).
TEST(ToolCallTags, FormatOfRealTemplates) {
  const std::pair<const char*, ToolFormat> cases[] = {
      {"Qwen-Qwen2.5-7B-Instruct.jinja", ToolFormat::kToolCallTags},
      {"Qwen-Qwen3-0.6B.jinja", ToolFormat::kToolCallTags},
      {"Qwen3-Coder.jinja", ToolFormat::kToolCallTags},
      {"NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", ToolFormat::kToolCallTags},
      {"mistralai-Mistral-Nemo-Instruct-2407.jinja", ToolFormat::kMistral},
      {"Mistral-Small-3.2-24B-Instruct-2506.jinja", ToolFormat::kMistral},
      {"meta-llama-Llama-3.1-8B-Instruct.jinja", ToolFormat::kLlama3Json},
      {"meta-llama-Llama-3.2-3B-Instruct.jinja", ToolFormat::kLlama3Json},
      {"meta-llama-Llama-3.3-70B-Instruct.jinja", ToolFormat::kLlama3Json},
      {"openai-gpt-oss-120b.jinja", ToolFormat::kHarmony},
      {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", ToolFormat::kDeepSeek},
      {"deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", ToolFormat::kDeepSeek},
      {"llama-cpp-deepseek-r1.jinja", ToolFormat::kDeepSeek},
      {"deepseek-ai-DeepSeek-V3.1.jinja", ToolFormat::kDeepSeek},
      {"meetkai-functionary-medium-v3.2.jinja", ToolFormat::kFunctionaryV32},
      {"meetkai-functionary-medium-v3.1.jinja", ToolFormat::kFunctionaryV31},
      {"google-gemma-2-2b-it.jinja", ToolFormat::kGeneric},
      {"microsoft-Phi-3.5-mini-instruct.jinja", ToolFormat::kGeneric}};
  for (const auto& [file, format] : cases) {
    std::ifstream in(std::string(ATTN_FIXTURES_DIR) + "/chat_templates/" + file);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_FALSE(text.empty()) << file;
    EXPECT_EQ(TemplateToolFormat(text), format) << file;
  }
}

TEST(ToolCallTags, MistralBothForms) {
  bool calls = false;
  json m = NativeToolAnswerMessage(ToolFormat::kMistral,
                                   "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": "
                                   "\"Paris\"}, \"id\": \"abc123def\"}, "
                                   "{\"name\": \"add\", \"arguments\": {\"a\": 1}}]",
                                   "req", &calls);
  ASSERT_TRUE(calls);
  ASSERT_EQ(m["tool_calls"].size(), 2u);
  EXPECT_EQ(m["tool_calls"][1]["function"]["name"], "add");
  for (const json& c : m["tool_calls"]) {  // ids Mistral's templates accept back: 9 letters / digits
    const std::string id = c["id"];
    EXPECT_EQ(id.size(), 9u);
    EXPECT_TRUE(std::all_of(id.begin(), id.end(),
                            [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)); }));
  }
  EXPECT_NE(m["tool_calls"][0]["id"], m["tool_calls"][1]["id"]);
  m = NativeToolAnswerMessage(ToolFormat::kMistral,
                              "Sure.[TOOL_CALLS]get_weather[CALL_ID]abc123def[ARGS]{\"city\": \"Paris\"}"
                              "[TOOL_CALLS]add[ARGS]{\"a\": 1, \"b\": 2}",
                              "req", &calls);
  ASSERT_TRUE(calls);
  EXPECT_EQ(m["content"], "Sure.");
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(m["tool_calls"][1]["function"]["arguments"].get<std::string>()),
            json({{"a", 1}, {"b", 2}}));
  for (const char* bad :
       {"[TOOL_CALLS][{\"name\": 1}]", "[TOOL_CALLS]f[ARGS]{", "[TOOL_CALLS]f", "no call"}) {
    NativeToolAnswerMessage(ToolFormat::kMistral, bad, "req", &calls);
    EXPECT_FALSE(calls) << bad;
  }
}

TEST(ToolCallTags, DeepSeekR1AndV31) {
  bool calls = false;
  // R1 (and its distills): the thinking, then the calls with fenced JSON arguments.
  json m = NativeToolAnswerMessage(
      ToolFormat::kDeepSeek,
      "<think>\nThe user wants weather.\n</think>\n\n"
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
      "```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>\n"
      "<｜tool▁call▁begin｜>function<｜tool▁sep｜>add\n```json\n{\"a\": 1, \"b\": 2}\n```"
      "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
      "r", &calls);
  ASSERT_TRUE(calls);
  ASSERT_EQ(m["tool_calls"].size(), 2u);
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(m["tool_calls"][0]["function"]["arguments"].get<std::string>()),
            json({{"city", "Paris"}}));
  EXPECT_EQ(m["tool_calls"][1]["function"]["name"], "add");
  EXPECT_EQ(m["content"], "<think>\nThe user wants weather.\n</think>");  // reasoning is split later
  // V3.1: NAME<｜tool▁sep｜>ARGS; the last call may end at the end of the turn.
  m = NativeToolAnswerMessage(
      ToolFormat::kDeepSeek,
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Oslo\"}", "r",
      &calls);
  ASSERT_TRUE(calls);
  EXPECT_TRUE(m["content"].is_null());
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(m["tool_calls"][0]["function"]["arguments"].get<std::string>()),
            json({{"city", "Oslo"}}));
  for (const char* bad :
       {"<｜tool▁calls▁begin｜>", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f{}", "no call",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>[1]<｜tool▁call▁end｜>",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{}<｜tool▁call▁end｜>"
        "<｜tool▁calls▁end｜>trailing words"}) {
    const json plain = NativeToolAnswerMessage(ToolFormat::kDeepSeek, bad, "r", &calls);
    EXPECT_FALSE(calls) << bad;
    EXPECT_EQ(plain["content"], bad);
  }
}

TEST(ToolCallTags, FunctionaryV32AndV31) {
  bool calls = false;
  // v3.2: the prompt ended with ">>>"; text for the user, then two calls.
  json m = NativeToolAnswerMessage(ToolFormat::kFunctionaryV32,
                                   "all\nLet me look.>>>get_weather\n{\"city\": \"Paris\"}>>>add\n{\"a\": 1}",
                                   "r", &calls);
  ASSERT_TRUE(calls);
  EXPECT_EQ(m["content"], "Let me look.");
  ASSERT_EQ(m["tool_calls"].size(), 2u);
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(m["tool_calls"][1]["function"]["arguments"].get<std::string>()), json({{"a", 1}}));
  m = NativeToolAnswerMessage(ToolFormat::kFunctionaryV32, "get_weather\n{\"city\": \"Oslo\"}", "r", &calls);
  ASSERT_TRUE(calls);
  EXPECT_TRUE(m["content"].is_null());
  m = NativeToolAnswerMessage(ToolFormat::kFunctionaryV32, "all\nJust an answer.", "r", &calls);
  EXPECT_FALSE(calls);
  EXPECT_EQ(m["content"], "Just an answer.");  // the recipient line is not part of the answer
  for (const char* plain : {"get_weather\n{not json", "two words\n{}"}) {
    m = NativeToolAnswerMessage(ToolFormat::kFunctionaryV32, plain, "r", &calls);
    EXPECT_FALSE(calls) << plain;
    EXPECT_EQ(m["content"], plain);
  }
  // v3.1: Llama 3.1's custom format.
  m = NativeToolAnswerMessage(ToolFormat::kFunctionaryV31,
                              "Checking.<function=get_weather>{\"city\": \"Rome\"}</function>", "r", &calls);
  ASSERT_TRUE(calls);
  EXPECT_EQ(m["content"], "Checking.");
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  for (const char* plain : {"no call", "<function=f>{</function>", "<function=>{}</function>",
                            "<function=f>{}</function> and more words"}) {
    m = NativeToolAnswerMessage(ToolFormat::kFunctionaryV31, plain, "r", &calls);
    EXPECT_FALSE(calls) << plain;
    EXPECT_EQ(m["content"], plain);
  }
}

TEST(ToolCallTags, Llama3Json) {
  bool calls = false;
  const json m = NativeToolAnswerMessage(
      ToolFormat::kLlama3Json,
      "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", "r", &calls);
  ASSERT_TRUE(calls);
  EXPECT_TRUE(m["content"].is_null());
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
  for (const char* text :
       {"The weather is fine.", "{\"city\": \"Paris\"}", "{\"name\": \"f\", \"parameters\": [1]}"}) {
    const json plain = NativeToolAnswerMessage(ToolFormat::kLlama3Json, text, "r", &calls);
    EXPECT_FALSE(calls) << text;
    EXPECT_EQ(plain["content"], text);
  }
}

TEST(ToolCallTags, HarmonyChannels) {
  bool calls = false;
  json m = NativeToolAnswerMessage(ToolFormat::kHarmony,
                                   "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant "
                                   "to=functions.get_weather<|channel|>commentary json<|message|>{\"city\": "
                                   "\"Paris\"}<|call|>",
                                   "h", &calls);
  ASSERT_TRUE(calls);
  EXPECT_EQ(m["reasoning_content"], "Need the weather.");
  EXPECT_TRUE(m["content"].is_null());
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
  m = NativeToolAnswerMessage(
      ToolFormat::kHarmony,
      "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>"
      "Paris.<|return|>",
      "h", &calls);
  EXPECT_FALSE(calls);
  EXPECT_EQ(m["reasoning_content"], "Easy.");
  EXPECT_EQ(m["content"], "Paris.");
  const std::optional<HarmonyAnswer> plain = ParseHarmony("Just text.");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->content, "Just text.");
  EXPECT_TRUE(plain->reasoning.empty() && plain->calls.empty());
  const std::optional<HarmonyAnswer> cut = ParseHarmony("<|channel|>analysis<|message|>cut short");
  ASSERT_TRUE(cut);
  EXPECT_EQ(cut->reasoning, "cut short");
  EXPECT_FALSE(ParseHarmony(" to=functions.f<|channel|>commentary json<|message|>not json<|call|>"));
  m = NativeToolAnswerMessage(ToolFormat::kHarmony,
                              " to=functions.f<|channel|>commentary<|message|>[1]<|call|>", "h", &calls);
  EXPECT_FALSE(calls);
  EXPECT_EQ(m["content"], " to=functions.f<|channel|>commentary<|message|>[1]<|call|>");
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
