#include "domain/records.h"

#include <cryptopp/keccak.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <fstream>

#include "delta/adapter_id.h"
#include "train/data.h"
#include "util/error.h"

namespace bitdelta {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<RecordLine> read_jsonl_records(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open '{}': {}", path.string(), std::strerror(errno));
  std::vector<RecordLine> records;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json value = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (value.is_discarded()) {
      fail("{}:{}: not valid JSON; each line must be one JSON object (a record)", path.string(),
           number);
    }
    if (!value.is_object()) {
      fail("{}:{}: expected a JSON object (a record), found {}", path.string(), number,
           value.type_name());
    }
    records.push_back({path, number, std::move(value)});
  }
  if (records.empty()) fail("{}: no records (the file is empty)", path.string());
  return records;
}

std::string RecordFields::where() const { return fmt::format("{}:{}", r_.file.string(), r_.line); }

void RecordFields::fail_field(std::string_view field, std::string_view problem) const {
  fail("{}: field \"{}\" {}", where(), field, problem);
}

const json* RecordFields::find(const char* field) const {
  auto it = r_.value.find(field);
  if (it == r_.value.end()) return nullptr;
  // As the JSON Schemas have it: an optional field is left out, never null.
  if (it->is_null()) fail_field(field, "is null; leave an optional field out instead");
  return &*it;
}

std::string RecordFields::string(const char* field) const {
  auto v = optional_string(field);
  if (!v) fail_field(field, "is missing (a string is required)");
  return *v;
}

std::optional<std::string> RecordFields::optional_string(const char* field) const {
  const json* v = find(field);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) fail_field(field, fmt::format("must be a string, not {}", v->type_name()));
  if (v->get_ref<const std::string&>().empty()) fail_field(field, "must not be empty");
  return v->get<std::string>();
}

bool RecordFields::boolean(const char* field) const {
  const json* v = find(field);
  if (v == nullptr) fail_field(field, "is missing (true or false is required)");
  return optional_boolean(field, false);
}

bool RecordFields::optional_boolean(const char* field, bool fallback) const {
  const json* v = find(field);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) {
    fail_field(field, fmt::format("must be true or false, not {}", v->dump()));
  }
  return v->get<bool>();
}

double RecordFields::number(const char* field) const {
  const json* v = find(field);
  if (v == nullptr) fail_field(field, "is missing (a number is required)");
  if (!v->is_number()) fail_field(field, fmt::format("must be a number, not {}", v->type_name()));
  const double x = v->get<double>();
  if (!std::isfinite(x)) fail_field(field, "must be finite");
  return x;
}

std::optional<double> RecordFields::optional_number(const char* field, double min,
                                                    double max) const {
  if (find(field) == nullptr) return std::nullopt;
  const double x = number(field);
  if (x < min || x > max)
    fail_field(field, fmt::format("is {}; it must be in [{}, {}]", x, min, max));
  return x;
}

std::vector<std::string> RecordFields::optional_strings(const char* field) const {
  const json* v = find(field);
  if (v == nullptr) return {};
  if (!v->is_array()) fail_field(field, "must be an array of strings");
  std::vector<std::string> out;
  for (const json& e : *v) {
    if (!e.is_string() || e.get_ref<const std::string&>().empty()) {
      fail_field(field, "must be an array of non-empty strings");
    }
    out.push_back(e.get<std::string>());
  }
  return out;
}

double RecordFields::time(const char* field) const {
  const json* v = find(field);
  if (v == nullptr) fail_field(field, "is missing (seconds since 1970, or an RFC 3339 date-time)");
  if (v->is_number()) {
    const double t = v->get<double>();
    if (!std::isfinite(t) || t < 0) fail_field(field, "must be a non-negative number of seconds");
    return t;
  }
  if (!v->is_string()) {
    fail_field(field, "must be seconds since 1970 or an RFC 3339 date-time string");
  }
  try {
    return parse_rfc3339(v->get_ref<const std::string&>());
  } catch (const Error& e) {
    fail_field(field, e.what());
  }
}

std::string RecordFields::user(const char* field) const {
  const std::string id = string(field);
  try {
    validate_user_id(id);
  } catch (const Error& e) {
    fail_field(field, e.what());
  }
  return canonical_user_id(id);
}

std::string canonical_user_id(std::string_view id) {
  std::string out(id);
  if (out.starts_with("did:lux:")) {
    const size_t at = out.rfind(':') + 3;  // after "0x"
    for (size_t i = at; i < out.size(); ++i) {
      out[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(out[i])));
    }
  }
  return out;
}

std::vector<ChatMessage> RecordFields::messages() const {
  const json* v = find("messages");
  if (v == nullptr) return {};
  return parse_chat_messages(*v, where());
}

