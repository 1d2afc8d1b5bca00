#include "attn/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "attn/error.h"
#include "core/aligned.h"
#include "kernels/attention_params.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/kv_cache.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

// Float32 rows stored into a half-precision cache, converted with SIMD: f16 rounds to nearest
// even after clamping to +-65504 (a key or value beyond f16's range saturates instead of becoming
// an infinity that would turn the softmax into NaN); bf16 rounds to nearest even.
HWY_BEFORE_NAMESPACE();
namespace attn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void StoreHalfRowImpl(const float* src, bool bf16, uint16_t* dst, int64_t n) {
  if (bf16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = FloatToBF16(src[i]);
    return;
  }
  int64_t i = 0;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  // F16C's conversion rounds to nearest even (Highway's emulated targets truncate, so they take the
  // scalar loop below).
  const hn::ScalableTag<float> d;
  const hn::Rebind<hwy::float16_t, decltype(d)> dh;
  const int64_t N = hn::Lanes(d);
  const auto hi = hn::Set(d, 65504.0f), lo = hn::Set(d, -65504.0f);
  auto* out = reinterpret_cast<hwy::float16_t*>(dst);
  for (; i + N <= n; i += N)
    hn::StoreU(hn::DemoteTo(dh, hn::Min(hn::Max(hn::LoadU(d, src + i), lo), hi)), dh, out + i);
#endif
  for (; i < n; ++i)
    dst[i] = FloatToHalf(src[i] > 65504.0f ? 65504.0f : src[i] < -65504.0f ? -65504.0f : src[i]);
}

// A float32 row into q8_0 blocks (n a multiple of 32), as ggml's quantize_row_q8_0: per block the
// scale d = max |x| / 127 (clamped to float16's range, stored as float16) and the values round(x / d)
// to nearest even; an all-zero block gets d = 0 and zeros. A q8_0 KV cache stores its rows so.
void QuantizeQ8RowImpl(const float* HWY_RESTRICT src, int8_t* HWY_RESTRICT quants,
                       uint16_t* HWY_RESTRICT scales, int64_t n) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<int8_t, decltype(d)> d8;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t b = 0; b < n; b += 32) {
    auto amax = hn::Zero(d);
    for (int64_t i = b; i < b + 32; i += N) amax = hn::Max(amax, hn::Abs(hn::LoadU(d, src + i)));
    const float scale = std::min(hn::GetLane(hn::MaxOfLanes(d, amax)) / 127.0f, 65504.0f);
    const auto inv = hn::Set(d, scale > 0.0f ? 1.0f / scale : 0.0f);
    scales[b / 32] = FloatToHalf(scale);
    for (int64_t i = b; i < b + 32; i += N)
      hn::StoreU(hn::DemoteTo(d8, hn::NearestInt(hn::Mul(hn::LoadU(d, src + i), inv))), d8, quants + i);
  }
}

}  // namespace attn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attn {
namespace kernels {
HWY_EXPORT(StoreHalfRowImpl);
HWY_EXPORT(QuantizeQ8RowImpl);
}  // namespace kernels

namespace {
constexpr int64_t kQ8Block = 32;
}  // namespace

// One of K and V: the elements (float32, half, or q8_0's int8 values) as [batch, n_kv_heads,
// capacity, head_dim]; for q8_0 also one float16 scale per 32 values in the same order. Element
// offsets address both (the scale of element e is scale e / 32).
struct KVCache::Buffer {
  AlignedPtr<uint8_t> bytes;
  AlignedPtr<uint8_t> scales;  // float16, q8_0 only

  const uint16_t* Scales() const { return reinterpret_cast<const uint16_t*>(scales.get()); }
  uint16_t* Scales() { return reinterpret_cast<uint16_t*>(scales.get()); }

  // f(plane, bytes per element row) for the elements and, in a q8_0 cache, the scales: the
  // arrays that allocation, growth and shifts treat alike.
  template <class F>
  void ForEachPlane(DType dtype, int64_t head_dim, F&& f) {
    f(bytes, static_cast<size_t>(head_dim) * DTypeSize(dtype));
    if (dtype == DType::kQ8_0) f(scales, static_cast<size_t>(head_dim / kQ8Block) * sizeof(uint16_t));
  }

