#include "util/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace bitdelta {

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  work_ready_.notify_all();
  for (auto& t : workers_) t.join();
}

namespace {
// Back-to-back loops (a forward pass is hundreds of them, some only tens of microseconds long)
// would spend much of their time waking threads through the kernel, so a thread that is about to
// wait first spins this long for the condition to come true.
constexpr auto kSpin = std::chrono::microseconds(100);

template <typename Pred>
bool spin_until(Pred ready) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  while (true) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
#if defined(__x86_64__) || defined(__i386__)
      _mm_pause();
#endif
    }
    if (std::chrono::steady_clock::now() > deadline) return ready();
  }
}

void chunk_bounds(int64_t n, int chunks, int index, int64_t* begin, int64_t* end) {
  *begin = n * index / chunks;
  *end = n * (index + 1) / chunks;
}
}  // namespace

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                              int64_t grain) {
  if (n <= 0) return;
  int chunks = static_cast<int>(std::min<int64_t>(size(), std::max<int64_t>(1, n / std::max<int64_t>(grain, 1))));
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  std::lock_guard turn(caller_mutex_);
  {
    std::lock_guard lock(mutex_);
    job_ = &fn;
    job_n_ = n;
    job_chunks_ = chunks;
    pending_ = chunks - 1;
    ++generation_;
  }
  work_ready_.notify_all();
  int64_t begin, end;
  chunk_bounds(n, chunks, 0, &begin, &end);
  fn(begin, end);
  if (!spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; })) {
    std::unique_lock lock(mutex_);
    work_done_.wait(lock, [&] { return pending_.load() == 0; });
  }
  std::lock_guard lock(mutex_);
  job_ = nullptr;
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  while (true) {
    const std::function<void(int64_t, int64_t)>* job;
    int64_t n;
    int chunks;
    spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; });
    {
      std::unique_lock lock(mutex_);
      work_ready_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
      n = job_n_;
      chunks = job_chunks_;
    }
    if (index < chunks) {
      int64_t begin, end;
      chunk_bounds(n, chunks, index, &begin, &end);
      (*job)(begin, end);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard lock(mutex_);
        work_done_.notify_one();
      }
    }
  }
}

namespace {
std::unique_ptr<ThreadPool>& default_pool_slot() {
  static std::unique_ptr<ThreadPool> pool;
  return pool;
}
}  // namespace

ThreadPool& default_thread_pool() {
  auto& pool = default_pool_slot();
  if (!pool) {
    int threads = 0;
    if (const char* env = std::getenv("BITDELTA_THREADS")) threads = std::atoi(env);
    pool = std::make_unique<ThreadPool>(threads);
  }
  return *pool;
}

void set_default_threads(int threads) { default_pool_slot() = std::make_unique<ThreadPool>(threads); }

}  // namespace bitdelta
