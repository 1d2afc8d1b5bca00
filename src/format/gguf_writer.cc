#include "format/gguf_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iterator>
#include <limits>
#include <sstream>

#include "attn/error.h"

namespace attn::gguf {
namespace {

constexpr uint64_t kMaxNameBytes = 64;  // as the reader: ggml's GGML_MAX_NAME with its terminator
constexpr size_t kMaxDims = 4;
constexpr int kMaxArrayDepth = 4;

template <typename... Args>
[[noreturn]] void Fail(const Args&... args) {
  std::ostringstream s;
  s << "gguf writer: ";
  (s << ... << args);
  throw Error(s.str());
}

const char* TypeName(ValueType t) {
  static const char* const kNames[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                       "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

// Bytes per element of the types whose size is per element (the quantized block types need a
// quantizer this project does not have, so they are not written).
uint64_t ElementBytes(TensorType t) {
  switch (t) {
    case TensorType::kF32:
      return 4;
    case TensorType::kF16:
    case TensorType::kBF16:
      return 2;
    default:
      return 0;
  }
}

// Checks that `v` can be written as its type: the right data alternative, integers in range.
void Check(const std::string& key, const Value& v, int depth) {
  auto want_unsigned = [&](uint64_t max) {
    const auto* u = std::get_if<uint64_t>(&v.data);
    if (u == nullptr) Fail(key, ": a ", TypeName(v.type), " value must hold an unsigned integer");
    if (*u > max) Fail(key, ": ", *u, " does not fit a ", TypeName(v.type));
  };
  auto want_signed = [&](int64_t lo, int64_t hi) {
    const auto* i = std::get_if<int64_t>(&v.data);
    if (i == nullptr) Fail(key, ": a ", TypeName(v.type), " value must hold a signed integer");
    if (*i < lo || *i > hi) Fail(key, ": ", *i, " does not fit a ", TypeName(v.type));
  };
  switch (v.type) {
    case ValueType::kU8:
      return want_unsigned(UINT8_MAX);
    case ValueType::kU16:
      return want_unsigned(UINT16_MAX);
    case ValueType::kU32:
      return want_unsigned(UINT32_MAX);
    case ValueType::kU64:
      return want_unsigned(UINT64_MAX);
    case ValueType::kI8:
      return want_signed(INT8_MIN, INT8_MAX);
    case ValueType::kI16:
      return want_signed(INT16_MIN, INT16_MAX);
    case ValueType::kI32:
      return want_signed(INT32_MIN, INT32_MAX);
    case ValueType::kI64:
      return want_signed(INT64_MIN, INT64_MAX);
    case ValueType::kF32:
    case ValueType::kF64:
      if (!std::holds_alternative<double>(v.data))
        Fail(key, ": a ", TypeName(v.type), " value must hold a double");
      return;
    case ValueType::kBool:
      if (!std::holds_alternative<bool>(v.data)) Fail(key, ": a bool value must hold a bool");
      return;
    case ValueType::kString:
      if (!std::holds_alternative<std::string>(v.data)) Fail(key, ": a string value must hold a string");
      return;
    case ValueType::kArray: {
      if (depth >= kMaxArrayDepth) Fail(key, ": arrays nested deeper than ", kMaxArrayDepth);
      const auto* a = std::get_if<std::shared_ptr<Array>>(&v.data);
      if (a == nullptr || *a == nullptr) Fail(key, ": an array value must hold an array");
      for (const Value& item : **a) {
        if (item.type != v.array_type)
          Fail(key, ": an item of type ", TypeName(item.type), " in an array of ", TypeName(v.array_type));
        Check(key, item, depth + 1);
      }
      return;
    }
  }
  Fail(key, ": unknown value type ", static_cast<uint32_t>(v.type));
}

struct Out {
  std::vector<uint8_t>& b;
  template <typename T>
  void Put(T x) {
    const auto* p = reinterpret_cast<const uint8_t*>(&x);
    b.insert(b.end(), p, p + sizeof(T));
  }
  void Str(const std::string& s) {
    Put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
  void Val(const Value& v) {  // checked by Check() when it was set
    switch (v.type) {
      case ValueType::kU8:
        return Put(static_cast<uint8_t>(std::get<uint64_t>(v.data)));
      case ValueType::kU16:
        return Put(static_cast<uint16_t>(std::get<uint64_t>(v.data)));
      case ValueType::kU32:
        return Put(static_cast<uint32_t>(std::get<uint64_t>(v.data)));
      case ValueType::kU64:
        return Put(std::get<uint64_t>(v.data));
      case ValueType::kI8:
        return Put(static_cast<int8_t>(std::get<int64_t>(v.data)));
      case ValueType::kI16:
        return Put(static_cast<int16_t>(std::get<int64_t>(v.data)));
      case ValueType::kI32:
        return Put(static_cast<int32_t>(std::get<int64_t>(v.data)));
      case ValueType::kI64:
        return Put(std::get<int64_t>(v.data));
      case ValueType::kF32:
        return Put(static_cast<float>(std::get<double>(v.data)));
      case ValueType::kF64:
        return Put(std::get<double>(v.data));
      case ValueType::kBool:
        return Put(static_cast<uint8_t>(std::get<bool>(v.data) ? 1 : 0));
      case ValueType::kString:
        return Str(std::get<std::string>(v.data));
      case ValueType::kArray: {
        const Array& a = *std::get<std::shared_ptr<Array>>(v.data);
        Put(static_cast<uint32_t>(v.array_type));
        Put<uint64_t>(a.size());
        for (const Value& item : a) Val(item);
        return;
      }
    }
  }
  void Pad(uint64_t alignment) {
    while (b.size() % alignment != 0) b.push_back(0);
  }
};

Value Scalar(ValueType type, decltype(Value::data) d) {
  Value v;
  v.type = type;
  v.data = std::move(d);
  return v;
}

// write() all of `n` bytes, retrying after interruptions and partial writes.
bool WriteAll(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

Writer::Writer(uint32_t alignment) : alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    Fail("alignment = ", alignment, " (must be a power of two)");
  if (alignment != 32)
    metadata_.emplace_back("general.alignment", Scalar(ValueType::kU32, uint64_t{alignment}));
}

void Writer::Set(const std::string& key, Value value) {
  if (key.empty()) Fail("empty metadata key");
  if (key == "general.alignment") Fail("general.alignment is set by the Writer's constructor");
  for (const auto& [k, v] : metadata_)
    if (k == key) Fail("duplicate metadata key '", key, "'");
  Check(key, value, 0);
  metadata_.emplace_back(key, std::move(value));
}

void Writer::SetU8(const std::string& key, uint8_t v) { Set(key, Scalar(ValueType::kU8, uint64_t{v})); }
void Writer::SetI8(const std::string& key, int8_t v) { Set(key, Scalar(ValueType::kI8, int64_t{v})); }
void Writer::SetU16(const std::string& key, uint16_t v) { Set(key, Scalar(ValueType::kU16, uint64_t{v})); }
void Writer::SetI16(const std::string& key, int16_t v) { Set(key, Scalar(ValueType::kI16, int64_t{v})); }
void Writer::SetU32(const std::string& key, uint32_t v) { Set(key, Scalar(ValueType::kU32, uint64_t{v})); }
void Writer::SetI32(const std::string& key, int32_t v) { Set(key, Scalar(ValueType::kI32, int64_t{v})); }
void Writer::SetU64(const std::string& key, uint64_t v) { Set(key, Scalar(ValueType::kU64, v)); }
void Writer::SetI64(const std::string& key, int64_t v) { Set(key, Scalar(ValueType::kI64, v)); }
void Writer::SetF32(const std::string& key, float v) { Set(key, Scalar(ValueType::kF32, double{v})); }
void Writer::SetF64(const std::string& key, double v) { Set(key, Scalar(ValueType::kF64, v)); }
void Writer::SetBool(const std::string& key, bool v) { Set(key, Scalar(ValueType::kBool, v)); }
void Writer::SetString(const std::string& key, std::string v) {
  Set(key, Scalar(ValueType::kString, std::move(v)));
}

void Writer::SetStrings(const std::string& key, const std::vector<std::string>& v) {
  auto items = std::make_shared<Array>();
  items->reserve(v.size());
  for (const std::string& s : v) items->push_back(Scalar(ValueType::kString, s));
  Value a = Scalar(ValueType::kArray, std::move(items));
  a.array_type = ValueType::kString;
  Set(key, std::move(a));
}

void Writer::SetI32s(const std::string& key, const std::vector<int32_t>& v) {
  auto items = std::make_shared<Array>();
  items->reserve(v.size());
  for (int32_t x : v) items->push_back(Scalar(ValueType::kI32, int64_t{x}));
  Value a = Scalar(ValueType::kArray, std::move(items));
  a.array_type = ValueType::kI32;
  Set(key, std::move(a));
}

void Writer::AddTensor(const std::string& name, std::vector<uint64_t> dims, TensorType type,
                       std::span<const uint8_t> data) {
  if (name.empty() || name.size() >= kMaxNameBytes)
    Fail("tensor name '", name, "' has ", name.size(), " bytes (must be 1 to ", kMaxNameBytes - 1, ")");
  for (const Tensor& t : tensors_)
    if (t.name == name) Fail("duplicate tensor name '", name, "'");
  if (dims.empty() || dims.size() > kMaxDims)
    Fail("tensor '", name, "': ", dims.size(), " dimensions (must be 1 to ", kMaxDims, ")");
  const uint64_t element_bytes = ElementBytes(type);
  if (element_bytes == 0)
    Fail("tensor '", name, "': type ", TensorTypeName(type), " cannot be written (F32, F16 and BF16 can)");
  uint64_t n = 1;
  for (uint64_t d : dims)
    if (d == 0 || __builtin_mul_overflow(n, d, &n))
      Fail("tensor '", name, "': a dimension is 0 or overflows");
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(n, element_bytes, &bytes) || bytes != data.size())
    Fail("tensor '", name, "': ", data.size(), " bytes of data for ", n, " ", TensorTypeName(type),
         " elements");
  tensors_.push_back(Tensor{name, std::move(dims), type, data, data_bytes_});
  data_bytes_ += (bytes + alignment_ - 1) / alignment_ * alignment_;
}

void Writer::AddTensorF32(const std::string& name, std::vector<uint64_t> dims, std::span<const float> data) {
  AddTensor(name, std::move(dims), TensorType::kF32,
            std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size_bytes()));
}

std::vector<uint8_t> Writer::Head() const {
  std::vector<uint8_t> b;
  b.reserve(4096);
  Out o{b};
  o.Put<uint32_t>(0x46554747);  // "GGUF" read as a little-endian u32
  o.Put<uint32_t>(3);
  o.Put<uint64_t>(tensors_.size());
  o.Put<uint64_t>(metadata_.size());
  for (const auto& [key, value] : metadata_) {
    o.Str(key);
    o.Put(static_cast<uint32_t>(value.type));
    o.Val(value);
  }
  for (const Tensor& t : tensors_) {
    o.Str(t.name);
    o.Put<uint32_t>(static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) o.Put(d);
    o.Put(static_cast<uint32_t>(t.type));
    o.Put(t.offset);
  }
  o.Pad(alignment_);
  return b;
}

std::vector<uint8_t> Writer::ToBytes() const {
  std::vector<uint8_t> b = Head();
  Out o{b};
  for (const Tensor& t : tensors_) {
    b.insert(b.end(), t.data.begin(), t.data.end());
    o.Pad(alignment_);
  }
  return b;
}

void Writer::Write(const std::string& path) const {
  const std::vector<uint8_t> head = Head();
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) Fail(tmp, ": cannot create (", std::strerror(errno), ")");
  auto fail = [&](const char* what, bool close_fd) {
    const int err = errno;
    if (close_fd) ::close(fd);
    ::unlink(tmp.c_str());
    Fail(path, ": ", what, " failed (", std::strerror(err), "); the previous file, if any, is unchanged");
  };
  static const uint8_t kZeros[64] = {};
  bool ok = WriteAll(fd, head.data(), head.size());
  for (size_t i = 0; ok && i < tensors_.size(); ++i) {
    const Tensor& t = tensors_[i];
    ok = WriteAll(fd, t.data.data(), t.data.size());
    for (uint64_t pad = (alignment_ - t.data.size() % alignment_) % alignment_; ok && pad > 0;) {
      const uint64_t n = pad < sizeof(kZeros) ? pad : sizeof(kZeros);
      ok = WriteAll(fd, kZeros, n);
      pad -= n;
    }
  }
  if (!ok) fail("writing", true);
  if (::fsync(fd) != 0) fail("fsync", true);
  if (::close(fd) != 0) fail("close", false);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("renaming the temporary file over it", false);
  // Make the rename itself durable (best effort: some file systems refuse fsync on folders).
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace attn::gguf
