// The spin-then-sleep thread pool: every task runs exactly once, across many back-to-back jobs
// with changing thread counts (the pattern of token-by-token generation), after idle periods
// long enough for the workers to fall asleep, and with exceptions.
#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

namespace attn {
namespace {

TEST(ThreadPool, EveryTaskRunsOnceAcrossManyJobs) {
  ThreadPool pool(4);
  for (int job = 0; job < 3000; ++job) {
    const int64_t n_tasks = 1 + job % 37;
    const int threads = job % 5;  // 0 = all
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n_tasks));
    std::atomic<int> bad_thread{0};
    pool.Run(n_tasks, threads, [&](int64_t task, int thread) {
      hits[static_cast<size_t>(task)].fetch_add(1);
      const int limit = threads == 0 ? pool.size() : threads;
      if (thread < 0 || thread >= limit) bad_thread.fetch_add(1);
    });
    for (int64_t t = 0; t < n_tasks; ++t) ASSERT_EQ(hits[static_cast<size_t>(t)].load(), 1) << "job " << job;
    ASSERT_EQ(bad_thread.load(), 0);
    if (job % 1000 == 999) {
      // Idle past the spin window, so the next job has to wake sleeping workers.
      std::this_thread::sleep_for(std::chrono::microseconds(5 * ThreadPool::kSpinMicros));
    }
  }
}

TEST(ThreadPool, RethrowsTheFirstExceptionAndStaysUsable) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.Run(100, 0,
                        [](int64_t task, int) {
                          if (task == 17) throw std::runtime_error("task 17");
                        }),
               std::runtime_error);
  std::atomic<int> count{0};
  pool.Run(50, 0, [&](int64_t, int) { count.fetch_add(1); });
  EXPECT_EQ(count.load(), 50);
}

}  // namespace
}  // namespace attn
