// The BPE model of a Hugging Face tokenizer.json: vocab, ranked merges and the merge loop.
//
// Two input modes cover the tokenizers we support:
//   byte-level (GPT-2, Qwen, Llama-3): a word is raw bytes; each byte starts as the vocab token of
//     its GPT-2 printable spelling, so no byte-level string is ever built while encoding;
//   characters (sentencepiece-style Llama-2/Mistral): a word is UTF-8 text; each character starts
//     as its own vocab token, else as <0xNN> byte tokens (byte_fallback), else as unk.
// Merging follows HF exactly: repeatedly apply the lowest-ranked adjacent pair, leftmost first,
// with a priority queue over a linked list of symbols, O(n log n) in the word length.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace bitdelta::tok {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct BpeOptions {
  bool byte_level_input = false;
  bool byte_fallback = false;
  std::optional<std::string> unk_token;
  bool fuse_unk = false;
  bool ignore_merges = false;
};

// Open-addressing map from a (left id, right id) pair to its merge rank and merged token id.
class MergeTable {
 public:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  void reserve(size_t n);
  // Keeps the first (lowest-rank) entry when a pair repeats, as HF does.
  void insert(int32_t left, int32_t right, Merge merge);
  const Merge* find(int32_t left, int32_t right) const {
    uint64_t key = pack(left, right);
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (keys_[i] == key) return &values_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }
  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t pack(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  size_t slot(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ull) >> shift_); }
  std::vector<uint64_t> keys_;
  std::vector<Merge> values_;
  size_t mask_ = 0;
  int shift_ = 64;
  size_t size_ = 0;
};

class BpeModel {
 public:
  // `vocab` maps token strings to ids; `merges` are token-string pairs in rank order. Throws Error
  // (mentioning `source`) for merges that name unknown tokens or whose result is not in the vocab,
  // and for an unk_token missing from the vocab.
  BpeModel(TokenMap vocab, const std::vector<std::pair<std::string_view, std::string_view>>& merges,
           BpeOptions options, const std::string& source);
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of one pre-tokenized word. Thread safe.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  const TokenMap& vocab() const { return vocab_; }
  const BpeOptions& options() const { return options_; }
  size_t num_merges() const { return merges_.size(); }
  int32_t max_id() const { return max_id_; }

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  void initial_symbols(std::string_view word, std::vector<int32_t>& ids) const;

  TokenMap vocab_;
  MergeTable merges_;
  BpeOptions options_;
  int32_t max_id_ = -1;
  std::optional<int32_t> unk_id_;
  std::array<int32_t, 256> byte_ids_{};      // byte-level: byte -> id of its spelling
  std::array<int32_t, 256> fallback_ids_{};  // <0xNN> ids for byte_fallback, or -1

  // Results for short words. Bounded: once full it stops growing (HF does the same), which keeps
  // memory fixed while the frequent words, seen early, stay cached.
  static constexpr size_t kCacheCapacity = 1 << 17;
  static constexpr size_t kCacheMaxWordBytes = 64;
  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace bitdelta::tok
