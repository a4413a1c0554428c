#include "constrain/matcher.h"

#include <cstring>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

#include "constrain/grammar_nodes.h"
#include "util/error.h"

namespace bitdelta::constrain {
namespace detail {

// A computed mask, as a sorted id list when that is smaller than the bitset.
struct StoredMask {
  std::vector<int32_t> ids;
  std::vector<uint64_t> words;  // used when non-empty
  size_t bytes() const { return ids.size() * 4 + words.size() * 8 + sizeof(StoredMask); }

  static std::shared_ptr<const StoredMask> from(const TokenMask& mask) {
    auto m = std::make_shared<StoredMask>();
    const size_t n = mask.count();
    if (n * 32 < size_t(mask.size())) {
      m->ids = mask.ids();
    } else {
      m->words.assign(mask.words().begin(), mask.words().end());
    }
    return m;
  }
  void or_into(TokenMask& mask) const {
    if (!words.empty()) {
      auto out = mask.words();
      for (size_t i = 0; i < out.size(); ++i) out[i] |= words[i];
    } else {
      for (int32_t id : ids) mask.set(id);
    }
  }
};

// Masks by stack bytes, least recently used out once over capacity.
class MaskCache {
 public:
  explicit MaskCache(size_t capacity) : capacity_(capacity) {}

  std::shared_ptr<const StoredMask> find(const std::string& key) {
    std::lock_guard lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    ++hits_;
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->mask;
  }
  void insert(std::string key, std::shared_ptr<const StoredMask> mask) {
    std::lock_guard lock(mu_);
    ++misses_;
    if (map_.count(key)) return;
    const size_t bytes = mask->bytes() + key.size() * 2 + 64;
    lru_.push_front({std::move(key), std::move(mask), bytes});
    map_[lru_.front().key] = lru_.begin();
    bytes_ += bytes;
    while (bytes_ > capacity_ && lru_.size() > 1) {
      bytes_ -= lru_.back().bytes;
      map_.erase(lru_.back().key);
      lru_.pop_back();
    }
  }
  CompiledGrammar::CacheStats stats() const {
    std::lock_guard lock(mu_);
    return {hits_, misses_, map_.size(), bytes_};
  }
  void clear() {
    std::lock_guard lock(mu_);
    map_.clear();
    lru_.clear();
    bytes_ = 0;
  }

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const StoredMask> mask;
    size_t bytes;
  };
  mutable std::mutex mu_;
  size_t capacity_;
  size_t bytes_ = 0;
  uint64_t hits_ = 0, misses_ = 0;
  std::list<Entry> lru_;
  std::unordered_map<std::string, std::list<Entry>::iterator> map_;
};

}  // namespace detail

using detail::Frame;
using detail::StackBuf;
using detail::Stacks;

CompiledGrammar::CompiledGrammar(std::shared_ptr<const Grammar> grammar,
                                 std::shared_ptr<const TokenVocab> vocab,
                                 std::vector<int32_t> end_tokens, size_t mask_cache_bytes)
    : grammar_(std::move(grammar)), vocab_(std::move(vocab)), end_tokens_(std::move(end_tokens)) {
  BD_CHECK(grammar_ != nullptr && vocab_ != nullptr);
  is_end_.assign(size_t(vocab_->size()), 0);
  for (int32_t id : end_tokens_) {
    if (id < 0 || id >= vocab_->size()) {
      fail("constrained decoding: end token {} is outside the vocabulary of {} tokens", id,
           vocab_->size());
    }
    is_end_[size_t(id)] = 1;
  }
  pda_ = std::make_unique<detail::Pda>(grammar_->graph());
  cache_ = std::make_unique<detail::MaskCache>(mask_cache_bytes);
}

CompiledGrammar::~CompiledGrammar() = default;

CompiledGrammar::CacheStats CompiledGrammar::cache_stats() const { return cache_->stats(); }
void CompiledGrammar::clear_cache() const { cache_->clear(); }

std::shared_ptr<const detail::StoredMask> CompiledGrammar::stack_mask(
    std::span<const Frame> stack) const {
  std::string key(reinterpret_cast<const char*>(stack.data()), stack.size_bytes());
  // Inside a string past its minLength and further from its maxLength than any token reaches,
  // the length so far changes nothing: one key for all such positions (a long maxLength would
  // otherwise make every position a new mask).
  const Frame& top = stack.back();
  const detail::Node& n = grammar_->graph().nodes[top.node];
  if (n.kind == detail::NodeKind::kString && top.phase == 1 && n.max_length != detail::kUnbounded &&
      top.a >= n.min_length &&
      n.max_length - top.a > vocab_->string_table(uint8_t(top.sub)).max_count) {
    Frame normalized = top;
    normalized.a = detail::kUnbounded;
    std::memcpy(key.data() + key.size() - sizeof(Frame), &normalized, sizeof(Frame));
  }
  if (auto m = cache_->find(key)) return m;
  thread_local TokenMask mask;
  compute(stack, mask);
  auto stored = detail::StoredMask::from(mask);
  cache_->insert(std::move(key), stored);
  return stored;
}

void CompiledGrammar::compute(std::span<const Frame> stack, TokenMask& mask) const {
  mask.resize(vocab_->size());
  const Frame& top = stack.back();
  const detail::Node& n = grammar_->graph().nodes[top.node];
  if (n.kind == detail::NodeKind::kString && top.phase == 1) {
    string_tokens(stack, mask);
  } else {
    walk_trie(stack, mask);
  }
  for (int32_t id : vocab_->special_tokens()) {
    if (!is_end_[size_t(id)] && pda_->accepts(stack, vocab_->bytes(id), true)) mask.set(id);
  }
  const bool can_end = pda_->can_end(stack);
  for (int32_t id : end_tokens_) {
    if (can_end) {
      mask.set(id);
    } else {
      mask.reset(id);
    }
  }
}

