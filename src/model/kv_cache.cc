#include "model/kv_cache.h"

#include <algorithm>

#include "util/error.h"

namespace bitdelta {

KVCache::KVCache(const ModelConfig& config)
    : kv_dim_(config.kv_dim()),
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
  for (auto* layers : {&keys_, &values_}) {
    for (auto& buffer : *layers) buffer.resize(static_cast<size_t>(capacity * kv_dim_));
  }
  capacity_ = capacity;
}

void KVCache::truncate(int64_t n) {
  BD_CHECK(n >= 0 && n <= length_);
  length_ = n;
}

uint64_t KVCache::bytes() const {
  return static_cast<uint64_t>(2 * keys_.size() * capacity_ * kv_dim_ * sizeof(float));
}

}  // namespace bitdelta
