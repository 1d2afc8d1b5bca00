// Cache-line aligned buffers for kernel scratch space.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace attn {

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};

template <typename T>
using AlignedPtr = std::unique_ptr<T[], AlignedFree>;

// 64-byte aligned, uninitialized; throws std::bad_alloc when memory is exhausted.
template <typename T>
AlignedPtr<T> AllocateAligned(size_t count) {
  size_t bytes = (count * sizeof(T) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
  if (p == nullptr) throw std::bad_alloc();
  return AlignedPtr<T>(static_cast<T*>(p));
}

// A grow-only aligned buffer, typically thread_local: kernels take per-thread scratch from it
// without allocating on every call.
template <typename T>
struct GrowBuffer {
  AlignedPtr<T> buf;
  size_t size = 0;
  T* Get(size_t count) {
    if (count > size) {
      buf = AllocateAligned<T>(count);
      size = count;
    }
    return buf.get();
  }
};

}  // namespace attn
