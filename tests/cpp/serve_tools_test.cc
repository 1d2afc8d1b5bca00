// attn serve's reading of a model's own tool-call format (<tool_call> templates, serve/tools.h) and
// the messages it gives a Jinja chat template.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "attn/error.h"
#include "serve/reasoning.h"
#include "serve/tools.h"

namespace attn::serve {
namespace {

using json = nlohmann::json;

// The message of an answer `text` in `format`, checked to come out the same when the answer
// streams in three pieces, cut at every two points: the same content, reasoning and calls.
json Read(ToolFormat format, const std::string& text, const std::string& id_prefix, bool* calls) {
  const AnswerSplitter::Out whole = ToolSplitter(format)->Split(text);
  for (size_t a = 0; a <= text.size(); ++a) {
    for (size_t b = a; b <= text.size(); ++b) {
      const std::unique_ptr<AnswerSplitter> s = ToolSplitter(format);
      AnswerSplitter::Out streamed;
      for (const std::string& piece : {text.substr(0, a), text.substr(a, b - a), text.substr(b)})
        streamed += s->Feed(piece);
      streamed += s->Finish();
      if (streamed.content != whole.content || streamed.reasoning != whole.reasoning ||
          streamed.calls != whole.calls) {
        ADD_FAILURE() << text << "\ncut at " << a << ", " << b << ": content \"" << streamed.content
                      << "\" against \"" << whole.content << "\", " << streamed.calls.size()
                      << " calls against " << whole.calls.size();
        return ToolAnswerMessage(format, text, id_prefix, calls);
      }
    }
  }
  return ToolAnswerMessage(format, text, id_prefix, calls);
}

TEST(ToolCallTags, HermesJsonCalls) {
  bool calls = false;
  const json m =
      Read(ToolFormat::kToolCallTags,
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
  const json m = Read(ToolFormat::kToolCallTags,
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
  for (const char* text : {"Just an answer.", "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\":",
                           "<tool_call>not json</tool_call>", "<tool_call>{\"arguments\": {}}</tool_call>",
                           "A < b, <tool_ and </tool_call> are text"}) {
    bool calls = true;
    const json m = Read(ToolFormat::kToolCallTags, text, "z", &calls);
    EXPECT_FALSE(calls) << text;
    EXPECT_EQ(m["content"], text);
    EXPECT_FALSE(m.contains("tool_calls")) << text;
  }
  bool calls = false;  // a last call cut at the end of the turn, without its closing tag
  Read(ToolFormat::kToolCallTags, "<tool_call>{\"name\": \"f\", \"arguments\": {}}", "z", &calls);
  EXPECT_TRUE(calls);
}

// Which format each family's real template asks for (tests/fixtures/chat_templates/).
// Text around the calls is content, without the whitespace at its ends and next to the calls; a
// block that does not parse is content where it stands, the others still calls.
TEST(ToolCallTags, TextAroundTheCallsAndBrokenBlocks) {
  bool calls = false;
  json m =
      Read(ToolFormat::kToolCallTags,
           "  Let me look.\n<tool_call>{\"name\": \"f\"}</tool_call>\n\nDone. <tool_call>oops</tool_call>"
           "\n<tool_call>{\"name\": \"g\", \"arguments\": {\"x\": 1}}</tool_call>\n",
           "z", &calls);
  ASSERT_TRUE(calls);
  EXPECT_EQ(m["content"], "Let me look.\n\n\nDone. <tool_call>oops</tool_call>");
  ASSERT_EQ(m["tool_calls"].size(), 2u);
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "f");
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"], "{}");
  EXPECT_EQ(m["tool_calls"][1]["id"], "call_z_1");
  EXPECT_EQ(m["tool_calls"][1]["function"]["arguments"], "{\"x\":1}");
  m = Read(ToolFormat::kToolCallTags, "\n\nJust an answer.\n", "z", &calls);
  EXPECT_FALSE(calls);
  EXPECT_EQ(m["content"], "Just an answer.");
}

// The think block apart first, then the calls in what follows it (a <tool_call> inside the
// thinking is thinking).
TEST(ToolCallTags, ReasoningThenCallsAtEveryCut) {
  const std::string text =
      "<think>\nShould I <tool_call>? Yes.\n</think>\n\nLet me look.\n<tool_call>\n{\"name\": "
      "\"get_weather\", "
      "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
  auto make = [] {
    return ChainedSplitter(std::make_unique<ReasoningSplitter>(false),
                           ToolSplitter(ToolFormat::kToolCallTags));
  };
  const AnswerSplitter::Out whole = make().Split(text);
  EXPECT_EQ(whole.reasoning, "Should I <tool_call>? Yes.");
  EXPECT_EQ(whole.content, "Let me look.");
  ASSERT_EQ(whole.calls.size(), 1u);
  EXPECT_EQ(whole.calls[0]["arguments"]["city"], "Paris");
  for (size_t a = 0; a <= text.size(); a += 3) {
    for (size_t b = a; b <= text.size(); b += 2) {
      ChainedSplitter s = make();
      AnswerSplitter::Out out;
      for (const std::string& piece : {text.substr(0, a), text.substr(a, b - a), text.substr(b)})
        out += s.Feed(piece);
      out += s.Finish();
      ASSERT_EQ(out.reasoning, whole.reasoning) << a << ", " << b;
      ASSERT_EQ(out.content, whole.content) << a << ", " << b;
      ASSERT_EQ(out.calls, whole.calls) << a << ", " << b;
    }
  }
}

// The generic form's "response" streams as it is written, escapes decoded once whole.
TEST(ToolCallTags, GenericResponseStreams) {
  const std::string text = "{ \"response\" : \"Line 1\\nsaid \\\"hi\\\" \\u00e9 \\ud83d\\ude00 done\" }";
  bool calls = true;
  json m = Read(ToolFormat::kGeneric, text, "g", &calls);
  EXPECT_FALSE(calls);
  EXPECT_EQ(m["content"], "Line 1\nsaid \"hi\" \u00e9 \U0001F600 done");
  // Text comes out before the answer is complete.
  const std::unique_ptr<AnswerSplitter> s = ToolSplitter(ToolFormat::kGeneric);
  EXPECT_EQ(s->Feed("{\"response\": \"Hel").content, "Hel");
  EXPECT_EQ(s->Feed("lo\\").content, "lo");
  EXPECT_EQ(s->Feed("n").content, "\n");
  EXPECT_EQ(s->Finish().content, "");  // cut short: what was written of it
  m = Read(ToolFormat::kGeneric,
           "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {\"a\": 1}}, {\"name\": \"g\", \"arguments\": "
           "{}}]}",
           "g", &calls);
  ASSERT_TRUE(calls);
  EXPECT_TRUE(m["content"].is_null());
  EXPECT_EQ(m["tool_calls"][1]["id"], "call_g_1");
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
  for (const char* text : {"{\"tool_calls\": [{\"name\"", "not json", "{\"other\": 1}", ""}) {
    m = Read(ToolFormat::kGeneric, text, "g", &calls);
    EXPECT_FALSE(calls) << text;
    EXPECT_EQ(m["content"], text);
  }
}

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
      {"moonshotai-Kimi-K2.jinja", ToolFormat::kKimiK2},
      {"Kimi-K2-Instruct.jinja", ToolFormat::kKimiK2},
      {"Kimi-K2-Thinking.jinja", ToolFormat::kKimiK2},
      {"CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", ToolFormat::kCommandR7B},
      {"Cohere2MoE.jinja", ToolFormat::kCommandR7B},
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
  json m = Read(ToolFormat::kMistral,
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
  m = Read(ToolFormat::kMistral,
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
    Read(ToolFormat::kMistral, bad, "req", &calls);
    EXPECT_FALSE(calls) << bad;
  }
}

TEST(ToolCallTags, DeepSeekR1AndV31) {
  bool calls = false;
  // R1 (and its distills): the thinking, then the calls with fenced JSON arguments.
  json m = Read(ToolFormat::kDeepSeek,
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
  m = Read(ToolFormat::kDeepSeek,
           "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Oslo\"}", "r",
           &calls);
  ASSERT_TRUE(calls);
  EXPECT_TRUE(m["content"].is_null());
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(m["tool_calls"][0]["function"]["arguments"].get<std::string>()),
            json({{"city", "Oslo"}}));
  const std::pair<const char*, const char*> broken[] = {
      {"<｜tool▁calls▁begin｜>", ""},  // the section's markers alone are dropped
      {"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{",
       "<｜tool▁call▁begin｜>f<｜tool▁sep｜>{"},
      {"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f{}", "<｜tool▁call▁begin｜>f{}"},
      {"no call", "no call"},
      {"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>[1]<｜tool▁call▁end｜>",
       "<｜tool▁call▁begin｜>f<｜tool▁sep｜>[1]<｜tool▁call▁end｜>"}};
  for (const auto& [bad, content] : broken) {
    const json plain = Read(ToolFormat::kDeepSeek, bad, "r", &calls);
    EXPECT_FALSE(calls) << bad;
    EXPECT_EQ(plain["content"], content);
  }
  m = Read(ToolFormat::kDeepSeek,
           "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{}<｜tool▁call▁end｜><"
           "｜tool▁calls▁end｜>trailing words",
           "r", &calls);
  EXPECT_TRUE(calls);
  EXPECT_EQ(m["content"], "trailing words");
}

TEST(ToolCallTags, FunctionaryV32AndV31) {
  bool calls = false;
  // v3.2: the prompt ended with ">>>"; text for the user, then two calls.
  json m = Read(ToolFormat::kFunctionaryV32,
                "all\nLet me look.>>>get_weather\n{\"city\": \"Paris\"}>>>add\n{\"a\": 1}", "r", &calls);
  ASSERT_TRUE(calls);
  EXPECT_EQ(m["content"], "Let me look.");
  ASSERT_EQ(m["tool_calls"].size(), 2u);
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(m["tool_calls"][1]["function"]["arguments"].get<std::string>()), json({{"a", 1}}));
  m = Read(ToolFormat::kFunctionaryV32, "get_weather\n{\"city\": \"Oslo\"}", "r", &calls);
  ASSERT_TRUE(calls);
  EXPECT_TRUE(m["content"].is_null());
  m = Read(ToolFormat::kFunctionaryV32, "all\nJust an answer.", "r", &calls);
  EXPECT_FALSE(calls);
  EXPECT_EQ(m["content"], "Just an answer.");  // the recipient line is not part of the answer
  for (const char* plain : {"get_weather\n{not json", "two words\n{}"}) {
    m = Read(ToolFormat::kFunctionaryV32, plain, "r", &calls);
    EXPECT_FALSE(calls) << plain;
    EXPECT_EQ(m["content"], plain);
  }
  m = Read(ToolFormat::kFunctionaryV32,
           "all\nHi.>>>all\n And more.>>>\n{}>>>get_weather\n{\"city\": \"Oslo\"}", "r", &calls);
  ASSERT_TRUE(calls);
  EXPECT_EQ(m["content"], "Hi. And more.>>>\n{}");  // a segment without a recipient is text as written
  // Without tools: the "all" text, anything else as written.
  for (const auto& [text, content] :
       {std::pair("all\nJust an answer.", "Just an answer."),
        std::pair("all\nHi.>>>get_weather\n{\"city\": \"Oslo\"}", "Hi.>>>get_weather\n{\"city\": \"Oslo\"}"),
        std::pair("Plain words, no recipient.", "Plain words, no recipient.")}) {
    const std::unique_ptr<AnswerSplitter> s = FunctionaryTextSplitter();
    AnswerSplitter::Out out;
    for (char c : std::string(text)) out += s->Feed(std::string(1, c));  // a character at a time
    out += s->Finish();
    EXPECT_EQ(out.content, content);
    EXPECT_TRUE(out.calls.empty());
    EXPECT_EQ(FunctionaryTextSplitter()->Split(text).content, content);
  }
  // v3.1: Llama 3.1's custom format.
  m = Read(ToolFormat::kFunctionaryV31, "Checking.<function=get_weather>{\"city\": \"Rome\"}</function>", "r",
           &calls);
  ASSERT_TRUE(calls);
  EXPECT_EQ(m["content"], "Checking.");
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  for (const char* plain : {"no call", "<function=f>{</function>", "<function=>{}</function>"}) {
    m = Read(ToolFormat::kFunctionaryV31, plain, "r", &calls);
    EXPECT_FALSE(calls) << plain;
    EXPECT_EQ(m["content"], plain);
  }
}

TEST(ToolCallTags, KimiK2) {
  bool calls = false;
  json m = Read(
      ToolFormat::kKimiK2,
      "Let me check.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
      "<|tool_call_argument_begin|>{\"city\": \"Paris\"}<|tool_call_end|><|tool_call_begin|>functions.add:1"
      "<|tool_call_argument_begin|>{\"a\": 1}<|tool_call_end|><|tool_calls_section_end|>",
      "k", &calls);
  ASSERT_TRUE(calls);
  EXPECT_EQ(m["content"], "Let me check.");
  ASSERT_EQ(m["tool_calls"].size(), 2u);
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
  EXPECT_EQ(m["tool_calls"][1]["function"]["name"], "add");
  m = Read(ToolFormat::kKimiK2,
           "<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0{\"a\": 1}<|tool_call_end|>", "k",
           &calls);
  EXPECT_FALSE(calls);  // no argument marker: the block as written
  EXPECT_EQ(m["content"], "<|tool_call_begin|>functions.f:0{\"a\": 1}<|tool_call_end|>");
}

TEST(ToolCallTags, CommandR7B) {
  bool calls = false;
  json m = Read(ToolFormat::kCommandR7B,
                "<|START_THINKING|>I will look up the weather.<|END_THINKING|><|START_ACTION|>[\n"
                "    {\"tool_call_id\": \"0\", \"tool_name\": \"get_weather\", \"parameters\": {\"city\": "
                "\"Paris\"}},\n    {\"tool_call_id\": \"1\", \"tool_name\": \"add\", \"parameters\": {}}\n"
                "]<|END_ACTION|>",
                "c", &calls);
  ASSERT_TRUE(calls);
  EXPECT_EQ(m["reasoning_content"], "I will look up the weather.");
  EXPECT_TRUE(m["content"].is_null());
  ASSERT_EQ(m["tool_calls"].size(), 2u);
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(m["tool_calls"][1]["function"]["arguments"], "{}");
  m = Read(ToolFormat::kCommandR7B, "<|START_RESPONSE|>Paris is sunny.<|END_RESPONSE|>", "c", &calls);
  EXPECT_FALSE(calls);
  EXPECT_EQ(m["content"], "Paris is sunny.");
  // The prompt opened the thinking block.
  const AnswerSplitter::Out out =
      ToolSplitter(ToolFormat::kCommandR7B, /*thinking_open=*/true)
          ->Split("Easy.<|END_THINKING|><|START_RESPONSE|>Paris.<|END_RESPONSE|>");
  EXPECT_EQ(out.reasoning, "Easy.");
  EXPECT_EQ(out.content, "Paris.");
  m = Read(ToolFormat::kCommandR7B, "<|START_ACTION|>[{\"name\": \"f\"}]<|END_ACTION|>", "c", &calls);
  EXPECT_FALSE(calls);  // no tool_name: the block as written
  EXPECT_EQ(m["content"], "<|START_ACTION|>[{\"name\": \"f\"}]<|END_ACTION|>");
}

TEST(ToolCallTags, Llama3Json) {
  bool calls = false;
  const json m =
      Read(ToolFormat::kLlama3Json,
           "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", "r", &calls);
  ASSERT_TRUE(calls);
  EXPECT_TRUE(m["content"].is_null());
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
  for (const char* text :
       {"The weather is fine.", "{\"city\": \"Paris\"}", "{\"name\": \"f\", \"parameters\": [1]}"}) {
    const json plain = Read(ToolFormat::kLlama3Json, text, "r", &calls);
    EXPECT_FALSE(calls) << text;
    EXPECT_EQ(plain["content"], text);
  }
}

TEST(ToolCallTags, HarmonyChannels) {
  bool calls = false;
  json m = Read(ToolFormat::kHarmony,
                "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant "
                "to=functions.get_weather<|channel|>commentary json<|message|>{\"city\": "
                "\"Paris\"}<|call|>",
                "h", &calls);
  ASSERT_TRUE(calls);
  EXPECT_EQ(m["reasoning_content"], "Need the weather.");
  EXPECT_TRUE(m["content"].is_null());
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
  m = Read(ToolFormat::kHarmony,
           "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>"
           "Paris.<|return|>",
           "h", &calls);
  EXPECT_FALSE(calls);
  EXPECT_EQ(m["reasoning_content"], "Easy.");
  EXPECT_EQ(m["content"], "Paris.");
  m = Read(ToolFormat::kHarmony, "Just text.", "h", &calls);
  EXPECT_FALSE(calls);
  EXPECT_EQ(m["content"], "Just text.");
  m = Read(ToolFormat::kHarmony, "<|channel|>analysis<|message|>cut short", "h", &calls);
  EXPECT_EQ(m["reasoning_content"], "cut short");
  EXPECT_EQ(m["content"], "");
  for (const char* body : {"not json", "[1]"}) {  // arguments that are not an object: content
    m = Read(ToolFormat::kHarmony,
             std::string(" to=functions.f<|channel|>commentary json<|message|>") + body + "<|call|>", "h",
             &calls);
    EXPECT_FALSE(calls) << body;
    EXPECT_EQ(m["content"], body);
  }
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

namespace attn::serve {
namespace {

// The deltas of an answer read with stream_arguments, cut into pieces of `step` bytes.
AnswerSplitter::Out ReadDeltas(ToolFormat format, const std::string& text, size_t step) {
  const std::unique_ptr<AnswerSplitter> s = ToolSplitter(format, false, /*stream_arguments=*/true);
  AnswerSplitter::Out out;
  for (size_t i = 0; i < text.size(); i += step) out += s->Feed(text.substr(i, step));
  out += s->Finish();
  return out;
}

// Each call's deltas joined: its name (from the first) and its arguments.
std::vector<std::pair<std::string, std::string>> Joined(const AnswerSplitter::Out& out) {
  std::vector<std::pair<std::string, std::string>> calls;
  for (const AnswerSplitter::CallDelta& d : out.call_deltas) {
    if (d.index == calls.size()) {
      EXPECT_FALSE(d.name.empty());
      calls.emplace_back(d.name, "");
    }
    EXPECT_EQ(d.index + 1, calls.size()) << "deltas out of order";
    if (d.index + 1 != calls.size()) break;
    if (d.name.empty()) {
      EXPECT_FALSE(d.arguments.empty());
    }
    calls.back().second += d.arguments;
  }
  return calls;
}

TEST(StreamArguments, DeltasJoinToTheCallsAtEveryCut) {
  const std::vector<std::pair<ToolFormat, std::string>> answers{
      {ToolFormat::kToolCallTags,
       "Let me see.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris "
       "\\\"centre\\\"\", "
       "\"days\": [1, "
       "2]}}\n</tool_call>\n<tool_call>\n<function=add>\n<parameter=a>\n1\n</parameter>\n</function>\n"
       "</tool_call>"},
      {ToolFormat::kMistral,
       "Sure.[TOOL_CALLS]get_weather[CALL_ID]abc123def[ARGS]{\"city\": \"Paris\"}"
       "[TOOL_CALLS]add[ARGS]{\"a\": 1, \"b\": 2}"},
      {ToolFormat::kMistral,
       "[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {\"a\": 1}, \"id\": \"abc123def\"}, {\"name\": "
       "\"get_weather\", \"arguments\": {\"city\": \"Paris, \\\"France\\\"\"}}]"},
      {ToolFormat::kDeepSeek,
       "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": "
       "\"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁call▁begin｜>add<｜tool▁sep｜>{\"a\": 1}<｜tool▁call▁end｜>"
       "<｜tool▁calls▁end｜>"},
      {ToolFormat::kFunctionaryV31, "Checking.<function=get_weather>{\"city\": \"Rome\"}</function>"},
      {ToolFormat::kFunctionaryV32, "all\nLet me look.>>>get_weather\n{\"city\": \"Paris\"}"},
      {ToolFormat::kKimiK2,
       "Let me check.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
       "<|tool_call_argument_begin|>{\"city\": \"Paris\"}<|tool_call_end|><|tool_calls_section_end|>"},
      {ToolFormat::kCommandR7B,
       "<|START_ACTION|>[\n    {\"tool_call_id\": \"0\", \"tool_name\": \"add\", \"parameters\": {\"a\": "
       "1}},\n"
       "    {\"tool_call_id\": \"1\", \"tool_name\": \"get_weather\", \"parameters\": {\"city\": "
       "\"Oslo\"}}\n]"
       "<|END_ACTION|>"},
      {ToolFormat::kLlama3Json, "{\"name\": \"add\", \"parameters\": {\"a\": 1}}"},
      {ToolFormat::kHarmony,
       "<|channel|>commentary to=functions.add <|constrain|>json<|message|>{\"a\": 1}<|call|>"},
  };
  for (const auto& [format, text] : answers) {
    const AnswerSplitter::Out plain = ToolSplitter(format)->Split(text);
    ASSERT_FALSE(plain.calls.empty()) << text;
    for (size_t step : {size_t{1}, size_t{2}, size_t{3}, size_t{7}, text.size()}) {
      const AnswerSplitter::Out out = ReadDeltas(format, text, step);
      EXPECT_EQ(out.content, plain.content) << text;
      EXPECT_EQ(out.reasoning, plain.reasoning) << text;
      ASSERT_EQ(out.calls.size(), plain.calls.size()) << text;
      const auto joined = Joined(out);
      ASSERT_EQ(joined.size(), out.calls.size()) << text << " in pieces of " << step;
      for (size_t k = 0; k < joined.size(); ++k) {
        EXPECT_EQ(joined[k].first, plain.calls[k]["name"]) << text;
        EXPECT_EQ(joined[k].second, ArgumentsText(out.calls[k])) << text;
        // The same arguments as the plain reading's, as JSON.
        EXPECT_EQ(nlohmann::json::parse(joined[k].second),
                  nlohmann::json::parse(ArgumentsText(plain.calls[k])));
      }
      // Byte by byte, every call but Qwen3-Coder's XML form streams: its first delta has the name
      // only, its arguments come in several.
      for (size_t k = 0; k < out.calls.size() && step == 1; ++k) {
        const bool xml = format == ToolFormat::kToolCallTags && k == 1;  // the answer's second call
        const size_t deltas = static_cast<size_t>(
            std::count_if(out.call_deltas.begin(), out.call_deltas.end(),
                          [k](const AnswerSplitter::CallDelta& d) { return d.index == k; }));
        EXPECT_EQ(deltas > 2, !xml) << text << " call " << k;
      }
    }
  }
  // Byte by byte, a streamed format's arguments come in many pieces, the first with the name only.
  const AnswerSplitter::Out out = ReadDeltas(ToolFormat::kKimiK2, answers[6].second, 1);
  ASSERT_GT(out.call_deltas.size(), 5u);
  EXPECT_EQ(out.call_deltas[0], (AnswerSplitter::CallDelta{0, "get_weather", ""}));
  EXPECT_EQ(out.call_deltas[1].arguments, "{");
}

TEST(StreamArguments, AStartedCallStaysACallWhenCutShort) {
  // The answer ends inside the arguments (max_tokens): a call with what was written of them, not
  // content (the deltas already said it was a call); without streaming, content as before.
  const std::string text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par";
  const AnswerSplitter::Out out = ReadDeltas(ToolFormat::kToolCallTags, text, 4);
  ASSERT_EQ(out.calls.size(), 1u);
  EXPECT_EQ(ArgumentsText(out.calls[0]), "{\"city\":\"Par");
  EXPECT_EQ(Joined(out)[0].second, "{\"city\":\"Par");
  EXPECT_TRUE(out.content.empty());
  EXPECT_TRUE(ToolSplitter(ToolFormat::kToolCallTags)->Split(text).calls.empty());
  // A block whose name is not followed by arguments is read whole, as before: content here.
  const AnswerSplitter::Out broken =
      ReadDeltas(ToolFormat::kFunctionaryV31, "<function=f>oops</function>", 1);
  EXPECT_TRUE(broken.calls.empty() && broken.call_deltas.empty());
  EXPECT_EQ(broken.content, "<function=f>oops</function>");
}

}  // namespace
}  // namespace attn::serve
