// GGUF v3 writer: the counterpart of the reader in format/gguf.h (same value and tensor types).
//
// Layout written (REFERENCE.md, "GGUF"): "GGUF", u32 3, u64 tensor_count, u64 kv_count, the
// key/value pairs in the order they were set, the tensor infos in the order they were added,
// zero padding to the alignment, then each tensor's bytes at an aligned offset (padded after
// each tensor, so the file length is a multiple of the alignment). The alignment is 32 unless
// the constructor is given another power of two, which is then stored as general.alignment (u32).
//
//   gguf::Writer w;
//   w.SetString("general.architecture", "gpt2");
//   w.SetU32("gpt2.block_count", 2);
//   w.AddTensorF32("token_embd.weight", {d_model, vocab}, embd);   // ne order: fastest first
//   w.Write(path);                                                 // atomic: PATH.tmp, fsync, rename
//
// Tensor data is not copied: the spans must stay alive until Write / ToBytes returns. Every
// argument is checked when it is given (duplicate keys and tensor names, names of 64 bytes or
// more, 0 or more than 4 dimensions, a data size that does not match the shape), with an
// attn::Error naming the key or tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "format/gguf.h"

namespace attn::gguf {

class Writer {
 public:
  explicit Writer(uint32_t alignment = 32);

  // One metadata pair. `value` must be consistent: its data alternative matches its type
  // (unsigned types hold uint64_t, signed int64_t, floats double, ...) and integers fit the type;
  // arrays hold items of array_type (arrays of arrays are allowed, as in the reader).
  void Set(const std::string& key, Value value);
  void SetU8(const std::string& key, uint8_t v);
  void SetI8(const std::string& key, int8_t v);
  void SetU16(const std::string& key, uint16_t v);
  void SetI16(const std::string& key, int16_t v);
  void SetU32(const std::string& key, uint32_t v);
  void SetI32(const std::string& key, int32_t v);
  void SetU64(const std::string& key, uint64_t v);
  void SetI64(const std::string& key, int64_t v);
  void SetF32(const std::string& key, float v);
  void SetF64(const std::string& key, double v);
  void SetBool(const std::string& key, bool v);
  void SetString(const std::string& key, std::string v);
  void SetStrings(const std::string& key, const std::vector<std::string>& v);  // array of strings
  void SetI32s(const std::string& key, const std::vector<int32_t>& v);         // array of i32

  // A tensor of `type` with ne = dims (dims[0] fastest); `data` holds exactly its bytes.
  void AddTensor(const std::string& name, std::vector<uint64_t> dims, TensorType type,
                 std::span<const uint8_t> data);
  void AddTensorF32(const std::string& name, std::vector<uint64_t> dims, std::span<const float> data);

  uint32_t alignment() const { return alignment_; }
  // The whole file in memory (tests; small files).
  std::vector<uint8_t> ToBytes() const;
  // Writes the file atomically: to PATH.tmp, fsync, rename over PATH (then fsync of the folder).
  // On any failure the temporary file is removed and attn::Error is thrown naming the path and
  // the system error; whatever was at PATH before is left as it was.
  void Write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;
    TensorType type;
    std::span<const uint8_t> data;
    uint64_t offset;  // in the data section
  };
  std::vector<uint8_t> Head() const;  // header, pairs, tensor infos and the padding after them
  uint32_t alignment_;
  std::vector<std::pair<std::string, Value>> metadata_;
  std::vector<Tensor> tensors_;
  uint64_t data_bytes_ = 0;  // size of the data section so far (aligned)
};

}  // namespace attn::gguf
