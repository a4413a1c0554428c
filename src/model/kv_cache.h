// The keys and values a sequence has computed so far, per layer, head-major: [kv_heads, capacity,
// D] F32, so that one head's positions lie one after another (attention reads a head's keys and
// values as one sequential stream; position-major rows put every position of a head on its own
// 4 KiB page, which the hardware prefetchers do not follow: 2x slower attention at 1,000 tokens).
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

  // Head `head`'s key (value) at `pos`; the same head's next position follows D floats later.
  float* key(int64_t layer, int64_t head, int64_t pos) {
    return keys_[layer].data() + (head * capacity_ + pos) * head_dim_;
  }
  float* value(int64_t layer, int64_t head, int64_t pos) {
    return values_[layer].data() + (head * capacity_ + pos) * head_dim_;
  }
  const float* key(int64_t layer, int64_t head, int64_t pos) const {
    return keys_[layer].data() + (head * capacity_ + pos) * head_dim_;
  }
  const float* value(int64_t layer, int64_t head, int64_t pos) const {
    return values_[layer].data() + (head * capacity_ + pos) * head_dim_;
  }
  // Stores positions [pos, pos + n) of a layer from rows of kv_heads · D floats (a token's keys
  // and values as the projections give them); pos + n must be within the reserved room.
  void write(int64_t layer, int64_t pos, int64_t n, const float* keys, const float* values);
  // The opposite: positions [pos, pos + n) of a layer as rows of kv_heads · D floats.
  void read(int64_t layer, int64_t pos, int64_t n, float* keys, float* values) const;
  // Bytes currently allocated.
  uint64_t bytes() const;

 private:
  int64_t kv_heads_ = 0;
  int64_t head_dim_ = 0;
  int64_t length_ = 0;
  int64_t capacity_ = 0;
  int64_t max_length_ = 0;
  std::vector<std::vector<float>> keys_, values_;
};

}  // namespace bitdelta
