#include "bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "bandwidth.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace bitdelta::bench::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Sums `streams` equal parts of [p, p + n) in lockstep, 256 bytes of each at a time, into four
// accumulators; with `prefetch`, a non-temporal prefetch 4 KiB ahead in every stream.
float ReadStreams(const float* p, size_t n, int streams, int prefetch) {
  const hn::ScalableTag<float> d;
  const size_t lanes = hn::Lanes(d);
  constexpr size_t kStep = 256 / sizeof(float);
  const size_t part = n / static_cast<size_t>(streams) / kStep * kStep;
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  for (size_t i = 0; i < part; i += kStep) {
    for (int s = 0; s < streams; ++s) {
      const float* q = p + static_cast<size_t>(s) * part + i;
      if (prefetch) __builtin_prefetch(q + 1024, 0, 0);  // read, no temporal locality (NTA)
      for (size_t j = 0; j + 4 * lanes <= kStep; j += 4 * lanes) {
        a0 = hn::Add(a0, hn::Load(d, q + j));
        a1 = hn::Add(a1, hn::Load(d, q + j + lanes));
        a2 = hn::Add(a2, hn::Load(d, q + j + 2 * lanes));
        a3 = hn::Add(a3, hn::Load(d, q + j + 3 * lanes));
      }
    }
  }
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
}

}  // namespace bitdelta::bench::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bitdelta::bench {

HWY_EXPORT(ReadStreams);

ReadBandwidth measure_read_bandwidth(ThreadPool& pool, uint64_t bytes, int passes) {
  const int threads = pool.size();
  const size_t per_thread = bytes / sizeof(float) / static_cast<size_t>(threads) / 4096 * 4096;
  const size_t n = per_thread * static_cast<size_t>(threads);
  std::unique_ptr<float, decltype(&std::free)> buffer(
      static_cast<float*>(std::aligned_alloc(4096, n * sizeof(float))), &std::free);
  pool.parallel_for(threads, [&](int64_t lo, int64_t hi) {  // first touch by the reader
    for (int64_t t = lo; t < hi; ++t) {
      float* p = buffer.get() + static_cast<size_t>(t) * per_thread;
      std::fill(p, p + per_thread, 1.0f);
    }
  });
  std::vector<float> sink(static_cast<size_t>(threads));
  auto rate = [&](int streams, int prefetch) {
    double best = 0;
    for (int pass = 0; pass < passes; ++pass) {
      const auto start = std::chrono::steady_clock::now();
      pool.parallel_for(threads, [&](int64_t lo, int64_t hi) {
        for (int64_t t = lo; t < hi; ++t) {
          sink[static_cast<size_t>(t)] += HWY_DYNAMIC_DISPATCH(ReadStreams)(
              buffer.get() + static_cast<size_t>(t) * per_thread, per_thread, streams, prefetch);
        }
      });
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      best = std::max(best, static_cast<double>(n * sizeof(float)) / s);
    }
    return best;
  };
  ReadBandwidth r;
  r.bytes = n * sizeof(float);
  for (int streams : {1, 2, 4, 8}) {
    for (int prefetch : {0, 1}) {
      const double b = rate(streams, prefetch);
      if (streams == 1 && prefetch == 0) r.single_stream = b;
      if (b > r.best) {
        r.best = b;
        r.best_shape = std::to_string(streams) + (streams == 1 ? " stream" : " streams") +
                       "/thread" + (prefetch ? ", prefetch" : "");
      }
    }
  }
  if (sink[0] < 0) std::printf("%f\n", static_cast<double>(sink[0]));  // keeps the reads alive
  return r;
}

}  // namespace bitdelta::bench
#endif  // HWY_ONCE
