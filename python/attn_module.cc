// The Python extension attn._attn: thin bindings over the C++ API. Argument normalization
// (layouts, broadcasting, dtype views) happens in python/attn/__init__.py; every check that
// matters is the C++ library's own, raised as ValueError / TypeError with its message.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "attn/attention.h"
#include "attn/error.h"
#include "attn/kv_cache.h"

namespace nb = nanobind;

void BindModel(nb::module_& m);    // python/model_module.cc
void BindWeights(nb::module_& m);  // python/weights_module.cc
void BindTrain(nb::module_& m);    // python/train_module.cc
using Array = nb::ndarray<nb::device::cpu>;
using InArray = nb::ndarray<nb::ro, nb::device::cpu>;  // inputs may be read-only views
using Floats = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;  // [Hq] sinks
using FloatsOut = nb::ndarray<float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

namespace {

attn::DType ToDType(int code) {
  if (code < 0 || code > 2)
    throw attn::Error("dtype code " + std::to_string(code) + " is not 0, 1 or 2", attn::Error::Kind::kType);
  return static_cast<attn::DType>(code);
}

// A 4-D array (any strides) as a TensorView with the given dtype.
template <typename A>
attn::TensorView View(const char* name, A& a, attn::DType dtype) {
  if (a.ndim() != 4)
    throw attn::Error(std::string("sdpa: ") + name + ": expected 4 dimensions, got " +
                      std::to_string(a.ndim()));
  attn::TensorView t;
  t.data = const_cast<void*>(static_cast<const void*>(a.data()));
  t.dtype = dtype;
  for (int i = 0; i < 4; ++i) t.shape[i] = static_cast<int64_t>(a.shape(i)), t.stride[i] = a.stride(i);
  return t;
}

// The options sdpa and sdpa_backward share, from the arguments the Python wrappers pass.
attn::AttentionOptions Options(int64_t n_heads, bool causal, bool top_left, int64_t window_left,
                               int64_t window_right, std::optional<float> scale,
                               const std::optional<InArray>& mask, int mask_kind,
                               const std::optional<InArray>& kv_lens, float softcap,
                               const std::optional<Floats>& sinks, int threads) {
  attn::AttentionOptions o;
  if (sinks) {
    if (static_cast<int64_t>(sinks->shape(0)) != n_heads)
      throw attn::Error("sinks: length " + std::to_string(sinks->shape(0)) +
                        " != Hq = " + std::to_string(n_heads));
    o.sinks = sinks->data();
  }
  o.scale = scale;
  o.causal = causal;
  o.causal_align = top_left ? attn::CausalAlign::kTopLeft : attn::CausalAlign::kBottomRight;
  o.window_left = window_left;
  o.window_right = window_right;
  o.softcap = softcap;
  o.threads = threads;
  if (kv_lens) {
    const int64_t* lens = static_cast<const int64_t*>(kv_lens->data());
    o.kv_lens.assign(lens, lens + kv_lens->shape(0));
  }
  if (mask) {
    o.mask.kind = static_cast<attn::MaskKind>(mask_kind);
    o.mask.data = mask->data();
    for (int i = 0; i < 4; ++i) o.mask.shape[i] = mask->shape(i), o.mask.stride[i] = mask->stride(i);
  }
  return o;
}

void Sdpa(InArray q, InArray k, InArray v, Array out, int dtype_code, int kv_dtype_code, bool causal,
          bool top_left, int64_t window_left, int64_t window_right, std::optional<float> scale,
          std::optional<InArray> mask, int mask_kind, std::optional<InArray> kv_lens, float softcap,
          std::optional<Floats> sinks, std::optional<Array> lse, int threads) {
  const attn::DType dtype = ToDType(dtype_code), kv_dtype = ToDType(kv_dtype_code);
  attn::AttentionOptions o = Options(static_cast<int64_t>(q.shape(2)), causal, top_left, window_left,
                                     window_right, scale, mask, mask_kind, kv_lens, softcap, sinks, threads);
  if (lse) o.lse = static_cast<float*>(lse->data());
  attn::TensorView tq = View("q", q, dtype), tk = View("k", k, kv_dtype), tv = View("v", v, kv_dtype),
                   to = View("out", out, dtype);
  nb::gil_scoped_release release;
  attn::Attention(tq, tk, tv, to, o);
}

// Gradients of sdpa: dq, dk, dv (preallocated, any strides) from the forward's q, k, v, out, lse
// and dout, for the same options as Sdpa.
void SdpaBackward(InArray q, InArray k, InArray v, InArray out,
                  nb::ndarray<const float, nb::ndim<3>, nb::c_contig, nb::ro, nb::device::cpu> lse,
                  InArray dout, Array dq, Array dk, Array dv, int dtype_code, bool causal, bool top_left,
                  int64_t window_left, int64_t window_right, std::optional<float> scale,
                  std::optional<InArray> mask, int mask_kind, std::optional<InArray> kv_lens, float softcap,
                  std::optional<Floats> sinks, std::optional<FloatsOut> sinks_grad, int threads) {
  const attn::DType dtype = ToDType(dtype_code);
  attn::AttentionOptions o = Options(static_cast<int64_t>(q.shape(2)), causal, top_left, window_left,
                                     window_right, scale, mask, mask_kind, kv_lens, softcap, sinks, threads);
  if (sinks_grad) {
    if (sinks_grad->shape(0) != q.shape(2))
      throw attn::Error("sinks_grad: length " + std::to_string(sinks_grad->shape(0)) + " != Hq");
    o.sinks_grad = sinks_grad->data();
  }
  attn::TensorView tq = View("q", q, dtype), tk = View("k", k, dtype), tv = View("v", v, dtype),
                   to = View("out", out, dtype), tdo = View("dout", dout, dtype), tdq = View("dq", dq, dtype),
                   tdk = View("dk", dk, dtype), tdv = View("dv", dv, dtype);
  // The C++ API reads lse as contiguous [B, Hq, Sq] (q's logical axes are [B, Sq, Hq, D]).
  if (static_cast<int64_t>(lse.shape(0)) != tq.shape[0] ||
      static_cast<int64_t>(lse.shape(1)) != tq.shape[2] ||
      static_cast<int64_t>(lse.shape(2)) != tq.shape[1]) {
    throw attn::Error("sdpa_backward: lse: shape [" + std::to_string(lse.shape(0)) + ", " +
                      std::to_string(lse.shape(1)) + ", " + std::to_string(lse.shape(2)) +
                      "] != [B, Hq, Sq] = [" + std::to_string(tq.shape[0]) + ", " +
                      std::to_string(tq.shape[2]) + ", " + std::to_string(tq.shape[1]) + "]");
  }
  nb::gil_scoped_release release;
  attn::AttentionBackward(tq, tk, tv, to, lse.data(), tdo, tdq, tdk, tdv, o);
}

}  // namespace

