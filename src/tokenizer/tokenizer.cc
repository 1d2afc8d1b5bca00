// Tokenizer: decoding, accessors and the chat templates. (Loading: load.cc; encoding: encode.cc.)
#include "attn/tokenizer.h"

#include <iterator>
#include <string>

#include "attn/error.h"
#include "tokenizer/chat.h"
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

namespace {
// Without leading and trailing white space (C isspace), as llama.cpp trims contents.
std::string Trimmed(const std::string& s) {
  const char* ws = " \t\n\v\f\r";
  const size_t first = s.find_first_not_of(ws);
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(ws) - first + 1);
}
}  // namespace

const char* Tokenizer::chat_format() const {
  // llama.cpp's names, in the order of Vocab::ChatFormat; "" for kUnknown.
  static constexpr const char* kNames[] = {"chatml",
                                           "llama3",
                                           "gemma",
                                           "phi3",
                                           "mistral-v7",
                                           "mistral-v1",
                                           "mistral-v3",
                                           "mistral-v3-tekken",
                                           "llama2",
                                           "llama2-sys",
                                           "llama2-sys-bos",
                                           "llama2-sys-strip",
                                           "gpt-oss",
                                           "granite",
                                           ""};
  static_assert(std::size(kNames) == static_cast<size_t>(tokenizer::Vocab::ChatFormat::kUnknown) + 1);
  return kNames[static_cast<size_t>(vocab_->chat_format)];
}

std::string Tokenizer::ApplyChatTemplate(const std::vector<Message>& messages, bool add_generation_prompt,
                                         ChatTemplateMode mode) const {
  using F = tokenizer::Vocab::ChatFormat;
  const tokenizer::Vocab& v = *vocab_;
  if (mode == ChatTemplateMode::kJinja || (mode == ChatTemplateMode::kAuto && v.chat_format == F::kUnknown)) {
    if (mode == ChatTemplateMode::kAuto && !v.jinja)
      throw Error(
          "Tokenizer::ApplyChatTemplate: tokenizer.chat_template is of no built-in chat format and does "
          "not parse as Jinja: " +
          v.jinja_error);
    return RenderMessagesAsJinja(*this, messages, add_generation_prompt);
  }
  std::string out;
  switch (v.chat_format) {
    case F::kChatML:
      for (size_t i = 0; i < messages.size(); ++i) {
        // SmolLM2's template: {% if loop.first and messages[0]['role'] != 'system' %} default system message.
        if (i == 0 && !v.default_system.empty() && messages[0].role != "system") {
          out += "<|im_start|>system\n" + v.default_system + "<|im_end|>\n";
        }
        out += "<|im_start|>" + messages[i].role + "\n" + messages[i].content + "<|im_end|>\n";
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case F::kLlama3:
      for (const Message& m : messages)
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + Trimmed(m.content) + "<|eot_id|>";
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    case F::kGemma: {
      // No system role: system texts are held and open the next user turn; the assistant is "model".
      std::string system;
      for (const Message& m : messages) {
        if (m.role == "system") {
          system += Trimmed(m.content);
          continue;
        }
        const std::string role = m.role == "assistant" ? "model" : m.role;
        out += "<start_of_turn>" + role + "\n";
        if (!system.empty() && role != "model") out += system + "\n\n", system.clear();
        out += Trimmed(m.content) + "<end_of_turn>\n";
      }
      if (add_generation_prompt) out += "<start_of_turn>model\n";
      return out;
    }
    case F::kPhi3:
      for (const Message& m : messages) out += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
      if (add_generation_prompt) out += "<|assistant|>\n";
      return out;
    case F::kGptOss:  // OpenAI's harmony, as llama.cpp's built-in renders it (no channels, no system
                      // preamble)
      for (const Message& m : messages)
        out += "<|start|>" + m.role + "<|message|>" + m.content +
               (m.role == "assistant" ? "<|return|>" : "<|end|>");
      if (add_generation_prompt) out += "<|start|>assistant";
      return out;
    case F::kGranite:
      for (const Message& m : messages)
        out += "<|start_of_role|>" + m.role + "<|end_of_role|>" + m.content + "<|end_of_text|>\n";
      if (add_generation_prompt) out += "<|start_of_role|>assistant<|end_of_role|>";
      return out;
    case F::kMistralV7:  // no generation prompt in the [INST] formats: a prompt ends with [/INST]
      for (const Message& m : messages) {
        if (m.role == "system") {
          out += "[SYSTEM_PROMPT] " + m.content + "[/SYSTEM_PROMPT]";
        } else if (m.role == "user") {
          out += "[INST] " + m.content + "[/INST]";
        } else {
          out += " " + m.content + "</s>";
        }
      }
      return out;
    case F::kMistralV1:
    case F::kMistralV3:
    case F::kMistralV3Tekken: {
      // A turn opens with [INST]; system text joins it, followed by a blank line.
      const std::string lead = v.chat_format == F::kMistralV1 ? " " : "";
      const std::string trail = v.chat_format == F::kMistralV3Tekken ? "" : " ";
      bool in_turn = false;
      for (const Message& m : messages) {
        if (!in_turn) out += lead + "[INST]" + trail, in_turn = true;
        if (m.role == "system") {
          out += m.content + "\n\n";
        } else if (m.role == "user") {
          out += m.content + lead + "[/INST]";
        } else {
          out += trail + (v.chat_format == F::kMistralV3 ? Trimmed(m.content) : m.content) + "</s>";
          in_turn = false;
        }
      }
      return out;
    }
    case F::kLlama2:
    case F::kLlama2Sys:
    case F::kLlama2SysBos:
    case F::kLlama2SysStrip: {
      const bool with_system = v.chat_format != F::kLlama2;  // <<SYS>> blocks, else a plain line
      const bool strip = v.chat_format == F::kLlama2SysStrip;
      bool in_turn = true;  // the first [INST] is written here, without BOS (the tokenizer adds it)
      out += "[INST] ";
      for (const Message& m : messages) {
        const std::string content = strip ? Trimmed(m.content) : m.content;
        if (!in_turn) out += v.chat_format == F::kLlama2SysBos ? "<s>[INST] " : "[INST] ", in_turn = true;
        if (m.role == "system") {
          out += with_system ? "<<SYS>>\n" + content + "\n<</SYS>>\n\n" : content + "\n";
        } else if (m.role == "user") {
          out += content + " [/INST]";
        } else {
          out += content + "</s>";
          in_turn = false;
        }
      }
      return out;
    }
    default:
      throw Error(
          "Tokenizer::ApplyChatTemplate: tokenizer.chat_template is of no chat format attn knows (ChatML, "
          "Llama 3, "
          "Gemma, Phi-3, Mistral v1 / v3 / v7, Llama 2, gpt-oss, Granite, recognized by their markers as "
          "llama.cpp "
          "does)");
  }
}

}  // namespace attn
