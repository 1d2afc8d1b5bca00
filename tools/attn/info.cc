// `attn info MODEL`: a GGUF file's metadata and its table of tensors.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "attn/commands.h"
#include "format/gguf.h"

namespace attn::cli {

void AddInfoCommand(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Print a GGUF model's metadata and tensors");
  auto path = std::make_shared<std::string>();
  cmd->add_option("model", *path, "Path to a .gguf file")->required();
  cmd->callback([path] {
    const gguf::File f = gguf::File::Open(*path);
    std::printf("%s: GGUF v%u, %zu metadata keys, %zu tensors, alignment %llu\n\n", path->c_str(),
                f.version(), f.metadata().size(), f.tensors().size(),
                static_cast<unsigned long long>(f.alignment()));
    for (const auto& [key, value] : f.metadata())
      std::printf("  %-40s %s\n", key.c_str(), value.ToString().c_str());
    int name_width = 36;  // wider for long names (a checkpoint's train.adam_m.blk.N.attn_output.weight)
    for (const auto& t : f.tensors()) name_width = std::max(name_width, static_cast<int>(t.name.size()));
    std::printf("\n  %-*s %-7s %-22s %12s\n", name_width, "tensor", "type", "shape (ne, fastest first)",
                "bytes");
    unsigned long long total = 0;
    for (const auto& t : f.tensors()) {
      std::string shape = "[";
      for (size_t i = 0; i < t.dims.size(); ++i) shape += (i ? ", " : "") + std::to_string(t.dims[i]);
      shape += "]";
      std::printf("  %-*s %-7s %-22s %12llu\n", name_width, t.name.c_str(), gguf::TensorTypeName(t.type),
                  shape.c_str(), static_cast<unsigned long long>(t.bytes));
      total += t.bytes;
    }
    std::printf("\n  %zu tensors, %.2f MB of tensor data\n", f.tensors().size(), total / 1e6);
  });
}

}  // namespace attn::cli
