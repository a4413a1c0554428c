// The vocabulary side of constrained decoding: every token's bytes in a trie, built once per
// tokenizer and shared by every grammar and request (std::shared_ptr<const TokenVocab>).
//
// Special and added tokens (<|im_end|>, and Qwen3's <tool_call>, which is added but not marked
// special) are kept out of the trie: a grammar never produces them as text. They are allowed only
// as end tokens (named per CompiledGrammar) or where the grammar's literal text equals theirs.
//
// Also precomputed here, lazily and once per vocabulary: how each token reads as the inside of a
// JSON string from each string-automaton state (json_string.h). Most constrained tokens are
// inside free strings, and with these tables their masks take a pass over a list instead of a
// walk over the trie. Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "constrain/json_string.h"
#include "constrain/token_mask.h"

namespace bitdelta {
class Tokenizer;
}

namespace bitdelta::constrain {

namespace detail {

// The tokens read from one string state.
struct StringTable {
  TokenMask inside_all;                  // stay inside the string
  std::vector<int32_t> inside_by_count;  // the same, by the characters they add (ascending)
  std::vector<uint32_t> count_offsets;   // [k]: first index in inside_by_count adding >= k
  uint32_t max_count = 0;  // the most characters any token adds, inside or before closing
  std::vector<int32_t> inside_backslash;  // inside tokens holding a '\'
  struct Closing {
    std::string suffix;                                // bytes after the closing quote
    std::vector<std::pair<int32_t, uint32_t>> tokens;  // id, characters before the quote
  };
  std::vector<Closing> closing;  // tokens that close the string, by what follows the quote
};

// Every non-special token with bytes, in a trie laid out in preorder: node i's subtree is
// [i, subtree_end[i]), its tokens are tokens[token_begin[i] .. token_begin[i + 1]).
struct TokenTrie {
  std::vector<uint8_t> byte;
  std::vector<uint16_t> depth;  // 1 for a token's first byte
  std::vector<uint32_t> subtree_end;
  std::vector<uint32_t> token_begin;  // one more entry than nodes
  std::vector<int32_t> tokens;
  uint16_t max_depth = 0;
};

}  // namespace detail

class TokenVocab {
 public:
  // `token_bytes[id]`: the bytes token `id` decodes to ("" for a gap in the ids: never allowed);
  // `special[id]`: a special or added token. Throws Error when the sizes differ.
  TokenVocab(std::vector<std::string> token_bytes, std::vector<bool> special);
  // From a loaded tokenizer: special and added tokens are both kept out of the text.
  static std::shared_ptr<const TokenVocab> from_tokenizer(const Tokenizer& tokenizer);
  ~TokenVocab();
  TokenVocab(const TokenVocab&) = delete;
  TokenVocab& operator=(const TokenVocab&) = delete;

  int32_t size() const { return int32_t(bytes_.size()); }
  const std::string& bytes(int32_t id) const { return bytes_[size_t(id)]; }
  bool is_special(int32_t id) const { return special_[size_t(id)] != 0; }
  // Every single byte is a token of its own, so any text the grammar allows can be written
  // (true for byte-level BPE and for byte-fallback vocabularies).
  bool covers_all_bytes() const { return covers_all_bytes_; }

  const detail::TokenTrie& trie() const { return trie_; }
  const std::vector<int32_t>& special_tokens() const { return special_ids_; }  // with bytes
  const detail::StringTable& string_table(uint8_t sub) const;
  // Builds every string table now rather than on first use (e.g. at server start).
  void prepare_string_tables() const;

 private:
  void build_trie();

  std::vector<std::string> bytes_;
  std::vector<uint8_t> special_;
  std::vector<int32_t> special_ids_;
  bool covers_all_bytes_ = false;
  detail::TokenTrie trie_;
  mutable std::array<std::once_flag, detail::kNumStringSubs> table_once_;
  mutable std::array<std::unique_ptr<detail::StringTable>, detail::kNumStringSubs> tables_;
};

}  // namespace bitdelta::constrain
