// `attn serve`: an HTTP server with OpenAI's completion and chat-completion API (and llama.cpp's
// /tokenize, /detokenize, /apply-template, /health, /slots; /v1/embeddings), streaming as
// server-sent events. One model and --parallel slots (src/serve/slots.h): up to that many requests generate
// together, their tokens sharing every forward pass, and a request whose prompt begins with a slot's cached
// conversation reuses those positions (as `attn chat` does).
#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "attn/commands.h"
#include "attn/embed.h"
#include "attn/error.h"
#include "attn/generate.h"
#include "attn/model_options.h"
#include "attn_chat_html.h"  // generated: kChatHtml (cmake/embed_text.cmake)
#include "inspect/inspect.h"
#include "inspect/report_page.h"
#include "serve/openai.h"
#include "serve/prepare.h"
#include "serve/slots.h"
#include "serve/stream.h"
#include "serve/tools.h"

namespace attn::cli {
namespace {

using nlohmann::json;

// The most tokens /inspect shows (every layer's patterns are materialized: heads x n x n floats).
constexpr int64_t kMaxServedInspectTokens = 1024;

struct ServeArgs {
  ModelOptions model;
  DType kv_dtype = DType::kF16;
  int64_t context_keep = -1;  // --context-shift / --keep
  int lookup = 0;             // --lookup: prompt lookup decoding in every request
  std::string draft_model;    // --model-draft: speculative decoding with this model's drafts
  int draft_max = 8;
  float draft_p_min = 0.75f;
  bool jinja = false;            // --jinja: chat prompts from the file's Jinja template in every case
  bool no_tool_grammar = false;  // --no-tool-grammar: a model's own tool calls unconstrained
  std::string reasoning_format = "deepseek";  // --reasoning-format: <think> blocks to reasoning_content
  int parallel = 4;                           // slots: requests generated together
  std::string pooling = "mean";               // /v1/embeddings
  std::string host = "127.0.0.1";
  int port = 8080;
};

class Server {
 public:
  explicit Server(const ServeArgs& args)
      : model_(LoadModel(args.model)),
        draft_(LoadDraftModel(args.draft_model, args.model.threads)),
        slots_(*model_, args.parallel, args.kv_dtype, args.model.threads),
        pooling_(ParsePooling(args.pooling)),
        kv_dtype_(args.kv_dtype),
        threads_(args.model.threads),
        settings_{args.jinja,         args.reasoning_format == "deepseek",
                  args.model.threads, args.context_keep,
                  args.lookup,        !args.no_tool_grammar},
        name_(model_->path().substr(model_->path().find_last_of('/') + 1)) {
    settings_.draft_model = draft_.get();
    settings_.draft_max = args.draft_max;
    settings_.draft_p_min = args.draft_p_min;
  }

