#include "delta/fingerprint.h"

#include <algorithm>
#include <atomic>
#include <fmt/format.h>

#include "util/error.h"
#include "util/sha256.h"

namespace bitdelta {

void BaseFingerprints::ensure(const std::vector<std::string>& names, ThreadPool& pool) {
  std::vector<std::string> missing;
  {
    std::lock_guard lock(mutex_);
    for (const auto& n : names) {
      if (!digests_.count(n)) missing.push_back(n);
    }
  }
  if (missing.empty()) return;
  for (const auto& n : missing) {
    if (!weights_.contains(n)) fail("the base model has no tensor '{}'", n);
  }
  std::vector<std::string> digests(missing.size());
  // Big tensors one per thread, in order of size, keep both cores busy to the end.
  std::sort(missing.begin(), missing.end(), [&](const std::string& a, const std::string& b) {
    return weights_.find(a)->nbytes() > weights_.find(b)->nbytes();
  });
  std::atomic<size_t> next{0};
  pool.parallel_for(pool.size(), [&](int64_t, int64_t) {
    for (size_t i; (i = next.fetch_add(1)) < missing.size();) {
      digests[i] = sha256_hex(weights_.view(missing[i]).bytes());
    }
    sha256_thread_done();
  });
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < missing.size(); ++i) digests_[missing[i]] = digests[i];
}

void BaseFingerprints::set_digest(const std::string& name, std::string hex_digest) {
  std::lock_guard lock(mutex_);
  digests_[name] = std::move(hex_digest);
}

void BaseFingerprints::precompute(ThreadPool& pool) { ensure(weights_.names(), pool); }

std::string BaseFingerprints::fingerprint(std::vector<std::string> names, ThreadPool& pool) {
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  ensure(names, pool);
  Sha256 h;
  std::lock_guard lock(mutex_);
  for (const auto& n : names) {
    const TensorInfo* t = weights_.find(n);
    h.update(fmt::format("{}\t{}\t{}\t{}\n", n, dtype_name(t->dtype), fmt::join(t->shape, "x"),
                         digests_.at(n)));
  }
  return h.hex_digest();
}

}  // namespace bitdelta
