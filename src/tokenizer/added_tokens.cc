#include "tokenizer/added_tokens.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstring>

#include "tokenizer/unicode_util.h"

namespace bitdelta::tok {

namespace {

// Rust's char::is_whitespace (the Unicode White_Space property), which HF uses for lstrip/rstrip.
bool is_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Rust's char::is_alphanumeric: letters and numbers.
bool is_alphanumeric(char32_t c) {
  switch (utf8proc_category(utf8proc_int32_t(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

char32_t decode_at(std::string_view s, size_t i, size_t& len) {
  utf8proc_int32_t cp = 0;
  auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                            utf8proc_ssize_t(s.size() - i), &cp);
  if (n <= 0) {
    len = 1;
    return 0xFFFD;
  }
  len = size_t(n);
  return char32_t(cp);
}

// The code point that ends just before `end` (start of the previous UTF-8 sequence).
char32_t decode_before(std::string_view s, size_t end, size_t& len) {
  size_t start = end - 1;
  while (start > 0 && end - start < 4 && (uint8_t(s[start]) & 0xC0) == 0x80) --start;
  char32_t c = decode_at(s, start, len);
  if (start + len != end) {
    len = 1;
    return 0xFFFD;
  }
  return c;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens,
                                     std::vector<std::string> patterns)
    : tokens_(std::move(tokens)), patterns_(std::move(patterns)), by_first_byte_(256) {
  for (size_t i = 0; i < patterns_.size(); ++i) {
    if (patterns_[i].empty()) continue;
    by_first_byte_[uint8_t(patterns_[i][0])].push_back(int32_t(i));
  }
  for (auto& list : by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [&](int32_t a, int32_t b) {
      return patterns_[a].size() > patterns_[b].size();
    });
  }
}

int32_t AddedTokenMatcher::longest_at(std::string_view text, size_t pos, bool skip_special) const {
  for (int32_t index : by_first_byte_[uint8_t(text[pos])]) {
    const std::string& p = patterns_[index];
    if (skip_special && tokens_[index].special) continue;
    if (p.size() <= text.size() - pos && std::memcmp(text.data() + pos, p.data(), p.size()) == 0) {
      return index;
    }
  }
  return -1;
}

void AddedTokenMatcher::split(std::string_view text, bool skip_special,
                              std::vector<Segment>& out) const {
  size_t emitted = 0;  // text before this offset is already in `out`
  size_t pos = 0;
  while (pos < text.size()) {
    if (by_first_byte_.empty() || by_first_byte_[uint8_t(text[pos])].empty()) {
      ++pos;
      continue;
    }
    int32_t index = longest_at(text, pos, skip_special);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[index];
    size_t start = pos, stop = pos + patterns_[index].size();
    if (token.single_word) {
      size_t len;
      bool word_before = start > 0 && is_alphanumeric(decode_before(text, start, len));
      bool word_after = stop < text.size() && is_alphanumeric(decode_at(text, stop, len));
      if (word_before || word_after) {
        // HF's automaton resumes after a rejected match, not inside it.
        pos = stop;
        continue;
      }
    }
    if (token.lstrip) {
      size_t len;
      while (start > emitted && is_whitespace(decode_before(text, start, len))) start -= len;
    }
    if (token.rstrip) {
      size_t len;
      while (stop < text.size() && is_whitespace(decode_at(text, stop, len))) stop += len;
    }
    if (start > emitted) out.push_back({-1, emitted, start});
    out.push_back({token.id, start, stop});
    emitted = pos = stop;
  }
  if (emitted < text.size()) out.push_back({-1, emitted, text.size()});
}

}  // namespace bitdelta::tok
