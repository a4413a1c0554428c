// The pool's loops cover every index exactly once, back to back (where threads spin for the
// next loop) and after pauses long enough that they block, and the pool shuts down cleanly.
#include "util/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace bitdelta {
namespace {

void expect_covers(ThreadPool& pool, int64_t n, int64_t grain) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  pool.parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
  }, grain);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "index " << i;
}

TEST(ThreadPool, BackToBackLoopsCoverEveryIndexOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    for (int round = 0; round < 2000; ++round) {
      expect_covers(pool, 1 + round % 37, 1 + round % 4);
    }
  }
}

TEST(ThreadPool, LoopsAfterIdlePausesStillRun) {
  ThreadPool pool(3);
  for (int round = 0; round < 5; ++round) {
    // Longer than the spin: the workers are blocked on the condition variable by now.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    expect_covers(pool, 100, 1);
  }
}

TEST(ThreadPool, UnevenChunksAllFinishBeforeReturn) {
  ThreadPool pool(2);
  for (int round = 0; round < 20; ++round) {
    std::atomic<int> done{0};
    pool.parallel_for(2, [&](int64_t b, int64_t) {
      // One chunk outlasts the caller's spin, so it must block and be woken.
      if (b == 1) std::this_thread::sleep_for(std::chrono::milliseconds(round % 2 ? 2 : 0));
      done.fetch_add(1);
    });
    ASSERT_EQ(done.load(), 2);
  }
}

TEST(ThreadPool, LoopsFromSeveralThreadsTakeTurns) {
  ThreadPool pool(2);
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c) {
    callers.emplace_back([&] {
      for (int round = 0; round < 300; ++round) expect_covers(pool, 2 + round % 17, 1);
    });
  }
  for (auto& t : callers) t.join();
}

TEST(ThreadPool, DestroysWhileIdleOrRightAfterWork) {
  for (int i = 0; i < 50; ++i) {
    ThreadPool pool(4);
    if (i % 2) expect_covers(pool, 64, 1);
  }
}

}  // namespace
}  // namespace bitdelta
