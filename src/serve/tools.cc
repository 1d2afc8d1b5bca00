// Function calling for any chat model (tools.h).
#include "serve/tools.h"

#include "attn/error.h"

namespace attn::serve {
namespace {

using ojson = nlohmann::ordered_json;

[[noreturn]] void Fail(const std::string& message) { throw Error(message, Error::Kind::kValue); }

std::string Quote(const ojson& v) {
  std::string s = v.dump(-1, ' ', false, ojson::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

}  // namespace

std::optional<ToolRequest> ParseTools(const ojson& body) {
  ToolRequest r;
  const auto tools = body.find("tools");
  if (tools == body.end() || tools->is_null()) {
    if (body.contains("tool_choice") && !body["tool_choice"].is_null() && body["tool_choice"] != "none" &&
        body["tool_choice"] != "auto")
      Fail("tool_choice = " + Quote(body["tool_choice"]) + " without tools");
    return std::nullopt;
  }
  if (!tools->is_array()) Fail("tools: expected an array of {\"type\": \"function\", \"function\": {...}}");
  if (tools->empty()) return std::nullopt;
  for (size_t i = 0; i < tools->size(); ++i) {
    const ojson& t = (*tools)[i];
    const std::string where = "tools[" + std::to_string(i) + "]";
    if (!t.is_object() || t.value("type", ojson()) != "function" || !t.contains("function") ||
        !t["function"].is_object())
      Fail(where + ": expected {\"type\": \"function\", \"function\": {\"name\": ...}}, got " + Quote(t));
    const ojson& f = t["function"];
    ToolSpec spec;
    if (!f.contains("name") || !f["name"].is_string() || f["name"].get<std::string>().empty())
      Fail(where + ".function.name: expected a non-empty string");
    spec.name = f["name"].get<std::string>();
    for (const ToolSpec& other : r.tools) {
      if (other.name == spec.name) Fail(where + ".function.name = \"" + spec.name + "\" is given twice");
    }
    if (f.contains("description")) {
      if (!f["description"].is_string()) Fail(where + ".function.description: expected a string");
      spec.description = f["description"].get<std::string>();
    }
    spec.parameters = ojson{{"type", "object"}};
    if (f.contains("parameters") && !f["parameters"].is_null()) {
      if (!f["parameters"].is_object())
        Fail(where + ".function.parameters: expected a JSON schema (an object), got " +
             Quote(f["parameters"]));
      spec.parameters = f["parameters"];
    }
    r.tools.push_back(std::move(spec));
  }
  if (const auto choice = body.find("tool_choice"); choice != body.end() && !choice->is_null()) {
    if (choice->is_string()) {
      r.choice = choice->get<std::string>();
      if (r.choice == "none") return std::nullopt;
      if (r.choice != "auto" && r.choice != "required")
        Fail("tool_choice = " + Quote(*choice) + " (auto, none, required, or {\"type\": \"function\", ...})");
    } else if (choice->is_object() && choice->value("type", ojson()) == "function" &&
               choice->contains("function") && (*choice)["function"].is_object() &&
               (*choice)["function"].contains("name") && (*choice)["function"]["name"].is_string()) {
      r.choice = (*choice)["function"]["name"].get<std::string>();
      bool known = false;
      for (const ToolSpec& t : r.tools) known = known || t.name == r.choice;
      if (!known) Fail("tool_choice names \"" + r.choice + "\", which is not among the tools");
    } else {
      Fail("tool_choice = " + Quote(*choice) + " (auto, none, required, or {\"type\": \"function\", ...})");
    }
  }
  if (const auto p = body.find("parallel_tool_calls"); p != body.end() && !p->is_null()) {
    if (!p->is_boolean()) Fail("parallel_tool_calls: expected true or false, got " + Quote(*p));
    r.parallel = p->get<bool>();
  }
  return r;
}

std::string ToolInstructions(const ToolRequest& r) {
  ojson list = ojson::array();
  for (const ToolSpec& t : r.tools) {
    if (r.choice != "auto" && r.choice != "required" && r.choice != t.name) continue;
    ojson entry{{"name", t.name}};
    if (!t.description.empty()) entry["description"] = t.description;
    entry["parameters"] = t.parameters;
    list.push_back(std::move(entry));
  }
  std::string text = "You can call these tools:\n" + list.dump(2) + "\n\n";
  const std::string calls = r.parallel ? "one or more tool calls" : "one tool call";
  if (r.choice == "auto") {
    text +=
        "Answer with one JSON object: either {\"tool_calls\": [{\"name\": \"<tool name>\", \"arguments\": "
        "{<arguments>}}]} to make " +
        calls + ", or {\"response\": \"<your answer>\"} to answer directly.";
  } else {
    text +=
        "Answer with one JSON object {\"tool_calls\": [{\"name\": \"<tool name>\", \"arguments\": "
        "{<arguments>}}]} to make " +
        calls + ".";
  }
  return text;
}

std::string ToolAnswerSchema(const ToolRequest& r) {
  ojson calls = ojson::array();
  for (const ToolSpec& t : r.tools) {
    if (r.choice != "auto" && r.choice != "required" && r.choice != t.name) continue;
    calls.push_back(ojson{{"type", "object"},
                          {"properties", {{"name", {{"const", t.name}}}, {"arguments", t.parameters}}},
                          {"required", {"name", "arguments"}}});
  }
  const ojson call_list{{"type", "object"},
                        {"properties",
                         {{"tool_calls",
                           {{"type", "array"},
                            {"items", {{"anyOf", calls}}},
                            {"minItems", 1},
                            {"maxItems", r.parallel ? kMaxCalls : 1}}}}},
                        {"required", {"tool_calls"}}};
  if (r.choice != "auto") return call_list.dump();
  const ojson answer{
      {"type", "object"}, {"properties", {{"response", {{"type", "string"}}}}}, {"required", {"response"}}};
  return ojson{{"anyOf", {call_list, answer}}}.dump();
}

namespace {

// An assistant message's tool_calls as [{"name", "arguments": {...}}] (OpenAI sends the arguments
// as JSON text); attn::Error naming messages[i] for a malformed one.
ojson ParsedToolCalls(const nlohmann::json& tc, const std::string& where) {
  if (!tc.is_array()) Fail(where + ".tool_calls: expected an array");
  ojson calls = ojson::array();
  for (size_t k = 0; k < tc.size(); ++k) {
    const nlohmann::json& c = tc[k];
    const std::string at = where + ".tool_calls[" + std::to_string(k) + "]";
    if (!c.is_object() || !c.contains("function") || !c["function"].is_object() ||
        !c["function"].contains("name") || !c["function"]["name"].is_string())
      Fail(at + ": expected {\"type\": \"function\", \"function\": {\"name\", \"arguments\"}}");
    ojson arguments = ojson::object();
    if (c["function"].contains("arguments")) {
      const nlohmann::json& a = c["function"]["arguments"];
      if (a.is_string()) {  // OpenAI sends the arguments as JSON text
        try {
          arguments = ojson::parse(a.get<std::string>());
        } catch (const nlohmann::json::exception&) {
          Fail(at + ".function.arguments: not valid JSON: " + Quote(ojson(a)));
        }
      } else {
        arguments = ojson::parse(a.dump());
      }
    }
    calls.push_back(ojson{{"name", c["function"]["name"].get<std::string>()}, {"arguments", arguments}});
  }
  return calls;
}

bool HasToolCalls(const nlohmann::json& m) { return m.contains("tool_calls") && !m["tool_calls"].is_null(); }

}  // namespace

std::string ToolAwareContent(const nlohmann::json& m, size_t i, const std::string& content) {
  const std::string where = "messages[" + std::to_string(i) + "]";
  const std::string role = m.value("role", std::string());
  if (role == "tool") {
    ojson response{{"content", content}};
    if (m.contains("tool_call_id")) {
      if (!m["tool_call_id"].is_string()) Fail(where + ".tool_call_id: expected a string");
      response = ojson{{"tool_call_id", m["tool_call_id"].get<std::string>()}, {"content", content}};
    }
    return ojson{{"tool_response", response}}.dump();
  }
  if (role == "assistant" && HasToolCalls(m))
    return ojson{{"tool_calls", ParsedToolCalls(m["tool_calls"], where)}}.dump();
  return content;
}

ojson TemplateMessage(const nlohmann::json& m, size_t i, const std::string& role,
                      const std::string& content) {
  const std::string where = "messages[" + std::to_string(i) + "]";
  ojson out{{"role", role}, {"content", content}};
  if (HasToolCalls(m)) {
    const ojson calls = ParsedToolCalls(m["tool_calls"], where);
    ojson list = ojson::array();
    for (size_t k = 0; k < calls.size(); ++k) {
      const nlohmann::json& c = m["tool_calls"][k];
      const std::string id = c.contains("id") && c["id"].is_string() ? c["id"].get<std::string>() : "";
      list.push_back(ojson{{"id", id}, {"type", "function"}, {"function", calls[k]}});
    }
    out["tool_calls"] = std::move(list);
  }
  for (const char* key : {"tool_call_id", "name"}) {
    if (!m.contains(key) || m[key].is_null()) continue;
    if (!m[key].is_string()) Fail(where + "." + key + ": expected a string");
    out[key] = m[key].get<std::string>();
  }
  return out;
}

ToolFormat TemplateToolFormat(const std::string& t) {
  if (t.find("<|channel|>") != std::string::npos && t.find("<|start|>") != std::string::npos)
    return ToolFormat::kHarmony;
  if (t.find("[TOOL_CALLS]") != std::string::npos) return ToolFormat::kMistral;
  if (t.find("<｜tool▁calls▁begin｜>") != std::string::npos) return ToolFormat::kDeepSeek;
  if (t.find("<tool_call>") != std::string::npos) return ToolFormat::kToolCallTags;
  if (t.find(">>>all") != std::string::npos) return ToolFormat::kFunctionaryV32;
  if (t.find("<|tool_calls_section_begin|>") != std::string::npos) return ToolFormat::kKimiK2;
  if (t.find("<|START_ACTION|>") != std::string::npos) return ToolFormat::kCommandR7B;
  if (t.find("<function=") != std::string::npos && t.find("<|start_header_id|>") != std::string::npos)
    return ToolFormat::kFunctionaryV31;
  if (t.find("<|start_header_id|>") != std::string::npos && t.find("\"parameters\"") != std::string::npos)
    return ToolFormat::kLlama3Json;
  return ToolFormat::kGeneric;
}

}  // namespace attn::serve
