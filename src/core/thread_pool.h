// A fixed pool of worker threads with one entry point: Run(n_tasks, fn(task, thread)).
//
// Token-by-token generation calls Run ~200 times per token for products of 5-70 us each, so the
// cost of handing work to a thread matters: after a Run, workers spin on an atomic generation
// counter for a short while (kSpinMicros) before sleeping on a condition variable. A Run that
// follows within that window starts them in well under a microsecond instead of the 15-20 us a
// futex wake-up costs on this VM.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace attn {

class ThreadPool {
 public:
  // The process-wide pool, sized to the machine's cores.
  static ThreadPool& Global();
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(task, thread) for every task in [0, n_tasks) on at most `threads` threads
  // (0 = all); thread is in [0, threads) and picks per-thread scratch space. Tasks are handed
  // out dynamically, so results must not depend on which thread runs a task. The caller's
  // thread takes part. Exceptions thrown by fn are rethrown here (the first one).
  void Run(int64_t n_tasks, int threads, const std::function<void(int64_t, int)>& fn);

  // Calls fn(item, thread) for every item in [0, n_items) on at most `threads` threads, where
  // consecutive items read consecutive memory (rows of a matrix). Each thread starts on its own
  // contiguous share of the items and walks it in increasing order, so it reads one long stream
  // that the hardware prefetcher follows; a thread whose share is done takes items from the end
  // of an unfinished share, so a late or slowed thread delays the whole by about one item.
  // Which thread runs an item varies from call to call: results must not depend on it.
  void RunContiguous(int64_t n_items, int threads, const std::function<void(int64_t, int)>& fn);

  // How long idle workers (and a Run waiting for them) spin before sleeping.
  static constexpr int kSpinMicros = 300;

 private:
  void WorkerLoop(int index);
  void Work(int thread);

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one Run at a time
  // The current job. Written by Run before it publishes a new generation (release), read by
  // workers after they observe it (acquire).
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_task_{0};
  // generation_ = (job counter << 8) | active threads: a worker decides from the one value it
  // loaded whether it takes part, so it can never mix two jobs' parameters.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_workers_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::mutex mutex_;  // guards sleeping and error_
  std::condition_variable wake_, done_;
  std::exception_ptr error_;
};

}  // namespace attn
