// Bindings of attn::Model for the Python class attn.Model (python/attn/model.py wraps them).
//
// Hooks (Model.run): the forward pass runs with the GIL released. Which points to visit is a
// set of (name, layer) decided in Python before the pass, so the filter is plain C++; captured
// points are copied into C++ buffers (no GIL) and become NumPy arrays after the pass. Only the
// Python hook callback takes the GIL, and it never sees the forward pass's own memory: it gets a
// NumPy copy and returns the array to write back, so an array a hook keeps (or a traceback holds)
// stays valid after the pass. A Python exception in the callback propagates as nb::python_error
// through Model::Forward (whose state is local to this call) and is raised again by nanobind.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "attn/embed.h"
#include "attn/error.h"
#include "attn/generate.h"
#include "attn/heads.h"
#include "attn/lens.h"
#include "attn/model.h"
#include "attn/perplexity.h"
#include "attn/steer.h"
#include "inspect/head_report.h"
#include "inspect/inspect.h"
#include "inspect/report_page.h"
#include "serve/openai.h"
#include "serve/prepare.h"
#include "serve/slots.h"
#include "serve/stream.h"
#include "tokenizer/jinja.h"

namespace nb = nanobind;

namespace {

using PointKey = std::pair<std::string, int>;  // (name without "blocks.{l}.", layer)
using FloatArray = nb::ndarray<nb::numpy, float>;

// A float32 NumPy array [heads, rows, cols] (heads = 1 outside the attention points) that owns `data`.
FloatArray OwnedArray(std::vector<float>&& data, int64_t heads, int64_t rows, int64_t cols) {
  auto* owned = new std::vector<float>(std::move(data));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
  return FloatArray(owned->data(),
                    {static_cast<size_t>(heads), static_cast<size_t>(rows), static_cast<size_t>(cols)},
                    owner);
}

// A NumPy array of `shape` that owns `data` (float32 or int32).
template <typename T>
nb::ndarray<nb::numpy, T> OwnedArrayOf(std::vector<T>&& data, std::initializer_list<size_t> shape) {
  auto* owned = new std::vector<T>(std::move(data));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::ndarray<nb::numpy, T>(owned->data(), shape.size(), shape.begin(), owner);
}

FloatArray LogitsArray(int64_t n, int64_t vocab, float** data) {
  *data = new float[static_cast<size_t>(n * vocab)];
  nb::capsule owner(*data, [](void* p) noexcept { delete[] static_cast<float*>(p); });
  return FloatArray(*data, {static_cast<size_t>(n), static_cast<size_t>(vocab)}, owner);
}

// Every hook point of `model`, in the order a forward pass visits them: a one-token pass whose
// filter records what it is asked and accepts nothing (so no point is computed specially).
std::vector<PointKey> HookPoints(const attn::Model& model) {
  std::vector<PointKey> points;
  std::set<PointKey> seen;
  attn::Hooks hooks;
  hooks.wants = [&](const char* name, int layer) {
    if (seen.insert({name, layer}).second) points.emplace_back(name, layer);
    return false;
  };
  hooks.fn = [](const attn::HookPoint&) {};
  const int32_t token = model.tokenizer().bos_id() >= 0 ? model.tokenizer().bos_id() : 0;
  std::vector<float> logits(static_cast<size_t>(model.config().vocab_size));
  attn::Session session(model, 1);
  attn::ForwardOptions o;
  o.hooks = &hooks;
  o.threads = 1;
  model.Forward(session, std::span<const int32_t>(&token, 1), logits.data(), o);
  return points;
}

struct Captured {
  std::string name;
  int layer;
  int64_t heads, rows, cols;
  std::vector<float> data;
};

// One forward pass over `tokens` (a single chunk, so every point is visited once with the whole
// sequence). Points in `capture` are copied out; points in `hooked` go through `callback`
// (name, layer, array) -> array to write back, before they are captured.
// Calls the Python hook callback(name, layer, pos0, activation) on point p (the activation a copy,
// [heads, rows, cols]) and writes back the array it returns.
void CallPythonHook(const attn::HookPoint& p, const nb::object& callback) {
  const size_t count = static_cast<size_t>(p.heads * p.rows * p.cols);
  nb::gil_scoped_acquire acquire;
  std::vector<float> copy(p.data, p.data + count);
  FloatArray act = OwnedArray(std::move(copy), p.heads, p.rows, p.cols);
  nb::object result = callback(p.name, p.layer, p.pos0, act);  // throws nb::python_error
  const std::string full =
      p.layer < 0 ? std::string(p.name) : "blocks." + std::to_string(p.layer) + "." + std::string(p.name);
  nb::ndarray<float, nb::c_contig, nb::device::cpu> out;
  if (!nb::try_cast(result, out) || out.size() != count) {
    throw attn::Error("hook " + full + ": the callback must return a C-contiguous float32 array of " +
                      std::to_string(count) + " values");
  }
  std::memcpy(p.data, out.data(), count * sizeof(float));
}

nb::tuple Run(const attn::Model& model, const std::vector<int32_t>& tokens, int threads,
              const std::vector<PointKey>& capture, const std::vector<PointKey>& hooked,
              nb::object callback) {
  if (tokens.empty()) throw attn::Error("run: tokens is empty");
  if (!hooked.empty() && callback.is_none()) throw attn::Error("run: hooked points but no callback");
  const std::set<PointKey> capture_set(capture.begin(), capture.end()),
      hooked_set(hooked.begin(), hooked.end());
  std::vector<Captured> captured;
  attn::Hooks hooks;
  hooks.read_only = hooked.empty();  // a cache only: the pass keeps the numbers of a plain forward
  hooks.wants = [&](const char* name, int layer) {
    const PointKey key{name, layer};
    return capture_set.count(key) > 0 || hooked_set.count(key) > 0;
  };
  hooks.fn = [&](const attn::HookPoint& p) {
    const PointKey key{p.name, p.layer};
    const size_t count = static_cast<size_t>(p.heads * p.rows * p.cols);
    if (hooked_set.count(key) > 0) CallPythonHook(p, callback);
    if (capture_set.count(key) > 0) {
      captured.push_back(
          {p.name, p.layer, p.heads, p.rows, p.cols, std::vector<float>(p.data, p.data + count)});
    }
  };

  const int64_t n = static_cast<int64_t>(tokens.size());
  float* logits = nullptr;
  FloatArray logits_array = LogitsArray(n, model.config().vocab_size, &logits);
  {
    nb::gil_scoped_release release;
    attn::Session session(model, n);
    attn::ForwardOptions o;
    o.all_logits = true;
    o.threads = threads;
    o.hooks = &hooks;
    o.max_chunk = n;
    model.Forward(session, tokens, logits, o);
  }
  nb::list cache;
  for (Captured& c : captured) {
    cache.append(nb::make_tuple(c.name, c.layer, OwnedArray(std::move(c.data), c.heads, c.rows, c.cols)));
  }
  return nb::make_tuple(logits_array, cache);
}

nb::list ScoresToPython(const std::vector<attn::HeadScores>& scores) {
  nb::list out;
  for (const attn::HeadScores& s : scores) {
    nb::dict d;
    d["layer"] = s.layer;
    d["head"] = s.head;
    d["previous_token"] = s.previous_token;
    d["duplicate_token"] = s.duplicate_token;
    d["induction"] = s.induction;
    d["first_token"] = s.first_token;
    d["learned_sink"] = s.learned_sink;
    d["entropy"] = s.entropy;
    d["local"] = s.local;
    d["role"] = s.role;
    out.append(d);
  }
  return out;
}

attn::ProbeOptions Probe(int64_t length, int64_t sequences, uint64_t seed, int threads) {
  attn::ProbeOptions o;
  o.length = length;
  o.sequences = sequences;
  o.seed = seed;
  o.threads = threads;
  return o;
}

// The options of Model.generate / generate_batch.
attn::GenerateOptions MakeOptions(int max_tokens, float temperature, uint64_t seed, int top_k, float top_p,
                                  float min_p, float repetition_penalty, float frequency_penalty,
                                  float presence_penalty,
                                  const std::vector<std::pair<int32_t, float>>& logit_bias,
                                  const std::vector<std::string>& stop, int threads, attn::DType kv_dtype,
                                  int64_t context_keep, int logprobs, bool json_mode,
                                  const std::string& grammar, const std::string& json_schema) {
  attn::GenerateOptions o;
  o.json = json_mode;
  o.grammar = grammar;
  o.json_schema = json_schema;
  o.logprobs = logprobs;
  o.kv_dtype = kv_dtype;
  o.context_keep = context_keep;
  o.max_tokens = max_tokens;
  o.sampling.temperature = temperature;
  o.sampling.seed = seed;
  o.sampling.top_k = top_k;
  o.sampling.top_p = top_p;
  o.sampling.min_p = min_p;
  o.sampling.repetition_penalty = repetition_penalty;
  o.sampling.frequency_penalty = frequency_penalty;
  o.sampling.presence_penalty = presence_penalty;
  o.sampling.logit_bias = logit_bias;
  o.stop = stop;
  o.threads = threads;
  return o;
}

// The arguments of Model.generate, as Python checked them.
struct GenerateArgs {
  int max_tokens = 128;
  float temperature = 0.0f;
  uint64_t seed = 0;
  int top_k = 40;
  float top_p = 0.95f, min_p = 0.05f, repetition_penalty = 1.0f;
  std::vector<std::string> stop;
  int threads = 0;
  attn::DType kv_dtype = attn::DType::kF16;
  int64_t context_keep = -1;
  int logprobs = -1;
  bool prompt_logprobs = false;
  float frequency_penalty = 0.0f, presence_penalty = 0.0f;
  std::vector<std::pair<int32_t, float>> logit_bias;
  bool json_mode = false;
  std::string grammar, json_schema;
  int lookup = 0;
  // Speculative decoding with a draft model (set_draft); the Python caller keeps it alive.
  const attn::Model* draft_model = nullptr;
  int draft_max = 8;
  float draft_p_min = 0.75f;
  bool draft_adaptive = false;