NB_MODULE(_attn, m) {
  m.doc() = "attn C++ core (use the `attn` package, not this module directly)";
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const attn::Error& e) {
      PyErr_SetString(e.kind() == attn::Error::Kind::kType ? PyExc_TypeError : PyExc_ValueError, e.what());
    }
  });
  m.def("sdpa", &Sdpa, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("dtype"),
        nb::arg("kv_dtype"), nb::arg("causal"), nb::arg("top_left"), nb::arg("window_left"),
        nb::arg("window_right"), nb::arg("scale").none(), nb::arg("mask").none(), nb::arg("mask_kind"),
        nb::arg("kv_lens").none(), nb::arg("softcap"), nb::arg("sinks").none(), nb::arg("lse").none(),
        nb::arg("threads"));
  m.def("sdpa_backward", &SdpaBackward, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"),
        nb::arg("lse"), nb::arg("dout"), nb::arg("dq"), nb::arg("dk"), nb::arg("dv"), nb::arg("dtype"),
        nb::arg("causal"), nb::arg("top_left"), nb::arg("window_left"), nb::arg("window_right"),
        nb::arg("scale").none(), nb::arg("mask").none(), nb::arg("mask_kind"), nb::arg("kv_lens").none(),
        nb::arg("softcap"), nb::arg("sinks").none(), nb::arg("sinks_grad").none(), nb::arg("threads"));
  m.def(
      "simd_targets", &attn::SimdTargets,
      "SIMD targets compiled in and supported here, best first. 'AVX3_BF16' is AVX3 plus the bf16 attention\n"
      "kernel on vdpbf16ps (listed where the CPU has AVX512_BF16) and the VNNI matrix products where the "
      "CPU\n"
      "has AVX512_VNNI; 'AVX3_VNNI' is AVX3 plus the VNNI matrix products only.");
  m.def(
      "set_simd_target", [](std::optional<std::string> name) { attn::SetSimdTarget(name.value_or("")); },
      nb::arg("name").none(),
      "Restrict dispatch to one target (None = best); 'AVX3' keeps AVX-512 but turns the bf16 dot kernel "
      "and the VNNI matrix products off.");
  m.def("current_simd_target", &attn::CurrentSimdTarget, "The SIMD target calls use now.");

  nb::class_<attn::KVCache>(m, "KVCache")
      .def(nb::init<int64_t, int64_t, int64_t, int64_t, attn::DType>(), nb::arg("batch"),
           nb::arg("n_kv_heads"), nb::arg("head_dim"), nb::arg("capacity"), nb::arg("dtype"))
      // `dtype`: the arrays' own (the cache's, or float32 over a half cache).
      .def("append",
           [](attn::KVCache& c, InArray k, InArray v, attn::DType dtype) {
             attn::TensorView tk = View("k", k, dtype), tv = View("v", v, dtype);
             c.Append(tk, tv);
           })
      .def(
          "attend",
          [](const attn::KVCache& c, InArray q, Array out, attn::DType dtype, bool causal,
             std::optional<Floats> sinks, int threads) {
            attn::AttentionOptions o;
            o.causal = causal;
            o.threads = threads;
            if (sinks) {
              if (sinks->shape(0) != q.shape(2))
                throw attn::Error("KVCache.attend: sinks: length " + std::to_string(sinks->shape(0)) +
                                  " != Hq = " + std::to_string(q.shape(2)));
              o.sinks = sinks->data();
            }
            attn::TensorView tq = View("q", q, dtype), to = View("out", out, dtype);
            nb::gil_scoped_release release;
            c.Attend(tq, to, o);
          },
          nb::arg("q"), nb::arg("out"), nb::arg("dtype"), nb::arg("causal"), nb::arg("sinks").none(),
          nb::arg("threads"))
      .def("clear", &attn::KVCache::Clear)
      .def_prop_ro("length", &attn::KVCache::length)
      .def_prop_ro("capacity", &attn::KVCache::capacity);
  nb::enum_<attn::DType>(m, "DType")
      .value("float32", attn::DType::kF32)
      .value("float16", attn::DType::kF16)
      .value("bfloat16", attn::DType::kBF16)
      .value("q8_0", attn::DType::kQ8_0);  // a KV cache storage type only
  BindModel(m);
  BindWeights(m);
  BindTrain(m);
}
