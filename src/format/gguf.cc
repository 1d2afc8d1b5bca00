#include "format/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>

#include "attn/error.h"

namespace attn::gguf {
namespace {

constexpr uint64_t kMaxNameBytes = 64;  // ggml's GGML_MAX_NAME, including the terminator
constexpr int kMaxDims = 4;
constexpr int kMaxArrayDepth = 4;

template <typename... Args>
[[noreturn]] void Fail(const Args&... args) {
  std::ostringstream s;
  s << "gguf: ";
  (s << ... << args);
  throw Error(s.str());
}

// A cursor over the file that refuses to read past the end.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  template <typename T>
  T Read(const char* field) {
    if (left() < sizeof(T))
      Fail(field, ": truncated at byte ", pos_, " (need ", sizeof(T), ", have ", left(), ")");
    T x;
    std::memcpy(&x, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return x;
  }

  std::string ReadString(const std::string& field) {
    const uint64_t n = Read<uint64_t>(field.c_str());
    if (n > left()) Fail(field, ": string length ", n, " exceeds the ", left(), " bytes left");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Smallest encoded size of one value of `t` (used to bound counts before allocating).
uint64_t MinSize(ValueType t) {
  switch (t) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kBool:
      return 1;
    case ValueType::kU16:
    case ValueType::kI16:
      return 2;
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kF32:
      return 4;
    case ValueType::kU64:
    case ValueType::kI64:
    case ValueType::kF64:
    case ValueType::kString:
      return 8;
    case ValueType::kArray:
      return 12;
  }
  return 0;
}

Value ReadValue(Reader& r, ValueType type, const std::string& key, int depth) {
  Value v;
  v.type = type;
  const char* f = key.c_str();
  switch (type) {
    case ValueType::kU8:
      v.data = uint64_t{r.Read<uint8_t>(f)};
      break;
    case ValueType::kI8:
      v.data = int64_t{r.Read<int8_t>(f)};
      break;
    case ValueType::kU16:
      v.data = uint64_t{r.Read<uint16_t>(f)};
      break;
    case ValueType::kI16:
      v.data = int64_t{r.Read<int16_t>(f)};
      break;
    case ValueType::kU32:
      v.data = uint64_t{r.Read<uint32_t>(f)};
      break;
    case ValueType::kI32:
      v.data = int64_t{r.Read<int32_t>(f)};
      break;
    case ValueType::kU64:
      v.data = r.Read<uint64_t>(f);
      break;
    case ValueType::kI64:
      v.data = r.Read<int64_t>(f);
      break;
    case ValueType::kF32:
      v.data = double{r.Read<float>(f)};
      break;
    case ValueType::kF64:
      v.data = r.Read<double>(f);
      break;
    case ValueType::kBool: {
      const uint8_t b = r.Read<uint8_t>(f);
      if (b > 1) Fail(key, ": bool value ", int{b}, " is neither 0 nor 1");
      v.data = b == 1;
      break;
    }
    case ValueType::kString:
      v.data = r.ReadString(key);
      break;
    case ValueType::kArray: {
      if (depth >= kMaxArrayDepth) Fail(key, ": arrays nested deeper than ", kMaxArrayDepth);
      const uint32_t et = r.Read<uint32_t>(f);
      if (et > static_cast<uint32_t>(ValueType::kF64)) Fail(key, ": unknown array element type ", et);
      const uint64_t n = r.Read<uint64_t>(f);
      if (n > r.left() / MinSize(static_cast<ValueType>(et)))
        Fail(key, ": array count ", n, " cannot fit in the ", r.left(), " bytes left");
      v.array_type = static_cast<ValueType>(et);
      auto items = std::make_shared<Array>();
      items->reserve(n);
      for (uint64_t i = 0; i < n; ++i) items->push_back(ReadValue(r, v.array_type, key, depth + 1));
      v.data = std::move(items);
      break;
    }
    default:
      Fail(key, ": unknown value type ", static_cast<uint32_t>(type));
  }
  return v;
}

}  // namespace

BlockLayout Layout(TensorType t) {
  switch (t) {
    case TensorType::kF32:
      return {1, 4};
    case TensorType::kF16:
      return {1, 2};
    case TensorType::kBF16:
      return {1, 2};
    case TensorType::kQ4_0:
      return {32, 18};
    case TensorType::kQ4_1:
      return {32, 20};
    case TensorType::kQ5_0:
      return {32, 22};
    case TensorType::kQ5_1:
      return {32, 24};
    case TensorType::kQ8_0:
      return {32, 34};
    case TensorType::kQ8_1:
      return {32, 36};
    case TensorType::kQ2_K:
      return {256, 84};
    case TensorType::kQ3_K:
      return {256, 110};
    case TensorType::kQ4_K:
      return {256, 144};
    case TensorType::kQ5_K:
      return {256, 176};
    case TensorType::kQ6_K:
      return {256, 210};
    case TensorType::kQ8_K:
      return {256, 292};
    case TensorType::kIQ2_XXS:
      return {256, 66};
    case TensorType::kIQ2_XS:
      return {256, 74};
    case TensorType::kIQ3_XXS:
      return {256, 98};
    case TensorType::kIQ1_S:
      return {256, 50};
    case TensorType::kIQ4_NL:
      return {32, 18};
    case TensorType::kIQ3_S:
      return {256, 110};
    case TensorType::kIQ2_S:
      return {256, 82};
    case TensorType::kIQ4_XS:
      return {256, 136};
    case TensorType::kI8:
      return {1, 1};
    case TensorType::kI16:
      return {1, 2};
    case TensorType::kI32:
      return {1, 4};
    case TensorType::kI64:
    case TensorType::kF64:
      return {1, 8};
    case TensorType::kIQ1_M:
      return {256, 56};
    case TensorType::kTQ1_0:
      return {256, 54};
    case TensorType::kTQ2_0:
      return {256, 66};
    case TensorType::kMXFP4:
      return {32, 17};
    case TensorType::kNVFP4:
      return {64, 36};
    case TensorType::kQ1_0:
      return {128, 18};
  }
  return {0, 0};
}

const char* TensorTypeName(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return "F32";
    case TensorType::kF16:
      return "F16";
    case TensorType::kBF16:
      return "BF16";
    case TensorType::kQ4_0:
      return "Q4_0";
    case TensorType::kQ4_1:
      return "Q4_1";
    case TensorType::kQ5_0:
      return "Q5_0";
    case TensorType::kQ5_1:
      return "Q5_1";
    case TensorType::kQ8_0:
      return "Q8_0";
    case TensorType::kQ8_1:
      return "Q8_1";
    case TensorType::kQ2_K:
      return "Q2_K";
    case TensorType::kQ3_K:
      return "Q3_K";
    case TensorType::kQ4_K:
      return "Q4_K";
    case TensorType::kQ5_K:
      return "Q5_K";
    case TensorType::kQ6_K:
      return "Q6_K";
    case TensorType::kQ8_K:
      return "Q8_K";
    case TensorType::kIQ2_XXS:
      return "IQ2_XXS";
    case TensorType::kIQ2_XS:
      return "IQ2_XS";
    case TensorType::kIQ3_XXS:
      return "IQ3_XXS";
    case TensorType::kIQ1_S:
      return "IQ1_S";
    case TensorType::kIQ4_NL:
      return "IQ4_NL";
    case TensorType::kIQ3_S:
      return "IQ3_S";
    case TensorType::kIQ2_S:
      return "IQ2_S";
    case TensorType::kIQ4_XS:
      return "IQ4_XS";
    case TensorType::kI8:
      return "I8";
    case TensorType::kI16:
      return "I16";
    case TensorType::kI32:
      return "I32";
    case TensorType::kI64:
      return "I64";
    case TensorType::kF64:
      return "F64";
    case TensorType::kIQ1_M:
      return "IQ1_M";
    case TensorType::kTQ1_0:
      return "TQ1_0";
    case TensorType::kTQ2_0:
      return "TQ2_0";
    case TensorType::kMXFP4:
      return "MXFP4";
    case TensorType::kNVFP4:
      return "NVFP4";
    case TensorType::kQ1_0:
      return "Q1_0";
  }
  return "unknown";
}

uint64_t TensorInfo::n_elements() const {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;  // checked for overflow when parsed
  return n;
}

std::string Value::ToString(size_t max_items) const {
  std::ostringstream s;
  if (const auto* u = std::get_if<uint64_t>(&data))
    s << *u;
  else if (const auto* i = std::get_if<int64_t>(&data))
    s << *i;
  else if (const auto* d = std::get_if<double>(&data))
    s << *d;
  else if (const auto* b = std::get_if<bool>(&data))
    s << (*b ? "true" : "false");
  else if (const auto* str = std::get_if<std::string>(&data)) {
    std::string t = str->size() > 60 ? str->substr(0, 57) + "..." : *str;
    for (char& c : t)
      if (c == '\n') c = ' ';
    s << '"' << t << '"';
  } else if (const auto* a = std::get_if<std::shared_ptr<Array>>(&data)) {
    s << "[";
    for (size_t i = 0; i < (*a)->size() && i < max_items; ++i)
      s << (i ? ", " : "") << (**a)[i].ToString(max_items);
    if ((*a)->size() > max_items) s << ", ... (" << (*a)->size() << " items)";
    s << "]";
  }
  return s.str();
}

File File::Parse(const uint8_t* bytes, size_t size) {
  File file;
  Reader r(bytes, size);
  const uint32_t magic = r.Read<uint32_t>("magic");
  if (std::memcmp(&magic, "GGUF", 4) != 0)
    Fail("magic: not a GGUF file (first bytes 0x", std::hex, magic, ")");
  file.version_ = r.Read<uint32_t>("version");
  if (file.version_ != 2 && file.version_ != 3)
    Fail("version: ", file.version_, " is not supported (2 or 3)");
  const uint64_t n_tensors = r.Read<uint64_t>("tensor_count");
  const uint64_t n_kv = r.Read<uint64_t>("kv_count");
  if (n_kv > r.left() / (8 + 4 + 1))
    Fail("kv_count: ", n_kv, " pairs cannot fit in the ", r.left(), " bytes left");

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.ReadString("key of metadata pair " + std::to_string(i));
    const uint32_t type = r.Read<uint32_t>(key.c_str());
    if (type > static_cast<uint32_t>(ValueType::kF64)) Fail(key, ": unknown value type ", type);
    Value v = ReadValue(r, static_cast<ValueType>(type), key, 0);
    if (!file.metadata_.emplace(key, std::move(v)).second) Fail("duplicate metadata key '", key, "'");
  }
  if (const Value* a = file.Find("general.alignment")) {
    const auto* u = std::get_if<uint64_t>(&a->data);
    if (a->type != ValueType::kU32 || u == nullptr || *u == 0 || (*u & (*u - 1)) != 0)
      Fail("general.alignment: ", a->ToString(), " must be a u32 power of two");
    file.alignment_ = *u;
  }

