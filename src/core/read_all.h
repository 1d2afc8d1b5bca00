// Reading a whole file into memory.
#pragma once

#include <cstdio>
#include <string>

namespace attn {

// Every byte left in `f`, read to its end. Throws attn::Error "<what>: cannot read (<reason>)" on
// a read error.
std::string ReadAll(std::FILE* f, const std::string& what);
// The whole file at `path`, or standard input for "-", byte for byte. `what` names the caller in
// errors: "<what>: cannot open the file '<path>': <reason>".
std::string ReadFileOrStdin(const std::string& path, const std::string& what);

}  // namespace attn
