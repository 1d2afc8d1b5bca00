// Reading a whole file into memory.
#pragma once

#include <cstdio>
#include <string>

namespace attn {

// Every byte left in `f`, read to its end. Throws attn::Error "<what>: cannot read (<reason>)" on
// a read error.
std::string ReadAll(std::FILE* f, const std::string& what);

}  // namespace attn
