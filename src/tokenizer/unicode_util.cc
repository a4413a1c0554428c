#include "tokenizer/unicode_util.h"

#include <utf8proc.h>

#include <cstdlib>
#include <cstring>

#include "util/error.h"

namespace bitdelta::tok {

namespace {

ByteLevelTable build_byte_level_table() {
  ByteLevelTable t;
  t.char_to_byte.fill(-1);
  auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    char32_t cp = printable(b) ? char32_t(b) : char32_t(256 + next++);
    t.byte_to_char[b] = cp;
    append_utf8(cp, t.byte_to_utf8[b]);
    t.char_to_byte[cp] = int16_t(b);
  }
  return t;
}

// Decodes one code point from valid UTF-8 at s[i]; advances i.
char32_t next_code_point(std::string_view s, size_t& i) {
  auto b = uint8_t(s[i]);
  int n = utf8_len(b);
  if (i + n > s.size()) n = 1;
  char32_t cp = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (uint8_t(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

}  // namespace

const ByteLevelTable& byte_level_table() {
  static const ByteLevelTable table = build_byte_level_table();
  return table;
}

bool byte_level_decode(std::string_view token, std::string& out) {
  const auto& t = byte_level_table();
  size_t i = 0;
  while (i < token.size()) {
    char32_t cp = next_code_point(token, i);
    if (cp >= 512 || t.char_to_byte[cp] < 0) return false;
    out.push_back(char(t.char_to_byte[cp]));
  }
  return true;
}

void byte_level_encode(std::string_view bytes, std::string& out) {
  const auto& t = byte_level_table();
  for (char c : bytes) out += t.byte_to_utf8[uint8_t(c)];
}

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

size_t valid_utf8_prefix(std::string_view s, bool& incomplete) {
  incomplete = false;
  if (s.empty()) return 0;
  auto b0 = uint8_t(s[0]);
  if (b0 < 0x80) return 1;
  // Second-byte ranges from the Unicode well-formed UTF-8 table (Table 3-7); they exclude
  // overlongs, surrogates and code points above U+10FFFF.
  int need;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (int k = 1; k <= need; ++k) {
    if (size_t(k) >= s.size()) {
      incomplete = true;
      return 0;
    }
    auto b = uint8_t(s[k]);
    uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) return 0;
  }
  return size_t(need) + 1;
}

size_t invalid_utf8_subpart(std::string_view s) {
  // The lead byte plus any continuation bytes that still formed a valid prefix.
  size_t skip = 1;
  auto b0 = uint8_t(s[0]);
  if (b0 >= 0xC2 && b0 <= 0xF4) {
    while (skip < s.size() && skip < size_t(utf8_len(b0))) {
      bool incomplete;
      if (valid_utf8_prefix(s.substr(0, skip + 1), incomplete) == 0 && !incomplete) break;
      ++skip;
    }
  }
  return skip;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    bool incomplete;
    size_t n = valid_utf8_prefix(bytes.substr(i), incomplete);
    if (n > 0) {
      out.append(bytes.data() + i, n);
      i += n;
      continue;
    }
    size_t skip = invalid_utf8_subpart(bytes.substr(i));
    out += "\xEF\xBF\xBD";
    i += skip;
  }
  return out;
}

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (uint8_t(s[i]) < 0x80) {
      ++i;
      continue;
    }
    bool incomplete;
    size_t n = valid_utf8_prefix(s.substr(i), incomplete);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

bool is_ascii(std::string_view s) {
  for (char c : s) {
    if (uint8_t(c) >= 0x80) return false;
  }
  return true;
}

std::string unicode_normalize(std::string_view text, NormalForm form) {
  std::string repaired;
  if (!is_valid_utf8(text)) {
    repaired = utf8_lossy(text);
    text = repaired;
  }
  int options = UTF8PROC_STABLE;
  switch (form) {
    case NormalForm::kNfc:
      options |= UTF8PROC_COMPOSE;
      break;
    case NormalForm::kNfd:
      options |= UTF8PROC_DECOMPOSE;
      break;
    case NormalForm::kNfkc:
      options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
      break;
    case NormalForm::kNfkd:
      options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
      break;
  }
  utf8proc_uint8_t* result = nullptr;
  utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   utf8proc_ssize_t(text.size()), &result, utf8proc_option_t(options));
  if (n < 0) fail("Unicode normalization failed: {}", utf8proc_errmsg(n));
  std::string out(reinterpret_cast<const char*>(result), size_t(n));
  std::free(result);
  return out;
}

}  // namespace bitdelta::tok
