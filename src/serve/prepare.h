// How attn serve turns a parsed request into a generation: the prompt's tokens (a chat through the
// model's chat template, with its own tool format where the settings allow) and the options. The
// server and Python's Model.create_completion / create_chat_completion share it, so both answer
// a request alike.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "attn/generate.h"
#include "attn/model.h"
#include "attn/tokenizer.h"
#include "serve/openai.h"

namespace attn::serve {

struct Settings {
  bool jinja = false;         // --jinja: the file's Jinja template always (and models' tool formats)
  bool reasoning = true;      // --reasoning-format deepseek: <think> blocks to reasoning_content
  int threads = 0;            // 0: all
  int64_t context_keep = -1;  // --context-shift / --keep
  int lookup = 0;             // --lookup
  // The calls of a model's own tool format held to the tools' names and schemas by triggered
  // grammars (serve::ToolCallGrammars); --no-tool-grammar turns it off.
  bool tool_grammar = true;
  // --model-draft, --draft-max, --draft-p-min: speculative decoding (GenerateOptions::draft_model).
  const Model* draft_model = nullptr;
  int draft_max = 8;
  float draft_p_min = 0.75f;
};

// A chat request's prompt text: Tokenizer::ApplyChatTemplate, or the file's Jinja template with
// settings' jinja or the request's chat_template_kwargs (template variables). With tools, jinja and
// a template with a tool format of its own (serve/tools.h), the tools and earlier calls go to the
// template and request.tool_format is set (tool_choice "auto"; "required" or a tool's name too
// with `tool_grammar` where ToolCallGrammars can hold the answer to a call), its generic
// json_schema cleared (a constraint of the request's own stays); else the generic form
// ParseRequest prepared is kept, and a request that also has a constraint of its own is refused
// (attn::Error). Sets request.answer_format to the template's format.
std::string ChatPromptText(const Tokenizer& tokenizer, Request& request, bool jinja,
                           bool tool_grammar = true);

// A token id of a request (a prompt's or logit_bias's), checked against the vocabulary.
int32_t CheckedTokenId(const Tokenizer& tokenizer, const nlohmann::json& id);

struct Prepared {
  std::vector<int32_t> tokens;
  GenerateOptions options;  // sampling.seed: the request's, or drawn; choice i samples with seed + i
};
// The prompt's tokens and generation options of a parsed request, as attn serve runs it (sets
// request.reasoning / thinking_open for chats). Throws attn::Error for a prompt that does not fit
// the model's context or a token id outside the vocabulary.
Prepared Prepare(const Model& model, Request& request, const Settings& settings);

}  // namespace attn::serve