// Every token whose bytes the automaton takes from `stack`: a depth-first walk over the token
// trie, with one set of stacks per depth, skipping a whole subtree at the first byte refused
// (llama.cpp's grammar sampler walks its stacks over a trie the same way).
void CompiledGrammar::walk_trie(std::span<const Frame> stack, TokenMask& mask) const {
  const detail::TokenTrie& t = vocab_->trie();
  thread_local std::vector<Stacks> levels;
  if (levels.size() < size_t(t.max_depth) + 1) levels.resize(size_t(t.max_depth) + 1);
  levels[0].clear();
  levels[0].add(stack);
  const uint32_t count = uint32_t(t.byte.size());
  for (uint32_t i = 0; i < count;) {
    const uint16_t d = t.depth[i];
    Stacks& next = levels[d];
    next.clear();
    pda_->step(levels[d - 1], t.byte[i], next);
    if (next.empty()) {
      i = t.subtree_end[i];
      continue;
    }
    for (uint32_t k = t.token_begin[i]; k < t.token_begin[i + 1]; ++k) mask.set(t.tokens[k]);
    ++i;
  }
}

// Inside a JSON string (the common case: free text). Tokens that stay inside depend only on the
// string automaton's state and the characters left to maxLength, which the vocabulary's tables
// answer; only tokens that close the string need the automaton, once per distinct suffix.
void CompiledGrammar::string_tokens(std::span<const Frame> stack, TokenMask& mask) const {
  const Frame& f = stack.back();
  const detail::Node& n = grammar_->graph().nodes[f.node];
  const detail::StringTable& table = vocab_->string_table(uint8_t(f.sub));
  const uint64_t room = n.max_length == detail::kUnbounded ? UINT64_MAX : n.max_length - f.a;
  if (room >= table.max_count) {
    mask.or_with(table.inside_all);
  } else {
    const uint32_t end = table.count_offsets[size_t(room) + 1];
    for (uint32_t i = 0; i < end; ++i) mask.set(table.inside_by_count[i]);
  }
  if (f.x != 0) {
    // Still spelling an excluded key name: escapes are refused until it differs.
    for (int32_t id : table.inside_backslash) {
      if (mask.test(id) && !pda_->accepts(stack, vocab_->bytes(id), false)) mask.reset(id);
    }
    for (const auto& group : table.closing) {
      for (const auto& [id, chars] : group.tokens) {
        if (pda_->accepts(stack, vocab_->bytes(id), false)) mask.set(id);
      }
    }
    return;
  }
  StackBuf closed;
  closed.load(stack);
  pda_->close_top(closed);
  for (const auto& group : table.closing) {
    if (!group.suffix.empty() && !pda_->accepts(closed.frames(), group.suffix, false)) continue;
    for (const auto& [id, chars] : group.tokens) {
      if (f.a + chars >= n.min_length && chars <= room) mask.set(id);
    }
  }
}

GrammarMatcher::GrammarMatcher(std::shared_ptr<const CompiledGrammar> compiled)
    : compiled_(std::move(compiled)) {
  BD_CHECK(compiled_ != nullptr);
  reset();
}

void GrammarMatcher::reset() {
  compiled_->pda().initial(state_);
  ended_ = false;
}

void GrammarMatcher::fill_mask(TokenMask& mask) const {
  if (mask.size() != compiled_->vocab().size()) {
    mask.resize(compiled_->vocab().size());
  } else {
    mask.clear();
  }
  if (ended_) return;
  for (size_t i = 0; i < state_.size(); ++i) compiled_->stack_mask(state_[i])->or_into(mask);
}

void GrammarMatcher::mask_logits(std::span<float> logits) const {
  thread_local TokenMask mask;
  fill_mask(mask);
  mask.apply_to_logits(logits);
}

bool GrammarMatcher::accept(int32_t token) {
  if (ended_ || token < 0 || token >= compiled_->vocab().size()) return false;
  if (compiled_->is_end_token(token)) {
    if (!can_end()) return false;
    ended_ = true;
    return true;
  }
  const std::string& bytes = compiled_->vocab().bytes(token);
  if (bytes.empty()) return false;
  thread_local Stacks next, scratch;
  next = state_;
  if (!compiled_->pda().run(next, bytes, compiled_->vocab().is_special(token), scratch)) {
    return false;
  }
  std::swap(state_, next);
  return true;
}

void GrammarMatcher::accept_or_throw(int32_t token) {
  if (accept(token)) return;
  if (token < 0 || token >= compiled_->vocab().size()) {
    fail("constrained decoding: token {} is outside the vocabulary", token);
  }
  fail("constrained decoding: token {} ({:?}) is not allowed by the grammar here", token,
       compiled_->vocab().bytes(token));
}

bool GrammarMatcher::can_end() const {
  if (ended_) return false;
  for (size_t i = 0; i < state_.size(); ++i) {
    if (compiled_->pda().can_end(state_[i])) return true;
  }
  return false;
}

bool GrammarMatcher::complete() const {
  if (ended_ || state_.empty()) return false;
  for (size_t i = 0; i < state_.size(); ++i) {
    if (!compiled_->pda().finished(state_[i])) return false;
  }
  return true;
}

}  // namespace bitdelta::constrain
