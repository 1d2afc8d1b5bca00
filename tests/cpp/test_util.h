// Helpers shared by the C++ tests: random tensors in any dtype, and FlashAttention's tolerance rule.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "attn/attention.h"
#include "attn/tensor.h"

namespace attn::testing {

// A tensor owning its bytes, with a logical [B, S, H, D] view laid out as "bshd" or "bhsd".
struct Tensor {
  std::vector<uint8_t> bytes;
  TensorView view;

  Tensor(DType dtype, int64_t B, int64_t S, int64_t H, int64_t D, bool bhsd = false) {
    bytes.assign(B * S * H * D * DTypeSize(dtype), 0);
    view = bhsd ? TensorView::Contiguous(bytes.data(), dtype, B, H, S, D).SwapAxes12()
                : TensorView::Contiguous(bytes.data(), dtype, B, S, H, D);
  }
  int64_t Offset(int64_t b, int64_t s, int64_t h, int64_t d) const {
    return b * view.stride[0] + s * view.stride[1] + h * view.stride[2] + d * view.stride[3];
  }
  float Get(int64_t b, int64_t s, int64_t h, int64_t d) const {
    const int64_t o = Offset(b, s, h, d);
    switch (view.dtype) {
      case DType::kF32:
        return reinterpret_cast<const float*>(bytes.data())[o];
      case DType::kF16:
        return HalfToFloat(reinterpret_cast<const uint16_t*>(bytes.data())[o]);
      case DType::kBF16:
        return BF16ToFloat(reinterpret_cast<const uint16_t*>(bytes.data())[o]);
      case DType::kQ8_0:  // not a tensor dtype
        break;
    }
    return 0;
  }
  void Set(int64_t b, int64_t s, int64_t h, int64_t d, float x) {
    const int64_t o = Offset(b, s, h, d);
    switch (view.dtype) {
      case DType::kF32:
        reinterpret_cast<float*>(bytes.data())[o] = x;
        break;
      case DType::kF16:
        reinterpret_cast<uint16_t*>(bytes.data())[o] = FloatToHalf(x);
        break;
      case DType::kBF16:
        reinterpret_cast<uint16_t*>(bytes.data())[o] = FloatToBF16(x);
        break;
      case DType::kQ8_0:  // not a tensor dtype
        break;
    }
  }
  void Randomize(std::mt19937& rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const auto& s = view.shape;
    for (int64_t b = 0; b < s[0]; ++b)
      for (int64_t i = 0; i < s[1]; ++i)
        for (int64_t h = 0; h < s[2]; ++h)
          for (int64_t d = 0; d < s[3]; ++d) Set(b, i, h, d, normal(rng));
  }
  // Largest |a - x| over every element, x contiguous [B, S, H, D] in float64; NaN counts as infinite.
  double MaxDiff(const std::vector<double>& x) const {
    double m = 0;
    const auto& s = view.shape;
    int64_t i = 0;
    for (int64_t b = 0; b < s[0]; ++b)
      for (int64_t t = 0; t < s[1]; ++t)
        for (int64_t h = 0; h < s[2]; ++h)
          for (int64_t d = 0; d < s[3]; ++d, ++i) {
            const double y = Get(b, t, h, d);
            m = std::max(m, std::isnan(y) ? std::numeric_limits<double>::infinity() : std::abs(y - x[i]));
          }
    return m;
  }
  // Largest |a - b| over every element.
  double MaxDiff(const Tensor& o) const {
    double m = 0;
    const auto& s = view.shape;
    for (int64_t b = 0; b < s[0]; ++b)
      for (int64_t i = 0; i < s[1]; ++i)
        for (int64_t h = 0; h < s[2]; ++h)
          for (int64_t d = 0; d < s[3]; ++d) {
            const double x = Get(b, i, h, d), y = o.Get(b, i, h, d);
            m = std::max(m, std::isnan(x) || std::isnan(y) ? std::numeric_limits<double>::infinity()
                                                           : std::abs(x - y));
          }
    return m;
  }
};

// The Highway targets only: SimdTargets() without the pseudo-targets on top of AVX3: "AVX3_BF16"
// (the attention forward's bf16 dot kernel, which nothing but bf16 attention uses) and "AVX3_VNNI"
// (integer matrix products; MatMulTargets() adds it).
inline std::vector<std::string> HighwayTargets() {
  std::vector<std::string> names;
  for (const std::string& t : SimdTargets())
    if (t != "AVX3_BF16" && t != "AVX3_VNNI") names.push_back(t);
  return names;
}
// The targets of the attention kernels: SimdTargets() without "AVX3_VNNI", under which they run
// the AVX3 code (VNNI serves the matrix products only).
inline std::vector<std::string> AttentionTargets() {
  std::vector<std::string> names;
  for (const std::string& t : SimdTargets())
    if (t != "AVX3_VNNI") names.push_back(t);
  return names;
}
// The targets of the matrix products: the Highway targets and "AVX3_VNNI" where the CPU has it.
inline std::vector<std::string> MatMulTargets() {
  std::vector<std::string> names;
  for (const std::string& t : SimdTargets())
    if (t != "AVX3_BF16") names.push_back(t);
  return names;
}

// Small absolute slack on top of FlashAttention's 2x rule.
inline double Atol(DType dtype) { return dtype == DType::kF32 ? 1e-6 : 1e-4; }

// One case of the attention test grids (forward and backward): shapes, dtype and options.
struct Case {
  int64_t B, Sq, Sk, Hq, Hkv, D;
  DType dtype = DType::kF32;
  bool causal = false;
  CausalAlign align = CausalAlign::kBottomRight;
  int64_t wl = -1, wr = -1;
  bool kv_lens = false;
  MaskKind mask = MaskKind::kNone;
  float softcap = 0.0f;
  bool bhsd = false;
  bool sinks = false;  // learned sinks (gpt-oss): random per head, head 0 none (-inf), the last one large
  std::optional<DType> kv_dtype = std::nullopt;  // K and V, when not `dtype` (a half cache under f32 queries)

