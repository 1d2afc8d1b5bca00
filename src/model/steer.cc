// Activation steering (include/attn/steer.h).
#include "attn/steer.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <utility>

#include "attn/error.h"
#include "format/gguf.h"
#include "format/gguf_writer.h"

namespace attn {

namespace {

// The mean over pairs of (last row of `name` for adds[k]) - (the same for subs[k]) at each layer
// `wants_layer` accepts: out[layer] ([d_model]), empty elsewhere.
std::vector<std::vector<float>> MeanDifferences(const Model& model,
                                                std::span<const std::vector<int32_t>> adds,
                                                std::span<const std::vector<int32_t>> subs, const char* name,
                                                const std::function<bool(int)>& wants_layer, int threads) {
  const ModelConfig& c = model.config();
  if (adds.empty() || adds.size() != subs.size())
    throw Error("steering: " + std::to_string(adds.size()) + " texts to add and " +
                std::to_string(subs.size()) + " to subtract (give as many of each, at least one)");
  const size_t d = static_cast<size_t>(c.d_model);
  std::vector<std::vector<float>> sum(static_cast<size_t>(c.n_layers));
  const auto last_rows = [&](std::span<const int32_t> tokens, float sign) {
    if (tokens.empty()) throw Error("steering: a text with no tokens");
    Hooks hooks;
    hooks.read_only = true;
    hooks.wants = [&](const char* n, int l) { return l >= 0 && std::strcmp(n, name) == 0 && wants_layer(l); };
    hooks.fn = [&](const HookPoint& p) {
      if (p.pos0 + p.rows != static_cast<int64_t>(tokens.size())) return;  // not the pass's last piece
      std::vector<float>& acc = sum[static_cast<size_t>(p.layer)];
      if (acc.empty()) acc.assign(d, 0.0f);
      const float* row = p.data + (p.rows - 1) * p.cols;
      for (size_t i = 0; i < d; ++i) acc[i] += sign * row[i];
    };
    (void)RunWithHooks(model, tokens, hooks, threads);
  };
  for (size_t k = 0; k < adds.size(); ++k) {
    last_rows(adds[k], 1.0f);
    last_rows(subs[k], -1.0f);
  }
  for (std::vector<float>& row : sum)
    for (float& v : row) v /= static_cast<float>(adds.size());
  return sum;
}

}  // namespace

std::vector<float> SteeringVector(const Model& model, std::span<const std::vector<int32_t>> adds,
                                  std::span<const std::vector<int32_t>> subs, int layer, int threads) {
  const ModelConfig& c = model.config();
  if (layer < 0 || layer >= c.n_layers)
    throw Error("steering: layer " + std::to_string(layer) + " is not in [0, " + std::to_string(c.n_layers) +
                ")");
  return MeanDifferences(
      model, adds, subs, "hook_resid_pre", [layer](int l) { return l == layer; },
      threads)[static_cast<size_t>(layer)];
}

std::vector<std::vector<float>> ControlVectorFromPairs(const Model& model,
                                                       std::span<const std::vector<int32_t>> adds,
                                                       std::span<const std::vector<int32_t>> subs,
                                                       int threads) {
  return MeanDifferences(
      model, adds, subs, "hook_resid_post", [](int l) { return l >= 1; }, threads);
}

Hooks SteeringHooks(int layer, std::vector<float> vector, float scale, int64_t from) {
  Hooks hooks;
  hooks.wants = [layer](const char* name, int l) {
    return l == layer && std::strcmp(name, "hook_resid_pre") == 0;
  };
  hooks.fn = [v = std::move(vector), scale, from](const HookPoint& p) {
    if (static_cast<size_t>(p.cols) != v.size())
      throw Error("steering: a vector of " + std::to_string(v.size()) + " values for a residual stream of " +
                  std::to_string(p.cols));
    for (int64_t r = std::max<int64_t>(0, from - p.pos0); r < p.rows; ++r) {
      float* row = p.data + r * p.cols;
      for (int64_t i = 0; i < p.cols; ++i) row[i] += scale * v[static_cast<size_t>(i)];
    }
  };
  return hooks;
}

std::vector<std::vector<float>> LoadControlVectors(std::span<const ControlVectorFile> files,
                                                   const ModelConfig& config, int layer_start,
                                                   int layer_end) {
  const size_t d = static_cast<size_t>(config.d_model);
  std::vector<std::vector<float>> out(static_cast<size_t>(config.n_layers));
  for (const ControlVectorFile& f : files) {
    const gguf::File file = gguf::File::Open(f.path);
    int found = 0;
    for (const gguf::TensorInfo& t : file.tensors()) {
      if (t.name.rfind("direction.", 0) != 0) continue;
      const std::string where = f.path + ": " + t.name;
      const std::string index = t.name.substr(10);
      if (index.empty() || index.size() > 6 || index.find_first_not_of("0123456789") != std::string::npos)
        throw Error(where + ": not a layer number");
      const int layer = std::stoi(index);
      if (layer == 0) throw Error(where + ": block 0 has no direction (llama.cpp's numbering starts at 1)");
      if (layer >= config.n_layers)
        throw Error(where + ": the model has blocks 0 to " + std::to_string(config.n_layers - 1) +
                    " (a control vector for another model?)");
      if (t.type != gguf::TensorType::kF32 || t.dims.size() != 1 || t.dims[0] != d)
        throw Error(where + ": expected F32 [" + std::to_string(d) + "], got " +
                    gguf::TensorTypeName(t.type) + " of " + std::to_string(t.n_elements()) + " values");
      ++found;
      if ((layer_start >= 0 && layer < layer_start) || (layer_end >= 0 && layer > layer_end)) continue;
      std::vector<float>& dst = out[static_cast<size_t>(layer)];
      if (dst.empty()) dst.assign(d, 0.0f);
      std::vector<float> src(d);
      std::memcpy(src.data(), t.data, d * sizeof(float));
      for (size_t i = 0; i < d; ++i) dst[i] += f.scale * src[i];
    }
    if (found == 0) throw Error(f.path + ": no direction.N tensors (not a control vector)");
  }
  return out;
}

void SaveControlVector(const std::string& path, const std::vector<std::vector<float>>& directions,
                       const std::string& model_hint) {
  if (!directions.empty() && !directions[0].empty())
    throw Error("control vector: block 0 cannot have a direction (llama.cpp's numbering starts at 1)");
  gguf::Writer w;
  w.SetString("general.architecture", "controlvector");
  w.SetString("controlvector.model_hint", model_hint);
  w.SetI32("controlvector.layer_count", static_cast<int32_t>(directions.size()));
  for (size_t l = 1; l < directions.size(); ++l) {
    if (directions[l].empty()) continue;
    w.AddTensorF32("direction." + std::to_string(l), {directions[l].size()}, directions[l]);
  }
  w.Write(path);
}

}  // namespace attn
