#include "core/cache_dir.h"

#include <cstdlib>

namespace attn {

std::string CacheDirectory() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0')
    return std::string(xdg) + "/attn";
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0')
    return std::string(home) + "/.cache/attn";
  return ".cache/attn";
}

}  // namespace attn
