// Grammar-constrained decoding: which tokens may come next.
//
//   auto vocab = TokenVocab::from_tokenizer(tokenizer);             // once per tokenizer
//   auto grammar = Grammar::from_json_schema(schema, "response_format.json_schema");
//   auto compiled = std::make_shared<CompiledGrammar>(grammar, vocab, end_ids);  // per grammar
//   GrammarMatcher m(compiled);                                     // per sequence; copyable
//   m.mask_logits(logits);  sample;  m.accept(token);  ... until m.ended()
//
// A CompiledGrammar binds a grammar to a vocabulary and caches the allowed-token mask of each
// automaton stack it has met (bounded, least recently used out), so positions that repeat a state
// (inside a free string, between array items, the same schema in the next request if the caller
// keeps the CompiledGrammar) cost a copy. It is thread-safe and shared by its matchers. A
// GrammarMatcher is one sequence's position: small, cheap to copy (n > 1 choices of one prompt
// copy one matcher), not thread-safe itself.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "constrain/grammar.h"
#include "constrain/pda.h"
#include "constrain/token_mask.h"
#include "constrain/token_vocab.h"

namespace bitdelta::constrain {

inline constexpr size_t kDefaultMaskCacheBytes = size_t(64) << 20;

namespace detail {
class MaskCache;
struct StoredMask;
}  // namespace detail

class CompiledGrammar {
 public:
  // `end_tokens`: ids that end the output (EOS, <|im_end|>), allowed exactly when the grammar is
  // complete. Throws Error for an id outside the vocabulary.
  CompiledGrammar(std::shared_ptr<const Grammar> grammar, std::shared_ptr<const TokenVocab> vocab,
                  std::vector<int32_t> end_tokens,
                  size_t mask_cache_bytes = kDefaultMaskCacheBytes);
  ~CompiledGrammar();
  CompiledGrammar(const CompiledGrammar&) = delete;
  CompiledGrammar& operator=(const CompiledGrammar&) = delete;

  const Grammar& grammar() const { return *grammar_; }
  const TokenVocab& vocab() const { return *vocab_; }
  const std::vector<int32_t>& end_tokens() const { return end_tokens_; }
  bool is_end_token(int32_t id) const {
    return id >= 0 && id < vocab_->size() && is_end_[size_t(id)] != 0;
  }

  struct CacheStats {
    uint64_t hits = 0;
    uint64_t misses = 0;  // masks computed
    size_t entries = 0;
    size_t bytes = 0;
  };
  CacheStats cache_stats() const;
  void clear_cache() const;

  // Internal to src/constrain: the automaton, and the allowed tokens of one stack (cached).
  const detail::Pda& pda() const { return *pda_; }
  std::shared_ptr<const detail::StoredMask> stack_mask(std::span<const detail::Frame> stack) const;

 private:
  void compute(std::span<const detail::Frame> stack, TokenMask& mask) const;
  void walk_trie(std::span<const detail::Frame> stack, TokenMask& mask) const;
  void string_tokens(std::span<const detail::Frame> stack, TokenMask& mask) const;

  std::shared_ptr<const Grammar> grammar_;
  std::shared_ptr<const TokenVocab> vocab_;
  std::vector<int32_t> end_tokens_;
  std::vector<uint8_t> is_end_;
  std::unique_ptr<detail::Pda> pda_;
  std::unique_ptr<detail::MaskCache> cache_;
};

class GrammarMatcher {
 public:
  explicit GrammarMatcher(std::shared_ptr<const CompiledGrammar> compiled);

  // The tokens allowed next; `mask` is resized to the vocabulary and overwritten. Empty once an
  // end token was accepted.
  void fill_mask(TokenMask& mask) const;
  // logits[id] = -infinity for every token not allowed next (ids past the vocabulary too).
  void mask_logits(std::span<float> logits) const;
  // Advances by `token`; false, with the state unchanged, when it is not allowed.
  bool accept(int32_t token);
  // Like accept, but throws Error naming the token when it is not allowed.
  void accept_or_throw(int32_t token);

  bool can_end() const;   // the text so far is a whole document: an end token is allowed now
  bool complete() const;  // the document is finished: nothing but an end token is allowed
  bool ended() const { return ended_; }  // an end token was accepted
  void reset();

  const CompiledGrammar& compiled() const { return *compiled_; }

 private:
  std::shared_ptr<const CompiledGrammar> compiled_;
  detail::Stacks state_;
  bool ended_ = false;
};

}  // namespace bitdelta::constrain
