// Bindings of attn::Trainer (attn/train.h) for the Python class attn.Trainer (python/attn/train.py
// adds argument conversion). Compute runs with the GIL released; attn::Error becomes ValueError
// through the module's translator (attn_module.cc).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "attn/error.h"
#include "attn/train.h"

namespace nb = nanobind;

namespace {

using FloatArray = nb::ndarray<nb::numpy, float>;
using InFloats = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
using InTokens = nb::ndarray<const int32_t, nb::c_contig, nb::device::cpu>;

// A NumPy float32 array of `shape` that owns `data`.
FloatArray Owned(std::vector<float>&& data, std::initializer_list<size_t> shape) {
  auto* owned = new std::vector<float>(std::move(data));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
  return FloatArray(owned->data(), shape.size(), shape.begin(), owner);
}

// A parameter's values or gradient as (rows, cols), or (cols,) for a vector.
FloatArray ParamArray(const attn::TrainParam& p, const std::vector<float>& v) {
  std::vector<float> copy(v);
  if (p.rows == 1) return Owned(std::move(copy), {static_cast<size_t>(p.cols)});
  return Owned(std::move(copy), {static_cast<size_t>(p.rows), static_cast<size_t>(p.cols)});
}

std::string ShapeString(const InFloats& a) {
  std::string s = "(";
  for (size_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Training rows [batch, context + 1] -> (span, batch).
std::span<const int32_t> Rows(const InTokens& tokens, const attn::Trainer& t, const char* fn,
                              int64_t* batch) {
  const int64_t width = t.config().context + 1;
  if (tokens.ndim() != 2 || static_cast<int64_t>(tokens.shape(1)) != width) {
    std::string shape;
    for (size_t i = 0; i < tokens.ndim(); ++i) shape += (i ? ", " : "") + std::to_string(tokens.shape(i));
    throw attn::Error(std::string(fn) + ": tokens shape (" + shape +
                      ") (must be [batch, context + 1 = " + std::to_string(width) + "])");
  }
  *batch = static_cast<int64_t>(tokens.shape(0));
  return {tokens.data(), tokens.size()};
}

std::span<const int32_t> Sequence(const InTokens& tokens, const char* fn) {
  if (tokens.ndim() != 1) {
    throw attn::Error(std::string(fn) + ": tokens must be 1-D, got " + std::to_string(tokens.ndim()) +
                      " dimensions");
  }
  return {tokens.data(), tokens.size()};
}

}  // namespace

void BindTrain(nb::module_& m) {
  nb::class_<attn::Trainer>(m, "Trainer")
      .def(
          "__init__",
          [](attn::Trainer* self, int64_t vocab_size, int64_t context, int64_t n_layers, int64_t d_model,
             int64_t n_heads, int64_t d_ff, float norm_eps, bool attn_sinks, int64_t batch, int64_t steps,
             float lr, int64_t warmup, float min_lr_ratio, float beta1, float beta2, float adam_eps,
             float weight_decay, float clip, float init_std, uint64_t seed, int threads) {
            attn::TrainModelConfig c;
            c.vocab_size = vocab_size, c.context = context, c.n_layers = n_layers, c.d_model = d_model;
            c.n_heads = n_heads, c.d_ff = d_ff, c.norm_eps = norm_eps, c.attn_sinks = attn_sinks;
            attn::TrainOptions o;
            o.batch = batch, o.steps = steps, o.lr = lr, o.warmup = warmup, o.min_lr_ratio = min_lr_ratio;
            o.beta1 = beta1, o.beta2 = beta2, o.adam_eps = adam_eps, o.weight_decay = weight_decay;
            o.clip = clip, o.init_std = init_std, o.seed = seed, o.threads = threads;
            nb::gil_scoped_release release;
            new (self) attn::Trainer(c, o);
          },
          nb::arg("vocab_size") = 256, nb::arg("context") = 256, nb::arg("n_layers") = 2,
          nb::arg("d_model") = 128, nb::arg("n_heads") = 4, nb::arg("d_ff") = 0, nb::arg("norm_eps") = 1e-5f,
          nb::arg("attn_sinks") = false, nb::arg("batch") = 16, nb::arg("steps") = 1000,
          nb::arg("lr") = 1e-3f, nb::arg("warmup") = 100, nb::arg("min_lr_ratio") = 0.1f,
          nb::arg("beta1") = 0.9f, nb::arg("beta2") = 0.95f, nb::arg("adam_eps") = 1e-8f,
          nb::arg("weight_decay") = 0.1f, nb::arg("clip") = 1.0f, nb::arg("init_std") = 0.02f,
          nb::arg("seed") = 0, nb::arg("threads") = 0)
      .def_prop_ro("config",
                   [](const attn::Trainer& t) {
                     const attn::TrainModelConfig& c = t.config();
                     nb::dict d;
                     d["vocab_size"] = c.vocab_size, d["context"] = c.context, d["n_layers"] = c.n_layers;
                     d["d_model"] = c.d_model, d["n_heads"] = c.n_heads, d["d_ff"] = c.d_ff;
                     d["norm_eps"] = c.norm_eps;
                     d["attn_sinks"] = c.attn_sinks;
                     return d;
                   })
      .def_prop_ro("options",
                   [](const attn::Trainer& t) {
                     const attn::TrainOptions& o = t.options();
                     nb::dict d;
                     d["batch"] = o.batch, d["steps"] = o.steps, d["lr"] = o.lr, d["warmup"] = o.warmup;
                     d["min_lr_ratio"] = o.min_lr_ratio, d["beta1"] = o.beta1, d["beta2"] = o.beta2;
                     d["adam_eps"] = o.adam_eps, d["weight_decay"] = o.weight_decay, d["clip"] = o.clip;
                     d["init_std"] = o.init_std, d["seed"] = o.seed, d["threads"] = o.threads;
                     return d;
                   })
      .def("param_names",
           [](const attn::Trainer& t) {
             std::vector<std::string> names;
             for (const attn::TrainParam& p : t.params()) names.push_back(p.name);
             return names;
           })
      .def(
          "param_shape",
          [](attn::Trainer& t, const std::string& name) {
            const attn::TrainParam& p = t.param(name);
            return std::make_tuple(p.rows, p.cols);
          },
          nb::arg("name"))
      .def(
          "get_param",
          [](attn::Trainer& t, const std::string& name) {
            const attn::TrainParam& p = t.param(name);
            return ParamArray(p, p.value);
          },
          nb::arg("name"))
      .def(
          "get_grad",
          [](attn::Trainer& t, const std::string& name) {
            const attn::TrainParam& p = t.param(name);
            return ParamArray(p, p.grad);
          },
          nb::arg("name"))
      .def(
          "set_param",
          [](attn::Trainer& t, const std::string& name, InFloats a) {
            attn::TrainParam& p = t.param(name);
            const bool ok = p.rows == 1 ? a.ndim() == 1 && static_cast<int64_t>(a.shape(0)) == p.cols
                                        : a.ndim() == 2 && static_cast<int64_t>(a.shape(0)) == p.rows &&
                                              static_cast<int64_t>(a.shape(1)) == p.cols;
            if (!ok) {
              const std::string want =
                  p.rows == 1 ? "(" + std::to_string(p.cols) + ",)"
                              : "(" + std::to_string(p.rows) + ", " + std::to_string(p.cols) + ")";
              throw attn::Error("set_param: " + name + ": shape " + ShapeString(a) + " (must be " + want +
                                ")");
            }
            std::memcpy(p.value.data(), a.data(), p.value.size() * sizeof(float));
          },
          nb::arg("name"), nb::arg("value"))
      .def(
          "forward_backward",
          [](attn::Trainer& t, InTokens tokens) {
            int64_t batch = 0;
            const auto span = Rows(tokens, t, "forward_backward", &batch);
            nb::gil_scoped_release release;
            return t.ForwardBackward(span, batch);
          },
          nb::arg("tokens"))
      .def(
          "losses",
          [](attn::Trainer& t, InTokens tokens) {
            int64_t batch = 0;
            const auto span = Rows(tokens, t, "losses", &batch);
            std::vector<float> out(static_cast<size_t>(batch * t.config().context));
            {
              nb::gil_scoped_release release;
              t.Losses(span, batch, out.data());
            }
            return Owned(std::move(out),
                         {static_cast<size_t>(batch), static_cast<size_t>(t.config().context)});
          },
          nb::arg("tokens"))
      .def("update",
           [](attn::Trainer& t) {
             nb::gil_scoped_release release;
             return t.Update();
           })
      .def_prop_rw(
          "step", [](const attn::Trainer& t) { return t.step(); },
          [](attn::Trainer& t, int64_t s) {
            if (s < 0) throw attn::Error("step = " + std::to_string(s) + " (must be >= 0)");
            t.set_step(s);
          })
      .def("learning_rate", &attn::Trainer::LearningRate, nb::arg("step"))
      .def(
          "logits",
          [](attn::Trainer& t, InTokens tokens) {
            const auto span = Sequence(tokens, "logits");
            std::vector<float> out;
            {
              nb::gil_scoped_release release;
              out = t.Logits(span);
            }
            return Owned(std::move(out), {span.size(), static_cast<size_t>(t.config().vocab_size)});
          },
          nb::arg("tokens"))
      .def(
          "patterns",
          [](attn::Trainer& t, InTokens tokens) {
            const auto span = Sequence(tokens, "patterns");
            std::vector<float> out;
            {
              nb::gil_scoped_release release;
              out = t.Patterns(span);
            }
            return Owned(std::move(out), {static_cast<size_t>(t.config().n_layers),
                                          static_cast<size_t>(t.config().n_heads), span.size(), span.size()});
          },
          nb::arg("tokens"))
      .def(
          "save",
          [](const attn::Trainer& t, const std::string& path) {
            nb::gil_scoped_release release;
            attn::SaveCheckpoint(t, path);
          },
          nb::arg("path"))
      .def(
          "load",
          [](attn::Trainer& t, const std::string& path) {
            nb::gil_scoped_release release;
            attn::LoadCheckpoint(t, path);
          },
          nb::arg("path"));
}