  void Register(httplib::Server& http) {
    // A chat page (tools/attn/serve_ui/chat.html): talk to the model in a browser, each answer
    // with a link into the attention viewer (/inspect).
    http.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(kChatHtml, "text/html; charset=utf-8");
    });
    // The attention viewer's page (the report of `attn inspect`) for a conversation ({"messages":
    // [...]}, through the chat template without a generation prompt) or a text ({"prompt": "..."}),
    // computed on the slots' thread between generation steps.
    http.Post("/inspect", [this](const httplib::Request& req, httplib::Response& res) {
      const json body = serve::ParseObject(req.body);
      std::string text;
      if (body.contains("prompt")) {
        if (!body["prompt"].is_string()) throw Error("prompt: expected a string");
        text = body["prompt"].get<std::string>();
      } else {
        serve::Request r = serve::ParseRequest(req.body, serve::Endpoint::kChatCompletions);
        std::vector<Tokenizer::Message> messages;
        for (const auto& [role, content] : r.messages) messages.push_back({role, content});
        text = model_->tokenizer().ApplyChatTemplate(
            messages, false,
            settings_.jinja ? Tokenizer::ChatTemplateMode::kJinja : Tokenizer::ChatTemplateMode::kAuto);
      }
      const std::vector<int32_t> tokens = model_->tokenizer().EncodePrompt(text);
      if (tokens.empty()) throw Error("inspect: the text has no tokens");
      if (static_cast<int64_t>(tokens.size()) > kMaxServedInspectTokens)
        throw Error("inspect: the text has " + std::to_string(tokens.size()) +
                    " tokens; /inspect shows at most " + std::to_string(kMaxServedInspectTokens));
      report::InspectOptions o;
      o.threads = threads_;
      o.prompt = text;
      std::string page;
      slots_.RunBetweenSteps([&] {
        page = report::RenderReport(
            report::Inspect(*model_, tokens, o).data.dump(-1, ' ', false, json::error_handler_t::replace));
      });
      res.set_content(page, "text/html; charset=utf-8");
    });
    http.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"status":"ok"})", "application/json");
    });
    // llama.cpp's /slots, in brief: each slot, whether a request holds it, and its cached positions.
    http.Get("/slots", [this](const httplib::Request&, httplib::Response& res) {
      json list = json::array();
      for (const serve::Slots::Info& s : slots_.Describe())
        list.push_back({{"id", s.id}, {"is_processing", s.busy}, {"n_past", s.n_past}});
      res.set_content(list.dump(), "application/json");
    });
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      const json list{{"object", "list"},
                      {"data", json::array({{{"id", name_},
                                             {"object", "model"},
                                             {"owned_by", "attn"},
                                             {"created", static_cast<int64_t>(std::time(nullptr))}}})}};
      res.set_content(list.dump(), "application/json");
    });
    http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      Complete(req, res, serve::Endpoint::kCompletions);
    });
    http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      Complete(req, res, serve::Endpoint::kChatCompletions);
    });
    // OpenAI's embeddings: the final norm's outputs pooled (--pooling, or the request's "pooling"),
    // unit L2 norm, computed on the slots' thread between generation steps.
    http.Post("/v1/embeddings", [this](const httplib::Request& req, httplib::Response& res) {
      const serve::EmbeddingRequest r = serve::ParseEmbeddingRequest(req.body);
      std::vector<std::vector<int32_t>> inputs;
      int64_t n_tokens = 0;
      for (const serve::EmbeddingInput& in : r.inputs) {
        if (in.tokens) {
          std::vector<int32_t> ids;
          for (int32_t id : *in.tokens) ids.push_back(TokenId(id));
          inputs.push_back(std::move(ids));
        } else {
          inputs.push_back(model_->tokenizer().EncodePrompt(in.text));
        }
        n_tokens += static_cast<int64_t>(inputs.back().size());
      }
      EmbedOptions o;
      o.pooling = r.pooling ? ParsePooling(*r.pooling) : pooling_;
      o.threads = threads_;
      o.kv_dtype = kv_dtype_;
      std::vector<std::vector<float>> out;
      slots_.RunBetweenSteps([&] {
        for (const auto& ids : inputs) out.push_back(Embed(*model_, ids, o));
      });
      res.set_content(serve::EmbeddingResponseJson(out, name_, n_tokens), "application/json");
    });
    // llama.cpp's /apply-template: a chat request's prompt text, without generating.
    http.Post("/apply-template", [this](const httplib::Request& req, httplib::Response& res) {
      serve::Request r = serve::ParseRequest(req.body, serve::Endpoint::kChatCompletions);
      res.set_content(json{{"prompt", serve::ChatPromptText(model_->tokenizer(), r, settings_.jinja,
                                                            settings_.tool_grammar)}}
                          .dump(-1, ' ', false, json::error_handler_t::replace),
                      "application/json");
    });
    http.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
      const json body = serve::ParseObject(req.body);
      if (!body.contains("content") || !body["content"].is_string())
        throw Error("content: expected a string");
      res.set_content(json{{"tokens", model_->tokenizer().Encode(body["content"].get<std::string>())}}.dump(),
                      "application/json");
    });
    http.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
      const json body = serve::ParseObject(req.body);
      if (!body.contains("tokens") || !body["tokens"].is_array())
        throw Error("tokens: expected an array of ids");
      std::vector<int32_t> ids;
      for (const json& t : body["tokens"]) ids.push_back(TokenId(t));
      res.set_content(json{{"content", model_->tokenizer().Decode(ids)}}.dump(-1, ' ', false,
                                                                              json::error_handler_t::replace),
                      "application/json");
    });
    // attn::Error from a handler is the client's mistake (400); anything else a server error.
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      int status = 500;
      std::string message = "unknown error";
      try {
        std::rethrow_exception(ep);
      } catch (const Error& e) {
        status = 400, message = e.what();
      } catch (const std::exception& e) {
        message = e.what();
      }
      res.status = status;
      res.set_content(serve::ErrorJson(message, status), "application/json");
    });
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (res.body.empty()) {
        const std::string what = res.status == 404 ? "no such endpoint: " + req.method + " " + req.path
                                                   : "HTTP error " + std::to_string(res.status);
        res.set_content(serve::ErrorJson(what, res.status), "application/json");
      }
    });
  }

  const std::string& name() const { return name_; }

 private:
  int32_t TokenId(const json& t) const { return serve::CheckedTokenId(model_->tokenizer(), t); }

  void Complete(const httplib::Request& req, httplib::Response& res, serve::Endpoint endpoint) {
    auto request = std::make_shared<serve::Request>(serve::ParseRequest(req.body, endpoint));
    serve::Prepared prepared = serve::Prepare(*model_, *request, settings_);
    const std::vector<int32_t>& tokens = prepared.tokens;
    const GenerateOptions& options = prepared.options;
    const bool chat = endpoint == serve::Endpoint::kChatCompletions;
    auto info = std::make_shared<serve::ResponseInfo>(
        serve::ResponseInfo{std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(++next_id_),
                            static_cast<int64_t>(std::time(nullptr)), name_});
    const serve::TokenText token_text = [this](int32_t t) { return model_->tokenizer().TokenToPiece(t); };
    // One job per choice ("n"), each its own sequence on a slot (seed + i), run side by side.
    const int n = request->n;
    std::vector<std::shared_ptr<serve::Job>> jobs;
    for (int i = 0; i < n; ++i) {
      auto job = std::make_shared<serve::Job>();
      job->tokens = tokens;
      job->cache_prompt = request->cache_prompt;
      job->options = options;
      job->options.sampling.seed = options.sampling.seed + static_cast<uint64_t>(i);
      jobs.push_back(std::move(job));
    }

    if (!request->stream) {
      struct Outcome {
        std::mutex mutex;
        std::condition_variable cv;
        int left = 0;
        std::vector<GenerateResult> results;
        std::exception_ptr error;
      };
      auto outcome = std::make_shared<Outcome>();
      outcome->left = n;
      outcome->results.resize(static_cast<size_t>(n));
      auto finish = [outcome](auto&& set) {
        {
          std::lock_guard<std::mutex> lock(outcome->mutex);
          set(*outcome);
          --outcome->left;
        }
        outcome->cv.notify_all();
      };
      for (int i = 0; i < n; ++i) {
        jobs[static_cast<size_t>(i)]->on_done = [finish, i](const GenerateResult& r) {
          finish([&](Outcome& o) { o.results[static_cast<size_t>(i)] = r; });
        };
        jobs[static_cast<size_t>(i)]->on_error = [finish](std::exception_ptr e) {
          finish([&](Outcome& o) {
            if (!o.error) o.error = e;
          });
        };
      }
      for (auto& job : jobs) slots_.Submit(job);
      std::unique_lock<std::mutex> lock(outcome->mutex);
      outcome->cv.wait(lock, [&] { return outcome->left == 0; });
      if (outcome->error) std::rethrow_exception(outcome->error);
      res.set_content(serve::ResponseJson(*request, *info, outcome->results, token_text), "application/json");
      return;
    }

    // A stream: the slots' thread formats the events and queues them; this request's thread writes
    // them out, and marks the jobs cancelled when the client has gone. Choices interleave, each
    // chunk naming its index; the usage and [DONE] follow the last choice's end.
    auto events = std::make_shared<serve::EventQueue>();
    serve::StreamJobs(*model_, request, info, jobs, events);
    for (auto& job : jobs) slots_.Submit(job);
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider("text/event-stream", [events, jobs](size_t, httplib::DataSink& sink) {
      std::string event;
      while (events->Pop(event)) {
        if (!sink.write(event.data(), event.size())) {
          for (const auto& job : jobs) job->cancelled = true;
          return false;
        }
      }
      if (std::exception_ptr error = events->error()) {
        std::string message = "unknown error";
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          message = e.what();
        } catch (...) {
        }
        event = "data: " + serve::ErrorJson(message, 500) + "\n\n";
        sink.write(event.data(), event.size());
      }
      sink.done();
      return true;
    });
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<Model> draft_;  // --model-draft
  serve::Slots slots_;
  Pooling pooling_;
  DType kv_dtype_;
  int threads_;
  serve::Settings settings_;
  std::string name_;
  std::atomic<uint64_t> next_id_{0};
};

