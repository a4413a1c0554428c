#include "model/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "util/error.h"

namespace bitdelta {

KVCache::KVCache(const ModelConfig& config)
    : kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim),
      max_length_(config.max_position_embeddings),
      keys_(static_cast<size_t>(config.num_hidden_layers)),
      values_(static_cast<size_t>(config.num_hidden_layers)) {}

void KVCache::reserve_more(int64_t n) {
  const int64_t needed = length_ + n;
  if (needed > max_length_) {
    fail("the sequence would be {} tokens long, beyond the model's context of {} "
         "(max_position_embeddings); shorten the prompt or ask for fewer new tokens",
         needed, max_length_);
  }
  if (needed <= capacity_) return;
  const int64_t capacity = std::min(max_length_, std::max<int64_t>({needed, 2 * capacity_, 64}));
  // Each head's filled positions move to the start of its larger stretch.
  const size_t head_bytes = static_cast<size_t>(length_ * head_dim_) * sizeof(float);
  for (auto* layers : {&keys_, &values_}) {
    for (auto& buffer : *layers) {
      std::vector<float> grown(static_cast<size_t>(kv_heads_ * capacity * head_dim_));
      for (int64_t h = 0; h < kv_heads_ && head_bytes > 0; ++h) {
        std::memcpy(grown.data() + h * capacity * head_dim_,
                    buffer.data() + h * capacity_ * head_dim_, head_bytes);
      }
      buffer = std::move(grown);
    }
  }
  capacity_ = capacity;
}

void KVCache::truncate(int64_t n) {
  BD_CHECK(n >= 0 && n <= length_);
  length_ = n;
}

void KVCache::write(int64_t layer, int64_t pos, int64_t n, const float* keys, const float* values) {
  BD_CHECK(pos >= 0 && pos + n <= capacity_);
  const size_t bytes = static_cast<size_t>(head_dim_) * sizeof(float);
  const int64_t row = kv_heads_ * head_dim_;
  for (int64_t h = 0; h < kv_heads_; ++h) {
    float* k = key(layer, h, pos);
    float* v = value(layer, h, pos);
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(k + i * head_dim_, keys + i * row + h * head_dim_, bytes);
      std::memcpy(v + i * head_dim_, values + i * row + h * head_dim_, bytes);
    }
  }
}

void KVCache::read(int64_t layer, int64_t pos, int64_t n, float* keys, float* values) const {
  BD_CHECK(pos >= 0 && pos + n <= capacity_);
  const size_t bytes = static_cast<size_t>(head_dim_) * sizeof(float);
  const int64_t row = kv_heads_ * head_dim_;
  for (int64_t h = 0; h < kv_heads_; ++h) {
    const float* k = key(layer, h, pos);
    const float* v = value(layer, h, pos);
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(keys + i * row + h * head_dim_, k + i * head_dim_, bytes);
      std::memcpy(values + i * row + h * head_dim_, v + i * head_dim_, bytes);
    }
  }
}

uint64_t KVCache::bytes() const {
  return static_cast<uint64_t>(2 * keys_.size() * capacity_ * kv_heads_ * head_dim_ *
                               sizeof(float));
}

}  // namespace bitdelta
