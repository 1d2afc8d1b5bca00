// Tokenizer: decoding, accessors and the ChatML chat template. (Loading: load.cc; encoding: encode.cc.)
#include "attn/tokenizer.h"

#include <string>

#include "attn/error.h"
#include "tokenizer/vocab.h"

namespace attn {
namespace {

void CheckId(const tokenizer::Vocab& v, int32_t id, const char* where) {
  if (id < 0 || id >= v.n_tokens()) {
    throw Error(std::string(where) + ": token id " + std::to_string(id) + " is outside [0, " +
                std::to_string(v.n_tokens()) + ")");
  }
}

}  // namespace

std::string Tokenizer::Decode(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) {
    CheckId(*vocab_, id, "Tokenizer::Decode");
    out += vocab_->pieces[id];
  }
  return out;
}

std::string Tokenizer::TokenToPiece(int32_t id) const {
  CheckId(*vocab_, id, "Tokenizer::TokenToPiece");
  return vocab_->pieces[id];
}

int32_t Tokenizer::vocab_size() const { return vocab_->n_tokens(); }
int32_t Tokenizer::bos_id() const { return vocab_->bos; }
int32_t Tokenizer::eos_id() const { return vocab_->eos; }
bool Tokenizer::add_bos() const { return vocab_->add_bos; }
const std::string& Tokenizer::pre() const { return vocab_->pre; }
const std::string& Tokenizer::chat_template() const { return vocab_->chat_template; }

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return id >= 0 && id < vocab_->n_tokens() && vocab_->end_of_generation[id];
}

bool Tokenizer::IsControl(int32_t id) const {
  return id >= 0 && id < vocab_->n_tokens() && (vocab_->attrs[id] & kAttrControl) != 0;
}

bool Tokenizer::IsUnused(int32_t id) const {
  return id >= 0 && id < vocab_->n_tokens() && (vocab_->attrs[id] & kAttrUnused) != 0;
}

std::string Tokenizer::ApplyChatTemplate(const std::vector<Message>& messages,
                                         bool add_generation_prompt) const {
  const tokenizer::Vocab& v = *vocab_;
  if (!v.chat_template.empty() && !v.chatml) {
    throw Error(
        "Tokenizer::ApplyChatTemplate: tokenizer.chat_template is not ChatML (no <|im_start|>); only "
        "ChatML templates are supported");
  }
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    // SmolLM2's template: {% if loop.first and messages[0]['role'] != 'system' %} default system message.
    if (i == 0 && !v.default_system.empty() && messages[0].role != "system") {
      out += "<|im_start|>system\n" + v.default_system + "<|im_end|>\n";
    }
    out += "<|im_start|>" + messages[i].role + "\n" + messages[i].content + "<|im_end|>\n";
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

}  // namespace attn