  attn::GenerateOptions Options() const {
    attn::GenerateOptions o =
        MakeOptions(max_tokens, temperature, seed, top_k, top_p, min_p, repetition_penalty, frequency_penalty,
                    presence_penalty, logit_bias, stop, threads, kv_dtype, context_keep, logprobs, json_mode,
                    grammar, json_schema);
    o.prompt_logprobs = prompt_logprobs;
    o.lookup = lookup;
    o.draft_model = draft_model;
    o.draft_max = draft_max;
    o.draft_p_min = draft_p_min;
    o.draft_adaptive = draft_adaptive;
    return o;
  }
};

// A generation's result as the dict of Model.generate(return_dict=True).
nb::dict ResultDict(const attn::GenerateResult& r, int logprobs, bool prompt_logprobs) {
  nb::dict d;
  d["prompt_tokens"] = r.prompt_tokens;
  d["tokens"] = r.tokens;
  d["text"] = nb::bytes(r.text.data(), r.text.size());
  d["stop_reason"] = r.stop_reason;
  d["prompt_ms"] = r.prompt_ms;
  d["gen_ms"] = r.gen_ms;
  d["n_gen_evaluated"] = r.n_gen_evaluated;
  d["drafted"] = r.n_drafted;  // lookup decoding: drafts run and kept
  d["draft_accepted"] = r.n_draft_accepted;
  d["prompt_evaluated"] = r.n_prompt_evaluated;
  d["prompt_cached"] = r.n_prompt_cached;
  d["context_shifts"] = r.n_context_shifts;
  if (logprobs >= 0) {
    const auto entries = [](const std::vector<attn::TokenLogprob>& v) {
      nb::list out;
      for (const attn::TokenLogprob& lp : v) {
        nb::dict e;
        e["token"] = lp.token;
        e["logprob"] = lp.logprob;
        e["top"] = lp.top;
        out.append(e);
      }
      return out;
    };
    d["logprobs"] = entries(r.logprobs);
    if (prompt_logprobs) d["prompt_logprobs"] = entries(r.prompt_logprobs);
  }
  return d;
}

// An OpenAI request body parsed and prepared as attn serve does it (Python's settings: jinja,
// reasoning, threads), with the identity of its response.
struct OpenAiCall {
  attn::serve::Request request;
  attn::serve::Prepared prepared;
  attn::serve::ResponseInfo info;
};

OpenAiCall PrepareOpenAi(const attn::Model& model, const std::string& body, bool chat, bool jinja,
                         bool reasoning, int threads) {
  OpenAiCall call;
  call.request = attn::serve::ParseRequest(
      body, chat ? attn::serve::Endpoint::kChatCompletions : attn::serve::Endpoint::kCompletions);
  attn::serve::Settings settings;
  settings.jinja = jinja;
  settings.reasoning = reasoning;
  settings.threads = threads;
  call.prepared = attn::serve::Prepare(model, call.request, settings);
  static std::atomic<int64_t> next_id{0};
  const std::string& path = model.path();
  call.info = {std::string(chat ? "chatcmpl-" : "cmpl-") + "py" + std::to_string(++next_id),
               static_cast<int64_t>(std::time(nullptr)), path.substr(path.find_last_of('/') + 1)};
  return call;
}

// What the two streams below share: the queue their producer fills, read with the GIL released, and
// the end (Stop: cancel the producer and wait for it; then any failure is rethrown).
class QueueStream {
 public:
  virtual ~QueueStream() = default;
  // Cancels the producer if it still runs and waits for it (the GIL released).
  void Close() {
    nb::gil_scoped_release release;
    Stop();
  }

