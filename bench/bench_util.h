// Small helpers shared by the benchmark programs.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <string>
#include <vector>

namespace bitdelta::bench {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Fastest of `reps` runs of f, in seconds (the run least disturbed by the rest of the machine).
template <typename F>
double best_seconds(int reps, F&& f) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                              .count());
  }
  return best;
}

// The best of `reps` runs of each function, run in alternation, so that the slow drifts of a
// shared machine's speed hit both sides of a ratio alike.
template <typename... F>
std::array<double, sizeof...(F)> best_seconds_interleaved(int reps, F&&... fs) {
  std::array<double, sizeof...(F)> best;
  best.fill(1e30);
  for (int i = 0; i < reps; ++i) {
    size_t j = 0;
    (
        [&] {
          const auto start = std::chrono::steady_clock::now();
          fs();
          best[j] = std::min(
              best[j],
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
          ++j;
        }(),
        ...);
  }
  return best;
}

// "1,2" → {1, 2}.
inline std::vector<int> parse_int_list(const std::string& s) {
  std::vector<int> out;
  for (size_t i = 0; i < s.size();) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    out.push_back(std::stoi(s.substr(i, j - i)));
    i = j + 1;
  }
  return out;
}

}  // namespace bitdelta::bench
