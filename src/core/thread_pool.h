// A fixed pool of worker threads with one entry point: Run(n_tasks, fn(task, thread)).
#pragma once

#include <condition_variable>
#include <cstdint>
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

 private:
  void WorkerLoop(int index);
  void Work(int thread);

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one Run at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t n_tasks_ = 0;
  int active_threads_ = 0;
  int64_t next_task_ = 0;
  int pending_workers_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace attn
