// Added tokens (tokenizer.json `added_tokens`): strings such as <|im_start|> that are cut out of
// the text before the model sees it, following HF's AddedVocabulary: leftmost-longest match, with
// the single_word / lstrip / rstrip rules applied to each match.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bitdelta::tok {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool normalized = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

// One piece of split text: either an added token (id >= 0) or plain text to tokenize (id < 0).
struct Segment {
  int32_t id = -1;
  size_t begin = 0;
  size_t end = 0;
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // `patterns[i]` is the text to look for (the token content, normalized for normalized tokens).
  AddedTokenMatcher(std::vector<AddedToken> tokens, std::vector<std::string> patterns);

  bool empty() const { return tokens_.empty(); }
  // Splits `text` into segments covering it in order. With `skip_special`, special tokens are not
  // matched (HF's encode_special_tokens) and stay part of the plain text.
  void split(std::string_view text, bool skip_special, std::vector<Segment>& out) const;

 private:
  // Index (into tokens_) of the longest pattern that starts at text[pos], or -1.
  int32_t longest_at(std::string_view text, size_t pos, bool skip_special) const;

  std::vector<AddedToken> tokens_;
  std::vector<std::string> patterns_;
  // Pattern indexes by first byte, longest first, so the first hit at a position is the longest.
  std::vector<std::vector<int32_t>> by_first_byte_;
};

}  // namespace bitdelta::tok