  // The n values at element offset `at` as float32.
  void LoadRow(DType dtype, int64_t at, int64_t n, float* row) const {
    const uint8_t* p = bytes.get() + at * static_cast<int64_t>(DTypeSize(dtype));
    for (int64_t x = 0; x < n; ++x) {
      switch (dtype) {
        case DType::kF32:
          std::memcpy(&row[x], p + x * 4, 4);
          break;
        case DType::kF16:
          row[x] = HalfToFloat(reinterpret_cast<const uint16_t*>(p)[x]);
          break;
        case DType::kBF16:
          row[x] = BF16ToFloat(reinterpret_cast<const uint16_t*>(p)[x]);
          break;
        case DType::kQ8_0:
          row[x] = HalfToFloat(Scales()[(at + x) / kQ8Block]) * reinterpret_cast<const int8_t*>(p)[x];
          break;
      }
    }
  }

  // n float32 values stored at element offset `at`: copied, rounded to a half type (f16
  // saturating) or quantized to q8_0 blocks.
  void StoreRow(DType dtype, int64_t at, int64_t n, const float* row) {
    uint8_t* p = bytes.get() + at * static_cast<int64_t>(DTypeSize(dtype));
    if (dtype == DType::kF32) {
      std::memcpy(p, row, static_cast<size_t>(n) * sizeof(float));
    } else if (dtype == DType::kQ8_0) {
      HWY_DYNAMIC_DISPATCH(kernels::QuantizeQ8RowImpl)
      (row, reinterpret_cast<int8_t*>(p), Scales() + at / kQ8Block, n);
    } else {
      HWY_DYNAMIC_DISPATCH(kernels::StoreHalfRowImpl)
      (row, dtype == DType::kBF16, reinterpret_cast<uint16_t*>(p), n);
    }
  }
};

KVCache::KVCache(int64_t batch, int64_t n_kv_heads, int64_t head_dim, int64_t capacity, DType dtype)
    : batch_(batch), n_kv_heads_(n_kv_heads), head_dim_(head_dim), capacity_(capacity), dtype_(dtype) {
  auto check = [](const char* name, int64_t x) {
    if (x <= 0) throw Error("KVCache: " + std::string(name) + " = " + std::to_string(x) + " (must be >= 1)");
  };
  check("batch", batch), check("n_kv_heads", n_kv_heads), check("head_dim", head_dim),
      check("capacity", capacity);
  if (dtype == DType::kQ8_0 && head_dim % kQ8Block != 0)
    throw Error("KVCache: head_dim = " + std::to_string(head_dim) +
                " is not a multiple of 32 (a q8_0 cache stores blocks of 32 values)");
  int64_t elems;
  if (__builtin_mul_overflow(batch * n_kv_heads, head_dim, &elems) ||
      __builtin_mul_overflow(elems, capacity, &elems) || elems > (int64_t{1} << 40))
    throw Error("KVCache: batch x n_kv_heads x head_dim x capacity overflows");
  k_ = std::make_unique<Buffer>();
  v_ = std::make_unique<Buffer>();
  const int64_t rows = batch * n_kv_heads * capacity;
  for (Buffer* buf : {k_.get(), v_.get()})
    buf->ForEachPlane(dtype, head_dim, [&](AlignedPtr<uint8_t>& plane, size_t row_bytes) {
      plane = AllocateAligned<uint8_t>(static_cast<size_t>(rows) * row_bytes);
    });
}

KVCache::~KVCache() = default;

TensorView KVCache::View(void* base, int64_t len) const {
  // Memory [batch, n_kv_heads, capacity, head_dim] seen as logical [batch, len, n_kv_heads, head_dim].
  TensorView t;
  t.data = base;
  t.dtype = dtype_;
  t.shape[0] = batch_, t.shape[1] = len, t.shape[2] = n_kv_heads_, t.shape[3] = head_dim_;
  t.stride[3] = 1;
  t.stride[1] = head_dim_;
  t.stride[2] = capacity_ * head_dim_;
  t.stride[0] = n_kv_heads_ * capacity_ * head_dim_;
  return t;
}

void KVCache::Truncate(int64_t length) {
  if (length < 0 || length > length_)
    throw Error("KVCache::Truncate: length " + std::to_string(length) + " not in [0, " +
                std::to_string(length_) + "]");
  length_ = length;
}

