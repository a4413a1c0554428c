// Shared by the constrained-decoding tests: the real Qwen3 vocabulary (loaded once per process),
// a one-byte-per-token vocabulary for exact byte-level checks, and helpers to drive a matcher.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "constrain/grammar.h"
#include "constrain/matcher.h"
#include "constrain/token_vocab.h"
#include "support/test_support.h"
#include "tokenizer/tokenizer.h"

namespace bitdelta::constrain::testing {

using bitdelta::testing::shared_asset;

inline constexpr int32_t kQwenImEnd = 151645;
inline constexpr int32_t kQwenEndOfText = 151643;
inline constexpr int32_t kQwenToolCall = 151657;

inline const Tokenizer& qwen3_tokenizer() {
  static const Tokenizer t = Tokenizer::from_folder(shared_asset("tokenizers/qwen3"));
  return t;
}

inline std::shared_ptr<const TokenVocab> qwen3_vocab() {
  static const std::shared_ptr<const TokenVocab> v = TokenVocab::from_tokenizer(qwen3_tokenizer());
  return v;
}

// The Qwen3 token of one byte (byte-level BPE has one for each of the 256 bytes).
inline int32_t qwen3_byte_token(uint8_t b) {
  static const std::vector<int32_t> tokens = [] {
    std::vector<int32_t> t(256, -1);
    const auto& v = *qwen3_vocab();
    for (int32_t id = 0; id < v.size(); ++id) {
      if (!v.is_special(id) && v.bytes(id).size() == 1) t[uint8_t(v.bytes(id)[0])] = id;
    }
    return t;
  }();
  return tokens[b];
}

// Tokens 0-255 are the single bytes; 256 is a special end token; 257 is a special "<tool_call>".
inline std::shared_ptr<const TokenVocab> byte_vocab() {
  static const std::shared_ptr<const TokenVocab> v = [] {
    std::vector<std::string> bytes;
    std::vector<bool> special;
    for (int b = 0; b < 256; ++b) {
      bytes.push_back(std::string(1, char(b)));
      special.push_back(false);
    }
    bytes.push_back("</s>");
    special.push_back(true);
    bytes.push_back("<tool_call>");
    special.push_back(true);
    return std::make_shared<const TokenVocab>(std::move(bytes), std::move(special));
  }();
  return v;
}
inline constexpr int32_t kByteEnd = 256;
inline constexpr int32_t kByteToolCall = 257;

inline std::shared_ptr<const CompiledGrammar> compile_for_qwen(std::shared_ptr<const Grammar> g) {
  return std::make_shared<const CompiledGrammar>(std::move(g), qwen3_vocab(),
                                                 std::vector<int32_t>{kQwenImEnd, kQwenEndOfText});
}

inline std::shared_ptr<const CompiledGrammar> compile_for_bytes(std::shared_ptr<const Grammar> g) {
  return std::make_shared<const CompiledGrammar>(std::move(g), byte_vocab(),
                                                 std::vector<int32_t>{kByteEnd});
}

inline std::shared_ptr<const Grammar> schema_grammar(const std::string& schema_text) {
  return Grammar::from_json_schema_text(schema_text, "json_schema");
}

// Whether `text` is a whole document of the grammar, fed one byte per token (the byte vocab),
// checking at every step that the mask agrees with accept().
inline bool bytes_accepted(const std::shared_ptr<const CompiledGrammar>& c, const std::string& text,
                           bool check_masks = true) {
  GrammarMatcher m(c);
  TokenMask mask;
  for (char ch : text) {
    const int32_t id = uint8_t(ch);
    if (check_masks) {
      m.fill_mask(mask);
      GrammarMatcher probe = m;
      EXPECT_EQ(mask.test(id), probe.accept(id))
          << "mask and accept disagree at byte " << int(uint8_t(ch)) << " of " << text;
    }
    if (!m.accept(id)) return false;
  }
  return m.can_end() && m.accept(kByteEnd);
}

// Whether every prefix of `text` is accepted byte by byte (the text may be unfinished).
inline bool prefix_accepted(const std::shared_ptr<const CompiledGrammar>& c,
                            const std::string& text) {
  GrammarMatcher m(c);
  for (char ch : text) {
    if (!m.accept(uint8_t(ch))) return false;
  }
  return true;
}

}  // namespace bitdelta::constrain::testing
