// The grammars that keep a model's own tool calls well formed (tools.h, ToolCallGrammars).
#include <algorithm>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "attn/error.h"
#include "model/json_schema.h"
#include "serve/tools.h"

namespace attn::serve {
namespace {

using ojson = nlohmann::ordered_json;

std::string Lit(std::string_view text) { return GbnfLiteral(text); }

// Whitespace between the parts the grammars add (the schemas' own is JsonSchemaToGbnf's).
constexpr std::string_view kWs = "[ \\t\\r\\n]{0,24}";

// The tools' names as alternatives: as written (`json` false) or as JSON strings.
std::string Names(const ToolRequest& r, bool json) {
  std::string out = "(";
  for (size_t i = 0; i < r.tools.size(); ++i) {
    if (i > 0) out += " | ";
    out += Lit(json ? ojson(r.tools[i].name).dump() : r.tools[i].name);
  }
  return out + ")";
}

// The rules of `schema`'s grammar with its start rule named `name` (the grammar text gets the
// name of the region's own start rule, `root`, free). A schema whose rules refer back to its start
// rule (a $ref to "#"), or that does not convert, gives `fallback`'s rules instead.
std::string SchemaRules(const ojson& schema, const ojson& fallback, const std::string& name) {
  std::string g;
  try {
    g = JsonSchemaToGbnf(schema);
  } catch (const Error&) {
    g = JsonSchemaToGbnf(fallback);
  }
  static const std::regex kRootRef("(^|[^A-Za-z0-9-])root([^A-Za-z0-9-]|$)");
  const size_t first_end = g.find('\n');
  if (g.rfind("root ::= ", 0) != 0 ||
      (first_end != std::string::npos && std::regex_search(g.substr(first_end), kRootRef)) ||
      std::regex_search(g.substr(9, first_end == std::string::npos ? std::string::npos : first_end - 9),
                        kRootRef))
    g = JsonSchemaToGbnf(fallback);
  if (g.find("\n" + name + " ::=") != std::string::npos)
    throw Error("tool grammar: rule name " + name + " taken");
  return name + g.substr(4) + (g.empty() || g.back() == '\n' ? "" : "\n");
}

// The arguments of any of the tools (each tool's schema an alternative; exact with one tool).
std::string ArgsRules(const ToolRequest& r, const std::string& name) {
  ojson schema;
  if (r.tools.size() == 1) {
    schema = r.tools[0].parameters;
  } else {
    schema = ojson{{"anyOf", ojson::array()}};
    for (const ToolSpec& t : r.tools) schema["anyOf"].push_back(t.parameters);
  }
  return SchemaRules(schema, ojson{{"type", "object"}}, name);
}

// Calls as JSON objects {NAME_KEY: "name", ARGS_KEY: {...}} (each tool's arguments with its own
// name), extra members first; as a list of them when `list`.
std::string CallRules(const ToolRequest& r, const std::string& name_key, const std::string& args_key,
                      const ojson& extra, bool list, const std::string& name) {
  ojson calls = ojson::array(), names = ojson::array();
  for (const ToolSpec& t : r.tools) {
    ojson props = extra;
    props[name_key] = {{"const", t.name}};
    props[args_key] = t.parameters;
    ojson required = ojson::array();
    for (const auto& [key, value] : props.items()) required.push_back(key);
    calls.push_back(ojson{{"type", "object"}, {"properties", props}, {"required", required}});
    names.push_back(t.name);
  }
  ojson fallback_props = extra;
  fallback_props[name_key] = {{"enum", names}};
  fallback_props[args_key] = {{"type", "object"}};
  ojson fallback_required = ojson::array();
  for (const auto& [key, value] : fallback_props.items()) fallback_required.push_back(key);
  ojson call = ojson{{"anyOf", calls}},
        fallback = {{"type", "object"}, {"properties", fallback_props}, {"required", fallback_required}};
  if (list) {
    call = ojson{{"type", "array"}, {"items", call}, {"minItems", 1}};
    fallback = ojson{{"type", "array"}, {"items", fallback}, {"minItems", 1}};
  }
  return SchemaRules(call, fallback, name);
}

// A parameter's value in Qwen3-Coder's form, as text: an enum's values as JSON writes them (strings
// bare), integers, numbers and booleans as JSON's, anything else any text without "<"; line ends
// around it allowed.
std::string XmlValue(const ojson& schema) {
  std::string v = "[^<]*";
  if (schema.is_object() && schema.contains("enum") && schema["enum"].is_array() && !schema["enum"].empty()) {
    v = "(";
    for (size_t i = 0; i < schema["enum"].size(); ++i) {
      const ojson& e = schema["enum"][i];
      v += (i > 0 ? " | " : "") + Lit(e.is_string() ? e.get<std::string>() : e.dump());
    }
    v += ")";
  } else if (schema.is_object() && schema.contains("type") && schema["type"].is_string()) {
    const std::string type = schema["type"];
    const std::string digits = "(\"0\" | [1-9] [0-9]{0,15})";  // as JSON writes them
    if (type == "integer") v = "\"-\"? " + digits;
    if (type == "number") v = "\"-\"? " + digits + " (\".\" [0-9]{1,16})?";
    if (type == "boolean") v = "(\"true\" | \"false\")";
  }
  if (v != "[^<]*") v = "\"\\n\"? " + v + " \"\\n\"?";
  return v;
}

// Qwen3-Coder's calls: <function=NAME> then <parameter=P>VALUE</parameter> per property of the
// tool's schema in its order (the required ones always), VALUE as XmlValue says; a schema
// without properties takes any parameters. Rules "tool-xml" and "tool-xml-I".
std::string XmlCallRules(const ToolRequest& r) {
  const std::string ws(kWs), value = "[^<]*";  // of parameters no schema lists
  std::string root = "tool-xml ::= ", rules;
  for (size_t i = 0; i < r.tools.size(); ++i) {
    const ToolSpec& t = r.tools[i];
    const std::string name = "tool-xml-" + std::to_string(i);
    root += (i > 0 ? " | " : "") + name;
    std::string body = Lit("<function=" + t.name + ">") + " " + ws;
    const ojson& props = t.parameters.contains("properties") ? t.parameters["properties"] : ojson();
    if (!props.is_object() || props.empty()) {
      body += " (\"<parameter=\" [^>]+ \">\" " + value + " \"</parameter>\" " + ws + ")*";
    } else {
      const ojson required = t.parameters.value("required", ojson::array());
      for (const auto& [key, schema] : props.items()) {
        const bool needed =
            required.is_array() && std::find(required.begin(), required.end(), key) != required.end();
        body += " (" + Lit("<parameter=" + key + ">") + " " + XmlValue(schema) + " \"</parameter>\" " + ws +
                ")" + (needed ? "" : "?");
      }
    }
    rules += name + " ::= " + body + " \"</function>\"\n";
  }
  return root + "\n" + rules;
}

TriggeredGrammar Region(std::string trigger, const std::string& root, const std::string& rules = "") {
  return TriggeredGrammar{std::move(trigger), "root ::= " + root + "\n" + rules};
}

}  // namespace

namespace {

// The regions of an answer with calls allowed (tool_choice "auto"), or with `whole` the whole
// answer's grammar when a call is required (in *whole; no regions then).
std::vector<TriggeredGrammar> Build(ToolFormat format, const ToolRequest& request, bool thinks,
                                    bool thinking_open, std::string* whole) {
  ToolRequest r = request;  // a tool_choice naming a tool: that tool only
  if (r.choice != "auto" && r.choice != "required")
    std::erase_if(r.tools, [&](const ToolSpec& t) { return t.name != r.choice; });
  if (r.tools.empty()) throw Error("tool_choice names \"" + r.choice + "\", which is not among the tools");
  const std::string ws(kWs), args = "tool-call-arguments", calls = "tool-calls", names = Names(r, false);
  const std::string more = r.parallel ? "{0," + std::to_string(kMaxCalls - 1) + "}" : "{0,0}";
  std::string arg_rules;  // ArgsRules, made once where needed
  auto any_args = [&]() -> const std::string& {
    if (arg_rules.empty()) arg_rules = ArgsRules(r, args);
    return arg_rules;
  };
  std::vector<TriggeredGrammar> g;
  // The regions (tool_choice "auto"), or with a call required the whole answer: `first`, then
  // `next` up to kMaxCalls times in all, then `last`.
  auto region = [&](std::string trigger, const std::string& root, const std::string& rules = "") {
    if (whole == nullptr) g.push_back(Region(std::move(trigger), root, rules));
  };
  auto required = [&](const std::string& first, const std::string& next, const std::string& rules,
                      const std::string& last = "") {
    if (whole != nullptr) *whole = "root ::= " + first + " (" + next + ")" + more + last + "\n" + rules;
  };
  switch (format) {
    case ToolFormat::kGeneric:
      break;
    case ToolFormat::kToolCallTags: {
      const std::string rules =
          CallRules(r, "name", "arguments", ojson::object(), false, calls) + XmlCallRules(r);
      // A think block may come first (Qwen 3, QwQ), or end first where the prompt opened it.
      const std::string think = std::string("([^<] | \"<\" [^/])* \"</think>\" ") + ws + " ";
      const std::string before = thinking_open ? think : thinks ? "(\"<think>\" " + think + ")? " : "";
      const std::string block = "\"<tool_call>\\n\" (" + calls + " | tool-xml) \"\\n</tool_call>\"";
      required(before + block, ws + " " + block, rules);
      region("<tool_call>", ws + " (" + calls + " | tool-xml)", rules);
      break;
    }
    case ToolFormat::kMistral: {
      const std::string rules = CallRules(r, "name", "arguments", ojson::object(), true, calls);
      required("\"[TOOL_CALLS]\" " + calls, "\"\"", rules);
      region("[TOOL_CALLS]", ws + " (" + calls + " | " + names + ")", rules);
      region("[ARGS]", ws + " " + args, any_args());
      break;
    }
    case ToolFormat::kLlama3Json: {
      const std::string rules = CallRules(r, "name", "parameters", ojson::object(), false, calls);
      required(calls, "\"\"", rules);
      region("<|python_tag|>", ws + " " + calls, rules);
      region("{\"name\"",
             ws + " \":\" " + ws + " " + Names(r, true) + " " + ws + " \",\" " + ws +
                 " \"\\\"parameters\\\"\" " + ws + " \":\" " + ws + " " + args + " " + ws + " \"}\"",
             any_args());
      break;
    }
    case ToolFormat::kHarmony:
      region("to=functions.", names);
      region("json<|message|>", args, any_args());
      break;
    case ToolFormat::kDeepSeek:
      region("<｜tool▁call▁begin｜>", "(\"function\" | " + names + ")");
      region("<｜tool▁sep｜>",
             ws + " (" + args + " | " + names + " \"\\n```json\\n\" " + args + " \"\\n```\")", any_args());
      break;
    case ToolFormat::kFunctionaryV32: {
      // The prompt ends with ">>>": the first segment is a recipient too.
      const std::string call = names + " \"\\n\" " + args;
      required(call, "\">>>\" " + call, any_args());
      region("", "\"all\\n\" | " + call, any_args());
      region(">>>", "\"all\\n\" | " + call, any_args());
      break;
    }
    case ToolFormat::kFunctionaryV31: {
      const std::string call = "\"<function=\" " + names + " \">\" " + args + " \"</function>\"";
      required(call, call, any_args());
      region("<function=", names + " \">\" " + args, any_args());
      break;
    }
    case ToolFormat::kKimiK2: {
      const std::string call = "\"<|tool_call_begin|>functions.\" " + names + " \":\" [0-9]{1,3} " +
                               "\"<|tool_call_argument_begin|>\" " + args + " \"<|tool_call_end|>\"";
      required("\"<|tool_calls_section_begin|>\" " + call, call, any_args(),
               " \"<|tool_calls_section_end|>\"");
      region("<|tool_call_begin|>", "\"functions.\" " + names + " \":\" [0-9]{1,3}");
      region("<|tool_call_argument_begin|>", ws + " " + args, any_args());
      break;
    }
    case ToolFormat::kCommandR7B:
      region("<|START_ACTION|>", ws + " " + calls,
             CallRules(r, "tool_name", "parameters", ojson{{"tool_call_id", {{"type", "string"}}}}, true,
                       calls));
      break;
  }
  return g;
}

}  // namespace

bool CallsCanBeRequired(ToolFormat format) {
  std::string whole;
  ToolRequest probe;
  probe.tools.push_back({"f", "", ojson{{"type", "object"}}});
  probe.choice = "required";
  Build(format, probe, false, false, &whole);
  return !whole.empty();
}

std::vector<TriggeredGrammar> ToolCallGrammars(ToolFormat format, const ToolRequest& tools) {
  return Build(format, tools, false, false, nullptr);
}

std::string RequiredCallsGrammar(ToolFormat format, const ToolRequest& tools, bool thinks,
                                 bool thinking_open) {
  std::string whole;
  Build(format, tools, thinks, thinking_open, &whole);
  if (whole.empty())
    throw Error("tool_choice \"" + tools.choice + "\": the model's tool format cannot be held to a call");
  return whole;
}

}  // namespace attn::serve
