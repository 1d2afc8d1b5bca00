// The generation slots of `attn serve`: see slots.h.
#include "serve/slots.h"

#include <algorithm>
#include <chrono>
#include <span>
#include <utility>

#include "attn/error.h"

namespace attn::serve {

Slots::Slots(const Model& model, int n_slots, DType kv_dtype, int threads, int64_t prompt_piece)
    : model_(model), kv_dtype_(kv_dtype), threads_(threads), prompt_piece_(prompt_piece) {
  if (n_slots < 1 || n_slots > 256) throw Error("slots: " + std::to_string(n_slots) + " (must be 1 to 256)");
  if (prompt_piece < 1) throw Error("slots: prompt piece of " + std::to_string(prompt_piece) + " tokens");
  for (int i = 0; i < n_slots; ++i) {
    slots_.push_back(std::make_unique<Slot>());
    slots_.back()->id = i;
  }
  thread_ = std::thread([this] { Run(); });
}

Slots::~Slots() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Slots::Submit(std::shared_ptr<Job> job) {
  if (!job || !job->on_done || !job->on_error) throw Error("slots: a job needs on_done and on_error");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stop_) throw Error("slots: the server is stopping");
    queue_.push_back(std::move(job));
  }
  wake_.notify_all();
}

void Slots::RunBetweenSteps(const std::function<void()>& task) {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stop_) throw Error("slots: the server is stopping");
    tasks_.push_back([&] {
      try {
        task();
      } catch (...) {
        error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> l(m);
        done = true;
      }
      cv.notify_all();
    });
  }
  wake_.notify_all();
  std::unique_lock<std::mutex> l(m);
  cv.wait(l, [&] { return done; });
  if (error) std::rethrow_exception(error);
}

std::vector<Slots::Info> Slots::Describe() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<Info> out;
  for (const auto& s : slots_) out.push_back(Info{s->id, s->job != nullptr, s->n_past.load()});
  return out;
}

namespace {

int64_t CommonPrefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return static_cast<int64_t>(i);
}

}  // namespace

void Slots::Start(Slot& slot, std::shared_ptr<Job> job) {
  try {
    if (!slot.session) {
      slot.session = std::make_unique<Session>(model_, std::min<int64_t>(512, model_.config().context_length),
                                               kv_dtype_);
    }
    if (!job->cache_prompt) slot.session->Reset();
    GenerateOptions options = job->options;
    options.threads = threads_;
    slot.gen =
        std::make_unique<SequenceGeneration>(model_, *slot.session, job->tokens, options, job->on_text);
    // The prompt is evaluated alone (its rows in a shared pass would change the batch's
    // products), in pieces between steps (Run); with prompt log-probabilities, at once.
    if (slot.gen->needs_prompt_rows()) {
      slot.gen->EvaluatePrompt();
      slot.n_past = slot.session->n_past();
      if (slot.gen->done()) Complete(slot);
    }
  } catch (...) {
    Fail(slot, std::current_exception());
  }
}

void Slots::Fail(Slot& slot, std::exception_ptr error) {
  // The session may hold a half-evaluated pass: start it afresh.
  if (slot.session) slot.session->Reset();
  std::shared_ptr<Job> job = slot.job;
  slot.gen.reset();
  slot.n_past = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    slot.job.reset();
  }
  try {
    job->on_error(error);
  } catch (...) {  // a callback's failure must not stop the other slots
  }
}

void Slots::Complete(Slot& slot) {
  std::shared_ptr<Job> job = slot.job;
  if (job->cancelled) slot.gen->Cancel();
  GenerateResult result = slot.gen->result();
  slot.gen.reset();
  slot.n_past = slot.session->n_past();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    slot.job.reset();
  }
  try {
    job->on_done(result);
  } catch (...) {
  }
}

