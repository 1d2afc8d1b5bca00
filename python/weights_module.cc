// Raw weights for Python: any tensor of a GGUF file, dequantized to float32 by attn's own
// reader and decoders (format/gguf.h, kernels/matmul.h), so analyses in NumPy (the circuits of
// python/attn/circuits.py) see exactly the numbers the forward pass uses.
//
//   _attn.tensor_names(path)       -> [name, ...] in file order
//   _attn.read_tensor(path, name)  -> float32 array in the PyTorch shape (GGUF ne reversed:
//                                     a matrix with ne [cols, rows] comes back [rows, cols])
//   _attn.read_tensors(path, names) -> [array, ...], one parse of the file for many tensors
//
// Errors (unknown file or tensor name, a type the decoders do not know) are attn::Error of kind
// kValue, which the module's translator raises as ValueError.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "attn/error.h"
#include "format/gguf.h"
#include "kernels/matmul.h"

namespace nb = nanobind;

namespace {

using FloatArray = nb::ndarray<nb::numpy, float>;

// Dequantizes one tensor into a new NumPy array. A tensor of any rank is a stack of rows of
// dims[0] values, each stored as dims[0] / block_size blocks, rows back to back.
FloatArray ReadTensor(const attn::gguf::File& file, const std::string& path, const std::string& name) {
  const attn::gguf::TensorInfo* t = file.FindTensor(name);
  if (t == nullptr) throw attn::Error("read_tensor: no tensor named '" + name + "' in " + path);
  if (!attn::IsSupportedWeightType(t->type)) {
    throw attn::Error("read_tensor: tensor '" + name + "' has type " + attn::gguf::TensorTypeName(t->type) +
                      ", which attn cannot dequantize (" + attn::kSupportedWeightTypes + " it can)");
  }
  const int64_t cols = static_cast<int64_t>(t->dims[0]);
  const int64_t rows = static_cast<int64_t>(t->n_elements() / t->dims[0]);
  const size_t row_bytes = attn::RowBytes(t->type, cols);  // checks cols against the block size
  if (row_bytes * static_cast<size_t>(rows) != t->bytes)
    throw attn::Error("read_tensor: tensor '" + name + "' holds " + std::to_string(t->bytes) +
                      " bytes, expected " + std::to_string(row_bytes * static_cast<size_t>(rows)));

  std::vector<size_t> shape(t->dims.rbegin(), t->dims.rend());  // PyTorch order: slowest first
  auto* data = new float[static_cast<size_t>(rows * cols)];
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<float*>(p); });
  {
    nb::gil_scoped_release release;
    for (int64_t r = 0; r < rows; ++r)
      attn::DequantizeRow(t->type, t->data + static_cast<size_t>(r) * row_bytes, data + r * cols, cols);
  }
  return FloatArray(data, shape.size(), shape.data(), owner);
}

}  // namespace

void BindWeights(nb::module_& m) {
  m.def(
      "tensor_names",
      [](const std::string& path) {
        const attn::gguf::File file = attn::gguf::File::Open(path);
        std::vector<std::string> names;
        for (const attn::gguf::TensorInfo& t : file.tensors()) names.push_back(t.name);
        return names;
      },
      nb::arg("path"), "Names of the tensors of the GGUF file at `path`, in file order.");
  m.def(
      "read_tensor",
      [](const std::string& path, const std::string& name) {
        return ReadTensor(attn::gguf::File::Open(path), path, name);
      },
      nb::arg("path"), nb::arg("name"),
      "Tensor `name` of the GGUF file at `path`, dequantized to float32, in the PyTorch shape.");
  m.def(
      "read_tensors",
      [](const std::string& path, const std::vector<std::string>& names) {
        const attn::gguf::File file = attn::gguf::File::Open(path);  // parsed once for all names
        std::vector<FloatArray> out;
        for (const std::string& name : names) out.push_back(ReadTensor(file, path, name));
        return out;
      },
      nb::arg("path"), nb::arg("names"), "read_tensor for several names, opening the file once.");
}
