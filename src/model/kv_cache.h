// The keys and values a sequence has computed so far, per layer: [positions, kv_heads · D] F32.
#pragma once

#include <cstdint>
#include <vector>

#include "io/model_config.h"

namespace bitdelta {

class KVCache {
 public:
  KVCache() = default;
  KVCache(const ModelConfig& config);

  int64_t length() const { return length_; }
  int64_t max_length() const { return max_length_; }
  // Makes room for `n` more positions (throws Error beyond max_position_embeddings).
  void reserve_more(int64_t n);
  // Marks `n` more positions as filled (after the forward pass wrote them).
  void advance(int64_t n) { length_ += n; }
  // Forgets positions from `n` on (e.g. to reuse a prompt prefix).
  void truncate(int64_t n);
  void clear() { truncate(0); }

  float* key(int64_t layer, int64_t pos) { return keys_[layer].data() + pos * kv_dim_; }
  float* value(int64_t layer, int64_t pos) { return values_[layer].data() + pos * kv_dim_; }
  const float* key(int64_t layer, int64_t pos) const { return keys_[layer].data() + pos * kv_dim_; }
  const float* value(int64_t layer, int64_t pos) const {
    return values_[layer].data() + pos * kv_dim_;
  }
  // Bytes currently allocated.
  uint64_t bytes() const;

 private:
  int64_t kv_dim_ = 0;
  int64_t length_ = 0;
  int64_t capacity_ = 0;
  int64_t max_length_ = 0;
  std::vector<std::vector<float>> keys_, values_;
};

}  // namespace bitdelta