void Slots::Run() {
  const int64_t vocab = model_.config().vocab_size;
  BatchStep step;
  std::vector<SequenceGeneration*> gens;
  std::vector<Slot*> stepping;
  std::vector<float> logits;
  for (;;) {
    // Admit queued jobs into free slots: each to the free slot whose cache shares the longest
    // beginning with its prompt (ties: the least recently used).
    std::vector<std::pair<Slot*, std::shared_ptr<Job>>> starting;
    std::deque<std::function<void()>> tasks;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      auto busy = [&] {
        return std::any_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->job != nullptr; });
      };
      auto free_slot = [&] {
        return std::any_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->job == nullptr; });
      };
      wake_.wait(lock,
                 [&] { return stop_ || busy() || !tasks_.empty() || (!queue_.empty() && free_slot()); });
      if (stop_) break;
      tasks.swap(tasks_);
      while (!queue_.empty() && free_slot()) {
        std::shared_ptr<Job> job = std::move(queue_.front());
        queue_.pop_front();
        Slot* best = nullptr;
        int64_t best_prefix = -1;
        for (const auto& s : slots_) {
          if (s->job != nullptr) continue;
          const int64_t prefix =
              s->session && job->cache_prompt ? CommonPrefix(s->session->tokens(), job->tokens) : 0;
          if (prefix > best_prefix || (prefix == best_prefix && s->last_used < best->last_used))
            best = s.get(), best_prefix = prefix;
        }
        best->job = job;
        best->last_used = ++jobs_started_;
        starting.emplace_back(best, std::move(job));
      }
    }
    for (auto& task : tasks) task();  // each catches its own errors
    for (auto& [slot, job] : starting) Start(*slot, job);

    // One piece of one waiting prompt (the slots take turns).
    for (size_t k = 0; k < slots_.size(); ++k) {
      Slot& s = *slots_[(next_prefill_ + k) % slots_.size()];
      if (s.job == nullptr || !s.gen || s.gen->prompt_done()) continue;
      next_prefill_ = (next_prefill_ + k + 1) % slots_.size();
      if (s.job->cancelled) {
        Complete(s);
        break;
      }
      try {
        s.gen->EvaluatePromptPiece(prompt_piece_);
        s.n_past = s.session->n_past();
        if (s.gen->done()) Complete(s);
      } catch (...) {
        Fail(s, std::current_exception());
      }
      break;
    }

    // One pass for every busy slot's next token (and its lookup drafts: GenerateOptions::lookup).
    stepping.clear(), gens.clear();
    for (const auto& s : slots_) {
      if (s->job == nullptr || !s->gen || !s->gen->prompt_done()) continue;
      if (s->job->cancelled) {
        Complete(*s);
        continue;
      }
      stepping.push_back(s.get());
      gens.push_back(s->gen.get());
    }
    if (stepping.empty()) continue;
    ForwardOptions fo;
    fo.threads = threads_;
    step.Plan(gens, fo);
    logits.resize(step.rows() * static_cast<size_t>(vocab));
    const auto t0 = std::chrono::steady_clock::now();
    try {
      model_.ForwardBatch(step.items, logits.data(), fo);
    } catch (...) {
      for (Slot* s : stepping) Fail(*s, std::current_exception());
      continue;
    }
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ++passes_;
    max_batch_ = std::max(max_batch_.load(), static_cast<int>(stepping.size()));
    for (size_t i = 0; i < stepping.size(); ++i) {
      Slot& s = *stepping[i];
      try {
        s.gen->Accept(step.Logits(logits, i, vocab), ms);
        s.n_past = s.session->n_past();
        if (s.gen->done()) Complete(s);
      } catch (...) {
        Fail(s, std::current_exception());
      }
    }
  }
  // Stopping: whatever is queued or running ends with an error.
  const auto stopping = std::make_exception_ptr(Error("the server is stopping"));
  for (const auto& s : slots_) {
    if (s->job != nullptr) Fail(*s, stopping);
  }
  std::deque<std::shared_ptr<Job>> left;
  std::deque<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    left.swap(queue_);
    tasks.swap(tasks_);
  }
  for (auto& task : tasks) task();  // their callers wait for them
  for (auto& job : left) {
    try {
      job->on_error(stopping);
    } catch (...) {
    }
  }
}

}  // namespace attn::serve
