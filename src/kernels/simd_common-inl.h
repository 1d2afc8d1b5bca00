// Per-target SIMD helpers shared by the attention kernels (included once per Highway target).
#if defined(ATTN_KERNELS_SIMD_COMMON_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATTN_KERNELS_SIMD_COMMON_INL_H_
#undef ATTN_KERNELS_SIMD_COMMON_INL_H_
#else
#define ATTN_KERNELS_SIMD_COMMON_INL_H_
#endif

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "attn/tensor.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "kernels/attention_params.h"

HWY_BEFORE_NAMESPACE();
namespace attn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The bf16 dot path: functions marked ATTN_BF16_DOT add AVX512_BF16 (vdpbf16ps: two bf16 products
// summed into each float32 lane) to the AVX-512 target's instruction set, so they may run only
// where the CPU has it: Attention() checks CPUID before it sets AttentionParams::bf16_dot.
#undef ATTN_HAVE_BF16_DOT
#undef ATTN_BF16_DOT
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
#define ATTN_HAVE_BF16_DOT 1
#define ATTN_BF16_DOT __attribute__((target(HWY_TARGET_STR ",avx512bf16")))
ATTN_BF16_DOT HWY_INLINE __m512bh AsPairs(__m512i x) { return reinterpret_cast<__m512bh>(x); }
// The bf16 pair at p (p[0] low, p[1] high) in every 32-bit lane.
ATTN_BF16_DOT HWY_INLINE __m512bh BroadcastPair(const uint16_t* p) {
  uint32_t w;
  std::memcpy(&w, p, sizeof(w));
  return AsPairs(_mm512_set1_epi32(static_cast<int>(w)));
}
#else
#define ATTN_HAVE_BF16_DOT 0
#endif

// n rows of D bf16 values (row j at src + j * row_stride, element stride elem_stride) into dst as
// contiguous rows of `width` >= D values, zero-padded past D: the bf16 dot paths' copy of rows
// that are not in pairs in memory.
HWY_INLINE void CopyRowsBf16(const uint16_t* src, int64_t row_stride, int64_t elem_stride, int64_t n,
                             int64_t D, int64_t width, uint16_t* dst) {
  for (int64_t j = 0; j < n; ++j)
    for (int64_t dd = 0; dd < width; ++dd)
      dst[j * width + dd] = dd < D ? src[j * row_stride + dd * elem_stride] : uint16_t{0};
}

// 2^x. The kernels work in log2 units (scores pre-multiplied by log2(e)), so softmax needs 2^x
// with x <= 0 only. Range reduction x = n + f, |f| <= 1/2, then the degree-7 Taylor polynomial of
// 2^f = e^(f ln 2) (truncation error < 6e-9 relative), scaled by 2^n through the exponent bits.
// x < -126 (including -inf) gives exactly 0, so excluded keys carry no weight.
template <class D, class V = hn::Vec<D>>
HWY_INLINE V Exp2(D d, V x) {
#if HWY_TARGET <= HWY_AVX3 && HWY_ARCH_X86
  // AVX-512: the same polynomial, with vscalefps doing the 2^n (4 fewer instructions).
  if constexpr (std::is_same_v<V, hn::Vec512<float>>) {
    const __m512 xc = _mm512_max_ps(x.raw, _mm512_set1_ps(-127.0f));
    const __m512 n = _mm512_roundscale_ps(xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(xc, n);
    __m512 p = _mm512_set1_ps(1.525273380405984e-05f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.5403530393381606e-04f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558146428443e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618129107628477e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550410866482158e-02f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402265069591007e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931471805599453e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    const __mmask16 tiny = _mm512_cmp_ps_mask(x.raw, _mm512_set1_ps(-126.0f), _CMP_LT_OQ);
    return V{_mm512_maskz_mov_ps(static_cast<__mmask16>(~tiny), _mm512_scalef_ps(p, n))};
  }
#endif
  const hn::RebindToSigned<D> di;
  const V xc = hn::Min(hn::Max(x, hn::Set(d, -126.0f)), hn::Set(d, 127.0f));
  const V n = hn::Round(xc);
  const V f = hn::Sub(xc, n);
  V p = hn::Set(d, 1.525273380405984e-05f);
  p = hn::MulAdd(p, f, hn::Set(d, 1.5403530393381606e-04f));
  p = hn::MulAdd(p, f, hn::Set(d, 1.3333558146428443e-03f));
  p = hn::MulAdd(p, f, hn::Set(d, 9.618129107628477e-03f));
  p = hn::MulAdd(p, f, hn::Set(d, 5.550410866482158e-02f));
  p = hn::MulAdd(p, f, hn::Set(d, 2.402265069591007e-01f));
  p = hn::MulAdd(p, f, hn::Set(d, 6.931471805599453e-01f));
  p = hn::MulAdd(p, f, hn::Set(d, 1.0f));
  const auto bits = hn::ShiftLeft<23>(hn::Add(hn::ConvertTo(di, n), hn::Set(di, 127)));
  const V r = hn::Mul(p, hn::BitCast(d, bits));
  return hn::IfThenZeroElse(hn::Lt(x, hn::Set(d, -126.0f)), r);
}

// Converts `count` elements of a row (element stride `stride`) to float32 in dst.
template <class D>
HWY_INLINE void LoadRowF32(D d, DType dtype, const void* base, int64_t offset, int64_t stride, int64_t count,
                           float* HWY_RESTRICT dst) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  if (dtype == DType::kF32) {
    const float* src = static_cast<const float*>(base) + offset;
    if (stride == 1) {
      std::memcpy(dst, src, count * sizeof(float));
      return;
    }
    for (; i < count; ++i) dst[i] = src[i * stride];
    return;
  }
  if (dtype == DType::kQ8_0) {  // a q8_0 KV cache's row: unit stride, starts a 32-value block
    const auto* rows = static_cast<const Q8Rows*>(base);
    const int8_t* qs = rows->quants + offset;
    const uint16_t* sc = rows->scales + offset / 32;
    const hn::Rebind<int32_t, D> di;
    const hn::Rebind<int8_t, D> d8;
    for (; i < count; i += 32) {
      const auto scale = hn::Set(d, HalfToFloat(sc[i / 32]));
      for (int64_t j = i; j < i + 32; j += N)
        hn::StoreU(hn::Mul(hn::ConvertTo(d, hn::PromoteTo(di, hn::LoadU(d8, qs + j))), scale), d, dst + j);
    }
    return;
  }
  const uint16_t* src = static_cast<const uint16_t*>(base) + offset;
  if (dtype == DType::kF16) {
    if (stride == 1) {
      const hn::Rebind<hwy::float16_t, D> dh;
      for (; i + N <= count; i += N) {
        hn::StoreU(hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(src + i))), d,
                   dst + i);
      }
    }
    for (; i < count; ++i) dst[i] = HalfToFloat(src[i * stride]);
  } else {
    if (stride == 1) {
      const hn::Rebind<hwy::bfloat16_t, D> db;
      for (; i + N <= count; i += N) {
        hn::StoreU(hn::PromoteTo(d, hn::LoadU(db, reinterpret_cast<const hwy::bfloat16_t*>(src + i))), d,
                   dst + i);
      }
    }
    for (; i < count; ++i) dst[i] = BF16ToFloat(src[i * stride]);
  }
}

}  // namespace attn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // ATTN_KERNELS_SIMD_COMMON_INL_H_