void RunServe(const ServeArgs& args) {
  Server server(args);
  httplib::Server http;
  http.set_payload_max_length(size_t{16} << 20);
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, with which a second server would share
  // a port already in use instead of failing.
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  server.Register(http);
  const int port = args.port == 0                            ? http.bind_to_any_port(args.host)
                   : http.bind_to_port(args.host, args.port) ? args.port
                                                             : -1;
  if (port < 0)
    throw Error("serve: cannot listen on " + args.host + ":" + std::to_string(args.port) +
                " (in use, or not an address of this machine)");
  // The first line of standard output says where (with --port 0, the port the system chose).
  std::printf("attn serve: %s on http://%s:%d (OpenAI API: /v1/completions, /v1/chat/completions)\n",
              server.name().c_str(), args.host.c_str(), port);
  std::fflush(stdout);
  if (!http.listen_after_bind()) throw Error("serve: the server stopped with an error");
}

}  // namespace

void AddServeCommand(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand(
      "serve",
      "Serve a model over HTTP with OpenAI's API (/v1/completions, /v1/chat/completions, streaming)");
  AddModelOptions(cmd, args->model);
  AddChatTemplateOption(cmd, args->model);
  AddControlVectorOptions(cmd, args->model);
  AddKvTypeOption(cmd, args->kv_dtype);
  AddContextShiftOptions(cmd, args->context_keep);
  cmd->add_option("--parallel", args->parallel,
                  "Slots: requests generated together, their tokens in one forward pass per step (default 4)")
      ->check(CLI::Range(1, 256));
  cmd->add_option(
         "--lookup", args->lookup,
         "Prompt lookup decoding in every request: up to N drafts per step from earlier n-grams of "
         "the prompt and answer, checked in the step's pass (the same answers, fewer passes; 0 = off)")
      ->check(CLI::Range(0, 23));
  auto* draft = cmd->add_option("--model-draft,--md", args->draft_model,
                                "Speculative decoding in every request: a smaller GGUF model with the same "
                                "vocabulary drafts tokens, checked in the step's pass (the same answers)")
                    ->check(CLI::ExistingFile);
  draft->excludes(cmd->get_option("--lookup"));
  cmd->add_option("--draft-max,--draft", args->draft_max, "Most tokens drafted per step (default 8)")
      ->check(CLI::Range(1, 23));
  cmd->add_option("--draft-p-min", args->draft_p_min,
                  "Stop drafting where the draft model's top token is less likely than this (default 0.75)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_flag(
      "--jinja", args->jinja,
      "Build chat prompts with the model's own Jinja chat template (as transformers does) even where a "
      "built-in format matches it; templates of other formats, and requests with "
      "chat_template_kwargs, always use it");
  cmd->add_flag("--no-tool-grammar", args->no_tool_grammar,
                "With --jinja and a model's own tool format: leave its tool calls free (by default a grammar "
                "holds each call, from the format's marker to the end of its arguments, to the request's "
                "tools: a name among them, arguments that fit the tool's schema)");
  cmd->add_option("--reasoning-format", args->reasoning_format,
                  "deepseek (default): a chat answer's <think> block comes back as reasoning_content "
                  "(streamed as delta.reasoning_content), as llama.cpp's server does; none: in the content")
      ->check(CLI::IsMember({"deepseek", "none"}));
  cmd->add_option("--pooling", args->pooling,
                  "How /v1/embeddings pools the tokens' final hidden states: mean (default), last or cls")
      ->check(CLI::IsMember({"mean", "last", "cls"}));
  cmd->add_option("--host", args->host, "Address to listen on (default 127.0.0.1: this machine only)");
  cmd->add_option("--port", args->port, "Port (default 8080; 0 = any free port, printed at start)")
      ->check(CLI::Range(0, 65535));
  cmd->callback([args] { RunServe(*args); });
}

}  // namespace attn::cli