 protected:
  QueueStream() : events_(std::make_shared<attn::serve::EventQueue>()) {}
  virtual void Stop() = 0;
  // The next queued string, waiting for one with the GIL released; false once the queue has ended.
  bool Pop(std::string& out) {
    nb::gil_scoped_release release;
    return events_->Pop(out);
  }
  // After the last Pop: stops the producer and rethrows what it failed with.
  void End() {
    Close();
    if (std::exception_ptr e = events_->error()) std::rethrow_exception(e);
  }
  std::shared_ptr<attn::serve::EventQueue> events_;
};

// A generation on a thread of its own, for Model.generate(stream=True): Next gives its text piece
// by piece as it becomes final (pieces end on whole characters), then nothing once it has ended
// (rethrowing what it failed with); result() is the whole. Destroying it cancels the generation
// (before its next forward pass) and waits for the thread.
class TextStream : public QueueStream {
 public:
  TextStream(const attn::Model& model, attn::Session* session, std::vector<int32_t> prompt,
             attn::GenerateOptions options) {
    options.cancel = &cancel_;
    thread_ = std::thread([this, &model, session, prompt = std::move(prompt), options]() mutable {
      const auto push = [this](const std::string& piece) { events_->Push(piece); };
      try {
        result_ = session != nullptr
                      ? attn::GenerateInSession(model, *session, std::move(prompt), options, push)
                      : attn::GenerateFromTokens(model, std::move(prompt), options, push);
        events_->Close();
      } catch (...) {
        events_->Fail(std::current_exception());
      }
    });
  }
  ~TextStream() override { Stop(); }
  TextStream(const TextStream&) = delete;
  TextStream& operator=(const TextStream&) = delete;

  std::optional<nb::bytes> Next() {
    std::string piece;
    if (Pop(piece)) return nb::bytes(piece.data(), piece.size());
    End();
    return std::nullopt;
  }
  // The result once ended (Next gave nothing, or Close); null before.
  const attn::GenerateResult* result() const { return ended_ ? &result_ : nullptr; }

