// `attn generate` (one prompt, streamed or as JSON) and `attn chat` (interactive, in the model's chat
// format).
#include "attn/generate.h"

#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "attn/commands.h"
#include "attn/error.h"
#include "attn/model_options.h"
#include "attn/steer.h"
#include "core/read_all.h"

namespace attn::cli {
namespace {

struct GenerateArgs {
  ModelOptions model;
  GenerateOptions gen;
  std::string prompt = "Once upon a time";
  std::string prompt_file;  // -f: the prompt's text from a file ("-": standard input)
  bool json = false;
  bool chat_template = false;
  // --jinja: the file's own Jinja template even where llama.cpp has a built-in rendering of it.
  Tokenizer::ChatTemplateMode template_mode = Tokenizer::ChatTemplateMode::kAuto;
  std::string grammar_file, json_schema_file;  // read into gen.grammar / gen.json_schema
  // Activation steering (--steer-add / --steer-sub, include/attn/steer.h).
  std::vector<std::string> steer_add, steer_sub;
  int steer_layer = -1;  // -1: a third of the way through the blocks
  float steer_scale = 4.0f;
  std::string draft_model;  // --model-draft: speculative decoding with this model's drafts
};

// --model-draft, --draft-max, --draft-p-min (llama.cpp's names).
void AddDraftOptions(CLI::App* cmd, GenerateArgs& args) {
  cmd->add_option(
         "--model-draft,--md", args.draft_model,
         "Speculative decoding: a smaller GGUF model with the same vocabulary drafts tokens, checked in "
         "one pass of the model (the same text, fewer passes)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--draft-max,--draft", args.gen.draft_max, "Most tokens drafted per step (default 8)")
      ->check(CLI::Range(1, 23));
  cmd->add_option("--draft-p-min", args.gen.draft_p_min,
                  "Stop drafting where the draft model's top token is less likely than this (default 0.75)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_flag("--draft-adaptive", args.gen.draft_adaptive,
                "Rest the draft model where its kept drafts do not pay for its passes (the same text)");
}

// "drafted, accepted" of a generation with drafts (--lookup or --model-draft), on stderr.
void PrintDrafts(const char* what, const GenerateResult& r) {
  std::fprintf(stderr, "%s: %lld of %lld drafts kept\n", what, static_cast<long long>(r.n_draft_accepted),
               static_cast<long long>(r.n_drafted));
}

// --steer-add / --steer-sub / --steer-layer / --steer-scale.
void AddSteeringOptions(CLI::App* cmd, GenerateArgs& args) {
  auto* add = cmd->add_option("--steer-add", args.steer_add,
                              "Activation steering (ActAdd): push the generation toward this text, e.g. "
                              "\"Love\" (repeatable; pairs with --steer-sub)")
                  ->allow_extra_args(false);
  auto* sub = cmd->add_option("--steer-sub", args.steer_sub,
                              "... and away from this one, e.g. \"Hate\": the vector added is the residual "
                              "stream at the last token of the first minus that of the second")
                  ->allow_extra_args(false);
  add->needs(sub);
  sub->needs(add);
  cmd->add_option("--steer-layer", args.steer_layer,
                  "The block whose input (hook_resid_pre) the vector is added to (default: a third of the "
                  "way through)")
      ->check(CLI::Range(0, 1 << 16))
      ->needs(add);
  cmd->add_option("--steer-scale", args.steer_scale, "How many times the vector is added (default 4)")
      ->check(CLI::Range(-1000.0f, 1000.0f))
      ->needs(add);
}

// The steering hooks of the arguments (none when not asked for), printed to stderr.
std::unique_ptr<Hooks> SteeringOf(const Model& model, const GenerateArgs& args) {
  if (args.steer_add.empty()) return nullptr;
  if (args.steer_add.size() != args.steer_sub.size())
    throw Error("--steer-add is given " + std::to_string(args.steer_add.size()) + " times and --steer-sub " +
                std::to_string(args.steer_sub.size()) + " (give them in pairs)");
  const int layer = args.steer_layer >= 0 ? args.steer_layer : model.config().n_layers / 3;
  std::vector<std::vector<int32_t>> adds, subs;
  for (size_t i = 0; i < args.steer_add.size(); ++i) {
    adds.push_back(model.tokenizer().EncodePrompt(args.steer_add[i]));
    subs.push_back(model.tokenizer().EncodePrompt(args.steer_sub[i]));
  }
  std::vector<float> v = SteeringVector(model, adds, subs, layer, args.gen.threads);
  double norm = 0.0;
  for (float x : v) norm += static_cast<double>(x) * x;
  std::fprintf(stderr, "steering: %g x (\"%s\" - \"%s\"%s) at block %d's input, |vector| = %.1f\n",
               static_cast<double>(args.steer_scale), args.steer_add[0].c_str(), args.steer_sub[0].c_str(),
               args.steer_add.size() > 1 ? ", averaged over the pairs" : "", layer, std::sqrt(norm));
  return std::make_unique<Hooks>(SteeringHooks(layer, std::move(v), args.steer_scale));
}

// The files of --grammar-file / --json-schema-file into the options (before the model loads, so
// that a missing file or a bad grammar fails fast: the grammar itself is checked by generation).
void ReadConstraintFiles(GenerateArgs& args) {
  if (!args.grammar_file.empty()) args.gen.grammar = ReadFileOrStdin(args.grammar_file, "grammar file");
  if (!args.json_schema_file.empty())
    args.gen.json_schema = ReadFileOrStdin(args.json_schema_file, "json schema file");
}

// --jinja (llama.cpp's flag of that name): render the chat template's Jinja in every case.
void AddJinjaOption(CLI::App* cmd, Tokenizer::ChatTemplateMode& mode) {
  cmd->add_flag(
      "--jinja", [&mode](int64_t) { mode = Tokenizer::ChatTemplateMode::kJinja; },
      "Render the model's own Jinja chat template (as transformers does) even where a built-in format "
      "matches it; templates of other formats are always rendered so");
}

// --lookup N (llama.cpp's lookup decoding: drafts from the prompt and the text so far).
void AddLookupOptions(CLI::App* cmd, GenerateOptions& gen) {
  cmd->add_option("--lookup", gen.lookup,
                  "Prompt lookup decoding: draft up to N tokens that followed an earlier occurrence of the "
                  "last tokens and check them in one pass (the same text, fewer passes; 0 = off)")
      ->check(CLI::Range(0, 23));
  cmd->add_option("--lookup-ngram", gen.lookup_ngram, "Longest n-gram --lookup matches")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--lookup-min-ngram", gen.lookup_min_ngram, "Shortest n-gram --lookup matches")
      ->check(CLI::Range(1, 64));
}

// --json-mode, --grammar(-file), --json-schema(-file): llama.cpp's names.
void AddConstraintOptions(CLI::App* cmd, GenerateArgs& args) {
  auto* mode = cmd->add_flag(
      "--json-mode", args.gen.json,
      "JSON mode: the answer is kept one JSON object (tokens that would leave one are never drawn)");
  auto* grammar =
      cmd->add_option("--grammar", args.gen.grammar,
                      "A GBNF grammar (llama.cpp's format, start rule root) the answer must follow");
  auto* grammar_file =
      cmd->add_option("--grammar-file", args.grammar_file, "Read the GBNF grammar from a file");
  auto* schema = cmd->add_option("-j,--json-schema", args.gen.json_schema,
                                 "A JSON schema the answer must follow (converted to a grammar)");
  auto* schema_file =
      cmd->add_option("--json-schema-file", args.json_schema_file, "Read the JSON schema from a file");
  const std::vector<CLI::Option*> all = {mode, grammar, grammar_file, schema, schema_file};
  for (CLI::Option* a : all) {
    for (CLI::Option* b : all) {
      if (a != b) a->excludes(b);
    }
  }
}

double PerSecond(int64_t n, double ms) { return ms > 0.0 ? n * 1000.0 / ms : 0.0; }

void RunGenerate(GenerateArgs& args) {
  ReadConstraintFiles(args);
  const std::string text =
      args.prompt_file.empty() ? args.prompt : ReadFileOrStdin(args.prompt_file, "generate");
  std::unique_ptr<Model> model = LoadModel(args.model);
  const std::unique_ptr<Model> draft = LoadDraftModel(args.draft_model, args.model.threads);
  args.gen.draft_model = draft.get();
  const std::unique_ptr<Hooks> steering = SteeringOf(*model, args);
  args.gen.hooks = steering.get();
  std::string prompt = text;
  if (args.chat_template)
    prompt = model->tokenizer().ApplyChatTemplate({{"user", prompt}}, true, args.template_mode);
  if (args.json) {
    const GenerateResult r = Generate(*model, prompt, args.gen);
    nlohmann::json j;
    j["model"] = model->path();
    j["prompt_tokens"] = r.prompt_tokens;
    j["tokens"] = r.tokens;
    // Invalid UTF-8 (a token cut inside a character) is replaced rather than failing the dump.
    j["text"] = r.text;
    j["stop_reason"] = r.stop_reason;
    j["context_shifts"] = r.n_context_shifts;
    j["timings"] = {{"prompt_ms", r.prompt_ms},
                    {"prompt_tokens_per_s", PerSecond(r.n_prompt_evaluated, r.prompt_ms)},
                    {"gen_ms", r.gen_ms},
                    {"gen_tokens_per_s", PerSecond(r.n_gen_drawn(), r.gen_ms)}};
    if (args.gen.lookup > 0 || draft) {
      j[draft ? "draft" : "lookup"] = {{"drafted", r.n_drafted}, {"accepted", r.n_draft_accepted}};
    }
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return;
  }
  std::fwrite(text.data(), 1, text.size(), stdout);
  if (args.chat_template) std::fputs("\n", stdout);  // the answer starts on its own line
  std::fflush(stdout);
  const GenerateResult r = Generate(*model, prompt, args.gen, [](const std::string& piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  });
  std::printf("\n\n");
  std::fflush(stdout);
  std::fprintf(
      stderr, "prompt: %zu tokens in %.1f ms (%.1f tokens/s); generated: %zu tokens, %.1f tokens/s (%s)%s\n",
      r.prompt_tokens.size(), r.prompt_ms, PerSecond(r.n_prompt_evaluated, r.prompt_ms), r.tokens.size(),
      PerSecond(r.n_gen_drawn(), r.gen_ms), r.stop_reason.c_str(),
      r.n_context_shifts ? ("; " + std::to_string(r.n_context_shifts) + " context shifts").c_str() : "");
  if (args.gen.lookup > 0 || draft) PrintDrafts(draft ? "draft" : "lookup", r);
}

void RunChat(GenerateArgs& args, const std::string& system) {
  ReadConstraintFiles(args);
  std::unique_ptr<Model> model = LoadModel(args.model);
  const std::unique_ptr<Model> draft = LoadDraftModel(args.draft_model, args.model.threads);
  args.gen.draft_model = draft.get();
  std::vector<Tokenizer::Message> messages;
  if (!system.empty()) messages.push_back({"system", system});
  std::fprintf(stderr, "attn chat with %s (empty line or Ctrl-D to quit)\n", model->path().c_str());
  // One session for the whole conversation: each turn evaluates only what is new since the cached
  // tokens (the user's message and the template around it), as llama.cpp's prompt cache does.
  Session session(*model, std::min<int64_t>(512, model->config().context_length), args.gen.kv_dtype);
  std::string line;
  while (true) {
    std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line) || line.empty()) break;
    messages.push_back({"user", line});
    const std::string prompt = model->tokenizer().ApplyChatTemplate(messages, true, args.template_mode);
    const GenerateResult r = GenerateInSession(*model, session, model->tokenizer().EncodePrompt(prompt),
                                               args.gen, [](const std::string& piece) {
                                                 std::fwrite(piece.data(), 1, piece.size(), stdout);
                                                 std::fflush(stdout);
                                               });
    std::printf("\n");
    std::fflush(stdout);
    std::fprintf(stderr, "[prompt: %lld new tokens (%lld cached); %zu tokens, %.1f tokens/s]\n",
                 static_cast<long long>(r.n_prompt_evaluated), static_cast<long long>(r.n_prompt_cached),
                 r.tokens.size(), PerSecond(r.n_gen_drawn(), r.gen_ms));
    messages.push_back({"assistant", r.text});
  }
}

}  // namespace

