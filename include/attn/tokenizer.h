// The tokenizer of GGUF models: byte-level BPE ("gpt2" tokenizer model), matching llama.cpp token for
// token (its llama-vocab.cpp and unicode.cpp, as vendored by llama-cpp-python 0.3.36).
//
//   text -> special tokens split out (longest first) -> pre-tokenizer regex (tokenizer.ggml.pre)
//        -> each piece's bytes mapped to GPT-2's printable code points -> BPE merges by rank -> ids
//
// Invalid UTF-8 never throws. By default each invalid byte stays itself and is classified as U+FFFD,
// which is where llama.cpp cuts pre-tokens; llama.cpp instead replaces it by U+FFFD's three bytes
// (InvalidUtf8::kReplace reproduces that exactly, ids included). On valid UTF-8 both modes give the
// same ids. Decode(Encode(s)) == s for every byte string s without special-token text whose bytes all
// have a token. Vocabularies may lack a few (SmolLM2: 04 06 13 14 16 1D C0 C1 F1 F2 F5..FF): an invalid
// byte without a token comes back as U+FFFD; a byte of valid UTF-8 without one is dropped, exactly as
// llama.cpp drops it, so that valid UTF-8 always gets llama.cpp's ids.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace attn {

namespace gguf {
class File;
}
namespace tokenizer {
struct Vocab;  // src/tokenizer/vocab.h
}

// What Encode does with bytes that are not valid UTF-8.
enum class InvalidUtf8 {
  kKeepBytes,  // each such byte is encoded as itself (U+FFFD if no token has it): round trip
  kReplace,    // llama.cpp: each becomes U+FFFD (and overlong forms their canonical encoding)
};

class Tokenizer {
 public:
  // Reads tokenizer.ggml.{model, pre, tokens, token_type, merges, bos_token_id, eos_token_id,
  // add_bos_token, eot_token_id, eom_token_id} and tokenizer.chat_template. Throws attn::Error naming
  // the key and value when one is missing, mistyped, inconsistent or unsupported.
  static Tokenizer FromGGUF(const gguf::File& file);
  // The same tokenizer with another chat template (llama.cpp's --chat-template-file): its format
  // detected and its Jinja parsed as the file's would be. Throws attn::Error when the text is empty
  // or does not parse as Jinja.
  Tokenizer WithChatTemplate(const std::string& chat_template) const;

  // Token ids of `text`; no BOS is added (see add_bos()). With parse_special, the text of control
  // tokens (e.g. "<|im_end|>") becomes those tokens; user-defined tokens are always split out.
  std::vector<int32_t> Encode(std::string_view text, bool parse_special = true,
                              InvalidUtf8 invalid = InvalidUtf8::kKeepBytes) const;
  // A prompt as the model reads it: BOS first when the model adds one, then Encode(text).
  std::vector<int32_t> EncodePrompt(std::string_view text) const;
  // The bytes of the tokens, concatenated: TokenToPiece of each. May end inside a UTF-8 sequence.
  // Throws attn::Error for an id outside [0, vocab_size()).
  std::string Decode(std::span<const int32_t> ids) const;
  // The bytes one token stands for (llama.cpp's token_to_piece with special = true): normal tokens
  // decode GPT-2's byte mapping; control, user-defined and unknown tokens give their text, e.g.
  // "<|im_end|>", so Decode never drops anything; unused / undefined tokens give "".
  std::string TokenToPiece(int32_t id) const;

  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 when the model has none
  int32_t eos_id() const;  // -1 when the model has none
  // tokenizer.ggml.add_bos_token (default: false, but true for the llama3 pre-tokenizer, as llama.cpp).
  bool add_bos() const;
  // llama.cpp's end-of-generation set: eos, eot, eom and the tokens whose text marks an end
  // ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", ...).
  bool IsEndOfGeneration(int32_t id) const;
  // True for control tokens (token_type 3, plus end-of-generation tokens, as llama.cpp promotes them).
  bool IsControl(int32_t id) const;
  // True for tokens of token_type 5 (unused), e.g. bytes a trained byte-level model never saw.
  bool IsUnused(int32_t id) const;
  const std::string& pre() const;            // tokenizer.ggml.pre ("default" when absent)
  const std::string& chat_template() const;  // tokenizer.chat_template ("" when absent)

  struct Message {
    std::string role, content;
  };
  // The conversation in the chat format of the file's template, recognized by its markers as
  // llama.cpp does (ChatML also when the file has none), rendered as llama.cpp's built-in formats:
  //   chatml: "<|im_start|>" role "\n" content "<|im_end|>\n" per message, then "<|im_start|>assistant\n"
  //     when add_generation_prompt. When the file's template carries a default system message
  //     (SmolLM2's: "You are a helpful AI assistant named SmolLM, trained by Hugging Face") and the first
  //     message is not a system message, that message comes first, as the Jinja template renders it.
  //   llama3: "<|start_header_id|>" role "<|end_header_id|>\n\n" trimmed content "<|eot_id|>".
  //   gemma: "<start_of_turn>" role "\n" trimmed content "<end_of_turn>\n", the assistant named
  //     "model"; system messages (no such role) open the next user message, followed by "\n\n".
  //   phi3: "<|" role "|>\n" content "<|end|>\n".
  //   gpt-oss (harmony): "<|start|>" role "<|message|>" content, then "<|return|>" after an
  //     assistant message and "<|end|>" after others; "<|start|>assistant" as generation prompt.
  //   granite: "<|start_of_role|>" role "<|end_of_role|>" content "<|end_of_text|>\n".
  //   mistral-v7, mistral-v1, mistral-v3, mistral-v3-tekken, llama2, llama2-sys, llama2-sys-bos,
  //     llama2-sys-strip: the [INST] ... [/INST] formats of Mistral and Llama 2 (answers end with
  //     "</s>"; a prompt ends with "[/INST]", there is no generation prompt), as llama.cpp writes them.
  // (The BOS token, which these templates start with, is the tokenizer's to add.)
  // Templates of other formats are rendered as Jinja (RenderChatTemplate), as is every template
  // with ChatTemplateMode::kJinja; kBuiltin throws attn::Error for a template of another format.
  enum class ChatTemplateMode {
    kAuto,     // the built-in format when the template is one of the above, else its Jinja
    kBuiltin,  // llama.cpp's built-in formats only
    kJinja,    // the file's template, rendered as Hugging Face transformers renders it
  };
  std::string ApplyChatTemplate(const std::vector<Message>& messages, bool add_generation_prompt,
                                ChatTemplateMode mode = ChatTemplateMode::kAuto) const;
  // The file's chat template run by attn's Jinja interpreter (src/tokenizer/jinja.h), as
  // transformers' apply_chat_template runs it: context_json is a JSON object whose keys become the
  // template's variables (messages with tool_calls and the like, add_generation_prompt, tools,
  // documents, enable_thinking, ...); bos_token and eos_token default to the model's tokens' text.
  // As llama.cpp does, a BOS text that starts the result is dropped when add_bos() (EncodePrompt
  // adds the token). Throws attn::Error when the file has no template, the template does not
  // parse, the context is not a JSON object, or the template fails or raises (its message).
  std::string RenderChatTemplate(std::string_view context_json) const;
  // The recognized format, by llama.cpp's name for it ("chatml", "llama3", "gemma", "phi3",
  // "mistral-v7", ..., "llama2-sys-strip"), or "" for a template of another one.
  const char* chat_format() const;

 private:
  Tokenizer() = default;  // only FromGGUF makes one (copies share the immutable vocabulary)
  std::shared_ptr<const tokenizer::Vocab> vocab_;
};

}  // namespace attn
