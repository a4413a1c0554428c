#include "tokenizer/bpe_model.h"

#include <algorithm>
#include <cstdio>
#include <mutex>

#include "tokenizer/unicode_util.h"
#include "util/error.h"

namespace bitdelta::tok {

void MergeTable::reserve(size_t n) {
  size_t capacity = 16;
  shift_ = 60;
  while (capacity < n * 2) {
    capacity *= 2;
    --shift_;
  }
  keys_.assign(capacity, kEmpty);
  values_.assign(capacity, Merge{0, 0});
  mask_ = capacity - 1;
  size_ = 0;
}

void MergeTable::insert(int32_t left, int32_t right, Merge merge) {
  BD_CHECK((size_ + 1) * 2 <= keys_.size(), "MergeTable::reserve was too small");
  uint64_t key = pack(left, right);
  size_t i = slot(key);
  while (keys_[i] != kEmpty) {
    if (keys_[i] == key) return;
    i = (i + 1) & mask_;
  }
  keys_[i] = key;
  values_[i] = merge;
  ++size_;
}

BpeModel::BpeModel(TokenMap vocab,
                   const std::vector<std::pair<std::string_view, std::string_view>>& merges,
                   BpeOptions options, const std::string& source)
    : vocab_(std::move(vocab)), options_(std::move(options)) {
  for (const auto& [token, id] : vocab_) max_id_ = std::max(max_id_, id);
  if (options_.unk_token) {
    auto it = vocab_.find(*options_.unk_token);
    if (it == vocab_.end()) {
      fail(
          "{}: the BPE unk_token \"{}\" is not in the vocab; add it to model.vocab or remove "
          "unk_token",
          source, *options_.unk_token);
    }
    unk_id_ = it->second;
  }
  const auto& table = byte_level_table();
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(table.byte_to_utf8[b]);
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto fb = vocab_.find(std::string_view(name));
    fallback_ids_[b] = fb == vocab_.end() ? -1 : fb->second;
  }

  merges_.reserve(merges.size());
  std::string merged;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto ia = vocab_.find(a);
    auto ib = vocab_.find(b);
    if (ia == vocab_.end() || ib == vocab_.end()) {
      fail(
          "{}: merge #{} (\"{}\" \"{}\") names a token that is not in the vocab; the merges do "
          "not belong to this vocab",
          source, rank, a, b);
    }
    merged.assign(a).append(b);
    auto im = vocab_.find(merged);
    if (im == vocab_.end()) {
      fail("{}: merge #{} (\"{}\" \"{}\") produces \"{}\", which is not in the vocab", source, rank,
           a, b, merged);
    }
    merges_.insert(ia->second, ib->second, {int32_t(rank), im->second});
  }
}

void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>& ids) const {
  ids.clear();
  // Unknown pieces become unk; with fuse_unk a run of them becomes a single unk.
  bool last_was_unk = false;
  auto push_unknown = [&](std::string_view piece) {
    if (options_.byte_fallback) {
      bool all = true;
      for (char c : piece) all = all && fallback_ids_[uint8_t(c)] >= 0;
      if (all) {
        for (char c : piece) ids.push_back(fallback_ids_[uint8_t(c)]);
        last_was_unk = false;
        return;
      }
    }
    if (!unk_id_) return;  // HF drops characters it cannot represent at all
    if (last_was_unk && options_.fuse_unk) return;
    ids.push_back(*unk_id_);
    last_was_unk = true;
  };
  if (options_.byte_level_input) {
    for (size_t i = 0; i < word.size(); ++i) {
      int32_t id = byte_ids_[uint8_t(word[i])];
      if (id >= 0) {
        ids.push_back(id);
        last_was_unk = false;
      } else {
        push_unknown(word.substr(i, 1));
      }
    }
    return;
  }
  size_t i = 0;
  while (i < word.size()) {
    size_t n = std::min<size_t>(utf8_len(uint8_t(word[i])), word.size() - i);
    std::string_view ch = word.substr(i, n);
    auto it = vocab_.find(ch);
    if (it != vocab_.end()) {
      ids.push_back(it->second);
      last_was_unk = false;
    } else {
      push_unknown(ch);
    }
    i += n;
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t merged_id;
    // std heap functions build a max-heap; invert so the lowest rank, then leftmost, comes first.
    bool operator<(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<int32_t> ids;
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;

  initial_symbols(word, ids);
  const int32_t n = int32_t(ids.size());
  if (n <= 1) {
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  symbols.resize(size_t(n));
  heap.clear();
  for (int32_t i = 0; i < n; ++i) symbols[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1, true};
  auto consider = [&](int32_t pos) {
    int32_t next = symbols[pos].next;
    if (next < 0) return;
    if (const auto* m = merges_.find(symbols[pos].id, symbols[next].id)) {
      heap.push_back({m->rank, pos, m->merged_id});
      std::push_heap(heap.begin(), heap.end());
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // Entries go stale when a neighbour merged since they were pushed.
    const auto* m = merges_.find(left.id, right.id);
    if (m == nullptr || m->merged_id != top.merged_id) continue;
    left.id = top.merged_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (options_.byte_level_input && word.size() == 1 && byte_ids_[uint8_t(word[0])] >= 0) {
    out.push_back(byte_ids_[uint8_t(word[0])]);
    return;
  }
  if (options_.ignore_merges) {
    if (options_.byte_level_input) {
      std::string spelled;
      byte_level_encode(word, spelled);
      if (auto it = vocab_.find(spelled); it != vocab_.end()) {
        out.push_back(it->second);
        return;
      }
    } else if (auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kCacheMaxWordBytes;
  if (cacheable) {
    std::shared_lock lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t start = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::unique_lock lock(cache_mutex_);
    if (cache_.size() < kCacheCapacity) {
      cache_.try_emplace(std::string(word), out.begin() + std::ptrdiff_t(start), out.end());
    }
  }
}

}  // namespace bitdelta::tok
