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

nlohmann::json ToolAnswerMessage(const std::string& text, const std::string& id_prefix, bool* tool_calls) {
  *tool_calls = false;
  nlohmann::json message{{"role", "assistant"}, {"content", text}};
  ojson answer;
  try {
    answer = ojson::parse(text);
  } catch (const nlohmann::json::exception&) {
    return message;  // cut short by max_tokens or a stop string: the text as it is
  }
  if (answer.is_object() && answer.contains("response") && answer["response"].is_string()) {
    message["content"] = answer["response"].get<std::string>();
  } else if (answer.is_object() && answer.contains("tool_calls") && answer["tool_calls"].is_array()) {
    nlohmann::json calls = nlohmann::json::array();
    for (size_t k = 0; k < answer["tool_calls"].size(); ++k) {
      const ojson& c = answer["tool_calls"][k];
      calls.push_back(
          {{"id", "call_" + id_prefix + "_" + std::to_string(k)},
           {"type", "function"},
           {"function",
            {{"name", c.value("name", std::string())},
             {"arguments", c.contains("arguments") ? c["arguments"].dump() : std::string("{}")}}}});
    }
    message["content"] = nullptr;
    message["tool_calls"] = std::move(calls);
    *tool_calls = true;
  }
  return message;
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
  if (t.find("<function=") != std::string::npos && t.find("<|start_header_id|>") != std::string::npos)
    return ToolFormat::kFunctionaryV31;
  if (t.find("<|start_header_id|>") != std::string::npos && t.find("\"parameters\"") != std::string::npos)
    return ToolFormat::kLlama3Json;
  return ToolFormat::kGeneric;
}

