// The inside of a JSON string as a byte automaton: escapes (\uXXXX included), well-formed UTF-8
// only (no overlong forms, no encoded surrogates, nothing past U+10FFFF), no raw control
// characters. A \u escape of a high surrogate must be followed by one of a low surrogate (a lone
// surrogate is valid JSON text but many readers, nlohmann::json among them, refuse it).
//
// Each step also says whether the byte starts a Unicode character of the string as a JSON reader
// counts them (Python's len after json.loads): a character counts at its first byte (the lead
// byte, or the '\' of an escape), and a surrogate pair counts once, at the high surrogate's '\'.
// Counting at the start means a string at maxLength refuses any new character outright, so no
// prefix can strand the automaton inside an escape it may not finish. Internal to src/constrain.
#pragma once

#include <array>
#include <cstdint>

namespace bitdelta::constrain::detail {

enum StringSub : uint8_t {
  kStrChar,    // between characters
  kStrEscape,  // after '\'
  kStrU0,      // after "\u"
  kStrUD,      // after "\uD"
  kStrHex3,    // three hex digits of a plain \u escape to go
  kStrHex2,
  kStrHex1,
  kStrHigh2,  // two hex digits of a high surrogate to go
  kStrHigh1,
  kStrPairEscape,  // a high surrogate done: its low surrogate's '\' must follow
  kStrPairU,
  kStrPairD,
  kStrPairLow,  // "\uD" of the low surrogate seen: C-F next
  kStrCont1,    // UTF-8 continuation bytes (80-BF) to go
  kStrCont2,
  kStrCont3,
  kStrE0,  // after E0: A0-BF, then one more
  kStrED,  // after ED: 80-9F (no surrogates), then one more
  kStrF0,  // after F0: 90-BF, then two more
  kStrF4,  // after F4: 80-8F (up to U+10FFFF), then two more
  kNumStringSubs
};

struct StringStep {
  enum Kind : uint8_t { kReject, kMore, kClose };
  Kind kind = kReject;
  uint8_t next = kStrChar;  // for kMore
  uint8_t counts = 0;       // 1 when this byte adds a character
};

namespace string_internal {

constexpr bool is_hex(int c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

constexpr StringStep more(uint8_t next, uint8_t counts = 0) {
  return {StringStep::kMore, next, counts};
}

constexpr StringStep compute(int sub, int c) {
  const StringStep reject{};
  auto cont = [&](int low, int high, uint8_t next) {
    return c >= low && c <= high ? more(next) : reject;
  };
  auto hex = [&](uint8_t next) { return is_hex(c) ? more(next) : reject; };
  switch (sub) {
    case kStrChar:
      if (c == '"') return {StringStep::kClose, kStrChar, 0};
      if (c == '\\') return more(kStrEscape, 1);
      if (c < 0x20) return reject;
      if (c < 0x80) return more(kStrChar, 1);
      if (c >= 0xC2 && c <= 0xDF) return more(kStrCont1, 1);
      if (c == 0xE0) return more(kStrE0, 1);
      if (c == 0xED) return more(kStrED, 1);
      if (c >= 0xE1 && c <= 0xEF) return more(kStrCont2, 1);
      if (c == 0xF0) return more(kStrF0, 1);
      if (c >= 0xF1 && c <= 0xF3) return more(kStrCont3, 1);
      if (c == 0xF4) return more(kStrF4, 1);
      return reject;
    case kStrEscape:
      switch (c) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
          return more(kStrChar);
        case 'u':
          return more(kStrU0);
        default:
          return reject;
      }
    case kStrU0:
      if (c == 'd' || c == 'D') return more(kStrUD);
      return is_hex(c) ? more(kStrHex3) : reject;
    case kStrUD:
      if (c >= '0' && c <= '7') return more(kStrHex2);
      if (c == '8' || c == '9' || c == 'a' || c == 'b' || c == 'A' || c == 'B') {
        return more(kStrHigh2);  // a pair: its low half (kStrPair*) does not count again
      }
      return reject;  // a lone low surrogate, or not hex
    case kStrHex3:
      return hex(kStrHex2);
    case kStrHex2:
      return hex(kStrHex1);
    case kStrHex1:
      return hex(kStrChar);
    case kStrHigh2:
      return hex(kStrHigh1);
    case kStrHigh1:
      return hex(kStrPairEscape);
    case kStrPairEscape:
      return c == '\\' ? more(kStrPairU) : reject;
    case kStrPairU:
      return c == 'u' ? more(kStrPairD) : reject;
    case kStrPairD:
      return c == 'd' || c == 'D' ? more(kStrPairLow) : reject;
    case kStrPairLow:
      return (c >= 'c' && c <= 'f') || (c >= 'C' && c <= 'F') ? more(kStrHex2) : reject;
    case kStrCont1:
      return cont(0x80, 0xBF, kStrChar);
    case kStrCont2:
      return cont(0x80, 0xBF, kStrCont1);
    case kStrCont3:
      return cont(0x80, 0xBF, kStrCont2);
    case kStrE0:
      return cont(0xA0, 0xBF, kStrCont1);
    case kStrED:
      return cont(0x80, 0x9F, kStrCont1);
    case kStrF0:
      return cont(0x90, 0xBF, kStrCont2);
    case kStrF4:
      return cont(0x80, 0x8F, kStrCont2);
    default:
      return reject;
  }
}

constexpr auto make_table() {
  std::array<std::array<StringStep, 256>, kNumStringSubs> table{};
  for (int s = 0; s < kNumStringSubs; ++s) {
    for (int c = 0; c < 256; ++c) table[s][c] = compute(s, c);
  }
  return table;
}

inline constexpr auto kTable = make_table();

}  // namespace string_internal

inline StringStep string_step(uint8_t sub, uint8_t c) { return string_internal::kTable[sub][c]; }

}  // namespace bitdelta::constrain::detail
