// Loaded adapters, least recently used first out, under a byte budget. An adapter in use by a
// request (its shared_ptr held beyond the cache) is pinned and never evicted. Loads happen on the
// calling (HTTP) thread, so a cold adapter never stalls the engine's decode loop.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "delta/adapter.h"
#include "delta/fingerprint.h"
#include "model/transformer.h"
#include "serve/metrics.h"

namespace bitdelta {

class AdapterCache {
 public:
  // Its metrics carry the label base="<base>" (one cache per base model).
  AdapterCache(const Transformer& model, uint64_t budget_bytes, MetricsRegistry& metrics,
               ThreadPool& pool, const std::string& base);

  // The adapter stored at `blob` (content-addressed by `sha256`), opened, validated against the
  // base and bound, from the cache when it is there.
  std::shared_ptr<Adapter> get(const std::string& sha256, const std::filesystem::path& blob);
  // Whether the stored adapter was made for this base (opened and checked once per blob; its
  // fingerprint covers only the tensors it changes, so it cannot be compared as a string).
  bool compatible(const std::string& sha256, const std::filesystem::path& blob);
  // Adapter::check_base against this base (Error when it was made for another).
  void check(const Adapter& adapter);
  // Drops an entry (e.g. its adapter was deleted); requests holding it finish normally.
  void forget(const std::string& sha256);
  uint64_t bytes() const;

 private:
  struct Entry {
    std::string sha256;
    std::shared_ptr<Adapter> adapter;
    uint64_t bytes = 0;
  };
  void evict_locked();

  const Transformer& model_;
  uint64_t budget_;
  ThreadPool& pool_;
  mutable std::mutex mutex_;
  std::mutex bind_mutex_;  // BaseFingerprints caches digests as it goes
  BaseFingerprints fingerprints_;
  std::list<Entry> lru_;   // front: most recently used
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  uint64_t bytes_ = 0;
  std::unordered_map<std::string, bool> compatible_;  // by blob sha256
  Counter hits_, misses_, evictions_;
  Gauge bytes_gauge_, entries_gauge_;
  Histogram load_seconds_;
};

}  // namespace bitdelta
