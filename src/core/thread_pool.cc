#include "core/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <new>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace attn {
namespace {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until pred() holds or kSpinMicros pass; returns whether it holds.
template <class Pred>
bool SpinFor(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(ThreadPool::kSpinMicros);
  for (int i = 0;; ++i) {
    if (pred()) return true;
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) return pred();
    CpuRelax();
  }
}

constexpr uint64_t kActiveMask = 0xFF;

}  // namespace

ThreadPool& ThreadPool::Global() {
  static ThreadPool pool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  return pool;
}

ThreadPool::ThreadPool(int n_threads) {
  n_threads = std::clamp(n_threads, 1, static_cast<int>(kActiveMask));
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::Work(int thread) {
  for (;;) {
    if (failed_.load(std::memory_order_relaxed)) return;
    const int64_t task = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (task >= n_tasks_) return;
    try {
      (*fn_)(task, thread);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
      failed_.store(true);
    }
  }
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = 0;
    auto changed = [&] {
      g = generation_.load(std::memory_order_acquire);
      return g != seen || stop_.load(std::memory_order_relaxed);
    };
    if (!SpinFor(changed)) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, changed);
    }
    if (stop_.load()) return;
    seen = g;
    if (static_cast<uint64_t>(index) >= (g & kActiveMask)) continue;
    Work(index);
    if (pending_workers_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mutex_);  // pairs with the waiter's predicate check
      done_.notify_one();
    }
  }
}

void ThreadPool::Run(int64_t n_tasks, int threads, const std::function<void(int64_t, int)>& fn) {
  if (n_tasks <= 0) return;
  int n = threads <= 0 ? size() : std::min(threads, size());
  n = static_cast<int>(std::min<int64_t>(n, n_tasks));
  std::lock_guard<std::mutex> run_lock(run_mutex_);
  fn_ = &fn;
  n_tasks_ = n_tasks;
  next_task_.store(0, std::memory_order_relaxed);
  failed_.store(false, std::memory_order_relaxed);
  error_ = nullptr;
  if (n > 1) {
    pending_workers_.store(n - 1, std::memory_order_relaxed);
    {
      // Under the mutex, so a worker between its predicate check and its sleep cannot miss it.
      std::lock_guard<std::mutex> lock(mutex_);
      const uint64_t counter = (generation_.load(std::memory_order_relaxed) >> 8) + 1;
      generation_.store((counter << 8) | static_cast<uint64_t>(n), std::memory_order_release);
    }
    wake_.notify_all();
  }
  Work(0);
  if (n > 1) {
    auto all_done = [&] { return pending_workers_.load(std::memory_order_acquire) == 0; };
    if (!SpinFor(all_done)) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, all_done);
    }
  }
  fn_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

namespace {

// The unclaimed items of one share, [front, back), packed into one word so that the owner (from
// the front) and a thief (from the back) claim with one compare-exchange each.
struct alignas(64) Share {
  std::atomic<uint64_t> range{0};
  static uint64_t Pack(uint32_t front, uint32_t back) { return (static_cast<uint64_t>(front) << 32) | back; }
  // Claims the next item from the front (owner) or the back (thief); false when none is left.
  bool Claim(bool from_front, int64_t* item) {
    uint64_t r = range.load(std::memory_order_relaxed);
    for (;;) {
      const uint32_t front = static_cast<uint32_t>(r >> 32), back = static_cast<uint32_t>(r);
      if (front >= back) return false;
      const uint64_t next = from_front ? Pack(front + 1, back) : Pack(front, back - 1);
      if (range.compare_exchange_weak(r, next, std::memory_order_relaxed)) {
        *item = from_front ? front : back - 1;
        return true;
      }
    }
  }
};

}  // namespace

void ThreadPool::RunContiguous(int64_t n_items, int threads, const std::function<void(int64_t, int)>& fn) {
  if (n_items <= 0) return;
  if (n_items > int64_t{0xFFFFFFFF}) {  // items are 32-bit inside a share; never the case for rows
    Run(n_items, threads, fn);
    return;
  }
  int n = threads <= 0 ? size() : std::min(threads, size());
  n = static_cast<int>(std::min<int64_t>(n, n_items));
  if (n == 1) {
    for (int64_t i = 0; i < n_items; ++i) fn(i, 0);
    return;
  }
  std::unique_ptr<Share[]> shares(new Share[n]);
  for (int s = 0; s < n; ++s) {
    shares[s].range.store(
        Share::Pack(static_cast<uint32_t>(n_items * s / n), static_cast<uint32_t>(n_items * (s + 1) / n)),
        std::memory_order_relaxed);
  }
  Run(n, n, [&](int64_t own, int thread) {
    int64_t item;
    while (shares[own].Claim(true, &item)) fn(item, thread);
    for (int64_t k = 1; k < n; ++k) {  // then the ends of the others, nearest share first
      Share& other = shares[(own + k) % n];
      while (other.Claim(false, &item)) fn(item, thread);
    }
  });
}

}  // namespace attn
