// Reading an answer with tools as it streams (tools.h): one splitter per tool format.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "serve/tools.h"

namespace attn::serve {
namespace {

using ojson = nlohmann::ordered_json;
using Out = AnswerSplitter::Out;
using Calls = std::vector<ojson>;
constexpr size_t npos = std::string::npos;

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

std::string Trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == npos) return "";
  return std::string(s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1));
}

std::optional<ojson> ParseJson(const std::string& text) {
  try {
    return ojson::parse(text);
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

// {"name": ..., "arguments" (or "parameters"): {...} or its JSON text} as {"name", "arguments"}; a
// name that is not a non-empty string is no call.
std::optional<ojson> JsonCall(const ojson& call) {
  if (!call.is_object() || !call.contains("name") || !call["name"].is_string() ||
      call["name"].get<std::string>().empty())
    return std::nullopt;
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

// NAME and its JSON arguments as a call.
std::optional<ojson> NamedCall(const std::string& name, const std::string& args_text) {
  const std::optional<ojson> args = ParseJson(args_text);
  if (name.empty() || !args) return std::nullopt;
  return JsonCall(ojson{{"name", name}, {"arguments", *args}});
}

std::optional<Calls> One(std::optional<ojson> call) {
  if (!call) return std::nullopt;
  return Calls{std::move(*call)};
}

// Content as it streams, with the whitespace at its ends dropped: trailing whitespace waits until
// more text follows it.
class TextOut {
 public:
  void Add(std::string_view s, std::string& out) {
    if (!begun_) {
      const size_t b = s.find_first_not_of(" \t\r\n");
      if (b == npos) return;
      s.remove_prefix(b);
      begun_ = true;
    }
    size_t end = s.size();
    while (end > 0 && IsSpace(s[end - 1])) --end;
    if (end == 0) {
      pending_ += s;
      return;
    }
    out += pending_;
    out += s.substr(0, end);
    pending_ = s.substr(end);
  }

 private:
  bool begun_ = false;
  std::string pending_;
};

// Where a call's arguments begin in the text of its block so far: the call's name and the offset
// of the "{" that opens its arguments; nullopt while they are not both written (or never will be,
// for forms whose arguments do not stream: lists of calls, XML parameters, arguments as a string).
struct Located {
  std::string name;
  size_t args = 0;
};
using Locate = std::optional<Located> (*)(std::string_view body);

// A cursor over a block's text for the locators.
struct Cursor {
  std::string_view s;
  size_t i = 0;
  void Ws() {
    while (i < s.size() && IsSpace(s[i])) ++i;
  }
  bool Eat(std::string_view t) {
    Ws();
    if (s.substr(i, t.size()) != t) return false;
    i += t.size();
    return true;
  }
  // A whole JSON string, decoded.
  std::optional<std::string> String() {
    Ws();
    if (i >= s.size() || s[i] != '"') return std::nullopt;
    for (size_t j = i + 1; j < s.size(); ++j) {
      if (s[j] == '\\') {
        ++j;
      } else if (s[j] == '"') {
        const std::optional<ojson> v = ParseJson(std::string(s.substr(i, j + 1 - i)));
        i = j + 1;
        return v && v->is_string() ? std::optional<std::string>(v->get<std::string>()) : std::nullopt;
      }
    }
    return std::nullopt;
  }
  // NAME up to `end` (trimmed), then the arguments' "{".
  std::optional<Located> NameThenArgs(std::string_view end) {
    const size_t e = s.find(end, i);
    if (e == npos) return std::nullopt;
    std::string name = Trim(s.substr(i, e - i));
    i = e + end.size();
    return ArgsOf(std::move(name));
  }
  std::optional<Located> ArgsOf(std::string name) {
    Ws();
    if (name.empty() || i >= s.size() || s[i] != '{') return std::nullopt;
    return Located{std::move(name), i};
  }
};

// {"name": "...", "arguments" (or "parameters"): {
std::optional<Located> LocateJsonCall(Cursor c) {
  if (!c.Eat("{") || !c.Eat("\"name\"") || !c.Eat(":")) return std::nullopt;
  std::optional<std::string> name = c.String();
  if (!name || !c.Eat(",")) return std::nullopt;
  const std::optional<std::string> key = c.String();
  if (!key || (*key != "arguments" && *key != "parameters") || !c.Eat(":")) return std::nullopt;
  return c.ArgsOf(std::move(*name));
}

// <tool_call> {"name": "...", "arguments": {
std::optional<Located> LocateTagJson(std::string_view body) { return LocateJsonCall(Cursor{body}); }

// [TOOL_CALLS]NAME[CALL_ID]ID[ARGS]{ or NAME[ARGS]{ (not v3's list).
std::optional<Located> LocateMistral(std::string_view body) {
  Cursor c{body};
  c.Ws();
  if (c.i < body.size() && body[c.i] == '[') return std::nullopt;
  std::optional<Located> at = c.NameThenArgs("[ARGS]");
  if (at) at->name = Trim(at->name.substr(0, at->name.find("[CALL_ID]")));
  return at && !at->name.empty() ? at : std::nullopt;
}

// NAME<｜tool▁sep｜>{ (V3.1), or function<｜tool▁sep｜>NAME then ```json and { (R1).
std::optional<Located> LocateDeepSeek(std::string_view body) {
  constexpr std::string_view kSep = "<｜tool▁sep｜>";
  Cursor c{body};
  const size_t sep = body.find(kSep);
  if (sep == npos) return std::nullopt;
  std::string name = Trim(body.substr(0, sep));
  c.i = sep + kSep.size();
  c.Ws();
  if (c.i < body.size() && body[c.i] == '{') return c.ArgsOf(std::move(name));
  const size_t nl = body.find('\n', c.i);
  if (nl == npos) return std::nullopt;
  name = Trim(body.substr(c.i, nl - c.i));
  c.i = nl;
  if (!c.Eat("```")) return std::nullopt;
  if (body.substr(c.i, 4) == "json") c.i += 4;
  return c.ArgsOf(std::move(name));
}

// Kimi K2's call header functions.NAME:INDEX as NAME.
constexpr std::string_view kKimiArgs = "<|tool_call_argument_begin|>";
std::string KimiFunction(std::string header) {
  if (header.rfind("functions.", 0) == 0) header.erase(0, 10);
  if (const size_t colon = header.rfind(':'); colon != npos) header.erase(colon);
  return header;
}

// <function=NAME>{
std::optional<Located> LocateFunction(std::string_view body) { return Cursor{body}.NameThenArgs(">"); }

// functions.NAME:INDEX<|tool_call_argument_begin|>{
std::optional<Located> LocateKimi(std::string_view body) {
  std::optional<Located> at = Cursor{body}.NameThenArgs(kKimiArgs);
  if (!at) return std::nullopt;
  at->name = KimiFunction(std::move(at->name));
  return at->name.empty() ? std::nullopt : at;
}

// The calls located so far in a JSON list of objects that hold the name (a string under
// `name_key`) before the arguments (an object under `args_key`), other members anywhere.
std::vector<Located> LocateList(std::string_view body, std::string_view name_key, std::string_view args_key) {
  std::vector<Located> found;
  Cursor c{body};
  if (!c.Eat("[")) return found;
  auto skip_value = [&] {
    c.Ws();
    const size_t n = ScanJsonValue(body.substr(c.i));
    if (n == npos) return false;
    c.i += n;
    return true;
  };
  for (;;) {
    if (!c.Eat("{")) return found;
    std::optional<std::string> name;
    bool located = false;
    for (;;) {
      const std::optional<std::string> key = c.String();
      if (!key || !c.Eat(":")) return found;
      if (*key == name_key && !name) {
        name = c.String();
        if (!name) return found;
      } else if (*key == args_key && name && !located) {
        std::optional<Located> at = c.ArgsOf(*name);
        if (!at) return found;
        found.push_back(std::move(*at));
        located = true;
        if (!skip_value()) return found;
      } else if (!skip_value()) {
        return found;
      }
      if (c.Eat(",")) continue;
      if (c.Eat("}")) break;
      return found;
    }
    if (!located || !c.Eat(",")) return found;
  }
}

// Mistral's v3 list [{"name", "arguments"}, ...]; else its v11 form, one call.
std::vector<Located> LocateMistralList(std::string_view body) {
  if (const size_t b = body.find_first_not_of(" \t\r\n"); b != npos && body[b] == '[')
    return LocateList(body, "name", "arguments");
  std::vector<Located> one;
  if (std::optional<Located> at = LocateMistral(body)) one.push_back(std::move(*at));
  return one;
}

// Command R7B's action: [{"tool_call_id", "tool_name", "parameters"}, ...].
std::vector<Located> LocateCommandR(std::string_view body) {
  return LocateList(body, "tool_name", "parameters");
}

// Formats whose calls are blocks: open BODY close (close empty: a block runs to the next open or
// to the end of the answer), each body read by `parse` into its calls; `dropped` are markers that
// frame the blocks (DeepSeek's section), dropped wherever they stand outside a block; the text
// between think_open and think_close (when given) is reasoning, streamed as it comes.
struct BlockFormat {
  std::string_view open, close;
  std::vector<std::string_view> dropped;
  std::optional<Calls> (*parse)(const std::string& body);
  std::string_view think_open = {}, think_close = {};
  Locate locate = nullptr;  // where a call's arguments start, for streaming them (null: not streamed)
  std::vector<Located> (*locate_list)(std::string_view body) = nullptr;  // for blocks of several calls
};

class BlockSplitter : public AnswerSplitter {
 public:
  // thinking: the answer starts inside the thinking block (the prompt opened it).
  // stream_arguments: calls stream as Out::call_deltas, a block whose name and the start of its
  // arguments were read being a call from then on (its arguments as written, whatever follows).
  explicit BlockSplitter(BlockFormat f, bool thinking = false, bool stream_arguments = false)
      : f_(std::move(f)),
        state_(thinking ? State::kThinking : State::kText),
        stream_(stream_arguments && (f_.locate != nullptr || f_.locate_list != nullptr)) {}

  Out Feed(const std::string& piece) override {
    Out out;
    held_ += piece;
    for (;;) {
      if (state_ == State::kText) {
        size_t at = npos, len = 0, partial = 0;
        State next = State::kText;
        auto look = [&](std::string_view mark, State then) {
          if (mark.empty()) return;
          const size_t p = held_.find(mark);
          if (p < at) at = p, len = mark.size(), next = then;
          partial = std::max(partial, PartialTag(held_, mark));
        };
        look(f_.open, State::kCall);
        look(f_.think_open, State::kThinking);
        for (std::string_view mark : f_.dropped) look(mark, State::kText);
        if (at == npos) {  // all but a possible start of a marker is text
          text_.Add(std::string_view(held_).substr(0, held_.size() - partial), out.content);
          held_.erase(0, held_.size() - partial);
          return out;
        }
        text_.Add(std::string_view(held_).substr(0, at), out.content);
        held_.erase(0, at + len);
        state_ = next;
        continue;
      }
      if (state_ == State::kThinking) {
        const size_t end = held_.find(f_.think_close);
        const size_t keep = end == npos ? held_.size() - PartialTag(held_, f_.think_close) : end;
        out.reasoning += held_.substr(0, keep);
        held_.erase(0, end == npos ? keep : end + f_.think_close.size());
        if (end == npos) return out;
        state_ = State::kText;
        continue;
      }
      const std::string_view close = f_.close.empty() ? f_.open : f_.close;
      const size_t end = held_.find(close);
      if (end == npos) {
        if (stream_) Stream(std::string_view(held_).substr(0, held_.size() - PartialTag(held_, close)), out);
        return out;
      }
      Close(held_.substr(0, end), f_.close, out);
      held_.erase(0, end + f_.close.size());
      state_ = State::kText;
    }
  }

  Out Finish() override {
    Out out;
    if (state_ == State::kCall) {
      Close(held_, "", out);
    } else if (state_ == State::kThinking) {
      out.reasoning += held_;
    } else {
      text_.Add(held_, out.content);
    }
    held_.clear();
    state_ = State::kText;
    return out;
  }

 private:
  // The arguments written so far of the block's call, once its name and their start are known.
  void Stream(std::string_view body, Out& out) {
    if (f_.locate_list != nullptr) {  // a list: each call closed once the next one begins
      const std::vector<Located> found = f_.locate_list(body);
      for (; located_ < found.size(); ++located_) {
        if (calls_.started()) calls_.Close(body, std::nullopt, out);
        calls_.Start(found[located_].name, found[located_].args, out);
      }
    } else if (!calls_.started()) {
      const std::optional<Located> at = f_.locate(body);
      if (!at) return;
      calls_.Start(at->name, at->args, out);
      located_ = 1;
    }
    calls_.Stream(body, out);
  }

  void Close(const std::string& body, std::string_view close, Out& out) {
    if (stream_) Stream(body, out);
    if (calls_.started()) {  // streamed: a call, its arguments as written
      std::optional<Calls> calls = located_ == 1 ? f_.parse(body) : std::nullopt;
      calls_.Close(body, calls && calls->size() == 1 ? std::optional<ojson>((*calls)[0]) : std::nullopt, out);
      located_ = 0;
      return;
    }
    if (std::optional<Calls> calls = f_.parse(body)) {
      for (ojson& c : *calls) calls_.Whole(std::move(c), out);
    } else {
      text_.Add(std::string(f_.open) + body + std::string(close), out.content);
    }
  }

  enum class State { kText, kCall, kThinking };
  BlockFormat f_;
  State state_;
  bool stream_;
  std::string held_;
  TextOut text_;
  CallStream calls_;
  size_t located_ = 0;  // calls of the open block begun
};

// One <tool_call> body: {"name": ..., "arguments": {...}} or <function=NAME><parameter=P>V</parameter>...
std::optional<Calls> ParseTagBody(const std::string& body) {
  const std::string b = Trim(body);
  if (b.rfind("<function=", 0) != 0) {
    const std::optional<ojson> v = ParseJson(b);
    return One(v ? JsonCall(*v) : std::nullopt);
  }
  const size_t name_end = b.find('>');
  if (name_end == npos) return std::nullopt;
  const std::string name = Trim(b.substr(10, name_end - 10));
  if (name.empty()) return std::nullopt;
  ojson args = ojson::object();
  size_t pos = name_end + 1;
  for (;;) {
    const size_t p = b.find("<parameter=", pos);
    if (p == npos) break;
    const size_t key_end = b.find('>', p);
    const size_t close = key_end == npos ? key_end : b.find("</parameter>", key_end);
    if (close == npos) return std::nullopt;
    const std::string key = Trim(b.substr(p + 11, key_end - p - 11));
    const std::string value = Trim(b.substr(key_end + 1, close - key_end - 1));
    const std::optional<ojson> v = ParseJson(value);  // a value that is not JSON is a string
    args[key] = v ? *v : ojson(value);
    pos = close + 12;
  }
  return Calls{ojson{{"name", name}, {"arguments", args}}};
}

// After [TOOL_CALLS]: a JSON array of {"name", "arguments"} (v3), or NAME[CALL_ID]ID[ARGS]{...} (v11).
std::optional<Calls> ParseMistralBody(const std::string& body) {
  const std::string rest = Trim(body);
  if (!rest.empty() && rest[0] == '[') {
    const std::optional<ojson> list = ParseJson(rest);
    if (!list || !list->is_array() || list->empty()) return std::nullopt;
    Calls calls;
    for (const ojson& c : *list) {
      std::optional<ojson> call = JsonCall(c);
      if (!call) return std::nullopt;
      calls.push_back(std::move(*call));
    }
    return calls;
  }
  const size_t args = rest.find("[ARGS]");
  if (args == npos) return std::nullopt;
  std::string name = rest.substr(0, args);
  if (const size_t id = name.find("[CALL_ID]"); id != npos) name.erase(id);
  return One(NamedCall(Trim(name), Trim(rest.substr(args + 6))));
}

// One DeepSeek call: TYPE<｜tool▁sep｜>NAME ```json ARGS ``` (R1 and its distills) or
// NAME<｜tool▁sep｜>ARGS (V3.1).
std::optional<Calls> ParseDeepSeekBody(const std::string& text) {
  const std::string sep = "<｜tool▁sep｜>";
  const size_t mid = text.find(sep);
  if (mid == npos) return std::nullopt;
  std::string name = Trim(text.substr(0, mid)), body = Trim(text.substr(mid + sep.size()));
  const size_t fence = body.find("```");
  if (fence != npos && body.find('\n') < fence) {  // R1: NAME, then a fenced JSON block
    name = Trim(body.substr(0, body.find('\n')));
    body = body.substr(fence + 3);
    if (body.rfind("json", 0) == 0) body = body.substr(4);
    const size_t close = body.rfind("```");
    if (close != npos) body = body.substr(0, close);
  }
  return One(NamedCall(name, Trim(body)));
}

// One Functionary v3.1 block after "<function=": NAME>{...}.
std::optional<Calls> ParseFunctionBody(const std::string& body) {
  const size_t name_end = body.find('>');
  if (name_end == npos) return std::nullopt;
  return One(NamedCall(Trim(body.substr(0, name_end)), Trim(body.substr(name_end + 1))));
}

// One Kimi K2 call: functions.NAME:INDEX<|tool_call_argument_begin|>{...}.
std::optional<Calls> ParseKimiBody(const std::string& body) {
  const size_t args = body.find(kKimiArgs);
  if (args == npos) return std::nullopt;
  return One(NamedCall(KimiFunction(Trim(body.substr(0, args))), Trim(body.substr(args + kKimiArgs.size()))));
}

// Command R7B's action: a JSON list of {"tool_call_id", "tool_name", "parameters"}.
std::optional<Calls> ParseCommandRBody(const std::string& body) {
  const std::optional<ojson> list = ParseJson(Trim(body));
  if (!list || !list->is_array() || list->empty()) return std::nullopt;
  Calls calls;
  for (const ojson& c : *list) {
    if (!c.is_object() || !c.contains("tool_name")) return std::nullopt;
    std::optional<ojson> call =
        JsonCall(ojson{{"name", c["tool_name"]}, {"arguments", c.value("parameters", ojson::object())}});
    if (!call) return std::nullopt;
    calls.push_back(std::move(*call));
  }
  return calls;
}

// Llama 3.x: the whole answer one {"name", "parameters"} object, after an optional <|python_tag|>;
// an answer that starts otherwise is content.
class Llama3Splitter : public AnswerSplitter {
 public:
  explicit Llama3Splitter(bool stream_arguments = false) : stream_(stream_arguments) {}

  Out Feed(const std::string& piece) override {
    Out out;
    held_ += piece;
    if (state_ == State::kCall && stream_) StreamCall(out);
    if (state_ == State::kStart) {
      const std::string_view rest =
          std::string_view(held_).substr(std::min(held_.size(), held_.find_first_not_of(" \t\r\n")));
      if (rest.empty() || (rest.size() < kTag.size() && kTag.substr(0, rest.size()) == rest)) return out;
      state_ = rest[0] == '{' || rest.substr(0, kTag.size()) == kTag ? State::kCall : State::kText;
      if (state_ == State::kCall && stream_) StreamCall(out);
    }
    if (state_ == State::kText) {
      text_.Add(held_, out.content);
      held_.clear();
    }
    return out;
  }

  Out Finish() override {
    Out out;
    std::string t = Trim(held_);
    if (t.rfind(kTag, 0) == 0) t = Trim(t.substr(kTag.size()));
    const std::optional<ojson> v = state_ == State::kCall ? ParseJson(t) : std::nullopt;
    std::optional<ojson> call = v ? JsonCall(*v) : std::nullopt;
    if (state_ == State::kCall && stream_) StreamCall(out);
    if (calls_.started()) {
      calls_.Close(held_, std::move(call), out);
    } else if (call) {
      calls_.Whole(std::move(*call), out);
    } else {
      text_.Add(held_, out.content);
    }
    held_.clear();
    return out;
  }

 private:
  static constexpr std::string_view kTag = "<|python_tag|>";
  // The call's arguments so far (held_ is the whole answer, after an optional <|python_tag|>).
  void StreamCall(Out& out) {
    if (!calls_.started()) {
      Cursor c{held_};
      c.Eat(kTag);
      const std::optional<Located> at = LocateJsonCall(c);
      if (!at) return;
      calls_.Start(at->name, at->args, out);
    }
    calls_.Stream(held_, out);
  }
  enum class State { kStart, kCall, kText };
  State state_ = State::kStart;
  bool stream_;
  std::string held_;
  TextOut text_;
  CallStream calls_;
};

// Functionary v3.2: after the prompt's ">>>", segments RECIPIENT\nBODY joined by ">>>"; "all" is
// text for the user (its body streams as content), any other recipient a call of that function
// (BODY: its JSON arguments). A first line that cannot be a name (a space, a tab or "{" in it) is
// text, as is a call that does not parse (with its recipient line), and without `calls` every call.
class FunctionaryV32Splitter : public AnswerSplitter {
 public:
  explicit FunctionaryV32Splitter(bool calls, bool stream_arguments = false)
      : calls_(calls), stream_(calls && stream_arguments) {}

  Out Feed(const std::string& piece) override {
    Out out;
    held_ += piece;
    for (;;) {
      const size_t sep = held_.find(kSep);
      switch (state_) {
        case State::kRecipient: {
          const size_t nl = held_.find('\n');
          if (sep != npos && sep < nl) {  // a segment of one line: text unless it is "all"
            if (Trim(held_.substr(0, sep)) != "all") text_.Add(Sep() + held_.substr(0, sep), out.content);
            held_.erase(0, sep + kSep.size());
            first_ = false;
            continue;
          }
          const std::string line = Trim(held_.substr(0, nl));
          if (line.find_first_of(" \t{") != npos || (nl != npos && line.empty())) {
            text_.Add(Sep(), out.content);  // not a recipient: the segment is text as written
            state_ = State::kText;
            continue;
          }
          if (nl == npos) return out;
          if (line == "all") {
            held_.erase(0, nl + 1);
          } else {
            recipient_ = held_.substr(0, nl + 1);
            name_ = line;
            held_.erase(0, nl + 1);
            state_ = State::kCall;
            continue;
          }
          state_ = State::kText;
          continue;
        }
        case State::kText: {
          const size_t end = sep == npos ? held_.size() - PartialTag(held_, kSep) : sep;
          text_.Add(std::string_view(held_).substr(0, end), out.content);
          if (sep == npos) {
            held_.erase(0, end);
            return out;
          }
          held_.erase(0, sep + kSep.size());
          first_ = false;
          state_ = State::kRecipient;
          continue;
        }
        case State::kCall:
          if (stream_)
            StreamCall(
                std::string_view(held_).substr(0, sep == npos ? held_.size() - PartialTag(held_, kSep) : sep),
                out);
          if (sep == npos) return out;
          Close(held_.substr(0, sep), out);
          held_.erase(0, sep + kSep.size());
          first_ = false;
          state_ = State::kRecipient;
          continue;
      }
    }
  }

  Out Finish() override {
    Out out;
    if (state_ == State::kCall) {
      if (stream_) StreamCall(held_, out);
      Close(held_, out);
    } else if (state_ == State::kText) {
      text_.Add(held_, out.content);
    } else if (Trim(held_) != "all") {
      text_.Add(Sep() + held_, out.content);
    }
    held_.clear();
    return out;
  }

 private:
  static constexpr std::string_view kSep = ">>>";
  // What a segment that is text as written starts with: the separator before it, if any.
  std::string Sep() const { return first_ ? "" : std::string(kSep); }
  void StreamCall(std::string_view body, Out& out) {
    if (!stream_calls_.started()) {
      const size_t at = body.find_first_not_of(" \t\r\n");
      if (at == npos || body[at] != '{') return;
      stream_calls_.Start(name_, at, out);
    }
    stream_calls_.Stream(body, out);
  }
  void Close(const std::string& body, Out& out) {
    std::optional<ojson> call = calls_ ? NamedCall(name_, Trim(body)) : std::nullopt;
    if (stream_calls_.started()) {
      stream_calls_.Close(body, std::move(call), out);
    } else if (call) {
      stream_calls_.Whole(std::move(*call), out);
    } else {
      text_.Add(Sep() + recipient_ + body, out.content);
    }
  }

  enum class State { kRecipient, kText, kCall };
  bool calls_, stream_;
  CallStream stream_calls_;
  State state_ = State::kRecipient;
  bool first_ = true;  // in the answer's first segment
  std::string held_, recipient_, name_;
  TextOut text_;
};

// The generic form (tools.h): {"response": "..."} streams its string as content; anything else is
// read whole at the end.
class GenericSplitter : public AnswerSplitter {
 public:
  Out Feed(const std::string& piece) override {
    Out out;
    whole_ += piece;
    if (state_ == State::kStart) {
      const std::optional<size_t> at = ResponseStart();
      if (!at) return out;  // not known yet
      if (*at == npos) {
        state_ = State::kWhole;
        return out;
      }
      state_ = State::kString;
      held_ = whole_.substr(*at);
    } else if (state_ == State::kString) {
      held_ += piece;
    }
    if (state_ == State::kString) Decode(out);
    return out;
  }

  Out Finish() override {
    Out out;
    if (state_ == State::kStart || state_ == State::kWhole) {
      const std::optional<ojson> answer = ParseJson(whole_);
      if (answer && answer->is_object() && answer->contains("response") &&
          (*answer)["response"].is_string()) {
        out.content = (*answer)["response"].get<std::string>();
      } else if (answer && answer->is_object() && answer->contains("tool_calls") &&
                 (*answer)["tool_calls"].is_array()) {
        for (const ojson& c : (*answer)["tool_calls"])
          out.calls.push_back(
              ojson{{"name", c.value("name", std::string())},
                    {"arguments", c.contains("arguments") ? c["arguments"] : ojson::object()}});
      } else {
        out.content = whole_;  // cut short by max_tokens or a stop string: the text as it is
      }
    }
    state_ = State::kDone;
    return out;
  }

 private:
  // Where the "response" string's text begins in whole_ (after {"response": "), npos when the
  // answer is not of that form, nullopt while it could still be.
  std::optional<size_t> ResponseStart() const {
    const std::string_view w = whole_;
    size_t i = 0;
    auto skip = [&] {
      while (i < w.size() && IsSpace(w[i])) ++i;
      return i < w.size();
    };
    auto expect = [&](char c) -> std::optional<bool> {
      if (!skip()) return std::nullopt;
      return w[i++] == c;
    };
    for (const char c : std::string_view("{\"")) {
      const std::optional<bool> ok = expect(c);
      if (!ok || !*ok) return ok ? std::optional<size_t>(npos) : std::nullopt;
    }
    constexpr std::string_view kKey = "response\"";
    const std::string_view key = w.substr(i, kKey.size());
    if (key != kKey.substr(0, key.size())) return npos;
    if (key.size() < kKey.size()) return std::nullopt;
    i += kKey.size();
    for (const char c : std::string_view(":\"")) {
      const std::optional<bool> ok = expect(c);
      if (!ok || !*ok) return ok ? std::optional<size_t>(npos) : std::nullopt;
    }
    return i;
  }

  // Decodes held_ up to its closing quote or to the last whole escape.
  void Decode(Out& out) {
    size_t i = 0;
    bool closed = false;
    while (i < held_.size()) {
      if (held_[i] == '"') {
        closed = true;
        break;
      }
      if (held_[i] != '\\') {
        ++i;
        continue;
      }
      size_t len = 2;
      if (i + 1 < held_.size() && held_[i + 1] == 'u') {
        len = 6;  // \uXXXX, or a surrogate pair \uD8XX\uDCXX
        if (i + 6 <= held_.size()) {
          const uint32_t v = static_cast<uint32_t>(std::strtoul(held_.substr(i + 2, 4).c_str(), nullptr, 16));
          if (v >= 0xD800 && v < 0xDC00) len = 12;
        }
      }
      if (i + len > held_.size()) break;
      i += len;
    }
    const std::optional<ojson> text = ParseJson("\"" + held_.substr(0, i) + "\"");
    out.content += text && text->is_string() ? text->get<std::string>() : held_.substr(0, i);
    held_.erase(0, i);
    if (closed) state_ = State::kDone;
  }

  enum class State { kStart, kString, kWhole, kDone };
  State state_ = State::kStart;
  std::string whole_, held_;
};

// Every call as Out::call_deltas: those the inner splitter streamed as it did, the others (calls
// that come whole) as one delta with the name and the whole arguments.
class CallDeltas : public AnswerSplitter {
 public:
  explicit CallDeltas(std::unique_ptr<AnswerSplitter> inner) : inner_(std::move(inner)) {}
  Out Feed(const std::string& piece) override { return Fill(inner_->Feed(piece)); }
  Out Finish() override { return Fill(inner_->Finish()); }

 private:
  Out Fill(Out out) {
    for (const CallDelta& d : out.call_deltas) started_ = std::max(started_, d.index + 1);
    for (const ojson& call : out.calls) {
      const size_t index = closed_++;
      if (index < started_) continue;
      out.call_deltas.push_back({index, call["name"].get<std::string>(), ArgumentsText(call)});
      started_ = index + 1;
    }
    return out;
  }
  std::unique_ptr<AnswerSplitter> inner_;
  size_t started_ = 0, closed_ = 0;  // calls begun as deltas, and given whole
};

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

std::string ArgumentsText(const nlohmann::ordered_json& call) {
  return call.contains("arguments_text") ? call["arguments_text"].get<std::string>()
                                         : call["arguments"].dump();
}

std::unique_ptr<AnswerSplitter> ToolSplitter(ToolFormat format, bool thinking_open, bool stream_arguments) {
  const bool s = stream_arguments;
  auto block = [&](BlockFormat f, bool thinking = false) -> std::unique_ptr<AnswerSplitter> {
    return std::make_unique<BlockSplitter>(std::move(f), thinking, s);
  };
  std::unique_ptr<AnswerSplitter> splitter;
  switch (format) {
    case ToolFormat::kGeneric:
      splitter = std::make_unique<GenericSplitter>();
      break;
    case ToolFormat::kToolCallTags:
      splitter = block({"<tool_call>", "</tool_call>", {}, ParseTagBody, {}, {}, LocateTagJson});
      break;
    case ToolFormat::kMistral:
      splitter = block({"[TOOL_CALLS]", "", {}, ParseMistralBody, {}, {}, nullptr, LocateMistralList});
      break;
    case ToolFormat::kLlama3Json:
      splitter = std::make_unique<Llama3Splitter>(s);
      break;
    case ToolFormat::kHarmony:
      splitter = std::make_unique<HarmonySplitter>(/*calls=*/true, s);
      break;
    case ToolFormat::kDeepSeek:
      splitter = block({"<｜tool▁call▁begin｜>",
                        "<｜tool▁call▁end｜>",
                        {"<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"},
                        ParseDeepSeekBody,
                        {},
                        {},
                        LocateDeepSeek});
      break;
    case ToolFormat::kFunctionaryV32:
      splitter = std::make_unique<FunctionaryV32Splitter>(/*calls=*/true, s);
      break;
    case ToolFormat::kFunctionaryV31:
      splitter = block({"<function=", "</function>", {}, ParseFunctionBody, {}, {}, LocateFunction});
      break;
    case ToolFormat::kKimiK2:
      splitter = block({"<|tool_call_begin|>",
                        "<|tool_call_end|>",
                        {"<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"},
                        ParseKimiBody,
                        {},
                        {},
                        LocateKimi});
      break;
    case ToolFormat::kCommandR7B:
      splitter = block({"<|START_ACTION|>",
                        "<|END_ACTION|>",
                        {"<|START_RESPONSE|>", "<|END_RESPONSE|>"},
                        ParseCommandRBody,
                        "<|START_THINKING|>",
                        "<|END_THINKING|>",
                        nullptr,
                        LocateCommandR},
                       thinking_open);
      break;
  }
  if (splitter && stream_arguments) splitter = std::make_unique<CallDeltas>(std::move(splitter));
  return splitter;
}

std::unique_ptr<AnswerSplitter> FunctionaryTextSplitter() {
  return std::make_unique<FunctionaryV32Splitter>(/*calls=*/false);
}

std::string ToolCallId(ToolFormat format, const std::string& id_prefix, size_t k) {
  return format == ToolFormat::kMistral ? MistralId(id_prefix, k)
                                        : "call_" + id_prefix + "_" + std::to_string(k);
}

nlohmann::json ToolCallJson(ToolFormat format, const ojson& call, const std::string& id_prefix, size_t k) {
  return {{"id", ToolCallId(format, id_prefix, k)},
          {"type", "function"},
          {"function", {{"name", call["name"]}, {"arguments", ArgumentsText(call)}}}};
}

nlohmann::json AnswerMessage(ToolFormat format, const AnswerSplitter::Out& answer,
                             const std::string& id_prefix, bool* tool_calls) {
  nlohmann::json message{{"role", "assistant"}, {"content", answer.content}};
  if (!answer.reasoning.empty()) message["reasoning_content"] = answer.reasoning;
  *tool_calls = !answer.calls.empty();
  if (!*tool_calls) return message;
  nlohmann::json list = nlohmann::json::array();
  for (size_t k = 0; k < answer.calls.size(); ++k)
    list.push_back(ToolCallJson(format, answer.calls[k], id_prefix, k));
  if (answer.content.empty()) message["content"] = nullptr;
  message["tool_calls"] = std::move(list);
  return message;
}

nlohmann::json ToolAnswerMessage(ToolFormat format, const std::string& text, const std::string& id_prefix,
                                 bool* tool_calls) {
  return AnswerMessage(format, ToolSplitter(format)->Split(text), id_prefix, tool_calls);
}

}  // namespace attn::serve
