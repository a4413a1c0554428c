// A set of token ids as a bitset over the vocabulary: bit (id % 64) of word (id / 64).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

namespace bitdelta::constrain {

class TokenMask {
 public:
  TokenMask() = default;
  explicit TokenMask(int32_t size) { resize(size); }

  // Size in tokens; resizing clears every bit.
  void resize(int32_t size) {
    size_ = size;
    words_.assign((size_t(size) + 63) / 64, 0);
  }
  int32_t size() const { return size_; }
  void clear() { std::fill(words_.begin(), words_.end(), 0); }

  bool test(int32_t id) const {
    return id >= 0 && id < size_ && (words_[size_t(id) >> 6] >> (id & 63)) & 1;
  }
  void set(int32_t id) { words_[size_t(id) >> 6] |= uint64_t(1) << (id & 63); }
  void reset(int32_t id) { words_[size_t(id) >> 6] &= ~(uint64_t(1) << (id & 63)); }
  void or_with(const TokenMask& other) {
    for (size_t i = 0; i < words_.size() && i < other.words_.size(); ++i) {
      words_[i] |= other.words_[i];
    }
  }

  size_t count() const {
    size_t n = 0;
    for (uint64_t w : words_) n += size_t(__builtin_popcountll(w));
    return n;
  }
  std::vector<int32_t> ids() const {
    std::vector<int32_t> out;
    for (size_t i = 0; i < words_.size(); ++i) {
      for (uint64_t w = words_[i]; w != 0; w &= w - 1) {
        out.push_back(int32_t(i * 64 + size_t(__builtin_ctzll(w))));
      }
    }
    return out;
  }
  std::span<uint64_t> words() { return words_; }
  std::span<const uint64_t> words() const { return words_; }

  // logits[id] = -infinity for every id not in the set, including ids >= size() (a model's
  // output layer is often wider than its tokenizer's vocabulary).
  void apply_to_logits(std::span<float> logits) const {
    const float minus_inf = -std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < logits.size(); i += 64) {
      const size_t w = i / 64;
      uint64_t bits = w < words_.size() ? words_[w] : 0;
      if (bits == ~uint64_t(0)) continue;
      const size_t end = std::min(logits.size(), i + 64);
      for (size_t j = i; j < end; ++j, bits >>= 1) {
        if (!(bits & 1)) logits[j] = minus_inf;
      }
    }
  }

 private:
  int32_t size_ = 0;
  std::vector<uint64_t> words_;
};

}  // namespace bitdelta::constrain
