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
// Adds `attn serve`: an HTTP server with OpenAI's completion and chat API.
void AddServeCommand(CLI::App& app);
// Adds `attn bench`: prompt-processing and generation speed of a model.
void AddBenchCommand(CLI::App& app);
// Adds `attn perplexity`: a text's perplexity as llama-perplexity measures it, and the KL divergence
// from a base model.
void AddPerplexityCommand(CLI::App& app);
// Adds `attn heads`: every head's detector scores and role label, as a table or JSON.
void AddHeadsCommand(CLI::App& app);
// Adds `attn ablate`: the loss change on a text when chosen heads are ablated.
void AddAblateCommand(CLI::App& app);
// Adds `attn lens TEXT`: the logit lens, what each layer's residual stream predicts next.
void AddLensCommand(CLI::App& app);
// Adds `attn cvector`: a control vector (llama.cpp's format) from pairs of texts.
void AddCvectorCommand(CLI::App& app);
// Adds `attn inspect PROMPT`: runs the model, scores the heads and writes the viewer report.
void AddInspectCommand(CLI::App& app);
// Adds `attn train` (a small decoder trained from scratch on a corpus, with its curves) and
// `attn curves` (several runs' curves side by side).
void AddTrainCommand(CLI::App& app);

}  // namespace attn::cli
