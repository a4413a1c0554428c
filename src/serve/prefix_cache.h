// Prefix caching for the server (docs/prefix-cache.md): the KV cache of prompt prefixes already
// seen, in blocks of whole tokens, reused by later requests that start the same way instead of
// prefilling them again (as llama.cpp's cache_prompt and vLLM's automatic prefix caching do).
//
// A block is keyed by its owner (the base, or one adapter's content hash: an adapter changes the
// keys and values, so a prefix is shared only among requests of the same adapter) and by every
// token before and in it, through a chain of XXH3-128 hashes; an entry also keeps its own tokens
// and its parent's key, and both are compared on lookup, so a hit is an exact match. Restoring
// never changes a result: the forward pass is batch-invariant and chunk-invariant, so the cached
// keys and values are bitwise those the request would have computed.
//
// Bounded by a byte budget, least recently used blocks evicted first (a block is only evicted
// after the blocks that extend it, so chains stay whole). Thread safe.
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/model_config.h"
#include "model/kv_cache.h"

namespace bitdelta {

struct PrefixCacheStats {
  int64_t lookups = 0;        // requests looked up
  int64_t lookup_tokens = 0;  // prompt tokens that could have been served from the cache
  int64_t hit_tokens = 0;     // prompt tokens restored instead of computed
  int64_t stored_blocks = 0, evicted_blocks = 0;
  int64_t blocks = 0;
  uint64_t bytes = 0;
};

class PrefixCache {
 public:
  PrefixCache(const ModelConfig& config, uint64_t budget_bytes, int64_t block_tokens = 32);

  int64_t block_tokens() const { return block_; }

  // Restores into `cache` (empty) the longest cached run of whole blocks that starts `prompt`, at
  // most `max_tokens` tokens (callers leave at least the prompt's last token to compute, whose
  // logits they need). Returns the tokens restored (cache.length()).
  int64_t restore(const std::string& owner, std::span<const int32_t> prompt, int64_t max_tokens,
                  KVCache& cache);
  // Keeps the whole blocks of prompt[0, n) that `cache` holds (n ≤ cache.length()) and that are
  // not cached yet.
  void store(const std::string& owner, std::span<const int32_t> prompt, int64_t n,
             const KVCache& cache);

  PrefixCacheStats stats() const;

 private:
  struct Key {
    uint64_t high = 0, low = 0;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const { return static_cast<size_t>(k.low ^ (k.high * 31)); }
  };
  struct Block {
    Key parent;
    std::vector<int32_t> tokens;
    std::vector<float> kv;  // [layers][keys, values][block][kv_dim]
    int64_t children = 0;   // cached blocks that extend this one
    std::list<Key>::iterator lru;
  };
  Key root(const std::string& owner) const;
  Key extend(const Key& parent, std::span<const int32_t> tokens) const;
  void evict_to_fit(uint64_t incoming);

  int64_t layers_, kv_dim_, block_;
  uint64_t budget_, block_bytes_;
  mutable std::mutex mutex_;
  std::unordered_map<Key, Block, KeyHash> blocks_;
  std::list<Key> lru_;  // front: most recently used
  PrefixCacheStats stats_;
};

}  // namespace bitdelta
