#include "serve/adapter_cache.h"

#include <chrono>

#include "util/error.h"

namespace bitdelta {

AdapterCache::AdapterCache(const Transformer& model, uint64_t budget_bytes,
                           MetricsRegistry& metrics, ThreadPool& pool, const std::string& base)
    : model_(model),
      budget_(budget_bytes),
      pool_(pool),
      fingerprints_(model.files()),
      hits_(metrics
                .counter_family("bitdelta_adapter_cache_hits_total", "Adapter cache hits", {"base"})
                .labels({base})),
      misses_(metrics
                  .counter_family("bitdelta_adapter_cache_misses_total",
                                  "Adapter cache misses (adapter loaded from the store)", {"base"})
                  .labels({base})),
      evictions_(metrics
                     .counter_family("bitdelta_adapter_cache_evictions_total",
                                     "Adapters evicted to stay under the byte budget", {"base"})
                     .labels({base})),
      bytes_gauge_(
          metrics.gauge_family("bitdelta_adapter_cache_bytes", "Bytes of cached adapters", {"base"})
              .labels({base})),
      entries_gauge_(
          metrics.gauge_family("bitdelta_adapter_cache_entries", "Cached adapters", {"base"})
              .labels({base})),
      load_seconds_(metrics
                        .histogram_family("bitdelta_adapter_load_seconds",
                                          "Time to open, validate and bind an adapter", {"base"},
                                          exponential_buckets(0.0005, 2, 14))
                        .labels({base})) {
  fingerprints_.precompute(pool_);  // adapter checks then hash nothing
}

void AdapterCache::check(const Adapter& adapter) {
  std::lock_guard lock(bind_mutex_);
  adapter.check_base(model_.files(), fingerprints_, pool_);
}

bool AdapterCache::compatible(const std::string& sha256, const std::filesystem::path& blob) {
  {
    std::lock_guard lock(mutex_);
    if (auto it = compatible_.find(sha256); it != compatible_.end()) return it->second;
  }
  bool ok = true;
  try {
    check(*Adapter::open(blob, &pool_));
  } catch (const Error&) {
    ok = false;
  }
  std::lock_guard lock(mutex_);
  compatible_[sha256] = ok;
  return ok;
}

std::shared_ptr<Adapter> AdapterCache::get(const std::string& sha256,
                                           const std::filesystem::path& blob) {
  {
    std::lock_guard lock(mutex_);
    auto it = index_.find(sha256);
    if (it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      hits_.inc();
      return it->second->adapter;
    }
  }
  misses_.inc();
  const auto start = std::chrono::steady_clock::now();
  std::shared_ptr<Adapter> adapter = Adapter::open(blob, &pool_);
  {
    std::lock_guard lock(bind_mutex_);
    adapter->bind(model_, fingerprints_, pool_);
  }
  load_seconds_.observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  std::lock_guard lock(mutex_);
  auto it = index_.find(sha256);
  if (it != index_.end()) return it->second->adapter;  // another request loaded it meanwhile
  const uint64_t bytes = adapter->file_bytes() + adapter->owned_bytes();
  lru_.push_front({sha256, adapter, bytes});
  index_[sha256] = lru_.begin();
  bytes_ += bytes;
  evict_locked();
  return adapter;
}

void AdapterCache::forget(const std::string& sha256) {
  std::lock_guard lock(mutex_);
  auto it = index_.find(sha256);
  if (it == index_.end()) return;
  bytes_ -= it->second->bytes;
  lru_.erase(it->second);
  index_.erase(it);
  bytes_gauge_.set(static_cast<double>(bytes_));
  entries_gauge_.set(static_cast<double>(lru_.size()));
}

uint64_t AdapterCache::bytes() const {
  std::lock_guard lock(mutex_);
  return bytes_;
}

// Oldest unpinned entries go first; pinned ones (held by a request) stay even over budget.
void AdapterCache::evict_locked() {
  for (auto it = lru_.end(); bytes_ > budget_ && it != lru_.begin();) {
    --it;
    if (it->adapter.use_count() > 1) continue;
    bytes_ -= it->bytes;
    index_.erase(it->sha256);
    it = lru_.erase(it);
    evictions_.inc();
  }
  bytes_gauge_.set(static_cast<double>(bytes_));
  entries_gauge_.set(static_cast<double>(lru_.size()));
}

}  // namespace bitdelta
