#include "serve/prefix_cache.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>

#include "util/error.h"

namespace bitdelta {

PrefixCache::PrefixCache(const ModelConfig& config, uint64_t budget_bytes, int64_t block_tokens)
    : layers_(config.num_hidden_layers),
      kv_dim_(config.kv_dim()),
      block_(block_tokens),
      budget_(budget_bytes) {
  if (block_ <= 0) fail("the prefix cache's block must hold at least one token");
  block_bytes_ = static_cast<uint64_t>(2 * layers_ * block_ * kv_dim_) * sizeof(float) +
                 static_cast<uint64_t>(block_) * sizeof(int32_t);
}

PrefixCache::Key PrefixCache::root(const std::string& owner) const {
  const XXH128_hash_t h = XXH3_128bits(owner.data(), owner.size());
  return {h.high64, h.low64};
}

PrefixCache::Key PrefixCache::extend(const Key& parent, std::span<const int32_t> tokens) const {
  // XXH3-128 of the parent's key followed by the block's tokens.
  std::vector<uint8_t> bytes(sizeof(parent) + tokens.size_bytes());
  std::memcpy(bytes.data(), &parent, sizeof(parent));
  std::memcpy(bytes.data() + sizeof(parent), tokens.data(), tokens.size_bytes());
  const XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  return {h.high64, h.low64};
}

int64_t PrefixCache::restore(const std::string& owner, std::span<const int32_t> prompt,
                             int64_t max_tokens, KVCache& cache) {
  BD_CHECK(cache.length() == 0);
  std::lock_guard lock(mutex_);
  const int64_t whole = std::min<int64_t>(max_tokens, static_cast<int64_t>(prompt.size())) / block_;
  ++stats_.lookups;
  stats_.lookup_tokens += whole * block_;
  // The run of cached blocks, checked token by token.
  std::vector<Block*> run;
  Key key = root(owner);
  for (int64_t b = 0; b < whole; ++b) {
    const auto tokens =
        prompt.subspan(static_cast<size_t>(b * block_), static_cast<size_t>(block_));
    const Key next = extend(key, tokens);
    auto it = blocks_.find(next);
    if (it == blocks_.end() || !(it->second.parent == key) ||
        !std::equal(tokens.begin(), tokens.end(), it->second.tokens.begin())) {
      break;
    }
    run.push_back(&it->second);
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    key = next;
  }
  if (run.empty()) return 0;
  const int64_t n = static_cast<int64_t>(run.size()) * block_;
  cache.reserve_more(n);
  for (size_t b = 0; b < run.size(); ++b) {
    const float* kv = run[b]->kv.data();
    const int64_t pos = static_cast<int64_t>(b) * block_;
    for (int64_t l = 0; l < layers_; ++l) {
      const float* keys = kv + (2 * l) * block_ * kv_dim_;
      const float* values = keys + block_ * kv_dim_;
      cache.write(l, pos, block_, keys, values);
    }
  }
  cache.advance(n);
  stats_.hit_tokens += n;
  return n;
}

void PrefixCache::store(const std::string& owner, std::span<const int32_t> prompt, int64_t n,
                        const KVCache& cache) {
  BD_CHECK(n <= cache.length() && n <= static_cast<int64_t>(prompt.size()));
  if (budget_ < block_bytes_) return;
  std::lock_guard lock(mutex_);
  Key key = root(owner);
  Block* parent = nullptr;
  for (int64_t b = 0; b < n / block_; ++b) {
    const auto tokens =
        prompt.subspan(static_cast<size_t>(b * block_), static_cast<size_t>(block_));
    const Key next = extend(key, tokens);
    auto it = blocks_.find(next);
    if (it == blocks_.end()) {
      // The parent is pinned (no longer a leaf) while room is made, so it stays.
      if (parent != nullptr) ++parent->children;
      evict_to_fit(block_bytes_);
      if (stats_.bytes + block_bytes_ > budget_) {
        if (parent != nullptr) --parent->children;
        return;
      }
      Block block;
      block.parent = key;
      block.tokens.assign(tokens.begin(), tokens.end());
      block.kv.resize(static_cast<size_t>(2 * layers_ * block_ * kv_dim_));
      const int64_t pos = b * block_;
      for (int64_t l = 0; l < layers_; ++l) {
        float* keys = block.kv.data() + (2 * l) * block_ * kv_dim_;
        cache.read(l, pos, block_, keys, keys + block_ * kv_dim_);
      }
      lru_.push_front(next);
      block.lru = lru_.begin();
      it = blocks_.emplace(next, std::move(block)).first;
      ++stats_.stored_blocks;
      ++stats_.blocks;
      stats_.bytes += block_bytes_;
    } else {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
    }
    parent = &it->second;
    key = next;
  }
}

void PrefixCache::evict_to_fit(uint64_t incoming) {
  // Least recently used first, among blocks no cached block extends (leaves), so every cached
  // block's parent stays cached.
  while (stats_.bytes + incoming > budget_ && !lru_.empty()) {
    auto victim = lru_.end();
    for (auto it = std::prev(lru_.end());; --it) {
      if (blocks_.at(*it).children == 0) {
        victim = it;
        break;
      }
      if (it == lru_.begin()) break;
    }
    if (victim == lru_.end()) return;
    Block& block = blocks_.at(*victim);
    if (auto parent = blocks_.find(block.parent); parent != blocks_.end()) {
      --parent->second.children;
    }
    blocks_.erase(*victim);
    lru_.erase(victim);
    ++stats_.evicted_blocks;
    --stats_.blocks;
    stats_.bytes -= block_bytes_;
  }
}

PrefixCacheStats PrefixCache::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace bitdelta
