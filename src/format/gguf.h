// GGUF (llama.cpp's model file format), versions 2 and 3: a bounds-checked reader.
//
// Layout (little-endian): "GGUF", u32 version, u64 tensor_count, u64 kv_count, the key/value
// pairs, the tensor infos, padding to general.alignment, then the data section. Every count,
// length, dimension and offset is checked against the bytes left and for overflow before use
// (the attacks on llama.cpp's parser, CVE-2024-21802, CVE-2024-23605, CVE-2025-53630, came
// through exactly these fields); duplicate keys and tensor names are rejected. Errors are
// attn::Error naming the field and the value; nothing here aborts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace attn::gguf {

enum class ValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

struct Value;
using Array = std::vector<Value>;
// One metadata value; integers keep their signedness, arrays hold their element type.
struct Value {
  ValueType type = ValueType::kU8;
  std::variant<uint64_t, int64_t, double, bool, std::string, std::shared_ptr<Array>> data;
  ValueType array_type = ValueType::kU8;  // element type when type == kArray

  std::string ToString(size_t max_items = 8) const;
};

// ggml tensor types (the numbering of the file format). The reader knows the block layout of
// every one, so any file's tables parse; which of them attn computes with is kernels/matmul.h's
// IsSupportedWeightType.
enum class TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
  kNVFP4 = 40,
  kQ1_0 = 41,
};
const char* TensorTypeName(TensorType type);

// Values and bytes per block of a tensor type ({1, 4} for F32, {32, 18} for Q4_0, {256, 144} for
// Q4_K, ...); {0, 0} for a type this reader does not know.
struct BlockLayout {
  uint64_t elements, bytes;
};
BlockLayout Layout(TensorType type);

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // dims[0] varies fastest (a PyTorch [out, in] weight is [in, out])
  TensorType type;
  uint64_t offset;  // from the start of the data section
  uint64_t bytes;
  const uint8_t* data;  // into the mapped file
  uint64_t n_elements() const;
};

class File {
 public:
  // Memory-maps and parses `path`; throws attn::Error.
  static File Open(const std::string& path);
  // Parses bytes owned by the caller (kept alive by them); throws attn::Error.
  static File Parse(const uint8_t* bytes, size_t size);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::map<std::string, Value>& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const Value* Find(const std::string& key) const;
  const TensorInfo* FindTensor(const std::string& name) const;

 private:
  std::shared_ptr<void> mapping_;  // keeps the mmap alive when opened from a path
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, Value> metadata_;
  std::vector<TensorInfo> tensors_;
};

}  // namespace attn::gguf