void KVCache::Reserve(int64_t capacity) {
  if (capacity <= capacity_) return;
  int64_t elems;
  if (__builtin_mul_overflow(batch_ * n_kv_heads_, head_dim_, &elems) ||
      __builtin_mul_overflow(elems, capacity, &elems) || elems > (int64_t{1} << 40))
    throw Error("KVCache::Reserve: batch x n_kv_heads x head_dim x capacity overflows");
  for (Buffer* buf : {k_.get(), v_.get()})
    buf->ForEachPlane(dtype_, head_dim_, [&](AlignedPtr<uint8_t>& plane, size_t row) {
      AlignedPtr<uint8_t> grown = AllocateAligned<uint8_t>(static_cast<size_t>(elems / head_dim_) * row);
      // [batch, head] blocks of `length_` rows move from stride capacity_ to stride capacity.
      for (int64_t bh = 0; bh < batch_ * n_kv_heads_; ++bh)
        std::memcpy(grown.get() + bh * capacity * row, plane.get() + bh * capacity_ * row, length_ * row);
      plane = std::move(grown);
    });
  capacity_ = capacity;
}

void KVCache::Shift(int64_t keep, int64_t discard) {
  if (keep < 0 || discard < 0 || keep > length_ - discard)
    throw Error("KVCache::Shift: keep " + std::to_string(keep) + ", discard " + std::to_string(discard) +
                " (need keep, discard >= 0 and keep + discard <= length " + std::to_string(length_) + ")");
  const int64_t moved = length_ - keep - discard;
  for (Buffer* buf : {k_.get(), v_.get()})
    buf->ForEachPlane(dtype_, head_dim_, [&](AlignedPtr<uint8_t>& plane, size_t row) {
      for (int64_t bh = 0; bh < batch_ * n_kv_heads_; ++bh) {
        uint8_t* base = plane.get() + bh * capacity_ * row;
        std::memmove(base + keep * row, base + (keep + discard) * row, moved * row);
      }
    });
  length_ -= discard;
}

void KVCache::UpdateKeys(int64_t begin, int64_t end, const std::function<void(float* row)>& fn) {
  if (begin < 0 || begin > end || end > length_)
    throw Error("KVCache::UpdateKeys: rows [" + std::to_string(begin) + ", " + std::to_string(end) +
                ") not within the length " + std::to_string(length_));
  std::vector<float> row(static_cast<size_t>(head_dim_));
  for (int64_t bh = 0; bh < batch_ * n_kv_heads_; ++bh)
    for (int64_t pos = begin; pos < end; ++pos) {
      const int64_t at = (bh * capacity_ + pos) * head_dim_;  // element offset of the row
      k_->LoadRow(dtype_, at, head_dim_, row.data());
      fn(row.data());
      k_->StoreRow(dtype_, at, head_dim_, row.data());
    }
}

TensorView KVCache::keys() const {
  if (dtype_ == DType::kQ8_0) throw Error("KVCache::keys: a q8_0 cache has no element view (use KeysF32)");
  return View(k_->bytes.get(), length_);
}
TensorView KVCache::values() const {
  if (dtype_ == DType::kQ8_0)
    throw Error("KVCache::values: a q8_0 cache has no element view (use ValuesF32)");
  return View(v_->bytes.get(), length_);
}

TensorView KVCache::WidenedView(const Buffer& buf, std::vector<float>* storage) const {
  if (dtype_ != DType::kQ8_0) return View(buf.bytes.get(), length_).AsFloat32(storage);
  // The same [batch, n_kv_heads, capacity, head_dim] order in float32, rows [0, length) filled.
  storage->assign(static_cast<size_t>(batch_ * n_kv_heads_ * capacity_ * head_dim_), 0.0f);
  for (int64_t bh = 0; bh < batch_ * n_kv_heads_; ++bh) {
    const int64_t at = bh * capacity_ * head_dim_;  // the head's rows are contiguous
    buf.LoadRow(dtype_, at, length_ * head_dim_, storage->data() + at);
  }
  TensorView t = View(storage->data(), length_);
  t.dtype = DType::kF32;
  return t;
}

TensorView KVCache::KeysF32(std::vector<float>* storage) const { return WidenedView(*k_, storage); }
TensorView KVCache::ValuesF32(std::vector<float>* storage) const { return WidenedView(*v_, storage); }