 private:
  void Stop() override {
    cancel_ = true;
    if (thread_.joinable()) thread_.join();
    ended_ = !events_->error();
  }
  std::atomic<bool> cancel_{false};
  attn::GenerateResult result_;
  bool ended_ = false;
  std::thread thread_;
};

// An OpenAI request with "stream": true, answered as attn serve streams it (serve::StreamJobs) on
// slots of its own, one per choice: Next gives each event's JSON text (the chunks, then the usage
// chunk when asked for) and nothing after "[DONE]"; a failure is rethrown. Destroying it cancels
// the jobs and waits for the slots' thread.
class OpenAiStream : public QueueStream {
 public:
  OpenAiStream(const attn::Model& model, OpenAiCall call) {
    auto request = std::make_shared<attn::serve::Request>(std::move(call.request));
    const attn::GenerateOptions& options = call.prepared.options;
    for (int i = 0; i < request->n; ++i) {
      auto job = std::make_shared<attn::serve::Job>();
      job->tokens = call.prepared.tokens;
      job->options = options;
      job->options.sampling.seed = options.sampling.seed + static_cast<uint64_t>(i);
      jobs_.push_back(std::move(job));
    }
    attn::serve::StreamJobs(model, request, std::make_shared<attn::serve::ResponseInfo>(call.info), jobs_,
                            events_);
    slots_ = std::make_unique<attn::serve::Slots>(model, request->n, options.kv_dtype, options.threads);
    for (auto& job : jobs_) slots_->Submit(job);
  }
  ~OpenAiStream() override { Stop(); }
  OpenAiStream(const OpenAiStream&) = delete;
  OpenAiStream& operator=(const OpenAiStream&) = delete;

  std::optional<std::string> Next() {
    std::string events;  // one or more "data: ...\n\n"
    while (ready_.empty() && Pop(events)) {
      constexpr std::string_view kData = "data: ";
      for (size_t at = 0; at < events.size();) {
        size_t end = events.find("\n\n", at);
        if (end == std::string::npos) end = events.size();
        std::string_view event(events.data() + at, end - at);
        if (event.starts_with(kData)) event.remove_prefix(kData.size());
        if (event == "[DONE]") break;
        if (!event.empty()) ready_.emplace_back(event);
        at = end + 2;
      }
    }
    if (!ready_.empty()) {
      std::string event = std::move(ready_.front());
      ready_.pop_front();
      return event;
    }
    End();
    return std::nullopt;
  }

 private:
  void Stop() override {
    for (auto& job : jobs_) job->cancelled = true;
    slots_.reset();
  }
  std::vector<std::shared_ptr<attn::serve::Job>> jobs_;
  std::unique_ptr<attn::serve::Slots> slots_;
  std::deque<std::string> ready_;  // events taken from the queue, not yet given
};

}  // namespace