  if (n_tensors > r.left() / (8 + 4 + 8 + 4 + 8))
    Fail("tensor_count: ", n_tensors, " tensor infos cannot fit in the ", r.left(), " bytes left");
  std::set<std::string> names;
  file.tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo t;
    t.name = r.ReadString("name of tensor " + std::to_string(i));
    if (t.name.size() >= kMaxNameBytes)
      Fail("tensor ", i, ": name of ", t.name.size(), " bytes (limit ", kMaxNameBytes - 1, ")");
    if (!names.insert(t.name).second) Fail("duplicate tensor name '", t.name, "'");
    const std::string field = "tensor '" + t.name + "'";
    const uint32_t n_dims = r.Read<uint32_t>(field.c_str());
    if (n_dims == 0 || n_dims > kMaxDims)
      Fail(field, ": n_dims = ", n_dims, " (must be 1 to ", kMaxDims, ")");
    uint64_t n = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = r.Read<uint64_t>(field.c_str());
      if (dim == 0 || dim > (uint64_t{1} << 40) || __builtin_mul_overflow(n, dim, &n) ||
          n > (uint64_t{1} << 50))
        Fail(field, ": dimension ", d, " = ", dim, " is zero or makes the element count overflow");
      t.dims.push_back(dim);
    }
    const uint32_t type = r.Read<uint32_t>(field.c_str());
    t.type = static_cast<TensorType>(type);
    const BlockLayout layout = Layout(t.type);
    if (layout.elements == 0) Fail(field, ": unknown tensor type ", type);
    if (t.dims[0] % layout.elements != 0)
      Fail(field, ": first dimension ", t.dims[0], " is not a multiple of the ", TensorTypeName(t.type),
           " block of ", layout.elements);
    t.bytes = n / layout.elements * layout.bytes;
    t.offset = r.Read<uint64_t>(field.c_str());
    if (t.offset % file.alignment_ != 0)
      Fail(field, ": offset ", t.offset, " is not a multiple of the alignment ", file.alignment_);
    file.tensors_.push_back(std::move(t));
  }

  const uint64_t data_start = (r.pos() + file.alignment_ - 1) / file.alignment_ * file.alignment_;
  if (data_start > size && n_tensors > 0)
    Fail("data section: starts at byte ", data_start, " past the end of the ", size, "-byte file");
  const uint64_t data_size = data_start > size ? 0 : size - data_start;
  for (TensorInfo& t : file.tensors_) {
    if (t.offset > data_size || t.bytes > data_size - t.offset)
      Fail("tensor '", t.name, "': bytes [", t.offset, ", ", t.offset + t.bytes,
           ") of the data section run past its end (", data_size, " bytes)");
    t.data = bytes + data_start + t.offset;
  }
  return file;
}

File File::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail(path, ": cannot open (", std::strerror(errno), ")");
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    Fail(path, ": not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    Fail(path, ": the file is empty");
  }
  void* p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) Fail(path, ": mmap failed (", std::strerror(errno), ")");
  std::shared_ptr<void> mapping(p, [size](void* q) { munmap(q, size); });
  try {
    File f = Parse(static_cast<const uint8_t*>(p), size);
    f.mapping_ = std::move(mapping);
    return f;
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

const Value* File::Find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const TensorInfo* File::FindTensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace attn::gguf
