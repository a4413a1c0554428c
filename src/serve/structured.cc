#include "serve/structured.h"

#include <limits>

#include "util/error.h"

namespace bitdelta {

GrammarCache::GrammarCache(const Tokenizer& tokenizer, std::vector<int32_t> end_tokens,
                           size_t entries)
    : tokenizer_(tokenizer), end_tokens_(std::move(end_tokens)), entries_(entries) {}

std::shared_ptr<const constrain::CompiledGrammar> GrammarCache::get(
    const std::string& key,
    const std::function<std::shared_ptr<const constrain::Grammar>()>& make) {
  std::shared_ptr<const constrain::TokenVocab> vocab;
  {
    std::lock_guard lock(mutex_);
    if (auto it = index_.find(key); it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->second;
    }
    if (!vocab_) vocab_ = constrain::TokenVocab::from_tokenizer(tokenizer_);
    vocab = vocab_;
  }
  // Compiled outside the lock: a slow schema does not hold up requests with cached ones.
  auto compiled = std::make_shared<const constrain::CompiledGrammar>(make(), vocab, end_tokens_);
  std::lock_guard lock(mutex_);
  if (auto it = index_.find(key); it != index_.end()) return it->second->second;
  lru_.emplace_front(key, compiled);
  index_[key] = lru_.begin();
  while (lru_.size() > entries_) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return compiled;
}

GrammarConstraint::GrammarConstraint(std::shared_ptr<const constrain::CompiledGrammar> grammar)
    : matcher_(std::move(grammar)) {}

void GrammarConstraint::mask(std::span<float> logits) { matcher_.mask_logits(logits); }

void GrammarConstraint::accept(int32_t token) { matcher_.accept_or_throw(token); }

std::unique_ptr<TokenConstraint> GrammarConstraint::clone() const {
  return std::make_unique<GrammarConstraint>(*this);
}

ToolCallConstraint::ToolCallConstraint(int32_t open_token,
                                       std::shared_ptr<const constrain::CompiledGrammar> call,
                                       bool parallel, bool forbid)
    : open_token_(open_token), call_(std::move(call)), parallel_(parallel), forbid_(forbid) {}

void ToolCallConstraint::mask(std::span<float> logits) {
  constexpr float kNever = -std::numeric_limits<float>::infinity();
  if (in_call_) {
    in_call_->mask_logits(logits);
    return;
  }
  if (calls_ > 0 && !parallel_) {  // one call made: only the end may follow
    std::vector<float> keep;
    for (int32_t id : call_->end_tokens()) {
      keep.push_back(static_cast<size_t>(id) < logits.size() ? logits[id] : kNever);
    }
    std::fill(logits.begin(), logits.end(), kNever);
    for (size_t i = 0; i < keep.size(); ++i) {
      const auto id = static_cast<size_t>(call_->end_tokens()[i]);
      if (id < logits.size()) logits[id] = keep[i];
    }
    return;
  }
  if (forbid_ && static_cast<size_t>(open_token_) < logits.size()) {
    logits[open_token_] = kNever;
  }
}

void ToolCallConstraint::accept(int32_t token) {
  if (in_call_) {
    in_call_->accept_or_throw(token);
    if (in_call_->complete()) {
      in_call_.reset();
      ++calls_;
    }
    return;
  }
  if (token == open_token_ && !forbid_) in_call_.emplace(call_);
}

std::unique_ptr<TokenConstraint> ToolCallConstraint::clone() const {
  return std::make_unique<ToolCallConstraint>(*this);
}

}  // namespace bitdelta
