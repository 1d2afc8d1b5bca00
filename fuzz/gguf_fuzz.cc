// libFuzzer target for the GGUF reader: every input must either parse or raise attn::Error.
//
// A crash, a sanitizer report (ASan: an out-of-bounds read; UBSan: an overflow or a bad shift) or
// an out-of-memory means the reader trusted a count, a length or an offset it should have checked
// (the fields of CVE-2024-21802, CVE-2024-23605, CVE-2025-53630). When the bytes parse, the target
// prints every metadata value and touches the first and last byte of every tensor, so ASan checks
// that the spans the reader hands out lie inside the input.
//
//   scripts/fuzz.sh 60     # builds the "fuzz" preset and runs every fuzz/*_fuzz.cc target
#include <cstddef>
#include <cstdint>
#include <string>

#include "attn/error.h"
#include "format/gguf.h"

namespace {

// Keeps the compiler from dropping reads whose results are otherwise unused.
volatile uint64_t g_sink = 0;

void Walk(const attn::gguf::File& file) {
  uint64_t h = file.version() + file.alignment();
  for (const auto& [key, value] : file.metadata()) {
    h += key.size() + value.ToString().size() + value.ToString(1000000).size();
    if (file.Find(key) != &value) __builtin_trap();  // Find must return the stored pair
  }
  for (const attn::gguf::TensorInfo& t : file.tensors()) {
    if (file.FindTensor(t.name) == nullptr) __builtin_trap();
    h += t.n_elements() + t.dims.size() + static_cast<uint64_t>(t.type) + t.offset;
    h += attn::gguf::TensorTypeName(t.type)[0];
    if (t.bytes == 0) continue;
    if (t.offset % file.alignment() != 0) __builtin_trap();
    h += t.data[0];            // first byte of the tensor's data
    h += t.data[t.bytes - 1];  // last byte
  }
  g_sink = g_sink + h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const attn::gguf::File file = attn::gguf::File::Parse(data, size);
    Walk(file);
  } catch (const attn::Error&) {
    // A rejected file is the expected outcome for almost every input.
  }
  return 0;
}
