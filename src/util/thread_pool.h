// A fixed pool of worker threads for data-parallel loops. The calling thread takes part in every
// loop, so a pool of N threads runs N-1 workers.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace bitdelta {

class ThreadPool {
 public:
  // threads <= 0 means one per hardware thread.
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) on disjoint chunks covering [0, n), at most one chunk per thread, each
  // at least `grain` items long; returns when all are done. Loops from different threads take
  // turns; a loop may not start another from inside fn.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex caller_mutex_;  // one loop at a time
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int job_chunks_ = 0;
  // Written under mutex_; atomic so that threads may spin on them before blocking.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ = false;
};

// The process-wide pool the model uses (size from BITDELTA_THREADS, else hardware threads).
ThreadPool& default_thread_pool();
// Replaces the default pool's size; call before the first use or between runs.
void set_default_threads(int threads);

}  // namespace bitdelta
