// Where attn keeps what it downloads or generates outside git (models, the training corpus).
#pragma once

#include <string>

namespace attn {

// $XDG_CACHE_HOME/attn, else $HOME/.cache/attn, else .cache/attn (relative to the working folder).
std::string CacheDirectory();

}  // namespace attn
