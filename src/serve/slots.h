// The generation slots of `attn serve` (llama.cpp's server slots), without the HTTP: requests wait
// in a queue, each free slot (one KV-cache session) takes the next one, and one thread runs them:
// a new request's prompt is evaluated on its own between steps, one piece of at most
// `prompt_piece` tokens per step (so a long prompt delays the other slots' next tokens by one
// piece, not by all of it), then every busy slot's next token goes through one
// Model::ForwardBatch per step (each weight read once for all of them). So each
// request gets the numbers it gets alone, whatever else runs beside it: one-row products and
// batched ones agree bit for bit for weights in integer formats up to 24 slots (matmul.h), and
// every sequence attends to its own cache. A slot keeps its
// cache after a request, and a request goes to the free slot whose cache begins with the longest
// part of its prompt (else the one least recently used), so a conversation's next turn evaluates
// only what is new.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "attn/generate.h"
#include "attn/model.h"

namespace attn::serve {

// One request as the slots run it. The callbacks run on the slots' thread; exactly one of on_done
// and on_error is called, once.
struct Job {
  std::vector<int32_t> tokens;  // the prompt
  GenerateOptions options;      // its threads are ignored: the slots' count applies
  // Reuse the slot's cached positions that begin the prompt (llama.cpp's cache_prompt); false
  // starts the slot's session afresh.
  bool cache_prompt = true;
  std::function<void(const std::string&)> on_text;     // text as it becomes final (optional)
  std::function<void(const GenerateResult&)> on_done;  // the result (stop_reason "cancelled" if so)
  std::function<void(std::exception_ptr)> on_error;    // what failed (attn::Error: the request's fault)
  // Set from any thread (a client that went away): the job ends before its next step.
  std::atomic<bool> cancelled{false};
};

class Slots {
 public:
  // `n_slots` sessions of `kv_dtype`, made as they are first used; `threads` for the passes. The
  // default prompt piece is the pass size of Model::Forward (ForwardOptions::max_chunk), so a
  // prompt evaluated in pieces gives exactly the numbers of one Forward.
  static constexpr int64_t kPromptPiece = 512;
  Slots(const Model& model, int n_slots, DType kv_dtype, int threads, int64_t prompt_piece = kPromptPiece);
  // Stops the thread after the current step; jobs still queued or running get on_error.
  ~Slots();
  Slots(const Slots&) = delete;
  Slots& operator=(const Slots&) = delete;

  void Submit(std::shared_ptr<Job> job);
  // Runs `task` on the slots' thread between two steps (other work on the model: embeddings), so
  // that one thread at a time computes; returns when it has run, rethrowing what it threw.
  void RunBetweenSteps(const std::function<void()>& task);

  struct Info {
    int id;
    bool busy;
    int64_t n_past;  // positions cached
  };
  std::vector<Info> Describe() const;
  int size() const { return static_cast<int>(slots_.size()); }
  // Forward passes run so far, and the most sequences that shared one (for tests and /slots).
  int64_t passes() const { return passes_.load(); }
  int max_batch() const { return max_batch_.load(); }

 private:
  struct Slot {
    int id = 0;
    std::unique_ptr<Session> session;
    std::shared_ptr<Job> job;  // null when free (changed under mutex_)
    std::unique_ptr<SequenceGeneration> gen;
    std::atomic<int64_t> n_past{0};  // for Describe
    int64_t last_used = 0;           // when it last took a job (0: never)
  };
  void Run();
  void Start(Slot& slot, std::shared_ptr<Job> job);
  void Fail(Slot& slot, std::exception_ptr error);
  void Complete(Slot& slot);

  const Model& model_;
  const DType kv_dtype_;
  const int threads_;
  const int64_t prompt_piece_;
  size_t next_prefill_ = 0;  // where the search for a slot with prompt left starts (round robin)
  std::vector<std::unique_ptr<Slot>> slots_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::deque<std::function<void()>> tasks_;  // RunBetweenSteps's, each signalling its caller
  bool stop_ = false;
  int64_t jobs_started_ = 0;
  std::atomic<int64_t> passes_{0};
  std::atomic<int> max_batch_{0};
  std::thread thread_;
};

}  // namespace attn::serve
