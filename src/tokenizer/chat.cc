// Tokenizer::RenderChatTemplate: the GGUF file's Jinja chat template, rendered by jinja.h.
#include "tokenizer/chat.h"

#include <nlohmann/json.hpp>

#include "attn/error.h"
#include "tokenizer/jinja.h"
#include "tokenizer/vocab.h"

namespace attn {

std::string Tokenizer::RenderChatTemplate(std::string_view context_json) const {
  const tokenizer::Vocab& v = *vocab_;
  if (v.chat_template.empty())
    throw Error("Tokenizer::RenderChatTemplate: the model file has no tokenizer.chat_template");
  if (!v.jinja)
    throw Error("Tokenizer::RenderChatTemplate: tokenizer.chat_template does not parse: " + v.jinja_error);
  nlohmann::ordered_json context;
  try {
    context = nlohmann::ordered_json::parse(context_json);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("Tokenizer::RenderChatTemplate: the context is not JSON: ") + e.what());
  }
  if (!context.is_object()) throw Error("Tokenizer::RenderChatTemplate: the context must be a JSON object");
  if (!context.contains("bos_token")) context["bos_token"] = v.bos >= 0 ? v.pieces[v.bos] : "";
  if (!context.contains("eos_token")) context["eos_token"] = v.eos >= 0 ? v.pieces[v.eos] : "";
  if (!context.contains("add_generation_prompt")) context["add_generation_prompt"] = false;
  std::string out = v.jinja->Render(context);
  const nlohmann::ordered_json& bos = context["bos_token"];
  if (v.add_bos && bos.is_string() && !bos.get_ref<const std::string&>().empty() &&
      out.starts_with(bos.get_ref<const std::string&>()))
    out.erase(0, bos.get_ref<const std::string&>().size());
  return out;
}

std::string RenderMessagesAsJinja(const Tokenizer& tokenizer, const std::vector<Tokenizer::Message>& messages,
                                  bool add_generation_prompt) {
  nlohmann::ordered_json context = {{"messages", nlohmann::ordered_json::array()},
                                    {"add_generation_prompt", add_generation_prompt}};
  for (const Tokenizer::Message& m : messages)
    context["messages"].push_back({{"role", m.role}, {"content", m.content}});
  // Invalid UTF-8 in a message is replaced rather than refused (dump's error handler).
  return tokenizer.RenderChatTemplate(context.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace attn