  DType KvDtype() const { return kv_dtype.value_or(dtype); }
  std::string Name() const {
    std::ostringstream s;
    s << "B" << B << "_Sq" << Sq << "_Sk" << Sk << "_H" << Hq << "x" << Hkv << "_D" << D << "_"
      << DTypeName(dtype);
    if (causal) s << (align == CausalAlign::kTopLeft ? "_causalTL" : "_causalBR");
    if (wl >= 0 || wr >= 0)
      s << "_win" << (wl < 0 ? std::string("inf") : std::to_string(wl)) << "x"
        << (wr < 0 ? std::string("inf") : std::to_string(wr));
    if (kv_lens) s << "_kvlens";
    if (mask == MaskKind::kBool) s << "_boolmask";
    if (mask == MaskKind::kAdditive) s << "_addmask";
    if (softcap > 0) s << "_softcap";
    if (bhsd) s << "_bhsd";
    if (sinks) s << "_sinks";
    if (kv_dtype) s << "_kv" << DTypeName(*kv_dtype);
    return s.str();
  }
};

// The options of a case, with masks, kv_lens and sinks drawn from rng (their storage in the
// vectors; a case with sinks needs `sinks`).
inline AttentionOptions MakeOptions(const Case& c, std::mt19937& rng, std::vector<uint8_t>& bool_mask,
                                    std::vector<float>& add_mask, std::vector<float>* sinks = nullptr) {
  AttentionOptions o;
  if (c.sinks) {
    EXPECT_NE(sinks, nullptr) << "a case with sinks needs their storage";
    if (sinks == nullptr) return o;
    std::normal_distribution<float> normal(0.0f, 2.0f);
    sinks->resize(c.Hq);
    for (float& x : *sinks) x = normal(rng);
    if (c.Hq > 1) (*sinks)[0] = -std::numeric_limits<float>::infinity();
    if (c.Hq > 2) (*sinks)[c.Hq - 1] = 6.0f;  // dominates most rows: its term sets the max
    o.sinks = sinks->data();
  }
  o.causal = c.causal;
  o.causal_align = c.align;
  o.window_left = c.wl, o.window_right = c.wr;
  o.softcap = c.softcap;
  if (c.kv_lens) {
    std::uniform_int_distribution<int64_t> len(0, c.Sk);
    for (int64_t b = 0; b < c.B; ++b) o.kv_lens.push_back(b == 0 && c.B > 1 ? 0 : len(rng));
  }
  if (c.mask != MaskKind::kNone) {
    // Full [B, Hq, Sq, Sk] masks, the last query row of head 0 fully masked.
    const int64_t n = c.B * c.Hq * c.Sq * c.Sk;
    o.mask.kind = c.mask;
    const std::array<int64_t, 4> shape{c.B, c.Hq, c.Sq, c.Sk};
    for (int i = 0; i < 4; ++i) o.mask.shape[i] = shape[i];
    o.mask.stride[3] = 1, o.mask.stride[2] = c.Sk, o.mask.stride[1] = c.Sq * c.Sk;
    o.mask.stride[0] = c.Hq * c.Sq * c.Sk;
    std::bernoulli_distribution keep(0.7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const float neg_inf = -std::numeric_limits<float>::infinity();
    if (c.mask == MaskKind::kBool) {
      bool_mask.resize(n);
      for (auto& x : bool_mask) x = keep(rng);
      for (int64_t j = 0; j < c.Sk; ++j) bool_mask[(c.Sq - 1) * c.Sk + j] = 0;
      o.mask.data = bool_mask.data();
    } else {
      add_mask.resize(n);
      for (auto& x : add_mask) x = keep(rng) ? normal(rng) : neg_inf;
      for (int64_t j = 0; j < c.Sk; ++j) add_mask[(c.Sq - 1) * c.Sk + j] = neg_inf;
      o.mask.data = add_mask.data();
    }
  }
  return o;
}

}  // namespace attn::testing
