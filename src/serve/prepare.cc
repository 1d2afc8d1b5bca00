#include "serve/prepare.h"

#include <random>

#include "attn/error.h"
#include "serve/reasoning.h"
#include "serve/tools.h"

namespace attn::serve {

std::string ChatPromptText(const Tokenizer& tok, Request& r, bool jinja, bool tool_grammar) {
  using ojson = nlohmann::ordered_json;
  const ToolFormat format = TemplateToolFormat(tok.chat_template());
  r.answer_format = format;  // how the answer reads, whatever builds the prompt
  // A call required (tool_choice "required" or a tool's name) takes the model's own format where a
  // grammar can hold the answer to one, and a request without a constraint of its own.
  const bool native =
      r.tools && jinja && format != ToolFormat::kGeneric &&
      (r.tool_choice == "auto" || (tool_grammar && CallsCanBeRequired(format) && !r.tools_constraint));
  if (r.tools && !native && r.tools_constraint)
    throw Error(
        "tools and response_format (json), grammar or json_schema exclude each other (they go together only "
        "with --jinja and a model whose template has a tool format of its own, tool_choice auto)");
  if (!native && !jinja && r.chat_template_kwargs.empty()) {
    std::vector<Tokenizer::Message> messages;
    for (const auto& [role, content] : r.messages) messages.push_back({role, content});
    return tok.ApplyChatTemplate(messages, true);
  }
  ojson context = r.chat_template_kwargs;
  if (native) {  // the structured messages and the tools, for the template's own format
    context["messages"] = r.template_messages;
    context["tools"] = r.template_tools;
    r.tool_format = format;
    if (!r.tools_constraint) r.json_schema.clear();  // the generic form's, not the request's own
  } else {
    context["messages"] = ojson::array();
    for (const auto& [role, content] : r.messages)
      context["messages"].push_back({{"role", role}, {"content", content}});
  }
  context["add_generation_prompt"] = true;
  return tok.RenderChatTemplate(context.dump(-1, ' ', false, ojson::error_handler_t::replace));
}

int32_t CheckedTokenId(const Tokenizer& tok, const nlohmann::json& t) {
  const int64_t vocab = tok.vocab_size();
  if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= vocab)
    throw Error("token id " + t.dump() + " is not in [0, " + std::to_string(vocab) + ")");
  return static_cast<int32_t>(t.get<int64_t>());
}

Prepared Prepare(const Model& model, Request& request, const Settings& settings) {
  const Tokenizer& tok = model.tokenizer();
  Prepared p;
  if (request.endpoint == Endpoint::kChatCompletions) {
    const std::string prompt =
        ChatPromptText(tok, request, settings.jinja, settings.tool_grammar);  // may set tool_format
    // The think block of reasoning models apart (not with the generic tools' JSON answer).
    request.reasoning = settings.reasoning && !(request.tools && request.tool_format == ToolFormat::kGeneric);
    request.thinking_open = PromptOpensThinking(prompt);
    p.tokens = tok.EncodePrompt(prompt);
  } else if (request.prompt_tokens) {
    for (int32_t id : *request.prompt_tokens) p.tokens.push_back(CheckedTokenId(tok, id));
  } else {
    p.tokens = tok.EncodePrompt(request.prompt);
  }
  const int64_t context = model.config().context_length, n_prompt = static_cast<int64_t>(p.tokens.size());
  if (n_prompt >= context)
    throw Error("the prompt has " + std::to_string(n_prompt) + " tokens; the model's context holds " +
                std::to_string(context) + " (prompt and completion together)");
  for (const auto& [id, bias] : request.sampling.logit_bias) (void)CheckedTokenId(tok, id);
  GenerateOptions& o = p.options;
  o.max_tokens = request.max_tokens.value_or(
      request.endpoint == Endpoint::kCompletions ? 16 : static_cast<int>(context - n_prompt));
  o.sampling = request.sampling;
  if (!request.seeded) {
    std::random_device rd;
    o.sampling.seed = uint64_t{rd()} << 32 | rd();
  }
  o.stop = request.stop;
  o.threads = settings.threads;
  o.context_keep = settings.context_keep;
  o.lookup = settings.lookup;
  o.draft_model = settings.draft_model;
  o.draft_max = settings.draft_max;
  o.draft_p_min = settings.draft_p_min;
  o.logprobs = request.logprobs;
  o.prompt_logprobs = request.echo;
  o.json = request.json;
  o.grammar = request.grammar;
  o.json_schema = request.json_schema;
  // A model's own tool format: its calls held to the tools (unless the request has a constraint of
  // its own, which holds the whole answer); with a call required, the whole answer is calls.
  if (settings.tool_grammar && request.tools && request.tool_format != ToolFormat::kGeneric &&
      !request.tools_constraint) {
    request.tool_grammar = true;
    if (request.tool_choice == "auto") {
      o.triggered_grammars = ToolCallGrammars(request.tool_format, request.tool_request);
    } else {
      o.grammar = RequiredCallsGrammar(request.tool_format, request.tool_request,
                                       tok.chat_template().find("<think>") != std::string::npos,
                                       request.thinking_open);
      o.json_schema.clear();
    }
  }
  return p;
}

}  // namespace attn::serve
