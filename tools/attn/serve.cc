// `attn serve`: an HTTP server with OpenAI's completion and chat-completion API (and llama.cpp's
// /tokenize, /detokenize, /health), streaming as server-sent events. One model and one KV-cache
// session: requests are answered one at a time, and a request whose prompt begins with the
// previous conversation reuses its cached positions (as `attn chat` does).
#include <httplib.h>

#include <atomic>
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
#include "attn/error.h"
#include "attn/generate.h"
#include "attn/model_options.h"
#include "serve/openai.h"

namespace attn::cli {
namespace {

using nlohmann::json;

struct ServeArgs {
  ModelOptions model;
  DType kv_dtype = DType::kF16;
  int64_t context_keep = -1;  // --context-shift / --keep
  std::string host = "127.0.0.1";
  int port = 8080;
};

// Thrown from the streaming callback when the client has gone: ends the generation.
struct ClientGone {};

class Server {
 public:
  explicit Server(const ServeArgs& args)
      : model_(LoadModel(args.model)),
        session_(*model_, std::min<int64_t>(512, model_->config().context_length), args.kv_dtype),
        threads_(args.model.threads),
        context_keep_(args.context_keep),
        name_(model_->path().substr(model_->path().find_last_of('/') + 1)) {}

  void Register(httplib::Server& http) {
    http.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"status":"ok"})", "application/json");
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
  int32_t TokenId(const json& t) const {
    const int64_t vocab = model_->tokenizer().vocab_size();
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= vocab)
      throw Error("token id " + t.dump() + " is not in [0, " + std::to_string(vocab) + ")");
    return static_cast<int32_t>(t.get<int64_t>());
  }

  void Complete(const httplib::Request& req, httplib::Response& res, serve::Endpoint endpoint) {
    auto request = std::make_shared<serve::Request>(serve::ParseRequest(req.body, endpoint));
    const Tokenizer& tok = model_->tokenizer();
    std::vector<int32_t> tokens;
    if (endpoint == serve::Endpoint::kChatCompletions) {
      std::vector<Tokenizer::Message> messages;
      for (const auto& [role, content] : request->messages) messages.push_back({role, content});
      tokens = tok.EncodePrompt(tok.ApplyChatTemplate(messages, true));
    } else if (request->prompt_tokens) {
      for (int32_t id : *request->prompt_tokens) tokens.push_back(TokenId(id));
    } else {
      tokens = tok.EncodePrompt(request->prompt);
    }
    const int64_t context = model_->config().context_length, n_prompt = static_cast<int64_t>(tokens.size());
    if (n_prompt >= context)
      throw Error("the prompt has " + std::to_string(n_prompt) + " tokens; the model's context holds " +
                  std::to_string(context) + " (prompt and completion together)");
    GenerateOptions options;
    options.max_tokens = request->max_tokens.value_or(
        endpoint == serve::Endpoint::kCompletions ? 16 : static_cast<int>(context - n_prompt));
    options.sampling = request->sampling;
    if (!request->seeded) {
      std::random_device rd;
      options.sampling.seed = uint64_t{rd()} << 32 | rd();
    }
    options.stop = request->stop;
    options.threads = threads_;
    options.context_keep = context_keep_;
    options.logprobs = request->logprobs;
    options.prompt_logprobs = request->echo;
    const bool chat = endpoint == serve::Endpoint::kChatCompletions;
    auto info = std::make_shared<serve::ResponseInfo>(
        serve::ResponseInfo{std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(++next_id_),
                            static_cast<int64_t>(std::time(nullptr)), name_});

    if (!request->stream) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!request->cache_prompt) session_.Reset();
      const GenerateResult r = Generate(tokens, options, nullptr);
      res.set_content(serve::ResponseJson(*request, *info, r,
                                          [this](int32_t t) { return model_->tokenizer().TokenToPiece(t); }),
                      "application/json");
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider("text/event-stream", [this, request, info, tokens, options](
                                                              size_t, httplib::DataSink& sink) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!request->cache_prompt) session_.Reset();
      auto send = [&](const std::string& event) {
        if (!sink.write(event.data(), event.size())) throw ClientGone{};
      };
      try {
        const bool chat = request->endpoint == serve::Endpoint::kChatCompletions;
        if (chat) send(serve::StreamChunk(*request, *info, "", true));
        // Log-probabilities ride with the chunk that carries their tokens' text: the entries
        // of tokens sampled since the last chunk (text held back for a stop string waits).
        const serve::TokenText token_text = [this](int32_t t) { return model_->tokenizer().TokenToPiece(t); };
        std::vector<TokenLogprob> pending;
        int64_t offset = 0;  // text_offset of the next entry
        if (request->logprobs >= 0 && !chat) offset = serve::Chars(serve::PromptText(*request, token_text));
        GenerateOptions o = options;
        o.on_logprob = [&](const TokenLogprob& lp) {
          // Chat lists the answer's tokens only: not the end-of-turn token that ends it.
          if (!(chat && model_->tokenizer().IsEndOfGeneration(lp.token))) pending.push_back(lp);
        };
        const auto chunk_logprobs = [&](size_t count) {
          if (request->logprobs < 0) return nlohmann::json();
          const std::span<const TokenLogprob> entries(pending.data(), count);
          nlohmann::json j = serve::StreamLogprobs(*request, entries, offset, token_text);
          for (const TokenLogprob& lp : entries) offset += serve::Chars(token_text(lp.token));
          pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(count));
          return j;
        };
        // Pieces end on whole characters (GenerateInSession holds a split one back).
        const GenerateResult r = Generate(tokens, o, [&](const std::string& piece) {
          send(serve::StreamChunk(*request, *info, piece, false, chunk_logprobs(pending.size())));
        });
        // Entries whose text never came (a stop string cut it, or the EOS of a completion),
        // as the plain answer lists them.
        if (request->logprobs >= 0 && !pending.empty())
          send(serve::StreamChunk(*request, *info, "", false, chunk_logprobs(pending.size())));
        send(serve::StreamEnd(*request, *info, r));
      } catch (const ClientGone&) {
        return false;
      } catch (const std::exception& e) {
        const std::string event = "data: " + serve::ErrorJson(e.what(), 500) + "\n\n";
        sink.write(event.data(), event.size());
      }
      sink.done();
      return true;
    });
  }

  // One generation in the shared session (its cached prefix reused). After a failure the session
  // is reset: it may hold a half-evaluated batch.
  GenerateResult Generate(const std::vector<int32_t>& tokens, const GenerateOptions& options,
                          const std::function<void(const std::string&)>& on_text) {
    try {
      return GenerateInSession(*model_, session_, tokens, options, on_text);
    } catch (...) {
      session_.Reset();
      throw;
    }
  }

  std::unique_ptr<Model> model_;
  Session session_;
  int threads_;
  int64_t context_keep_;
  std::string name_;
  std::mutex mutex_;
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
  AddKvTypeOption(cmd, args->kv_dtype);
  AddContextShiftOptions(cmd, args->context_keep);
  cmd->add_option("--host", args->host, "Address to listen on (default 127.0.0.1: this machine only)");
  cmd->add_option("--port", args->port, "Port (default 8080; 0 = any free port, printed at start)")
      ->check(CLI::Range(0, 65535));
  cmd->callback([args] { RunServe(*args); });
}

}  // namespace attn::cli
