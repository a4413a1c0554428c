// The memory-bandwidth limit that decode is measured against (issue 14): the fastest rate at
// which `threads` threads read a buffer far larger than the caches. Each thread reads its own
// part (first touched by that thread) with the best SIMD target this CPU has (Highway's dynamic
// dispatch, as the model's kernels use) and four independent accumulators; the reading is tried
// as 1, 2, 4 and 8 independent streams per thread, with and without non-temporal prefetches, and
// the best of them (best of several passes each) is the limit. Which shape wins differs between
// CPUs: on this one a single stream is fastest.
#pragma once

#include <cstdint>
#include <string>

#include "util/thread_pool.h"

namespace bitdelta::bench {

struct ReadBandwidth {
  double single_stream = 0;  // bytes/s: one stream per thread, no prefetch
  double best = 0;           // bytes/s: the best shape
  std::string best_shape;    // e.g. "2 streams/thread, NTA prefetch"
  uint64_t bytes = 0;        // buffer size
};

// `bytes` of buffer (default 2 GiB), split evenly over the pool's threads.
ReadBandwidth measure_read_bandwidth(ThreadPool& pool, uint64_t bytes = uint64_t{2} << 30,
                                     int passes = 4);

}  // namespace bitdelta::bench
