// The chat template's Jinja path of Tokenizer::ApplyChatTemplate (chat.cc).
#pragma once

#include <string>
#include <vector>

#include "attn/tokenizer.h"

namespace attn {

// Role / content messages rendered by the file's Jinja template (Tokenizer::RenderChatTemplate).
std::string RenderMessagesAsJinja(const Tokenizer& tokenizer, const std::vector<Tokenizer::Message>& messages,
                                  bool add_generation_prompt);

}  // namespace attn
