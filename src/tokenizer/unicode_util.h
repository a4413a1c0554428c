// UTF-8 helpers shared by the tokenizer: the GPT-2 byte <-> printable-char table, lossy UTF-8
// repair (the same replacement rule as Rust's String::from_utf8_lossy, which HF decoders use), and
// Unicode normalization through utf8proc.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace bitdelta::tok {

// GPT-2's bytes_to_unicode(): each byte maps to one printable code point so that byte-level BPE
// vocab strings never contain whitespace or control characters.
struct ByteLevelTable {
  std::array<char32_t, 256> byte_to_char{};
  std::array<std::string, 256> byte_to_utf8{};  // byte_to_char encoded as UTF-8
  std::array<int16_t, 512> char_to_byte{};      // code point (< 512) -> byte, or -1
};
const ByteLevelTable& byte_level_table();

// Maps a byte-level vocab string back to raw bytes. Returns false (and leaves `out` unspecified)
// when a character is not in the table; HF then keeps the token's own UTF-8 bytes.
bool byte_level_decode(std::string_view token, std::string& out);
// Appends the byte-level spelling of raw `bytes`.
void byte_level_encode(std::string_view bytes, std::string& out);

void append_utf8(char32_t cp, std::string& out);
// Length of the UTF-8 sequence that starts with `lead` (1 for invalid lead bytes).
inline int utf8_len(uint8_t lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

// Length of the valid UTF-8 sequence at the start of `s`, or 0 if it is invalid. Sets
// `incomplete` when `s` is a valid but truncated prefix of a sequence (more bytes could fix it).
size_t valid_utf8_prefix(std::string_view s, bool& incomplete);
// Length of the maximal invalid subpart at the start of `s` (which must not start with a valid
// sequence): the bytes that from_utf8_lossy replaces with one U+FFFD.
size_t invalid_utf8_subpart(std::string_view s);
// Replaces each maximal invalid subpart with U+FFFD, exactly like Rust's from_utf8_lossy.
std::string utf8_lossy(std::string_view bytes);
bool is_valid_utf8(std::string_view s);
bool is_ascii(std::string_view s);

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
// Normalizes valid UTF-8 (invalid input is first repaired with utf8_lossy).
std::string unicode_normalize(std::string_view text, NormalForm form);

}  // namespace bitdelta::tok
