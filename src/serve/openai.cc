#include "serve/openai.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>

#include "attn/error.h"
#include "model/grammar.h"
#include "model/json_schema.h"
#include "serve/reasoning.h"
#include "serve/tools.h"

namespace attn::serve {
namespace {

using nlohmann::json;

constexpr int kMaxDepth = 64;  // nesting levels a request may have
constexpr int kMaxTokens = 1 << 20;
constexpr int kMaxLogprobs = 20;  // alternatives per token (OpenAI's chat limit)

[[noreturn]] void Fail(const std::string& message) { throw Error(message, Error::Kind::kValue); }

// A value as the error messages quote it (long ones cut).
std::string Quote(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 64) s = s.substr(0, 61) + "...";
  return s;
}

// j[key] when present and not null.
const json* Find(const json& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

double Number(const json& j, const char* key, double lo, double hi) {
  const json& v = j.at(key);
  if (!v.is_number()) Fail(std::string(key) + ": expected a number, got " + Quote(v));
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi))
    Fail(std::string(key) + " = " + Quote(v) + " (must be in [" + json(lo).dump() + ", " + json(hi).dump() +
         "])");
  return x;
}

int64_t Integer(const json& j, const char* key, int64_t lo, int64_t hi) {
  const json& v = j.at(key);
  if (!v.is_number_integer()) Fail(std::string(key) + ": expected an integer, got " + Quote(v));
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi))
    Fail(std::string(key) + " = " + Quote(v) + " (must be <= " + std::to_string(hi) + ")");
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    Fail(std::string(key) + " = " + Quote(v) + " (must be in [" + std::to_string(lo) + ", " +
         std::to_string(hi) + "])");
  return x;
}

bool Bool(const json& j, const char* key) {
  const json& v = j.at(key);
  if (!v.is_boolean()) Fail(std::string(key) + ": expected true or false, got " + Quote(v));
  return v.get<bool>();
}

// Options attn does not implement: rejected when set to anything but their neutral value.
void RejectUnsupported(const json& j) {
  auto unsupported = [](const char* key, const json& v) {
    Fail(std::string(key) + " = " + Quote(v) + " is not supported by attn serve");
  };
  if (const json* v = Find(j, "best_of"); v && !(v->is_number_integer() && v->get<int64_t>() == 1))
    unsupported("best_of", *v);
  if (const json* v = Find(j, "functions"); v && !v->empty()) unsupported("functions", *v);
  if (const json* v = Find(j, "suffix"); v && !(v->is_string() && v->get<std::string>().empty()))
    unsupported("suffix", *v);
}

// response_format, "grammar" and "json_schema" into the request's constraint, each checked now
// (a grammar that does not parse, a schema attn cannot convert: the request is refused at once).
// A schema is taken from the body in document order (`ordered`, parsed again when first asked
// for): its properties' order is the order the answer's keys follow (`json` sorts keys).
using OrderedBody = std::function<const nlohmann::ordered_json&()>;
void ReadConstraint(const json& j, const OrderedBody& ordered, Request& r) {
  std::vector<const char*> schema_path;  // where the schema is in the body
  int given = 0;
  if (const json* v = Find(j, "response_format")) {
    const json type = v->is_object() ? v->value("type", json()) : json();
    if (type == json("json_object")) {
      if (Find(*v, "schema") != nullptr) {
        schema_path = {"response_format", "schema"};
      } else {
        r.json = true;
      }
      ++given;
    } else if (type == json("json_schema")) {
      const json* spec = Find(*v, "json_schema");
      if (spec == nullptr || !spec->is_object() || Find(*spec, "schema") == nullptr)
        Fail("response_format: type json_schema needs \"json_schema\": {\"schema\": {...}}, got " +
             Quote(*v));
      schema_path = {"response_format", "json_schema", "schema"};
      ++given;
    } else if (type != json("text")) {
      Fail("response_format = " + Quote(*v) +
           " is not supported by attn serve (type text, json_object or json_schema)");
    }
  }
  if (const json* v = Find(j, "grammar"); v && !(v->is_string() && v->get<std::string>().empty())) {
    if (!v->is_string()) Fail("grammar: expected GBNF text (a string), got " + Quote(*v));
    r.grammar = v->get<std::string>();
    ++given;
  }
  if (const json* v = Find(j, "json_schema"); v && !v->is_null()) {
    schema_path = {"json_schema"};
    ++given;
  }
  if (given > 1) Fail("response_format (json), grammar and json_schema exclude each other (give one)");
  if (!schema_path.empty()) {
    const nlohmann::ordered_json* schema = &ordered();
    for (const char* key : schema_path) schema = &schema->at(key);
    r.json_schema = schema->dump();
  }
  try {
    if (!r.grammar.empty()) Grammar::Parse(r.grammar);
    if (!r.json_schema.empty()) Grammar::Parse(JsonSchemaToGbnf(std::string_view(r.json_schema)));
  } catch (const Error& e) {
    Fail(e.what());
  }
}

