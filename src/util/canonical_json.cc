#include "util/canonical_json.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace bitdelta {

using nlohmann::json;

namespace {

std::string where(const std::string& path) { return path.empty() ? "the top-level value" : path; }

// Decodes `text` as UTF-8 into code points; Error naming `path` for overlong forms, surrogates,
// values above U+10FFFF, and truncated or stray continuation bytes.
std::vector<char32_t> decode_utf8(std::string_view text, const std::string& path) {
  std::vector<char32_t> out;
  out.reserve(text.size());
  size_t i = 0;
  auto bad = [&](size_t at) {
    fail(
        "canonical JSON: the string at {} is not valid UTF-8 (byte 0x{:02x} at offset {}); JSON "
        "text must be UTF-8 (RFC 8259 §8.1)",
        where(path), static_cast<unsigned>(static_cast<uint8_t>(text[at])), at);
  };
  while (i < text.size()) {
    const auto b0 = static_cast<uint8_t>(text[i]);
    if (b0 < 0x80) {
      out.push_back(b0);
      ++i;
      continue;
    }
    int extra = 0;
    char32_t cp = 0;
    char32_t min = 0;
    if ((b0 & 0xe0) == 0xc0) {
      extra = 1, cp = b0 & 0x1f, min = 0x80;
    } else if ((b0 & 0xf0) == 0xe0) {
      extra = 2, cp = b0 & 0x0f, min = 0x800;
    } else if ((b0 & 0xf8) == 0xf0) {
      extra = 3, cp = b0 & 0x07, min = 0x10000;
    } else {
      bad(i);
    }
    if (i + extra >= text.size()) bad(i);  // cut off before its continuation bytes
    for (int k = 1; k <= extra; ++k) {
      const auto b = static_cast<uint8_t>(text[i + k]);
      if ((b & 0xc0) != 0x80) bad(i + k);
      cp = cp << 6 | (b & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) bad(i);
    out.push_back(cp);
    i += extra + 1;
  }
  return out;
}

// The UTF-16 code units of a property name: RFC 8785 §3.2.3 sorts by these, which orders
// supplementary characters (surrogate pairs, 0xD800–0xDBFF) before U+E000–U+FFFF, unlike a
// comparison of UTF-8 bytes or code points.
std::u16string utf16_units(std::string_view text, const std::string& path) {
  std::u16string out;
  for (char32_t cp : decode_utf8(text, path)) {
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out.push_back(static_cast<char16_t>(0xd800 + (cp >> 10)));
      out.push_back(static_cast<char16_t>(0xdc00 + (cp & 0x3ff)));
    } else {
      out.push_back(static_cast<char16_t>(cp));
    }
  }
  return out;
}

// RFC 8785 §3.2.2.2: the escapes JSON requires and no others.
void write_string(std::string_view text, const std::string& path, std::string& out) {
  (void)decode_utf8(text, path);  // validates; the bytes are then copied as they are
  out += '"';
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<uint8_t>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

// RFC 8785 §3.2.2.3 reads every number as an IEEE-754 double. An integer is written as the
// nearest double; when that would change it (2^53 + 1 would become 9007199254740992) it is
// refused instead, so a value is never silently altered. Two cases pass: the integer is that
// double exactly (every one within ±2^53, and e.g. 2^60), or it is already that double's
// canonical text — the canonical form of 5.3e16 is "53165205877497300", which nlohmann reads back
// as an integer, and canonicalizing must be idempotent.
void write_integer(uint64_t magnitude, bool negative, const std::string& path, std::string& out) {
  const double value = static_cast<double>(magnitude);
  const std::string text = ecmascript_number(negative ? -value : value);
  // 2^64 is the first double beyond uint64_t: converting it back would be undefined.
  const bool exact = value < 18446744073709551616.0 && static_cast<uint64_t>(value) == magnitude;
  const std::string decimal = fmt::format("{}{}", negative ? "-" : "", magnitude);
  if (!exact && text != decimal) {
    fail(
        "canonical JSON: the integer {} at {} has no exact IEEE-754 double (beyond ±2^53 not "
        "every integer does; RFC 8785 §3.2.2.3): a reader would see {}; write it as a string",
        decimal, where(path), text);
  }
  out += text;
}

void write_value(const json& value, std::string& path, std::string& out) {
  switch (value.type()) {
    case json::value_t::null:
      out += "null";
      return;
    case json::value_t::boolean:
      out += value.get<bool>() ? "true" : "false";
      return;
    case json::value_t::number_integer: {
      const int64_t v = value.get<int64_t>();
      // The magnitude without overflow for INT64_MIN.
      const uint64_t magnitude = v < 0 ? uint64_t{0} - static_cast<uint64_t>(v) : uint64_t(v);
      write_integer(magnitude, v < 0, path, out);
      return;
    }
    case json::value_t::number_unsigned:
      write_integer(value.get<uint64_t>(), false, path, out);
      return;
    case json::value_t::number_float: {
      const double v = value.get<double>();
      if (!std::isfinite(v)) {
        fail(
            "canonical JSON: the number at {} is {}, which JSON cannot represent (RFC 8785 "
            "§3.2.2.3)",
            where(path), std::isnan(v) ? "NaN" : "infinite");
      }
      out += ecmascript_number(v);
      return;
    }
    case json::value_t::string:
      write_string(value.get_ref<const std::string&>(), path, out);
      return;
    case json::value_t::array: {
      out += '[';
      const size_t mark = path.size();
      for (size_t i = 0; i < value.size(); ++i) {
        if (i > 0) out += ',';
        path += fmt::format("[{}]", i);
        write_value(value[i], path, out);
        path.resize(mark);
      }
      out += ']';
      return;
    }
    case json::value_t::object: {
      struct Member {
        std::u16string order;
        const std::string* name;
        const json* value;
      };
      std::vector<Member> members;
      members.reserve(value.size());
      for (auto it = value.begin(); it != value.end(); ++it) {
        members.push_back({utf16_units(it.key(), path), &it.key(), &it.value()});
      }
      std::sort(members.begin(), members.end(),
                [](const Member& a, const Member& b) { return a.order < b.order; });
      out += '{';
      const size_t mark = path.size();
      for (size_t i = 0; i < members.size(); ++i) {
        if (i > 0) out += ',';
        write_string(*members[i].name, path, out);
        out += ':';
        path += (path.empty() ? "" : ".") + *members[i].name;
        write_value(*members[i].value, path, out);
        path.resize(mark);
      }
      out += '}';
      return;
    }
    case json::value_t::binary:
    case json::value_t::discarded:
      break;
  }
  fail("canonical JSON: the value at {} is not JSON (a binary or discarded value)", where(path));
}

}  // namespace

std::string ecmascript_number(double value) {
  if (!std::isfinite(value)) {
    fail("canonical JSON: {} is not a JSON number (RFC 8785 §3.2.2.3)",
         std::isnan(value) ? "NaN" : "infinity");
  }
  if (value == 0) return "0";  // also -0 (ECMAScript: ToString(-0) is "0")
  std::string out = value < 0 ? "-" : "";
  // The shortest digits that read back as the same double (as ECMAScript requires: the fewest
  // digits k, and of those the nearest to the value), in the form "d.ddde±x".
  char buf[64];
  const auto result =
      std::to_chars(buf, buf + sizeof buf, std::fabs(value), std::chars_format::scientific);
  BD_CHECK(result.ec == std::errc(), "to_chars of a finite double");
  const std::string_view text(buf, static_cast<size_t>(result.ptr - buf));
  const size_t e = text.find('e');
  BD_CHECK(e != std::string_view::npos, "scientific form without an exponent: {}", text);
  std::string digits(1, text[0]);
  if (e > 1) digits += text.substr(2, e - 2);  // skips the '.'
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  int exponent = 0;
  std::string_view exp_text = text.substr(e + 1);
  const bool exp_negative = exp_text.front() == '-';
  if (exp_text.front() == '+' || exp_text.front() == '-') exp_text.remove_prefix(1);
  std::from_chars(exp_text.data(), exp_text.data() + exp_text.size(), exponent);
  if (exp_negative) exponent = -exponent;

  // ECMA-262 Number::toString: the value is 0.d1d2...dk × 10^n.
  const int k = static_cast<int>(digits.size());
  const int n = exponent + 1;
  if (k <= n && n <= 21) {
    out += digits;
    out.append(static_cast<size_t>(n - k), '0');
  } else if (0 < n && n <= 21) {
    out += digits.substr(0, static_cast<size_t>(n));
    out += '.';
    out += digits.substr(static_cast<size_t>(n));
  } else if (-6 < n && n <= 0) {
    out += "0.";
    out.append(static_cast<size_t>(-n), '0');
    out += digits;
  } else {
    out += digits[0];
    if (k > 1) {
      out += '.';
      out += digits.substr(1);
    }
    out += fmt::format("e{}{}", n - 1 >= 0 ? "+" : "-", std::abs(n - 1));
  }
  return out;
}

std::string canonical_json(const json& value) {
  std::string out;
  std::string path;
  write_value(value, path, out);
  return out;
}

}  // namespace bitdelta