namespace {

std::string Trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

std::optional<ojson> ParseJson(const std::string& text) {
  try {
    return ojson::parse(text);
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

// {"name": ..., "arguments" (or "parameters"): {...} or its JSON text} as {"name", "arguments"}.
std::optional<ojson> JsonCall(const ojson& call) {
  if (!call.is_object() || !call.contains("name") || !call["name"].is_string()) return std::nullopt;
  ojson args = call.contains("arguments")    ? call["arguments"]
               : call.contains("parameters") ? call["parameters"]
                                             : ojson::object();
  if (args.is_string()) {
    const std::optional<ojson> parsed = ParseJson(args.get<std::string>());
    if (!parsed) return std::nullopt;
    args = *parsed;
  }
  if (!args.is_object()) return std::nullopt;
  return ojson{{"name", call["name"]}, {"arguments", args}};
}

// One <tool_call> body: {"name": ..., "arguments": {...}} or <function=NAME><parameter=P>V</parameter>...
std::optional<ojson> ParseTagBody(const std::string& body) {
  const std::string b = Trim(body);
  if (b.rfind("<function=", 0) == 0) {
    const size_t name_end = b.find('>');
    if (name_end == std::string::npos) return std::nullopt;
    const std::string name = Trim(b.substr(10, name_end - 10));
    if (name.empty()) return std::nullopt;
    ojson args = ojson::object();
    size_t pos = name_end + 1;
    for (;;) {
      const size_t p = b.find("<parameter=", pos);
      if (p == std::string::npos) break;
      const size_t key_end = b.find('>', p);
      const size_t close = key_end == std::string::npos ? key_end : b.find("</parameter>", key_end);
      if (close == std::string::npos) return std::nullopt;
      const std::string key = Trim(b.substr(p + 11, key_end - p - 11));
      const std::string value = Trim(b.substr(key_end + 1, close - key_end - 1));
      const std::optional<ojson> v = ParseJson(value);
      args[key] = v ? *v : ojson(value);
      pos = close + 12;
    }
    return ojson{{"name", name}, {"arguments", args}};
  }
  const std::optional<ojson> v = ParseJson(b);
  return v ? JsonCall(*v) : std::nullopt;
}

// The calls of an answer written as blocks open ... close (the last may end at the end of the turn
// without its close), each body read by `parse`, and the text before them; nullopt when it has none,
// one does not parse, or text follows the last.
std::optional<std::vector<ojson>> BlockCalls(const std::string& text, const std::string& open,
                                             const std::string& close,
                                             std::optional<ojson> (*parse)(const std::string& body),
                                             std::string* content) {
  size_t at = text.find(open);
  if (at == std::string::npos) return std::nullopt;
  *content = text.substr(0, at);
  std::vector<ojson> calls;
  while (at != std::string::npos) {
    const size_t body = at + open.size();
    const size_t end = text.find(close, body);
    const std::optional<ojson> call = parse(text.substr(body, end == std::string::npos ? end : end - body));
    if (!call) return std::nullopt;
    calls.push_back(*call);
    if (end == std::string::npos) break;
    at = text.find(open, end + close.size());
    if (at == std::string::npos && !Trim(text.substr(end + close.size())).empty()) return std::nullopt;
  }
  return calls;
}

// The calls of an answer in <tool_call> tags.
std::optional<std::vector<ojson>> TagCalls(const std::string& text, std::string* content) {
  return BlockCalls(text, "<tool_call>", "</tool_call>", ParseTagBody, content);
}

// [TOOL_CALLS][{...}, ...] (v3) or [TOOL_CALLS]NAME[CALL_ID]ID[ARGS]{...} per call (v11 and later).
std::optional<std::vector<ojson>> MistralCalls(const std::string& text, std::string* content) {
  const std::string tag = "[TOOL_CALLS]";
  size_t at = text.find(tag);
  if (at == std::string::npos) return std::nullopt;
  *content = text.substr(0, at);
  std::vector<ojson> calls;
  const std::string rest = Trim(text.substr(at + tag.size()));
  if (!rest.empty() && rest[0] == '[') {
    const std::optional<ojson> list = ParseJson(rest);
    if (!list || !list->is_array() || list->empty()) return std::nullopt;
    for (const ojson& c : *list) {
      const std::optional<ojson> call = JsonCall(c);
      if (!call) return std::nullopt;
      calls.push_back(*call);
    }
    return calls;
  }
  while (at != std::string::npos) {
    const size_t next = text.find(tag, at + tag.size());
    const std::string one =
        text.substr(at + tag.size(), next == std::string::npos ? next : next - at - tag.size());
    const size_t args = one.find("[ARGS]");
    if (args == std::string::npos) return std::nullopt;
    std::string name = one.substr(0, args);
    if (const size_t id = name.find("[CALL_ID]"); id != std::string::npos) name.erase(id);
    name = Trim(name);
    const std::optional<ojson> arguments = ParseJson(Trim(one.substr(args + 6)));
    if (name.empty() || !arguments) return std::nullopt;
    const std::optional<ojson> call = JsonCall(ojson{{"name", name}, {"arguments", *arguments}});
    if (!call) return std::nullopt;
    calls.push_back(*call);
    at = next;
  }
  return calls;
}

// DeepSeek's calls: <｜tool▁calls▁begin｜> then per call <｜tool▁call▁begin｜>TYPE<｜tool▁sep｜>NAME
// ```json ARGS ```<｜tool▁call▁end｜> (R1 and its distills) or <｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS
// <｜tool▁call▁end｜> (V3.1), then <｜tool▁calls▁end｜>.
std::optional<std::vector<ojson>> DeepSeekCalls(const std::string& text, std::string* content) {
  const std::string calls_begin = "<｜tool▁calls▁begin｜>", call_begin = "<｜tool▁call▁begin｜>",
                    sep = "<｜tool▁sep｜>", call_end = "<｜tool▁call▁end｜>",
                    calls_end = "<｜tool▁calls▁end｜>";
  size_t at = text.find(calls_begin);
  if (at == std::string::npos) return std::nullopt;
  *content = text.substr(0, at);
  std::vector<ojson> calls;
  size_t pos = at + calls_begin.size();
  for (;;) {
    const size_t begin = text.find(call_begin, pos);
    if (begin == std::string::npos) break;
    const size_t mid = text.find(sep, begin);
    if (mid == std::string::npos) return std::nullopt;
    const size_t end = text.find(call_end, mid);  // the last may stop at end of turn without it
    const std::string head = Trim(text.substr(begin + call_begin.size(), mid - begin - call_begin.size()));
    std::string body =
        Trim(text.substr(mid + sep.size(), end == std::string::npos ? end : end - mid - sep.size()));
    std::string name = head;
    const size_t fence = body.find("```");
    if (fence != std::string::npos && body.find('\n') < fence) {  // R1: NAME, then a fenced JSON block
      name = Trim(body.substr(0, body.find('\n')));
      body = body.substr(fence + 3);
      if (body.rfind("json", 0) == 0) body = body.substr(4);
      const size_t close = body.rfind("```");
      if (close != std::string::npos) body = body.substr(0, close);
    }
    const std::optional<ojson> args = ParseJson(Trim(body));
    if (name.empty() || !args) return std::nullopt;
    const std::optional<ojson> call = JsonCall(ojson{{"name", name}, {"arguments", *args}});
    if (!call) return std::nullopt;
    calls.push_back(*call);
    pos = end == std::string::npos ? text.size() : end + call_end.size();
  }
  if (calls.empty()) return std::nullopt;
  const size_t tail = text.find(calls_end, pos);
  const std::string after =
      tail == std::string::npos ? text.substr(pos) : text.substr(tail + calls_end.size());
  if (!Trim(after).empty()) return std::nullopt;
  return calls;
}

// Functionary v3.2: the prompt ends with ">>>", and the answer is segments RECIPIENT\nBODY
// separated by ">>>": recipient "all" is text for the user, any other a call of that function
// with BODY its JSON arguments.
std::optional<std::vector<ojson>> FunctionaryV32Calls(const std::string& text, std::string* content) {
  std::vector<ojson> calls;
  std::string said;
  for (size_t at = 0; at <= text.size();) {
    size_t end = text.find(">>>", at);
    if (end == std::string::npos) end = text.size();
    const std::string segment = text.substr(at, end - at);
    const size_t nl = segment.find('\n');
    const std::string recipient = Trim(segment.substr(0, nl));
    const std::string body = nl == std::string::npos ? "" : segment.substr(nl + 1);
    if (recipient == "all") {
      said += body;
    } else {
      const std::optional<ojson> args = ParseJson(Trim(body));
      if (recipient.empty() || recipient.find_first_of(" \t{") != std::string::npos || !args)
        return std::nullopt;
      const std::optional<ojson> call = JsonCall(ojson{{"name", recipient}, {"arguments", *args}});
      if (!call) return std::nullopt;
      calls.push_back(*call);
    }
    at = end + 3;
  }
  *content = said;  // no call: the answer's text without its "all" recipient lines
  return calls;
}

// One Functionary v3.1 block after "<function=": NAME>{...}.
std::optional<ojson> ParseFunctionBody(const std::string& body) {
  const size_t name_end = body.find('>');
  if (name_end == std::string::npos) return std::nullopt;
  const std::string name = Trim(body.substr(0, name_end));
  const std::optional<ojson> args = ParseJson(Trim(body.substr(name_end + 1)));
  if (name.empty() || !args) return std::nullopt;
  return JsonCall(ojson{{"name", name}, {"arguments", *args}});
}

// Functionary v3.1 (Llama 3.1's custom tool format): text, then <function=NAME>{...}</function> per
// call.
std::optional<std::vector<ojson>> FunctionaryV31Calls(const std::string& text, std::string* content) {
  return BlockCalls(text, "<function=", "</function>", ParseFunctionBody, content);
}

// The whole answer one {"name", "parameters"} object, after an optional <|python_tag|>.
std::optional<std::vector<ojson>> Llama3Calls(const std::string& text) {
  std::string t = Trim(text);
  if (t.rfind("<|python_tag|>", 0) == 0) t = Trim(t.substr(14));
  if (t.empty() || t[0] != '{') return std::nullopt;
  const std::optional<ojson> v = ParseJson(t);
  const std::optional<ojson> call = v ? JsonCall(*v) : std::nullopt;
  if (!call) return std::nullopt;
  return std::vector<ojson>{*call};
}

}  // namespace

std::optional<HarmonyAnswer> ParseHarmony(const std::string& text) {
  HarmonyAnswer out;
  size_t pos = 0;
  bool first = true;
  while (pos < text.size()) {
    // One message: [recipient] [<|channel|>C ...] <|message|> BODY [<|end|> | <|call|> | <|return|>]
    const size_t next_start = text.find("<|start|>", pos);
    const size_t msg = text.find("<|message|>", pos);
    if (msg == std::string::npos || (next_start != std::string::npos && next_start < msg)) {
      // No header: plain text (an answer written without channels), kept only at the start.
      const size_t end = next_start == std::string::npos ? text.size() : next_start;
      if (first) out.content += text.substr(pos, end - pos);
      pos = end == text.size() ? end : end + 9;
      first = false;
      continue;
    }
    const std::string header = text.substr(pos, msg - pos);
    size_t body_end = text.size(), after = text.size();
    for (const std::string stop : {"<|end|>", "<|call|>", "<|return|>", "<|start|>"}) {
      const size_t at = text.find(stop, msg + 11);
      if (at != std::string::npos && at < body_end) {
        body_end = at;
        after = stop == "<|start|>" ? at : at + stop.size();
      }
    }
    const std::string body = text.substr(msg + 11, body_end - msg - 11);
    auto word_after = [&header](const std::string& mark) -> std::optional<std::string> {
      const size_t at = header.find(mark);
      if (at == std::string::npos) return std::nullopt;
      const size_t b = at + mark.size(), e = header.find_first_of(" <", b);
      return header.substr(b, e == std::string::npos ? std::string::npos : e - b);
    };
    if (const std::optional<std::string> name = word_after("to=functions.")) {
      const std::optional<ojson> args = ParseJson(Trim(body));
      if (name->empty() || !args || !args->is_object()) return std::nullopt;
      out.calls.push_back(ojson{{"name", *name}, {"arguments", *args}});
    } else if (word_after("<|channel|>").value_or("") == "analysis") {
      out.reasoning += (out.reasoning.empty() ? "" : "\n") + body;
    } else {
      out.content += body;
    }
    pos = after;
    if (text.compare(pos, 9, "<|start|>") == 0) pos += 9;
    first = false;
  }
  return out;
}

namespace {

// Nine letters and digits from the prefix and index (Mistral's templates want exactly that).
std::string MistralId(const std::string& prefix, size_t k) {
  static const char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (const char c : prefix + "_" + std::to_string(k))
    h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  std::string id;
  for (int i = 0; i < 9; ++i, h /= 62) id += kChars[h % 62];
  return id;
}

}  // namespace

nlohmann::json NativeToolAnswerMessage(ToolFormat format, const std::string& text,
                                       const std::string& id_prefix, bool* tool_calls) {
  *tool_calls = false;
  nlohmann::json message{{"role", "assistant"}, {"content", text}};
  std::string content;
  std::optional<std::vector<ojson>> calls;
  if (format == ToolFormat::kToolCallTags) calls = TagCalls(text, &content);
  if (format == ToolFormat::kMistral) calls = MistralCalls(text, &content);
  if (format == ToolFormat::kLlama3Json) calls = Llama3Calls(text);
  if (format == ToolFormat::kDeepSeek) calls = DeepSeekCalls(text, &content);
  if (format == ToolFormat::kFunctionaryV32) calls = FunctionaryV32Calls(text, &content);
  if (format == ToolFormat::kFunctionaryV31) calls = FunctionaryV31Calls(text, &content);
  if (format == ToolFormat::kHarmony) {
    std::optional<HarmonyAnswer> h = ParseHarmony(text);
    if (!h) return message;
    if (!h->reasoning.empty()) message["reasoning_content"] = h->reasoning;
    content = std::move(h->content);
    if (h->calls.empty()) {
      message["content"] = content;
      return message;
    }
    calls = std::move(h->calls);
  }
  if (!calls) return message;
  if (calls->empty()) {  // a format whose text needs reading even without a call (Functionary v3.2)
    message["content"] = content;
    return message;
  }
  nlohmann::json list = nlohmann::json::array();
  for (size_t k = 0; k < calls->size(); ++k) {
    const ojson& c = (*calls)[k];
    list.push_back({{"id", format == ToolFormat::kMistral ? MistralId(id_prefix, k)
                                                          : "call_" + id_prefix + "_" + std::to_string(k)},
                    {"type", "function"},
                    {"function", {{"name", c["name"]}, {"arguments", c["arguments"].dump()}}}});
  }
  content = Trim(content);
  message["content"] = content.empty() ? nlohmann::json(nullptr) : nlohmann::json(content);
  message["tool_calls"] = std::move(list);
  *tool_calls = true;
  return message;
}

}  // namespace attn::serve
