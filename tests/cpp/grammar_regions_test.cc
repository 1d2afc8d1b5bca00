// Triggered grammars (GenerateOptions::triggered_grammars, model/grammar_regions.h) and the ones
// attn serve gives each tool format (serve::ToolCallGrammars): good calls pass, calls of tools that
// do not exist or with arguments that do not fit are refused, text around the calls is free.
#include "model/grammar_regions.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "attn/error.h"
#include "serve/tools.h"

namespace attn {
namespace {

// Feeds `text` in pieces of `step` bytes (0: whole); whether every region's grammar took its text.
bool FeedAll(GrammarRegions& r, const std::string& text, size_t step) {
  bool ok = true;
  if (step == 0) return r.Feed(text);
  for (size_t i = 0; i < text.size(); i += step) ok = r.Feed(text.substr(i, step)) && ok;
  return ok;
}

TEST(GrammarRegions, FreeUntilTheTriggerThenTheGrammarUntilComplete) {
  const std::vector<TriggeredGrammar> specs{{"<call>", "root ::= \"add\" \"_numbers\"? \"(\" [0-9]+ \")\""}};
  for (size_t step : {0, 1, 2, 3, 7}) {
    GrammarRegions r(specs);
    EXPECT_EQ(r.constraint(), nullptr);
    EXPECT_TRUE(FeedAll(r, "free text <cal", step)) << step;
    EXPECT_EQ(r.constraint(), nullptr);
    EXPECT_TRUE(FeedAll(r, "l>add(1", step)) << step;
    ASSERT_NE(r.constraint(), nullptr) << step;  // "add(1" is not yet a sentence
    EXPECT_EQ(r.opened(), 1);
    EXPECT_TRUE(FeedAll(r, "2)", step));
    EXPECT_EQ(r.constraint(), nullptr);  // complete: what follows is free
    EXPECT_TRUE(FeedAll(r, " and then <call>add_numbers(3) done", step)) << step;
    EXPECT_EQ(r.opened(), 2);
    EXPECT_EQ(r.completed(), 2);
  }
  GrammarRegions r(specs);  // a trigger split across pieces, then text the grammar refuses
  EXPECT_TRUE(r.Feed("<ca"));
  EXPECT_TRUE(r.Feed("ll>ad"));
  EXPECT_NE(r.constraint(), nullptr);
  EXPECT_FALSE(r.Feed("x(1)"));
  EXPECT_EQ(r.constraint(), nullptr);  // dropped: free again
  EXPECT_EQ(r.completed(), 0);
  EXPECT_TRUE(r.Feed("<call>add(5)"));
  EXPECT_EQ(r.completed(), 0);  // complete, still open (a digit would go on with it)
  EXPECT_TRUE(r.Feed("."));
  EXPECT_EQ(r.completed(), 1);
}

TEST(GrammarRegions, EmptyTriggerOpensAtTheStartLongerTriggerWins) {
  GrammarRegions start(std::vector<TriggeredGrammar>{{"", "root ::= \"yes\" | \"no\""}});
  EXPECT_NE(start.constraint(), nullptr);
  EXPECT_TRUE(start.Feed("no, because"));
  EXPECT_EQ(start.completed(), 1);
  EXPECT_EQ(start.constraint(), nullptr);
  GrammarRegions two(std::vector<TriggeredGrammar>{{"<a", "root ::= \"1\""}, {"<ab", "root ::= \"2\""}});
  EXPECT_TRUE(two.Feed("x<ab2 y"));
  EXPECT_EQ(two.completed(), 1);
  EXPECT_THROW(
      GrammarRegions(std::vector<TriggeredGrammar>{{"t", "root ::= \"a\""}, {"t", "root ::= \"b\""}}), Error);
  try {
    GrammarRegions(std::vector<TriggeredGrammar>{{"t", "root ::= \"a\""}, {"u", "root ::= oops"}});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("triggered_grammars[1] (trigger \"u\")"), std::string::npos)
        << e.what();
  }
}

serve::ToolRequest Tools() {
  serve::ToolRequest r;
  r.tools.push_back(
      {"get_weather", "",
       nlohmann::ordered_json::parse(
           R"({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})")});
  r.tools.push_back(
      {"add", "",
       nlohmann::ordered_json::parse(
           R"({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}})")});
  return r;
}

struct Case {
  serve::ToolFormat format;
  std::string good;              // well-formed calls
  int regions;                   // regions it opens
  std::vector<std::string> bad;  // each refused somewhere
};

TEST(ToolCallGrammars, EachFormatTakesGoodCallsAndRefusesBadOnes) {
  using F = serve::ToolFormat;
  const std::vector<Case> cases{
      {F::kToolCallTags,
       "Let me see.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
       "\"Paris\"}}\n</tool_call>\n"
       "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>",
       2,
       {"<tool_call>\n{\"name\": \"get_wether\", \"arguments\": {\"city\": \"Paris\"}}",
        "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"town\": \"Paris\"}}",
        "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": \"one\"}}",
        "<tool_call>[{\"name\": \"add\", \"arguments\": {}}]"}},
      {F::kToolCallTags,
       "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>",
       1,
       {"<tool_call>\n<function=weather>", "<tool_call>\n<function=get_weather>\n</function>",
        "<tool_call><function=add><parameter=c>1</parameter></function>",
        "<tool_call><function=add><parameter=a>one</parameter></function>"}},
      {F::kToolCallTags, "<tool_call>\n<function=add>\n<parameter=a>\n-12\n</parameter>\n</function>", 1, {}},
      {F::kMistral,
       "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"add\", "
       "\"arguments\": {\"a\": 1}}]",
       1,
       {"[TOOL_CALLS][{\"name\": \"sub\", \"arguments\": {}}]",
        "[TOOL_CALLS]get_weather[ARGS]{\"city\": 3}"}},
      {F::kMistral,
       "Sure.[TOOL_CALLS]get_weather[CALL_ID]abc123def[ARGS]{\"city\": "
       "\"Paris\"}[TOOL_CALLS]add[ARGS]{\"a\": 1}",
       4,
       {"[TOOL_CALLS]multiply[ARGS]{}"}},
      {F::kLlama3Json,
       "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
       1,
       {"{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}", "{\"name\": \"mul\""}},
      {F::kLlama3Json,
       "<|python_tag|>{\"name\": \"add\", \"parameters\": {\"a\": 2}}",
       1,
       {"<|python_tag|>{\"name\": \"add\", \"parameters\": {\"c\": 2}}"}},
      {F::kHarmony,
       "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary "
       "to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Paris\"}<|call|>",
       2,
       {"to=functions.get_time<|channel|>", "to=functions.add<|channel|>commentary json<|message|>[1]"}},
      {F::kDeepSeek,
       "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": "
       "\"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁call▁begin｜>add<｜tool▁sep｜>{\"a\": 1, \"b\": "
       "2}<｜tool▁call▁end｜>"
       "<｜tool▁calls▁end｜>",
       4,
       {"<｜tool▁call▁begin｜>mul<｜tool▁sep｜>{}", "<｜tool▁call▁begin｜>add<｜tool▁sep｜>{\"a\": []}"}},
      {F::kFunctionaryV32,
       "all\nLet me look.>>>get_weather\n{\"city\": \"Paris\"}>>>add\n{\"a\": 1}",
       3,
       {"al\nx", "get_weather\n{\"city\": 1}", "all\nok>>>mul\n{}"}},
      {F::kFunctionaryV31,
       "Checking.<function=get_weather>{\"city\": \"Rome\"}</function>",
       1,
       {"<function=get_weather>{\"city\": true}", "<function=weather>{}"}},
      {F::kKimiK2,
       "Let me check.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
       "<|tool_call_argument_begin|>{\"city\": \"Paris\"}<|tool_call_end|><|tool_call_begin|>functions.add:1"
       "<|tool_call_argument_begin|>{\"a\": 1}<|tool_call_end|><|tool_calls_section_end|>",
       4,
       {"<|tool_call_begin|>functions.mul:0", "<|tool_call_argument_begin|>{\"a\": 1.5}"}},
      {F::kCommandR7B,
       "<|START_THINKING|>I will look up the weather.<|END_THINKING|><|START_ACTION|>[\n    "
       "{\"tool_call_id\": "
       "\"0\", \"tool_name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}},\n    "
       "{\"tool_call_id\": "
       "\"1\", \"tool_name\": \"add\", \"parameters\": {}}\n]<|END_ACTION|>",
       1,
       {"<|START_ACTION|>[{\"tool_call_id\": \"0\", \"tool_name\": \"get_weather\", \"parameters\": {}}]"}},
  };
  const serve::ToolRequest tools = Tools();
  for (const Case& c : cases) {
    const std::vector<TriggeredGrammar> specs = serve::ToolCallGrammars(c.format, tools);
    ASSERT_FALSE(specs.empty());
    for (size_t step : {0, 1, 5}) {
      GrammarRegions r(specs);
      EXPECT_TRUE(FeedAll(r, c.good, step)) << c.good << " in pieces of " << step;
      EXPECT_TRUE(r.Feed("<|end|>"));  // whatever follows the last call closes it
      EXPECT_EQ(r.opened(), c.regions) << c.good;
      EXPECT_EQ(r.completed(), c.regions) << c.good;
    }
    for (const std::string& bad : c.bad) {
      GrammarRegions r(specs);
      EXPECT_FALSE(FeedAll(r, bad + "<|end|>", 1)) << bad;
    }
  }
  EXPECT_TRUE(serve::ToolCallGrammars(serve::ToolFormat::kGeneric, tools).empty());
}

TEST(ToolCallGrammars, SchemasThatReferToTheirRootAreRelaxed) {
  serve::ToolRequest r;
  r.tools.push_back(
      {"tree", "",
       nlohmann::ordered_json::parse(
           R"({"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}})")});
  const std::vector<TriggeredGrammar> specs = serve::ToolCallGrammars(serve::ToolFormat::kKimiK2, r);
  GrammarRegions g(specs);
  EXPECT_TRUE(
      g.Feed("<|tool_call_begin|>functions.tree:0<|tool_call_argument_begin|>{\"anything\": [1]}<|x|>"));
  EXPECT_EQ(g.completed(), 2);
}

TEST(ToolCallGrammars, RequiredCallsAreTheWholeAnswer) {
  using F = serve::ToolFormat;
  serve::ToolRequest tools = Tools();
  tools.choice = "required";
  const std::string call = "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}\n</tool_call>";
  // Whether `text` is a whole answer of the grammar.
  auto whole = [](const std::string& grammar, const std::string& text) {
    GrammarMatcher m(Grammar::Parse(grammar));
    return m.Feed(text) && m.complete();
  };
  const std::string tags = serve::RequiredCallsGrammar(F::kToolCallTags, tools, /*thinks=*/true);
  EXPECT_TRUE(whole(tags, call));
  EXPECT_TRUE(whole(tags, call + "\n" + call));
  EXPECT_TRUE(whole(tags, "<think>\nThey want a sum.\n</think>\n\n" + call));
  EXPECT_FALSE(
      whole(serve::RequiredCallsGrammar(F::kToolCallTags, tools), "<think>\nx\n</think>\n\n" + call));
  EXPECT_FALSE(whole(tags, "Sure! " + call));
  EXPECT_FALSE(whole(tags, call + " Done."));
  EXPECT_FALSE(whole(tags, "<tool_call>\n{\"name\": \"add\", \"arguments\": {}}"));  // no closing tag
  // The prompt opened the think block: the answer ends it first.
  EXPECT_TRUE(
      whole(serve::RequiredCallsGrammar(F::kToolCallTags, tools, true, true), "hmm\n</think>\n" + call));
  EXPECT_FALSE(whole(serve::RequiredCallsGrammar(F::kToolCallTags, tools, true, true), call));
  tools.parallel = false;
  EXPECT_FALSE(whole(serve::RequiredCallsGrammar(F::kToolCallTags, tools), call + "\n" + call));
  tools.choice = "add";  // a tool named: that one only
  const std::string add = serve::RequiredCallsGrammar(F::kToolCallTags, tools);
  EXPECT_TRUE(whole(add, call));
  EXPECT_FALSE(whole(
      add, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>"));
  EXPECT_EQ(serve::ToolCallGrammars(F::kHarmony, tools).size(), 2u);  // "auto" regions of that tool
  EXPECT_TRUE(whole(
      serve::RequiredCallsGrammar(F::kKimiK2, tools),
      "<|tool_calls_section_begin|><|tool_call_begin|>functions.add:0<|tool_call_argument_begin|>{\"b\": "
      "2}<|tool_call_end|><|tool_calls_section_end|>"));
  EXPECT_TRUE(whole(serve::RequiredCallsGrammar(F::kFunctionaryV32, tools), "add\n{\"a\": 1}"));
  EXPECT_FALSE(whole(serve::RequiredCallsGrammar(F::kFunctionaryV32, tools), "all\nNo call."));
  EXPECT_TRUE(whole(serve::RequiredCallsGrammar(F::kMistral, tools),
                    "[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {}}]"));
  EXPECT_TRUE(
      whole(serve::RequiredCallsGrammar(F::kLlama3Json, tools), "{\"name\": \"add\", \"parameters\": {}}"));
  EXPECT_TRUE(whole(serve::RequiredCallsGrammar(F::kFunctionaryV31, tools), "<function=add>{}</function>"));
  for (F f : {F::kHarmony, F::kDeepSeek, F::kCommandR7B, F::kGeneric}) {
    EXPECT_FALSE(serve::CallsCanBeRequired(f));
    EXPECT_THROW(serve::RequiredCallsGrammar(f, tools), Error);
  }
  tools.choice = "mul";
  EXPECT_THROW(serve::RequiredCallsGrammar(F::kToolCallTags, tools), Error);
}

}  // namespace
}  // namespace attn
