#include "core/read_all.h"

#include <cerrno>
#include <cstring>
#include <memory>

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

std::string ReadFileOrStdin(const std::string& path, const std::string& what) {
  if (path == "-") return ReadAll(stdin, what + ": standard input");
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw Error(what + ": cannot open the file '" + path + "': " + std::strerror(errno));
  return ReadAll(f.get(), what + ": the file '" + path + "'");
}

}  // namespace attn
