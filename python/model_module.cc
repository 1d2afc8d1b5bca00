// Bindings of attn::Model for the Python class attn.Model (python/attn/model.py wraps them).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attn/error.h"
#include "attn/generate.h"
#include "attn/model.h"

namespace nb = nanobind;

void BindModel(nb::module_& m) {
  nb::class_<attn::Model>(m, "Model")
      .def_static(
          "load",
          [](const std::string& path) {
            nb::gil_scoped_release release;
            return attn::Model::Load(path.empty() ? attn::Model::DefaultPath() : path);
          },
          nb::arg("path"))
      .def_static("default_path", &attn::Model::DefaultPath)
      .def_prop_ro("path", &attn::Model::path)
      .def_prop_ro("config",
                   [](const attn::Model& model) {
                     const attn::ModelConfig& c = model.config();
                     nb::dict d;
                     d["arch"] = c.arch_name;
                     d["name"] = c.name;
                     d["n_layers"] = c.n_layers;
                     d["d_model"] = c.d_model;
                     d["n_heads"] = c.n_heads;
                     d["n_kv_heads"] = c.n_kv_heads;
                     d["head_dim"] = c.head_dim;
                     d["d_ff"] = c.d_ff;
                     d["vocab_size"] = c.vocab_size;
                     d["context_length"] = c.context_length;
                     d["rope_base"] = c.rope_base;
                     d["norm_eps"] = c.norm_eps;
                     d["tied_output"] = c.tied_output;
                     return d;
                   })
      .def(
          "tokenize",
          [](const attn::Model& model, nb::bytes text, bool special) {
            return model.tokenizer().Encode(std::string_view(text.c_str(), text.size()), special);
          },
          nb::arg("text"), nb::arg("special"))
      .def(
          "detokenize",
          [](const attn::Model& model, const std::vector<int32_t>& ids) {
            const std::string s = model.tokenizer().Decode(ids);
            return nb::bytes(s.data(), s.size());
          },
          nb::arg("ids"))
      .def(
          "logits",
          [](const attn::Model& model, const std::vector<int32_t>& tokens, int threads) {
            if (tokens.empty()) throw attn::Error("logits: tokens is empty");
            const int64_t n = static_cast<int64_t>(tokens.size()), vocab = model.config().vocab_size;
            auto* data = new float[static_cast<size_t>(n * vocab)];
            nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<float*>(p); });
            {
              nb::gil_scoped_release release;
              attn::Session session(model, n);
              model.Forward(session, tokens, data, /*all_logits=*/true, threads);
            }
            return nb::ndarray<nb::numpy, float, nb::ndim<2>>(
                data, {static_cast<size_t>(n), static_cast<size_t>(vocab)}, owner);
          },
          nb::arg("tokens"), nb::arg("threads"))
      .def(
          "generate",
          [](const attn::Model& model, const std::vector<int32_t>& prompt_tokens, int max_tokens,
             float temperature, uint64_t seed, int top_k, float top_p, float min_p, float repetition_penalty,
             const std::vector<std::string>& stop, int threads) {
            attn::GenerateOptions o;
            o.max_tokens = max_tokens;
            o.sampling.temperature = temperature;
            o.sampling.seed = seed;
            o.sampling.top_k = top_k;
            o.sampling.top_p = top_p;
            o.sampling.min_p = min_p;
            o.sampling.repetition_penalty = repetition_penalty;
            o.stop = stop;
            o.threads = threads;
            attn::GenerateResult r;
            {
              nb::gil_scoped_release release;
              r = attn::GenerateFromTokens(model, prompt_tokens, o);
            }
            nb::dict d;
            d["prompt_tokens"] = r.prompt_tokens;
            d["tokens"] = r.tokens;
            d["text"] = nb::bytes(r.text.data(), r.text.size());
            d["stop_reason"] = r.stop_reason;
            d["prompt_ms"] = r.prompt_ms;
            d["gen_ms"] = r.gen_ms;
            d["n_gen_evaluated"] = r.n_gen_evaluated;
            return d;
          },
          nb::arg("prompt_tokens"), nb::arg("max_tokens"), nb::arg("temperature"), nb::arg("seed"),
          nb::arg("top_k"), nb::arg("top_p"), nb::arg("min_p"), nb::arg("repetition_penalty"),
          nb::arg("stop"), nb::arg("threads"))
      .def("apply_chat_template",
           [](const attn::Model& model, const std::vector<std::pair<std::string, std::string>>& messages,
              bool add_generation_prompt) {
             std::vector<attn::Tokenizer::Message> msgs;
             for (const auto& [role, content] : messages) msgs.push_back({role, content});
             return model.tokenizer().ApplyChatTemplate(msgs, add_generation_prompt);
           })
      .def_prop_ro("bos_id", [](const attn::Model& m) { return m.tokenizer().bos_id(); })
      .def_prop_ro("eos_id", [](const attn::Model& m) { return m.tokenizer().eos_id(); })
      .def_prop_ro("add_bos", [](const attn::Model& m) { return m.tokenizer().add_bos(); });
}
