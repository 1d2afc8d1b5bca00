#include "core/read_all.h"

#include <cerrno>
#include <cstring>

#include "attn/error.h"

namespace attn {

std::string ReadAll(std::FILE* f, const std::string& what) {
  std::string bytes;
  char buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof(buf), f)) > 0) bytes.append(buf, got);
  if (std::ferror(f)) throw Error(what + ": cannot read (" + std::strerror(errno) + ")");
  return bytes;
}

}  // namespace attn