void KVCache::Append(const TensorView& k, const TensorView& v) {
  for (const auto* t : {&k, &v}) {
    const char* name = t == &k ? "k" : "v";
    if ((t->dtype != dtype_ || dtype_ == DType::kQ8_0) && t->dtype != DType::kF32)
      throw Error(std::string("KVCache::Append: ") + name + " dtype " + DTypeName(t->dtype) +
                      " != cache dtype " + DTypeName(dtype_) +
                      " (float32 rows are converted; other dtypes must match)",
                  Error::Kind::kType);
    if (t->shape[0] != batch_ || t->shape[2] != n_kv_heads_ || t->shape[3] != head_dim_)
      throw Error(std::string("KVCache::Append: ") + name + " shape " + t->ShapeString() +
                  " does not match [batch=" + std::to_string(batch_) + ", n, n_kv_heads=" +
                  std::to_string(n_kv_heads_) + ", head_dim=" + std::to_string(head_dim_) + "]");
    if (t->data == nullptr && t->numel() > 0)
      throw Error(std::string("KVCache::Append: ") + name + " data is null");
  }
  const int64_t n = k.shape[1];
  if (v.shape[1] != n)
    throw Error("KVCache::Append: v has " + std::to_string(v.shape[1]) + " positions, k has " +
                std::to_string(n));
  if (n < 0 || n > capacity_ - length_)
    throw Error("KVCache::Append: " + std::to_string(n) + " new positions exceed the capacity " +
                std::to_string(capacity_) + " (length " + std::to_string(length_) + ")");
  const size_t es = DTypeSize(dtype_);
  std::vector<float> row;  // a strided float32 row gathered before conversion
  for (const auto& [src, buf] : {std::pair{&k, k_.get()}, std::pair{&v, v_.get()}}) {
    const TensorView dst = View(buf->bytes.get(), capacity_);
    const size_t ss = DTypeSize(src->dtype);
    const bool convert = src->dtype != dtype_;  // float32 rows into a half or q8_0 cache
    for (int64_t b = 0; b < batch_; ++b)
      for (int64_t s = 0; s < n; ++s)
        for (int64_t h = 0; h < n_kv_heads_; ++h) {
          const int64_t at = b * dst.stride[0] + (length_ + s) * dst.stride[1] + h * dst.stride[2];
          uint8_t* d = static_cast<uint8_t*>(dst.data) + at * es;
          const uint8_t* sp = static_cast<const uint8_t*>(src->data) +
                              (b * src->stride[0] + s * src->stride[1] + h * src->stride[2]) * ss;
          if (convert) {
            const float* f = reinterpret_cast<const float*>(sp);
            if (src->stride[3] != 1) {
              row.resize(static_cast<size_t>(head_dim_));
              for (int64_t x = 0; x < head_dim_; ++x) row[static_cast<size_t>(x)] = f[x * src->stride[3]];
              f = row.data();
            }
            buf->StoreRow(dtype_, at, head_dim_, f);
          } else if (src->stride[3] == 1) {
            std::memcpy(d, sp, head_dim_ * es);
          } else {
            for (int64_t x = 0; x < head_dim_; ++x) std::memcpy(d + x * es, sp + x * src->stride[3] * es, es);
          }
        }
  }
  length_ += n;
}

void KVCache::Attend(const TensorView& q, const TensorView& out, AttentionOptions options) const {
  AttendFirst(q, out, options, length_);
}

void KVCache::AttendFirst(const TensorView& q, const TensorView& out, AttentionOptions options,
                          int64_t n_keys) const {
  if (n_keys < 1 || n_keys > length_)
    throw Error("KVCache::Attend: n_keys = " + std::to_string(n_keys) + " (the cache holds " +
                std::to_string(length_) + ")");
  if (q.shape[1] > n_keys)
    throw Error("KVCache::Attend: q has " + std::to_string(q.shape[1]) + " positions but the cache holds " +
                std::to_string(n_keys));
  options.causal_align = CausalAlign::kBottomRight;
  if (dtype_ != DType::kQ8_0)
    return Attention(q, View(k_->bytes.get(), n_keys), View(v_->bytes.get(), n_keys), out, options);
  if (q.dtype != DType::kF32)
    throw Error(std::string("KVCache::Attend: q dtype ") + DTypeName(q.dtype) +
                    " (a q8_0 cache is read by float32 queries)",
                Error::Kind::kType);
  // The arguments are checked on stand-in views with the q8_0 values' element strides (a half dtype
  // is what float32 queries may read); the kernels then read the int8 values and their scales.
  TensorView k8 = View(k_->bytes.get(), n_keys), v8 = View(v_->bytes.get(), n_keys);
  k8.dtype = v8.dtype = DType::kF16;
  kernels::AttentionParams p = kernels::MakeParams(q, k8, v8, out, options);
  const kernels::Q8Rows k_rows{reinterpret_cast<const int8_t*>(k_->bytes.get()), k_->Scales()};
  const kernels::Q8Rows v_rows{reinterpret_cast<const int8_t*>(v_->bytes.get()), v_->Scales()};
  p.kv_dtype = DType::kQ8_0;
  p.k = &k_rows;
  p.v = &v_rows;
  kernels::RunAttention(p);
}

}  // namespace attn
#endif  // HWY_ONCE
