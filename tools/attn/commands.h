// The attn command-line program: one file per subcommand, each registering itself here.
#pragma once

#include <CLI/CLI.hpp>

namespace attn::cli {

// Adds `attn demo`: a small attention matrix and a quick speed summary of the kernel.
void AddDemoCommand(CLI::App& app);
// Adds `attn info MODEL`: a GGUF file's metadata and tensor table.
void AddInfoCommand(CLI::App& app);
// Adds `attn generate [PROMPT]`: continue a prompt with a model, streamed or as JSON.
void AddGenerateCommand(CLI::App& app);
// Adds `attn chat`: an interactive conversation through the model's chat template.
void AddChatCommand(CLI::App& app);
// Adds `attn bench`: prompt-processing and generation speed of a model.
void AddBenchCommand(CLI::App& app);

}  // namespace attn::cli