double parse_rfc3339(std::string_view text) {
  // YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)
  auto bad = [&]() -> double {
    fail("'{}' is not an RFC 3339 date-time (e.g. 2026-11-30T12:00:00Z)", text);
  };
  auto digits = [&](size_t at, size_t n) {
    if (at + n > text.size()) bad();
    int v = 0;
    for (size_t k = at; k < at + n; ++k) {
      if (!std::isdigit(static_cast<unsigned char>(text[k]))) bad();
      v = 10 * v + (text[k] - '0');
    }
    return v;
  };
  if (text.size() < 20 || text[4] != '-' || text[7] != '-' ||
      (text[10] != 'T' && text[10] != 't' && text[10] != ' ') || text[13] != ':' ||
      text[16] != ':') {
    bad();
  }
  std::tm tm{};
  tm.tm_year = digits(0, 4) - 1900;
  tm.tm_mon = digits(5, 2) - 1;
  tm.tm_mday = digits(8, 2);
  tm.tm_hour = digits(11, 2);
  tm.tm_min = digits(14, 2);
  tm.tm_sec = digits(17, 2);
  const int year = tm.tm_year + 1900;
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  static constexpr int kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 ||
      tm.tm_mday > kDays[tm.tm_mon] + (tm.tm_mon == 1 && leap) || tm.tm_hour > 23 ||
      tm.tm_min > 59 || tm.tm_sec > 60) {
    bad();
  }
  // A leap second (23:59:60 UTC) counts as :59, as POSIX time has no place for it; checked
  // against the offset below.
  const bool leap_second = tm.tm_sec == 60;
  if (leap_second) tm.tm_sec = 59;
  size_t i = 19;
  double fraction = 0;
  if (i < text.size() && text[i] == '.') {
    double scale = 0.1;
    ++i;
    if (i >= text.size() || !std::isdigit(static_cast<unsigned char>(text[i]))) bad();
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      fraction += scale * (text[i] - '0');
      scale /= 10;
      ++i;
    }
  }
  double offset = 0;
  if (i < text.size() && (text[i] == 'Z' || text[i] == 'z')) {
    ++i;
  } else if (i + 6 == text.size() && (text[i] == '+' || text[i] == '-') && text[i + 3] == ':') {
    const int h = digits(i + 1, 2), m = digits(i + 4, 2);
    if (h > 23 || m > 59) bad();
    offset = (text[i] == '+' ? 1 : -1) * (h * 3600.0 + m * 60.0);
    i += 6;
  } else {
    bad();
  }
  if (i != text.size()) bad();
  const time_t t = timegm(&tm);
  const double seconds = static_cast<double>(t) + fraction - offset;
  if (leap_second && std::fmod(seconds - fraction + 1, 86400.0) != 0) bad();  // only at 23:59 UTC
  if (seconds < 0) fail("'{}' is before 1970; times are seconds since 1970", text);
  return seconds;
}

std::string eip55_checksum(std::string_view address) {
  std::string hex(address.substr(2));
  for (char& c : hex) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  CryptoPP::Keccak_256 keccak;
  uint8_t digest[32];
  keccak.CalculateDigest(digest, reinterpret_cast<const uint8_t*>(hex.data()), hex.size());
  std::string out = "0x";
  for (size_t i = 0; i < hex.size(); ++i) {
    const int nibble = (digest[i / 2] >> (i % 2 == 0 ? 4 : 0)) & 0xF;
    out +=
        nibble >= 8 ? static_cast<char>(std::toupper(static_cast<unsigned char>(hex[i]))) : hex[i];
  }
  return out;
}

bool same_evm_address(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

void validate_evm_address(std::string_view address) {
  if (address.size() != 42 || !address.starts_with("0x")) {
    fail("'{}' is not an EVM address (0x followed by 40 hex digits)", address);
  }
  bool lower = false, upper = false;
  for (char c : address.substr(2)) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) {
      fail("'{}' is not an EVM address (0x followed by 40 hex digits)", address);
    }
    lower = lower || std::islower(static_cast<unsigned char>(c));
    upper = upper || std::isupper(static_cast<unsigned char>(c));
  }
  if (lower && upper &&
      eip55_checksum(address) != std::string("0x") + std::string(address.substr(2))) {
    fail(
        "'{}' has mixed-case hex that fails its EIP-55 checksum (a mistyped address?); the "
        "checksummed form of these digits is {}",
        address, eip55_checksum(address));
  }
}

void validate_user_id(std::string_view id) {
  if (id.starts_with("did:")) {
    // did:lux:<chain id>:<address>
    const size_t a = id.find(':', 4), b = a == std::string_view::npos ? a : id.find(':', a + 1);
    if (!id.starts_with("did:lux:") || b == std::string_view::npos) {
      fail("'{}' is not a Lux DID: expected did:lux:<chain id>:0x<40 hex digits>", id);
    }
    const std::string_view chain = id.substr(8, b - 8);
    if (chain.empty() || chain.size() > 20 ||
        chain.find_first_not_of("0123456789") != std::string_view::npos) {
      fail("'{}': the chain id of a Lux DID must be a decimal number", id);
    }
    validate_evm_address(id.substr(b + 1));
  }
  try {
    AdapterId::parse(fmt::format("general/{}/v1", id));
  } catch (const Error& e) {
    fail("'{}' cannot be a user id: it must be 1-128 characters of A-Z a-z 0-9 . _ : @ -", id);
  }
}

}  // namespace bitdelta
