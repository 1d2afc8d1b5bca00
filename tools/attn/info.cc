// `attn info MODEL`: a GGUF file's metadata and its table of tensors.
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "attn/commands.h"
#include "attn/error.h"
#include "attn/tokenizer.h"
#include "format/gguf.h"
#include "kernels/matmul.h"
#include "tokenizer/jinja.h"

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
    // How many tensors of each type, and the types attn's kernels do not take (a model holding them
    // does not load; the message names the tensor).
    std::map<std::string, int> counts;
    std::string unsupported;
    for (const auto& t : f.tensors()) {
      const std::string name = gguf::TensorTypeName(t.type);
      if (counts[name]++ == 0 && !IsSupportedWeightType(t.type))
        unsupported += (unsupported.empty() ? "" : ", ") + name;
    }
    std::string summary;
    for (const auto& [name, count] : counts) summary += "  " + name + " x" + std::to_string(count);
    std::printf("  types:%s\n", summary.c_str());
    if (!unsupported.empty()) std::printf("  attn cannot compute with %s\n", unsupported.c_str());
    // How chat prompts are built: llama.cpp's built-in rendering of a known format, or the
    // template run as Jinja (ApplyChatTemplate), or why the template cannot be run.
    const gguf::Value* tmpl = f.Find("tokenizer.chat_template");
    if (tmpl != nullptr && tmpl->type == gguf::ValueType::kString) {
      std::string how;
      try {
        jinja::Template(std::get<std::string>(tmpl->data));
        how = "parses as Jinja";
      } catch (const Error& e) {
        how = std::string("does not parse as Jinja: ") + e.what();
      }
      std::string format;
      try {
        format = Tokenizer::FromGGUF(f).chat_format();
      } catch (const Error&) {  // no usable tokenizer: the template alone is described
      }
      std::printf("  chat template: %s; %s\n",
                  format.empty() ? "no built-in format (rendered as Jinja)"
                                 : ("built-in format " + format + " (--jinja: the template itself)").c_str(),
                  how.c_str());
    }
  });
}

}  // namespace attn::cli
