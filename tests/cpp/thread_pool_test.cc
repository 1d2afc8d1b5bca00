// The spin-then-sleep thread pool: every task runs exactly once, across many back-to-back jobs
// with changing thread counts (the pattern of token-by-token generation), after idle periods
// long enough for the workers to fall asleep, and with exceptions; RunContiguous likewise, and
// its order: each thread starts on its own contiguous share.
#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
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

TEST(ThreadPool, RunContiguousRunsEveryItemOnceAndStartsEachThreadOnItsShare) {
  ThreadPool pool(4);
  for (int job = 0; job < 2000; ++job) {
    const int64_t n_items = 1 + (job * 7) % 301;
    const int threads = job % 6;  // 0 = all; 5 is more than the pool has
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n_items));
    std::atomic<int> bad_thread{0};
    pool.RunContiguous(n_items, threads, [&](int64_t item, int thread) {
      hits[static_cast<size_t>(item)].fetch_add(1);
      if (thread < 0 || thread >= pool.size()) bad_thread.fetch_add(1);
    });
    for (int64_t i = 0; i < n_items; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "job " << job;
    ASSERT_EQ(bad_thread.load(), 0);
  }
  // On one thread the items run in order. With several, a thread that starts at the front of a
  // share (items 0, n/T, 2n/T, ...) walks it in increasing order until the share is used up; a
  // thread only starts elsewhere when its own share was all taken before it began (a late start),
  // so at least the thread of share 0, which starts first, shows the pattern.
  std::vector<int64_t> order;
  pool.RunContiguous(10, 1, [&](int64_t item, int) { order.push_back(item); });
  EXPECT_EQ(order, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  for (int rep = 0; rep < 20; ++rep) {
    std::mutex mu;
    std::vector<std::vector<int64_t>> per_thread(static_cast<size_t>(pool.size()));
    pool.RunContiguous(400, 4, [&](int64_t item, int thread) {
      std::lock_guard<std::mutex> lock(mu);
      per_thread[static_cast<size_t>(thread)].push_back(item);
    });
    int front_starts = 0;
    for (const auto& items : per_thread) {
      if (items.empty() || items.front() % 100 != 0) continue;
      ++front_starts;
      for (size_t i = 1; i < items.size() && items[i] / 100 == items.front() / 100; ++i)
        ASSERT_EQ(items[i], items[i - 1] + 1) << "a thread's own share is walked in order";
    }
    EXPECT_GE(front_starts, 1);
  }
}

TEST(ThreadPool, RunContiguousRethrowsAndStaysUsable) {
  ThreadPool pool(2);
  EXPECT_THROW(pool.RunContiguous(64, 0,
                                  [](int64_t item, int) {
                                    if (item == 40) throw std::runtime_error("item 40");
                                  }),
               std::runtime_error);
  std::atomic<int> count{0};
  pool.RunContiguous(64, 0, [&](int64_t, int) { count.fetch_add(1); });
  EXPECT_EQ(count.load(), 64);
}

}  // namespace
}  // namespace attn
