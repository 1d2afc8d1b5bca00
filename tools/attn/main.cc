#include <cstdio>
#include <exception>

#include "attn/commands.h"
#include "attn/error.h"

int main(int argc, char** argv) {
  CLI::App app{"attn: exact, fused attention on the CPU, and a look inside it"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "attn 0.1.0");
  attn::cli::AddDemoCommand(app);
  attn::cli::AddInfoCommand(app);
  attn::cli::AddGenerateCommand(app);
  attn::cli::AddChatCommand(app);
  attn::cli::AddServeCommand(app);
  attn::cli::AddBenchCommand(app);
  attn::cli::AddPerplexityCommand(app);
  attn::cli::AddHeadsCommand(app);
  attn::cli::AddAblateCommand(app);
  attn::cli::AddLensCommand(app);
  attn::cli::AddCvectorCommand(app);
  attn::cli::AddInspectCommand(app);
  attn::cli::AddTrainCommand(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const attn::Error& e) {
    std::fprintf(stderr, "attn: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attn: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