void AddGenerateCommand(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "Continue a prompt with a language model (streams the text)");
  AddModelOptions(cmd, args->model);
  AddChatTemplateOption(cmd, args->model);
  AddControlVectorOptions(cmd, args->model);
  AddSamplingOptions(cmd, args->gen.sampling);
  AddKvTypeOption(cmd, args->gen.kv_dtype);
  AddContextShiftOptions(cmd, args->gen.context_keep);
  cmd->add_option("-n,--max-tokens", args->gen.max_tokens, "Tokens to generate")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--stop", args->gen.stop, "Stop when this text appears (repeatable)")
      ->allow_extra_args(false);
  cmd->add_flag(
      "--ignore-eos", [args](int64_t) { args->gen.stop_at_eos = false; },
      "Keep generating past end-of-generation tokens (for benchmarks)");
  cmd->add_flag("--chat", args->chat_template,
                "Wrap the prompt in the model's chat template as a user message");
  AddJinjaOption(cmd, args->template_mode);
  cmd->add_flag("--json", args->json, "Print one JSON object (tokens, text, timings) instead of streaming");
  AddConstraintOptions(cmd, *args);
  AddLookupOptions(cmd, args->gen);
  AddDraftOptions(cmd, *args);
  AddSteeringOptions(cmd, *args);
  auto* positional = cmd->add_option("prompt", args->prompt, "The prompt (default: \"Once upon a time\")");
  cmd->add_option("-f,--file", args->prompt_file, "Read the prompt from this file (- = standard input)")
      ->excludes(positional);
  cmd->callback([args] { RunGenerate(*args); });
}

void AddChatCommand(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  auto system = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("chat",
                                 "Chat with an instruct model in its chat template (built-in renderings of "
                                 "ChatML, Llama 3, Gemma, Phi-3, Mistral, Llama 2, gpt-oss, Granite; any "
                                 "other template run as Jinja), one line per turn");
  AddModelOptions(cmd, args->model);
  AddChatTemplateOption(cmd, args->model);
  AddControlVectorOptions(cmd, args->model);
  AddSamplingOptions(cmd, args->gen.sampling);
  AddKvTypeOption(cmd, args->gen.kv_dtype);
  AddContextShiftOptions(cmd, args->gen.context_keep);
  args->gen.max_tokens = 256;
  cmd->add_option("-n,--max-tokens", args->gen.max_tokens, "Most tokens per answer")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--system", *system, "System message (default: the template's own)");
  AddJinjaOption(cmd, args->template_mode);
  AddConstraintOptions(cmd, *args);
  AddLookupOptions(cmd, args->gen);
  AddDraftOptions(cmd, *args);
  cmd->callback([args, system] { RunChat(*args, *system); });
}

}  // namespace attn::cli