void BindModel(nb::module_& m) {
  m.def("save_control_vector", &attn::SaveControlVector, nb::arg("path"), nb::arg("directions"),
        nb::arg("model_hint"));
  nb::class_<GenerateArgs>(m, "GenerateArgs")
      .def(
          "__init__",
          [](GenerateArgs* a, int max_tokens, float temperature, uint64_t seed, int top_k, float top_p,
             float min_p, float repetition_penalty, std::vector<std::string> stop, int threads,
             attn::DType kv_dtype, int64_t context_keep, int logprobs, bool prompt_logprobs,
             float frequency_penalty, float presence_penalty,
             std::vector<std::pair<int32_t, float>> logit_bias, bool json_mode, std::string grammar,
             std::string json_schema, int lookup) {
            new (a) GenerateArgs{max_tokens,
                                 temperature,
                                 seed,
                                 top_k,
                                 top_p,
                                 min_p,
                                 repetition_penalty,
                                 std::move(stop),
                                 threads,
                                 kv_dtype,
                                 context_keep,
                                 logprobs,
                                 prompt_logprobs,
                                 frequency_penalty,
                                 presence_penalty,
                                 std::move(logit_bias),
                                 json_mode,
                                 std::move(grammar),
                                 std::move(json_schema),
                                 lookup};
          },
          nb::kw_only(), nb::arg("max_tokens"), nb::arg("temperature"), nb::arg("seed"), nb::arg("top_k"),
          nb::arg("top_p"), nb::arg("min_p"), nb::arg("repetition_penalty"), nb::arg("stop"),
          nb::arg("threads"), nb::arg("kv_dtype"), nb::arg("context_keep"), nb::arg("logprobs"),
          nb::arg("prompt_logprobs"), nb::arg("frequency_penalty"), nb::arg("presence_penalty"),
          nb::arg("logit_bias"), nb::arg("json_mode"), nb::arg("grammar"), nb::arg("json_schema"),
          nb::arg("lookup"))
      .def(
          "set_draft",
          [](GenerateArgs& a, const attn::Model* model, int draft_max, float draft_p_min, bool adaptive) {
            a.draft_model = model;
            a.draft_max = draft_max;
            a.draft_p_min = draft_p_min;
            a.draft_adaptive = adaptive;
          },
          nb::arg("model").none(), nb::arg("draft_max"), nb::arg("draft_p_min"), nb::arg("adaptive"));
  nb::class_<TextStream>(m, "TextStream")
      .def("next", &TextStream::Next)
      .def("close", [](TextStream& s) { s.Close(); })
      .def("result", [](const TextStream& s, int logprobs, bool prompt_logprobs) -> nb::object {
        const attn::GenerateResult* r = s.result();
        if (r == nullptr) return nb::none();
        return ResultDict(*r, logprobs, prompt_logprobs);
      });
  nb::class_<OpenAiStream>(m, "OpenAiStream")
      .def("next", &OpenAiStream::Next)
      .def("close", [](OpenAiStream& s) { s.Close(); });
  // A chat template (or any Jinja text) parsed once and run by attn's interpreter, without a model:
  // for checking a template, and for measuring the interpreter against jinja2.
  nb::class_<attn::jinja::Template>(m, "JinjaTemplate")
      .def(nb::init<std::string_view>(), nb::arg("source"))
      .def(
          "render",
          [](const attn::jinja::Template& t, const std::string& context_json, const std::string& now) {
            nlohmann::ordered_json context;
            try {
              context = nlohmann::ordered_json::parse(context_json);
            } catch (const nlohmann::json::exception& e) {
              throw attn::Error(std::string("render_template: the variables are not JSON: ") + e.what());
            }
            attn::jinja::RenderOptions options;
            options.now = now;
            nb::gil_scoped_release release;
            return t.Render(context, options);
          },
          nb::arg("context_json"), nb::arg("now"));
  // The KV caches of one sequence (a conversation), kept between generate calls. The session keeps
  // its model alive.
  nb::class_<attn::Session>(m, "Session")
      .def(nb::init<const attn::Model&, int64_t, attn::DType>(), nb::arg("model"), nb::arg("capacity"),
           nb::arg("kv_dtype"), nb::keep_alive<1, 2>())
      .def_prop_ro("n_past", &attn::Session::n_past)
      .def_prop_ro("capacity", &attn::Session::capacity)
      .def_prop_ro("tokens", [](const attn::Session& s) { return s.tokens(); })
      .def("reset", &attn::Session::Reset);
  nb::class_<attn::Model>(m, "Model")
      .def_static(
          "load",
          [](const std::string& path, const std::optional<std::string>& chat_template) {
            nb::gil_scoped_release release;
            std::unique_ptr<attn::Model> model =
                attn::Model::Load(path.empty() ? attn::Model::DefaultPath() : path);
            if (chat_template) model->SetChatTemplate(*chat_template);
            return model;
          },
          nb::arg("path"), nb::arg("chat_template").none() = nb::none())
      .def_static("default_path", &attn::Model::DefaultPath)
      // Control vectors (include/attn/steer.h): per block, an empty list or d_model values.
      .def("set_control_vector",
           [](attn::Model& model, std::vector<std::vector<float>> directions) {
             model.SetControlVector(std::move(directions));
           })
      .def("control_vector", [](const attn::Model& model) { return model.control_vector(); })
      .def(
          "load_control_vectors",
          [](const attn::Model& model, const std::vector<std::pair<std::string, float>>& files, int start,
             int end) {
            std::vector<attn::ControlVectorFile> list;
            for (const auto& [path, scale] : files) list.push_back({path, scale});
            return attn::LoadControlVectors(list, model.config(), start, end);
          },
          nb::arg("files"), nb::arg("start"), nb::arg("end"))
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
                     d["n_expert"] = c.n_expert;  // mixture of experts: 0 for a dense feed-forward
                     d["n_expert_used"] = c.n_expert_used;
                     d["d_ff_expert"] = c.d_ff_expert;
                     d["d_ff_shared"] = c.d_ff_shared;  // qwen2moe's shared expert (0: none)
                     d["expert_weights_norm"] = c.expert_weights_norm;
                     d["expert_bias"] = c.expert_bias;  // gpt-oss: biases on the router and experts
                     d["swiglu_oai"] = c.swiglu_oai;    // gpt-oss's clamped SwiGLU in the experts
                     d["attn_sinks"] = c.attn_sinks;    // gpt-oss: a learned sink logit per head
                     d["vocab_size"] = c.vocab_size;
                     d["context_length"] = c.context_length;
                     d["rope_base"] = c.rope_base;
                     d["rope_dim"] = c.rope_dim;
                     d["nope_layers"] = [&] {  // SmolLM3: layers without RoPE
                       std::vector<int64_t> layers;
                       for (int64_t l = 0; l < c.n_layers; ++l)
                         if (c.arch != attn::Arch::kGpt2 && !c.UsesRope(l)) layers.push_back(l);
                       return layers;
                     }();
                     d["rope_freq_scale"] = c.rope_freq_scale;
                     d["attn_scale"] = c.AttnScale();         // the scale of q . k
                     d["embed_scale"] = c.embed_scale;        // gemma*, granite
                     d["residual_scale"] = c.residual_scale;  // granite: block outputs times it
                     d["logit_scale"] = c.logit_scale;        // granite: logits divided by it
                     d["sliding_window"] = c.sliding_window;  // 0: every layer sees all keys
                     d["sliding_layers"] = [&] {
                       std::vector<int64_t> layers;
                       for (int64_t l = 0; l < c.n_layers; ++l)
                         if (c.IsSliding(l)) layers.push_back(l);
                       return layers;
                     }();
                     d["attn_softcap"] = c.attn_softcap;  // 0: none
                     d["final_softcap"] = c.final_softcap;
                     d["norm_eps"] = c.norm_eps;
                     d["tied_output"] = c.tied_output;
                     d["norm"] = c.norm == attn::NormKind::kRms ? "rms" : "layer";
                     d["post_norms"] = c.post_norms;  // gemma 2 / 3: block outputs normed before the add
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
          [](const attn::Model& model, const std::vector<int32_t>& tokens, int threads,
             attn::DType kv_dtype) {
            if (tokens.empty()) throw attn::Error("logits: tokens is empty");
            const int64_t n = static_cast<int64_t>(tokens.size()), vocab = model.config().vocab_size;
            auto* data = new float[static_cast<size_t>(n * vocab)];
            nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<float*>(p); });
            {
              nb::gil_scoped_release release;
              attn::Session session(model, n, kv_dtype);
              model.Forward(session, tokens, data, /*all_logits=*/true, threads);
            }
            return nb::ndarray<nb::numpy, float, nb::ndim<2>>(
                data, {static_cast<size_t>(n), static_cast<size_t>(vocab)}, owner);
          },
          nb::arg("tokens"), nb::arg("threads"), nb::arg("kv_dtype"))
      .def(
          "generate",
          [](const attn::Model& model, const std::vector<int32_t>& prompt_tokens, const GenerateArgs& a,
             attn::Session* session, const std::vector<PointKey>& hooked, nb::object callback) {
            attn::GenerateOptions o = a.Options();
            // Hooks on every pass (Model.generate(hooks=...)): the callback runs with the GIL.
            const std::set<PointKey> hooked_set(hooked.begin(), hooked.end());
            attn::Hooks hooks;
            hooks.wants = [&](const char* name, int layer) {
              return hooked_set.count(PointKey{name, layer}) > 0;
            };
            hooks.fn = [&](const attn::HookPoint& p) { CallPythonHook(p, callback); };
            if (!hooked.empty()) o.hooks = &hooks;
            attn::GenerateResult r;
            {
              nb::gil_scoped_release release;
              r = session != nullptr ? attn::GenerateInSession(model, *session, prompt_tokens, o)
                                     : attn::GenerateFromTokens(model, prompt_tokens, o);
            }
            return ResultDict(r, a.logprobs, a.prompt_logprobs);
          },
          nb::arg("prompt_tokens"), nb::arg("args"), nb::arg("session").none(), nb::arg("hooked"),
          nb::arg("callback").none())
      // The same on a thread of its own, its text streamed (TextStream); it keeps the model and
      // the session alive.
      .def(
          "generate_stream",
          [](const attn::Model& model, const std::vector<int32_t>& prompt_tokens, const GenerateArgs& a,
             attn::Session* session) {
            return std::make_unique<TextStream>(model, session, prompt_tokens, a.Options());
          },
          nb::arg("prompt_tokens"), nb::arg("args"), nb::arg("session").none(), nb::keep_alive<0, 1>(),
          nb::keep_alive<0, 4>())
      .def(
          "embed",
          [](const attn::Model& model, const std::vector<std::vector<int32_t>>& inputs,
             const std::string& pooling, bool normalize, int threads, attn::DType kv_dtype) {
            attn::EmbedOptions o;
            o.pooling = attn::ParsePooling(pooling);
            o.normalize = normalize;
            o.threads = threads;
            o.kv_dtype = kv_dtype;
            const size_t d = static_cast<size_t>(model.config().d_model);
            auto* out = new std::vector<float>(inputs.size() * d);
            nb::capsule owner(out, [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
            {
              nb::gil_scoped_release release;
              for (size_t i = 0; i < inputs.size(); ++i) {
                const std::vector<float> e = attn::Embed(model, inputs[i], o);
                std::copy(e.begin(), e.end(), out->begin() + static_cast<std::ptrdiff_t>(i * d));
              }
            }
            return nb::ndarray<nb::numpy, float, nb::ndim<2>>(out->data(), {inputs.size(), d}, owner);
          },
          nb::arg("inputs"), nb::arg("pooling"), nb::arg("normalize"), nb::arg("threads"),
          nb::arg("kv_dtype"))
      .def(
          "generate_batch",
          [](const attn::Model& model, const std::vector<std::vector<int32_t>>& prompts, int max_tokens,
             float temperature, uint64_t seed, int top_k, float top_p, float min_p, float repetition_penalty,
             const std::vector<std::string>& stop, int threads, attn::DType kv_dtype, int64_t context_keep,
             int logprobs, float frequency_penalty, float presence_penalty,
             const std::vector<std::pair<int32_t, float>>& logit_bias, bool json_mode,
             const std::string& grammar, const std::string& json_schema, int lookup) {
            // Prompt i samples with seed + i: what generate(prompt i, seed = seed + i) draws.
            attn::GenerateOptions base =
                MakeOptions(max_tokens, temperature, seed, top_k, top_p, min_p, repetition_penalty,
                            frequency_penalty, presence_penalty, logit_bias, stop, threads, kv_dtype,
                            context_keep, logprobs, json_mode, grammar, json_schema);
            base.lookup = lookup;
            std::vector<attn::GenerateOptions> options(prompts.size(), base);
            for (size_t i = 0; i < prompts.size(); ++i) options[i].sampling.seed = seed + i;
            std::vector<attn::GenerateResult> rs;
            {
              nb::gil_scoped_release release;
              rs = attn::GenerateBatch(model, prompts, options);
            }
            nb::list out;
            for (const attn::GenerateResult& r : rs) out.append(ResultDict(r, logprobs, false));
            return out;
          },
          nb::arg("prompts"), nb::arg("max_tokens"), nb::arg("temperature"), nb::arg("seed"),
          nb::arg("top_k"), nb::arg("top_p"), nb::arg("min_p"), nb::arg("repetition_penalty"),
          nb::arg("stop"), nb::arg("threads"), nb::arg("kv_dtype"), nb::arg("context_keep"),
          nb::arg("logprobs"), nb::arg("frequency_penalty"), nb::arg("presence_penalty"),
          nb::arg("logit_bias"), nb::arg("json_mode"), nb::arg("grammar"), nb::arg("json_schema"),
          nb::arg("lookup") = 0)
      .def_prop_ro("chat_format", [](const attn::Model& model) { return model.tokenizer().chat_format(); })
      .def_prop_ro("chat_template",
                   [](const attn::Model& model) { return model.tokenizer().chat_template(); })
      // An OpenAI completion / chat-completion request body answered as attn serve answers it
      // (serve::ParseRequest, serve::Prepare, serve::ResponseJson), without the server: choices one
      // after the other, no streaming.
      .def(
          "openai",
          [](const attn::Model& model, const std::string& body, bool chat, bool jinja, bool reasoning,
             int threads) {
            OpenAiCall call = PrepareOpenAi(model, body, chat, jinja, reasoning, threads);
            const attn::serve::Request& r = call.request;
            if (r.stream) throw attn::Error("stream = true: use openai_stream");
            std::vector<attn::GenerateResult> results;
            {
              nb::gil_scoped_release release;
              for (int i = 0; i < r.n; ++i) {
                attn::GenerateOptions o = call.prepared.options;
                o.sampling.seed += static_cast<uint64_t>(i);
                results.push_back(attn::GenerateFromTokens(model, call.prepared.tokens, o));
              }
            }
            return attn::serve::ResponseJson(
                r, call.info, results, [&model](int32_t t) { return model.tokenizer().TokenToPiece(t); });
          },
          nb::arg("body"), nb::arg("chat"), nb::arg("jinja"), nb::arg("reasoning"), nb::arg("threads"))
      // The same request streamed ("stream": true): an OpenAiStream of its events.
      .def(
          "openai_stream",
          [](const attn::Model& model, const std::string& body, bool chat, bool jinja, bool reasoning,
             int threads) {
            OpenAiCall call = PrepareOpenAi(model, body, chat, jinja, reasoning, threads);
            if (!call.request.stream) throw attn::Error("stream = false: use openai");
            return std::make_unique<OpenAiStream>(model, std::move(call));
          },
          nb::arg("body"), nb::arg("chat"), nb::arg("jinja"), nb::arg("reasoning"), nb::arg("threads"),
          nb::keep_alive<0, 1>())
      .def("apply_chat_template",
           [](const attn::Model& model, const std::vector<std::pair<std::string, std::string>>& messages,
              bool add_generation_prompt, int mode) {
             std::vector<attn::Tokenizer::Message> msgs;
             for (const auto& [role, content] : messages) msgs.push_back({role, content});
             return model.tokenizer().ApplyChatTemplate(msgs, add_generation_prompt,
                                                        mode == 0
                                                            ? attn::Tokenizer::ChatTemplateMode::kAuto
                                                            : attn::Tokenizer::ChatTemplateMode::kBuiltin);
           })
      .def("render_chat_template",
           [](const attn::Model& model, const std::string& context_json) {
             return model.tokenizer().RenderChatTemplate(context_json);
           })
      .def("hook_points",
           [](const attn::Model& model) {
             nb::gil_scoped_release release;
             return HookPoints(model);
           })
      .def("run", &Run, nb::arg("tokens"), nb::arg("threads"), nb::arg("capture"), nb::arg("hooked"),
           nb::arg("callback").none())
      // The attention viewer's page for `tokens` (report::Inspect, report::RenderReport), and the
      // heads' scores as heads.json holds them.
      .def(
          "report",
          [](const attn::Model& model, const std::vector<int32_t>& tokens, const std::string& prompt,
             bool lens, int64_t probe_length, int64_t sequences, uint64_t seed, int threads) {
            std::string html, heads;
            {
              nb::gil_scoped_release release;
              attn::report::InspectOptions o;
              o.probe.length =
                  probe_length > 0 ? probe_length : attn::report::DefaultProbeLength(model.config());
              o.probe.sequences = sequences;
              o.probe.seed = seed;
              o.threads = threads;
              o.lens = lens;
              o.prompt = prompt;
              const attn::report::InspectOutput out = attn::report::Inspect(model, tokens, o);
              const auto dump = [](const nlohmann::json& j) {
                return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
              };
              html = attn::report::RenderReport(dump(out.data));
              heads = dump(out.heads_json);
            }
            return std::make_pair(nb::bytes(html.data(), html.size()), heads);
          },
          nb::arg("tokens"), nb::arg("prompt"), nb::arg("lens"), nb::arg("probe_length"),
          nb::arg("sequences"), nb::arg("seed"), nb::arg("threads"))
      .def(
          "steering_vector",
          [](const attn::Model& model, const std::vector<std::vector<int32_t>>& adds,
             const std::vector<std::vector<int32_t>>& subs, int layer, int threads) {
            std::vector<float> v;
            {
              nb::gil_scoped_release release;
              v = attn::SteeringVector(model, adds, subs, layer, threads);
            }
            const size_t d = v.size();
            return OwnedArrayOf(std::move(v), {d});
          },
          nb::arg("adds"), nb::arg("subs"), nb::arg("layer"), nb::arg("threads"))
      .def(
          "control_vector_from_pairs",
          [](const attn::Model& model, const std::vector<std::vector<int32_t>>& adds,
             const std::vector<std::vector<int32_t>>& subs, int threads) {
            nb::gil_scoped_release release;
            return attn::ControlVectorFromPairs(model, adds, subs, threads);
          },
          nb::arg("adds"), nb::arg("subs"), nb::arg("threads"))
      .def(
          "logit_lens",
          [](const attn::Model& model, const std::vector<int32_t>& tokens, int top_k, int threads) {
            attn::LogitLens lens;
            {
              nb::gil_scoped_release release;
              attn::LogitLensOptions o;
              o.top_k = top_k;
              o.threads = threads;
              lens = attn::ComputeLogitLens(model, tokens, o);
            }
            const size_t L = static_cast<size_t>(lens.layers), T = static_cast<size_t>(lens.tokens),
                         K = static_cast<size_t>(lens.top_k);
            nb::dict d;
            d["top_ids"] = OwnedArrayOf(std::move(lens.top_ids), {L, T, K});
            d["top_logprobs"] = OwnedArrayOf(std::move(lens.top_logprobs), {L, T, K});
            d["next_logprob"] = OwnedArrayOf(std::move(lens.next_logprob), {L, T - 1});
            d["next_rank"] = OwnedArrayOf(std::move(lens.next_rank), {L, T - 1});
            return d;
          },
          nb::arg("tokens"), nb::arg("top_k"), nb::arg("threads"))
      .def(
          "score_heads",
          [](const attn::Model& model, const std::vector<int32_t>& tokens, int threads) {
            std::vector<attn::HeadScores> scores;
            {
              nb::gil_scoped_release release;
              scores = attn::ScoreHeads(model, tokens, threads);
            }
            return ScoresToPython(scores);
          },
          nb::arg("tokens"), nb::arg("threads"))
      .def(
          "probe_heads",
          [](const attn::Model& model, int64_t length, int64_t sequences, uint64_t seed, int threads) {
            std::vector<attn::HeadScores> scores;
            {
              nb::gil_scoped_release release;
              scores = attn::ProbeHeads(model, Probe(length, sequences, seed, threads));
            }
            return ScoresToPython(scores);
          },
          nb::arg("length"), nb::arg("sequences"), nb::arg("seed"), nb::arg("threads"))
      .def_static(
          "describe_probe",
          [](int64_t length, int64_t sequences, uint64_t seed) {
            return attn::DescribeProbe(Probe(length, sequences, seed, 0));
          },
          nb::arg("length"), nb::arg("sequences"), nb::arg("seed"))
      .def(
          "ablate",
          [](const attn::Model& model, const std::vector<int32_t>& tokens,
             const std::vector<std::pair<int, int>>& heads, const std::string& mode, int threads) {
            attn::AblationMode am;
            if (mode == "zero") {
              am = attn::AblationMode::kZero;
            } else if (mode == "mean") {
              am = attn::AblationMode::kMean;
            } else {
              throw attn::Error("ablate: mode = '" + mode + "' (must be 'zero' or 'mean')");
            }
            attn::AblationResult r;
            {
              nb::gil_scoped_release release;
              r = attn::AblateHeads(model, tokens, heads, am, threads);
            }
            nb::dict d;
            d["loss"] = r.loss;
            d["ablated_loss"] = r.ablated_loss;
            d["delta"] = r.ablated_loss - r.loss;
            d["tokens"] = r.tokens;
            return d;
          },
          nb::arg("tokens"), nb::arg("heads"), nb::arg("mode"), nb::arg("threads"))
      .def(
          "perplexity",
          [](const attn::Model& model, const std::vector<int32_t>& tokens, int64_t context,
             int64_t max_chunks, int threads, attn::DType kv_dtype, const attn::Model* base,
             attn::DType base_kv_dtype) {
            attn::PerplexityOptions o;
            o.context = context;
            o.max_chunks = max_chunks;
            o.threads = threads;
            o.kv_dtype = kv_dtype;
            o.base = base;
            o.base_kv_dtype = base_kv_dtype;
            attn::PerplexityResult r;
            {
              nb::gil_scoped_release release;
              r = attn::Perplexity(model, tokens, o);
            }
            nb::dict d;
            d["ppl"] = r.ppl;
            d["ppl_stderr"] = r.ppl_stderr;
            d["nll"] = r.nll;
            d["tokens"] = r.n_tokens;
            d["context"] = r.context;
            d["chunks"] = r.n_chunks;
            d["scored_tokens"] = r.n_scored;
            d["chunk_ppl"] = r.chunk_ppl;
            d["token_nll"] = r.token_nll;
            d["seconds"] = r.seconds;
            if (r.has_kl) {
              nb::dict kl;
              kl["base_ppl"] = r.kl.base_ppl;
              kl["base_ppl_stderr"] = r.kl.base_ppl_stderr;
              kl["mean"] = r.kl.mean;
              kl["stderr"] = r.kl.stderr_mean;
              kl["median"] = r.kl.median;
              kl["p99"] = r.kl.p99;
              kl["max"] = r.kl.max;
              kl["top1_agreement"] = r.kl.top1_agreement;
              kl["delta_p_mean"] = r.kl.delta_p_mean;
              kl["delta_p_rms"] = r.kl.delta_p_rms;
              d["kl"] = kl;
            }
            return d;
          },
          nb::arg("tokens"), nb::arg("context"), nb::arg("max_chunks"), nb::arg("threads"),
          nb::arg("kv_dtype"), nb::arg("base").none(), nb::arg("base_kv_dtype"))
      .def_static("role_names", &attn::RoleNames)
      .def_prop_ro("bos_id", [](const attn::Model& m) { return m.tokenizer().bos_id(); })
      .def_prop_ro("eos_id", [](const attn::Model& m) { return m.tokenizer().eos_id(); })
      .def_prop_ro("add_bos", [](const attn::Model& m) { return m.tokenizer().add_bos(); });
}