// A message's content: a string, or an array of {"type": "text", "text": ...} parts (joined).
std::string Content(const json& m, size_t i) {
  const std::string where = "messages[" + std::to_string(i) + "].content";
  const json* c = Find(m, "content");
  if (c == nullptr || c->is_null()) return "";  // (an assistant message with tool_calls)
  if (c->is_string()) return c->get<std::string>();
  if (!c->is_array()) Fail(where + ": expected a string or an array of text parts, got " + Quote(*c));
  std::string text;
  for (size_t p = 0; p < c->size(); ++p) {
    const json& part = (*c)[p];
    if (!part.is_object() || part.value("type", json()) != json("text") || !part.contains("text") ||
        !part["text"].is_string())
      Fail(where + "[" + std::to_string(p) + "]: only text parts are supported, got " + Quote(part));
    text += part["text"].get<std::string>();
  }
  return text;
}

json ResponseIdentity(const ResponseInfo& info, const char* object) {
  return json{{"id", info.id}, {"object", object}, {"created", info.created}, {"model", info.model}};
}

// The prompt once, every choice's completion.
json Usage(std::span<const GenerateResult> results) {
  const auto prompt = results.empty() ? int64_t{0} : static_cast<int64_t>(results[0].prompt_tokens.size());
  int64_t completion = 0;
  for (const GenerateResult& r : results) completion += static_cast<int64_t>(r.tokens.size());
  return json{
      {"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

std::string Event(const json& j) {
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

// Characters (UTF-8 lead bytes) in s: the unit of OpenAI's text_offset.
// /v1/completions' logprobs: parallel lists over the echoed prompt's tokens (the first without a
// log-probability) and the sampled ones `entries` (an EOS that ended the generation included).
json CompletionLogprobs(bool echo, const std::string& prompt, const GenerateResult& r,
                        std::span<const TokenLogprob> entries, int64_t completion_offset,
                        const TokenText& token_text) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
  int64_t offset = 0;
  const auto add = [&](int32_t token, const TokenLogprob* lp) {
    const std::string piece = token_text(token);
    tokens.push_back(piece);
    token_logprobs.push_back(lp ? json(lp->logprob) : json(nullptr));
    if (lp) {
      json alternatives = json::object();
      for (const auto& [id, logprob] : lp->top) alternatives[token_text(id)] = logprob;
      top.push_back(std::move(alternatives));
    } else {
      top.push_back(nullptr);
    }
    offsets.push_back(offset);
    offset += Chars(piece);
  };
  if (echo) {
    for (size_t i = 0; i < r.prompt_tokens.size(); ++i)
      add(r.prompt_tokens[i], i == 0 || i > r.prompt_logprobs.size() ? nullptr : &r.prompt_logprobs[i - 1]);
  }
  // The completion's offsets count on from the end of the prompt's text.
  offset = completion_offset < 0 ? Chars(prompt) : completion_offset;
  for (const TokenLogprob& lp : entries) add(lp.token, &lp);
  return json{{"tokens", tokens},
              {"token_logprobs", token_logprobs},
              {"top_logprobs", top},
              {"text_offset", offsets}};
}

json TokenEntry(int32_t token, float logprob, const TokenText& token_text) {
  const std::string piece = token_text(token);
  json bytes = json::array();
  for (char c : piece) bytes.push_back(static_cast<unsigned char>(c));
  return json{{"token", piece}, {"logprob", logprob}, {"bytes", bytes}};
}

// /v1/chat/completions' logprobs: one entry per token of `entries`.
json ChatLogprobs(std::span<const TokenLogprob> entries, const TokenText& token_text) {
  json content = json::array();
  for (const TokenLogprob& lp : entries) {
    json entry = TokenEntry(lp.token, lp.logprob, token_text);
    json top = json::array();
    for (const auto& [id, logprob] : lp.top) top.push_back(TokenEntry(id, logprob, token_text));
    entry["top_logprobs"] = std::move(top);
    content.push_back(std::move(entry));
  }
  return json{{"content", content}, {"refusal", nullptr}};
}

}  // namespace

nlohmann::json ParseObject(std::string_view body) {
  // Nesting deeper than any request needs is refused while parsing (before it costs memory).
  const json::parser_callback_t depth_limit = [](int depth, json::parse_event_t, json&) {
    if (depth > kMaxDepth) Fail("the request nests deeper than " + std::to_string(kMaxDepth) + " levels");
    return true;
  };
  json j;
  try {
    j = json::parse(body.begin(), body.end(), depth_limit);
  } catch (const json::exception& e) {  // a syntax error, a number out of range, ...
    Fail(std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) Fail("the request body must be a JSON object, got " + Quote(j));
  return j;
}

Request ParseRequest(std::string_view body, Endpoint endpoint) {
  const json j = ParseObject(body);
  RejectUnsupported(j);
  // The body in document order, for JSON schemas and tools' parameters: parsed once, if needed.
  std::optional<nlohmann::ordered_json> ordered;
  const OrderedBody ordered_body = [&]() -> const nlohmann::ordered_json& {
    if (!ordered) ordered = nlohmann::ordered_json::parse(body.begin(), body.end());
    return *ordered;
  };

  Request r;
  r.endpoint = endpoint;
  r.sampling.temperature = 1.0f;  // OpenAI's defaults; top_k / min_p are llama.cpp's extensions
  r.sampling.top_p = 1.0f;
  r.sampling.top_k = 0;
  r.sampling.min_p = 0.0f;
  if (endpoint == Endpoint::kCompletions) {
    const json* p = Find(j, "prompt");
    if (p == nullptr) Fail("prompt: missing (a string or an array of token ids)");
    if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) p = &(*p)[0];  // ["text"]
    if (p->is_string()) {
      r.prompt = p->get<std::string>();
      if (r.prompt.empty()) Fail("prompt: empty");
    } else if (p->is_array() && !p->empty()) {
      std::vector<int32_t> ids;
      for (const json& t : *p) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX)
          Fail("prompt: expected a string, or token ids (integers >= 0), got " + Quote(*p));
        ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
      }
      r.prompt_tokens = std::move(ids);
    } else {
      Fail("prompt: expected a non-empty string or array of token ids (one prompt per request), got " +
           Quote(*p));
    }
  } else {
    const json* m = Find(j, "messages");
    if (m == nullptr || !m->is_array() || m->empty())
      Fail("messages: expected a non-empty array of {\"role\", \"content\"}, got " +
           (m ? Quote(*m) : "nothing"));
    for (size_t i = 0; i < m->size(); ++i) {
      const json& msg = (*m)[i];
      if (!msg.is_object() || !msg.contains("role") || !msg["role"].is_string())
        Fail("messages[" + std::to_string(i) + "]: expected an object with a string \"role\", got " +
             Quote(msg));
      std::string role = msg["role"].get<std::string>();
      if (role == "developer") role = "system";  // OpenAI's newer name for the system message
      if (role != "system" && role != "user" && role != "assistant" && role != "tool")
        Fail("messages[" + std::to_string(i) + "].role = " + Quote(msg["role"]) +
             " (attn serve takes system, developer, user, assistant and tool)");
      // A tool's result goes back as a user turn, an assistant's calls as the JSON it wrote.
      const std::string text = Content(msg, i);
      const std::string content = ToolAwareContent(msg, i, text);
      r.messages.emplace_back(role == "tool" ? "user" : role, content);
      r.template_messages.push_back(TemplateMessage(msg, i, role, text));
    }
  }
  std::optional<ToolRequest> tools;
  if (const json* t = Find(j, "tools"); t != nullptr || Find(j, "tool_choice") != nullptr) {
    if (endpoint == Endpoint::kCompletions) {
      if (t != nullptr && !t->is_null() && !t->empty())
        Fail("tools = " + Quote(*t) + " is not supported by /v1/completions (use /v1/chat/completions)");
    } else {
      tools = ParseTools(ordered_body());
    }
  }

  for (const char* key : {"max_tokens", "max_completion_tokens"})
    if (Find(j, key)) r.max_tokens = static_cast<int>(Integer(j, key, 0, kMaxTokens));
  if (Find(j, "temperature")) r.sampling.temperature = static_cast<float>(Number(j, "temperature", 0.0, 2.0));
  if (Find(j, "top_p")) r.sampling.top_p = static_cast<float>(Number(j, "top_p", 0.0, 1.0));
  if (Find(j, "top_k")) r.sampling.top_k = static_cast<int>(Integer(j, "top_k", 0, 1 << 30));
  if (Find(j, "min_p")) r.sampling.min_p = static_cast<float>(Number(j, "min_p", 0.0, 1.0));
  if (Find(j, "repeat_penalty"))
    r.sampling.repetition_penalty = static_cast<float>(Number(j, "repeat_penalty", 0.01, 100.0));
  if (Find(j, "frequency_penalty"))
    r.sampling.frequency_penalty = static_cast<float>(Number(j, "frequency_penalty", -2.0, 2.0));
  if (Find(j, "presence_penalty"))
    r.sampling.presence_penalty = static_cast<float>(Number(j, "presence_penalty", -2.0, 2.0));
  if (const json* b = Find(j, "logit_bias")) {
    // OpenAI's {"token id": bias in [-100, 100]} (-100 bans the token in practice).
    if (!b->is_object()) Fail("logit_bias: expected an object of token id -> bias, got " + Quote(*b));
    for (const auto& [key, value] : b->items()) {
      size_t used = 0;
      long long id = -1;
      try {
        id = std::stoll(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != key.size() || key.empty() || id < 0 || id > INT32_MAX)
        Fail("logit_bias: key " + Quote(json(key)) + " is not a token id");
      if (!value.is_number() || !(value.get<double>() >= -100.0 && value.get<double>() <= 100.0))
        Fail("logit_bias[" + key + "] = " + Quote(value) + " (must be a number in [-100, 100])");
      r.sampling.logit_bias.emplace_back(static_cast<int32_t>(id), static_cast<float>(value.get<double>()));
    }
  }
  if (Find(j, "seed")) {
    const json& s = j["seed"];
    if (!s.is_number_integer()) Fail("seed: expected an integer, got " + Quote(s));
    r.sampling.seed = s.is_number_unsigned() ? s.get<uint64_t>() : static_cast<uint64_t>(s.get<int64_t>());
    r.seeded = true;
  }
  if (const json* s = Find(j, "stop")) {
    const auto add = [&](const json& x) {
      if (!x.is_string() || x.get<std::string>().empty())
        Fail("stop: expected a non-empty string or an array of them, got " + Quote(*s));
      r.stop.push_back(x.get<std::string>());
    };
    if (s->is_array()) {
      for (const json& x : *s) add(x);
    } else {
      add(*s);
    }
  }
  if (Find(j, "stream")) r.stream = Bool(j, "stream");
  if (Find(j, "cache_prompt")) r.cache_prompt = Bool(j, "cache_prompt");
  if (const json* k = Find(j, "chat_template_kwargs"); k != nullptr && !k->is_null()) {
    if (endpoint == Endpoint::kCompletions)
      Fail("chat_template_kwargs is for /v1/chat/completions (a completion's prompt is used as it is)");
    if (!k->is_object()) Fail("chat_template_kwargs: expected an object, got " + Quote(*k));
    for (const char* reserved : {"messages", "add_generation_prompt"})
      if (k->contains(reserved))
        Fail(std::string("chat_template_kwargs: \"") + reserved + "\" is set by the server");
    r.chat_template_kwargs = ordered_body()["chat_template_kwargs"];
  }
  if (const json* o = Find(j, "stream_options")) {
    if (!o->is_object()) Fail("stream_options: expected an object, got " + Quote(*o));
    if (Find(*o, "include_usage")) r.include_usage = Bool(*o, "include_usage");
  }
  if (endpoint == Endpoint::kCompletions) {
    if (Find(j, "logprobs")) r.logprobs = static_cast<int>(Integer(j, "logprobs", 0, kMaxLogprobs));
    if (Find(j, "echo")) r.echo = Bool(j, "echo");
  } else {
    if (Find(j, "echo") && Bool(j, "echo")) Fail("echo = true is not supported by /v1/chat/completions");
    const bool on = Find(j, "logprobs") && Bool(j, "logprobs");
    if (Find(j, "top_logprobs")) {
      const int k = static_cast<int>(Integer(j, "top_logprobs", 0, kMaxLogprobs));
      if (!on) Fail("top_logprobs needs \"logprobs\": true");
      r.logprobs = k;
    } else if (on) {
      r.logprobs = 0;
    }
  }
  if (r.stream && r.echo) Fail("echo with stream = true is not supported by attn serve");
  if (Find(j, "n")) r.n = static_cast<int>(Integer(j, "n", 1, kMaxChoices));
  ReadConstraint(j, ordered_body, r);
  if (tools) {
    // A constraint of the request's own only goes with a model's own tool format (decided later,
    // serve::ChatPromptText, which refuses it for the generic form).
    r.tools_constraint = r.json || !r.grammar.empty() || !r.json_schema.empty();
    if (r.stream && r.logprobs >= 0) Fail("tools with stream and logprobs is not supported by attn serve");
    for (size_t i = 0; i < tools->tools.size(); ++i) {
      try {
        Grammar::Parse(JsonSchemaToGbnf(tools->tools[i].parameters));
      } catch (const Error& e) {
        Fail("tools[" + std::to_string(i) + "].function.parameters: " + e.what());
      }
    }
    r.tools = true;
    r.template_tools = ordered_body()["tools"];
    r.tool_choice = tools->choice;
    r.tool_request = *tools;
    r.tool_schema = ToolAnswerSchema(*tools);
    try {
      Grammar::Parse(JsonSchemaToGbnf(std::string_view(r.tool_schema)));
    } catch (const Error& e) {
      Fail(std::string("tools: ") + e.what());
    }
    if (!r.tools_constraint) r.json_schema = r.tool_schema;
    // The tools' description joins the system message (or becomes one).
    const std::string instructions = ToolInstructions(*tools);
    if (!r.messages.empty() && r.messages[0].first == "system") {
      r.messages[0].second += "\n\n" + instructions;
    } else {
      r.messages.insert(r.messages.begin(), {"system", instructions});
    }
  }
  return r;
}

namespace {

// The choice's message of a chat answer: with tools, the calls apart in the generic JSON answer's
// or the model's own format; with reasoning, the think block apart (reasoning_content).
json ChatMessage(const Request& request, const std::string& text, const std::string& id_prefix, bool* calls) {
  *calls = false;
  const std::unique_ptr<AnswerSplitter> splitter = ChatAnswerSplitter(request);
  if (!splitter) return json{{"role", "assistant"}, {"content", text}};
  return AnswerMessage(request.tool_format, splitter->Split(text), id_prefix, calls);
}

}  // namespace

std::unique_ptr<AnswerSplitter> ChatAnswerSplitter(const Request& request) {
  const bool harmony = request.answer_format == ToolFormat::kHarmony;
  if (harmony && request.tools && request.tool_format == ToolFormat::kHarmony)
    return ToolSplitter(ToolFormat::kHarmony, false, request.tool_grammar);
  if (harmony && request.reasoning && !request.tools) return std::make_unique<HarmonySplitter>();
  // Command R7B thinks in a block of its own (split off with tools or not, as harmony's channels).
  if (request.answer_format == ToolFormat::kCommandR7B &&
      (!request.tools || request.tool_format == ToolFormat::kCommandR7B))
    return ToolSplitter(ToolFormat::kCommandR7B, request.thinking_open,
                        request.tools && request.tool_grammar);
  std::unique_ptr<AnswerSplitter> reasoning;
  if (request.reasoning) reasoning = std::make_unique<ReasoningSplitter>(request.thinking_open);
  std::unique_ptr<AnswerSplitter> tools;
  if (request.tools) {
    tools = ToolSplitter(request.tool_format, false, request.tool_grammar);
  } else if (request.answer_format == ToolFormat::kFunctionaryV32) {
    tools = FunctionaryTextSplitter();
  }
  if (!tools) return reasoning;
  if (!reasoning) return tools;
  return std::make_unique<ChainedSplitter>(std::move(reasoning), std::move(tools));
}

std::string FinishReason(const std::string& stop_reason) {
  return stop_reason == "eos" || stop_reason == "stop" ? "stop" : "length";
}

std::string ResponseJson(const Request& request, const ResponseInfo& info,
                         std::span<const GenerateResult> results, const TokenText& token_text) {
  if (results.empty()) throw Error("serve: a response without results");
  const bool chat = request.endpoint == Endpoint::kChatCompletions;
  json choices = json::array();
  for (size_t i = 0; i < results.size(); ++i) {
    const GenerateResult& result = results[i];
    json choice{{"index", i}, {"logprobs", nullptr}, {"finish_reason", FinishReason(result.stop_reason)}};
    if (chat && request.tools) {
      bool calls = false;
      choice["message"] = ChatMessage(request, result.text, info.id + "_" + std::to_string(i), &calls);
      if (calls && choice["finish_reason"] == "stop") choice["finish_reason"] = "tool_calls";
    } else if (chat) {
      bool calls = false;
      choice["message"] = ChatMessage(request, result.text, "", &calls);
      if (request.logprobs >= 0)  // the answer's tokens, not the end-of-turn token
        choice["logprobs"] = ChatLogprobs(
            std::span(result.logprobs).first(std::min(result.logprobs.size(), result.tokens.size())),
            token_text);
    } else {
      const std::string prompt = PromptText(request, token_text);
      choice["text"] = request.echo ? prompt + result.text : result.text;
      if (request.logprobs >= 0)
        choice["logprobs"] =
            CompletionLogprobs(request.echo, prompt, result, result.logprobs, -1, token_text);
    }
    choices.push_back(std::move(choice));
  }
  const GenerateResult& result = results[0];
  json j = ResponseIdentity(info, chat ? "chat.completion" : "text_completion");
  j["choices"] = std::move(choices);
  j["usage"] = Usage(results);
  j["timings"] = {{"prompt_n", result.n_prompt_evaluated},
                  {"prompt_cached", result.n_prompt_cached},
                  {"prompt_ms", result.prompt_ms},
                  {"predicted_n", static_cast<int64_t>(result.tokens.size())},
                  {"predicted_ms", result.gen_ms}};
  if (result.n_drafted > 0) {  // llama.cpp's names for its speculative decoding's counts
    j["timings"]["draft_n"] = result.n_drafted;
    j["timings"]["draft_n_accepted"] = result.n_draft_accepted;
  }
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string PromptText(const Request& request, const TokenText& token_text) {
  if (!request.prompt_tokens) return request.prompt;
  std::string text;
  for (int32_t t : *request.prompt_tokens) text += token_text(t);
  return text;
}

int64_t Chars(const std::string& s) {
  return std::count_if(s.begin(), s.end(),
                       [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

json StreamLogprobs(const Request& request, std::span<const TokenLogprob> entries, int64_t text_offset,
                    const TokenText& token_text) {
  if (request.endpoint == Endpoint::kChatCompletions) return ChatLogprobs(entries, token_text);
  return CompletionLogprobs(/*echo=*/false, "", GenerateResult{}, entries, text_offset, token_text);
}

std::string StreamChunk(const Request& request, const ResponseInfo& info, const std::string& text,
                        bool role_chunk, const json& logprobs, int index, bool reasoning) {
  const bool chat = request.endpoint == Endpoint::kChatCompletions;
  json choice{{"index", index}, {"logprobs", logprobs}, {"finish_reason", nullptr}};
  if (chat) {
    choice["delta"] = role_chunk  ? json{{"role", "assistant"}, {"content", ""}}
                      : reasoning ? json{{"reasoning_content", text}}
                                  : json{{"content", text}};
  } else {
    choice["text"] = text;
  }
  json j = ResponseIdentity(info, chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array({choice});
  return Event(j);
}

namespace {

// A chunk of choice `index` whose delta is `list` as its tool_calls.
std::string ToolCallsChunk(const ResponseInfo& info, json list, int index) {
  json j = ResponseIdentity(info, "chat.completion.chunk");
  j["choices"] = json::array({json{{"index", index},
                                   {"logprobs", nullptr},
                                   {"finish_reason", nullptr},
                                   {"delta", {{"tool_calls", std::move(list)}}}}});
  return Event(j);
}

}  // namespace

std::string StreamToolCalls(const Request& request, const ResponseInfo& info,
                            std::span<const nlohmann::ordered_json> calls, size_t first, int index) {
  json list = json::array();
  for (size_t k = 0; k < calls.size(); ++k) {
    json call = ToolCallJson(request.tool_format, calls[k], info.id + "_" + std::to_string(index), first + k);
    call["index"] = first + k;
    list.push_back(std::move(call));
  }
  return ToolCallsChunk(info, std::move(list), index);
}

std::string StreamToolDeltas(const Request& request, const ResponseInfo& info,
                             std::span<const AnswerSplitter::CallDelta> deltas, int index) {
  json list = json::array();
  for (const AnswerSplitter::CallDelta& d : deltas) {
    if (!list.empty() && list.back()["index"] == d.index && d.name.empty()) {  // the same call: joined
      list.back()["function"]["arguments"] =
          list.back()["function"]["arguments"].get<std::string>() + d.arguments;
      continue;
    }
    json call{{"index", d.index}};
    if (!d.name.empty()) {
      call["id"] = ToolCallId(request.tool_format, info.id + "_" + std::to_string(index), d.index);
      call["type"] = "function";
      call["function"] = {{"name", d.name}, {"arguments", d.arguments}};
    } else {
      call["function"] = {{"arguments", d.arguments}};
    }
    list.push_back(std::move(call));
  }
  return ToolCallsChunk(info, std::move(list), index);
}

std::string StreamFinish(const Request& request, const ResponseInfo& info, const GenerateResult& result,
                         int index, bool calls) {
  const bool chat = request.endpoint == Endpoint::kChatCompletions;
  std::string reason = FinishReason(result.stop_reason);
  if (chat && request.tools && calls && reason == "stop") reason = "tool_calls";
  json choice{{"index", index}, {"logprobs", nullptr}, {"finish_reason", reason}};
  if (chat) {
    choice["delta"] = json::object();
  } else {
    choice["text"] = "";
  }
  json last = ResponseIdentity(info, chat ? "chat.completion.chunk" : "text_completion");
  last["choices"] = json::array({choice});
  return Event(last);
}

std::string StreamEnd(const Request& request, const ResponseInfo& info,
                      std::span<const GenerateResult> results) {
  const bool chat = request.endpoint == Endpoint::kChatCompletions;
  std::string out;
  if (request.include_usage) {  // as OpenAI: one more chunk, no choices, the usage
    json usage = ResponseIdentity(info, chat ? "chat.completion.chunk" : "text_completion");
    usage["choices"] = json::array();
    usage["usage"] = Usage(results);
    out += Event(usage);
  }
  return out + "data: [DONE]\n\n";
}

EmbeddingRequest ParseEmbeddingRequest(std::string_view body) {
  const json j = ParseObject(body);
  const json* in = Find(j, "input");
  if (in == nullptr) Fail("input: missing (a string, an array of strings or token ids)");
  const auto ids_of = [](const json& a) {
    std::vector<int32_t> ids;
    for (const json& t : a) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX)
        Fail("input: token ids must be integers >= 0, got " + Quote(a));
      ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
    }
    return ids;
  };
  EmbeddingRequest r;
  if (in->is_string()) {
    r.inputs.push_back({in->get<std::string>(), std::nullopt});
  } else if (in->is_array() && !in->empty() && (*in)[0].is_number()) {
    r.inputs.push_back({"", ids_of(*in)});
  } else if (in->is_array() && !in->empty()) {
    if (in->size() > 2048)
      Fail("input: " + std::to_string(in->size()) + " inputs (at most 2048 per request)");
    for (const json& x : *in) {
      if (x.is_string()) {
        r.inputs.push_back({x.get<std::string>(), std::nullopt});
      } else if (x.is_array() && !x.empty()) {
        r.inputs.push_back({"", ids_of(x)});
      } else {
        Fail("input: each item must be a string or a non-empty array of token ids, got " + Quote(x));
      }
    }
  } else {
    Fail("input: expected a string, or a non-empty array of strings or token ids, got " + Quote(*in));
  }
  for (size_t i = 0; i < r.inputs.size(); ++i) {
    if (!r.inputs[i].tokens && r.inputs[i].text.empty()) Fail("input " + std::to_string(i) + ": empty");
  }
  if (const json* f = Find(j, "encoding_format")) {
    if (!f->is_string() || f->get<std::string>() != "float")
      Fail("encoding_format = " + Quote(*f) + " is not supported by attn serve (only \"float\")");
  }
  if (Find(j, "dimensions") != nullptr)
    Fail("dimensions is not supported by attn serve (full d_model vectors)");
  if (const json* p = Find(j, "pooling")) {
    if (!p->is_string()) Fail("pooling: expected \"mean\", \"last\" or \"cls\", got " + Quote(*p));
    const std::string name = p->get<std::string>();
    if (name != "mean" && name != "last" && name != "cls")
      Fail("pooling = " + Quote(*p) + " (must be \"mean\", \"last\" or \"cls\")");
    r.pooling = name;
  }
  return r;
}

std::string EmbeddingResponseJson(const std::vector<std::vector<float>>& embeddings, const std::string& model,
                                  int64_t prompt_tokens) {
  json data = json::array();
  for (size_t i = 0; i < embeddings.size(); ++i)
    data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", embeddings[i]}});
  return json{{"object", "list"},
              {"data", std::move(data)},
              {"model", model},
              {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}}
      .dump();
}

std::string ErrorJson(const std::string& message, int status) {
  const char* type = status >= 500   ? "server_error"
                     : status == 404 ? "not_found_error"
                                     : "invalid_request_error";
  return json{{"error", {{"message", message}, {"type", type}, {"code", status}}}}.dump(
      -1, ' ', false, json::error_handler_t::replace);
}

}  // namespace attn::serve
