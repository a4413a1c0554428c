// Constrained decoding in the server (docs/openai-api.md): response_format json_object and
// json_schema, and tool calls, as TokenConstraints that each sequence of the mixed batch applies
// to its own logits.
#pragma once

#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "constrain/matcher.h"
#include "model/generate.h"
#include "tokenizer/tokenizer.h"

namespace bitdelta {

// Per base: the vocabulary as the grammars read it (built on first use: a trie of 150k tokens
// takes a moment) and the compiled grammars of recent requests, so that a schema used again
// finds its token masks already computed. Thread-safe.
class GrammarCache {
 public:
  GrammarCache(const Tokenizer& tokenizer, std::vector<int32_t> end_tokens, size_t entries = 64);
  // The grammar `key` names, compiled; `make` builds it when it is not cached (its Error
  // propagates).
  std::shared_ptr<const constrain::CompiledGrammar> get(
      const std::string& key,
      const std::function<std::shared_ptr<const constrain::Grammar>()>& make);

 private:
  const Tokenizer& tokenizer_;
  std::vector<int32_t> end_tokens_;
  size_t entries_;
  std::mutex mutex_;
  std::shared_ptr<const constrain::TokenVocab> vocab_;
  std::list<std::pair<std::string, std::shared_ptr<const constrain::CompiledGrammar>>> lru_;
  std::map<std::string, decltype(lru_)::iterator> index_;
};

// The whole output follows a grammar from its first token, then ends (response_format; a forced
// tool call).
class GrammarConstraint : public TokenConstraint {
 public:
  explicit GrammarConstraint(std::shared_ptr<const constrain::CompiledGrammar> grammar);
  void mask(std::span<float> logits) override;
  void accept(int32_t token) override;
  std::unique_ptr<TokenConstraint> clone() const override;

 private:
  constrain::GrammarMatcher matcher_;
};

// tool_choice "auto": free text until the model opens a tool call with the template's token
// (Qwen3's <tool_call>); from there the call follows `call` (one of the tools' names with
// arguments valid against its parameters, then the closing marker), then the text is free again.
// Without parallel calls only an end token may follow the first call. With `forbid` (tool_choice
// "none") the opening token is never allowed.
class ToolCallConstraint : public TokenConstraint {
 public:
  ToolCallConstraint(int32_t open_token, std::shared_ptr<const constrain::CompiledGrammar> call,
                     bool parallel, bool forbid);
  void mask(std::span<float> logits) override;
  void accept(int32_t token) override;
  std::unique_ptr<TokenConstraint> clone() const override;

 private:
  int32_t open_token_;
  std::shared_ptr<const constrain::CompiledGrammar> call_;
  bool parallel_, forbid_;
  std::optional<constrain::GrammarMatcher> in_call_;
  int calls_ = 0;
};

}  // namespace bitdelta
