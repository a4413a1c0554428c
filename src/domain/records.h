// Reading a domain's interaction records: JSONL, one JSON object per line, each field checked,
// every error naming the file, the line and the field. The record formats are documented in
// docs/domains.md with JSON Schema files in docs/schemas/.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace bitdelta {

// One record and where it came from.
struct RecordLine {
  std::filesystem::path file;
  int64_t line = 0;
  nlohmann::json value;  // a JSON object
};

// Every non-blank line of `path` as a JSON object. Error "file:line: ..." for a line that is not
// a JSON object; Error when the file cannot be read or holds no records.
std::vector<RecordLine> read_jsonl_records(const std::filesystem::path& path);

// Typed access to one record's fields; every error reads "file:line: field "x" ...".
class RecordFields {
 public:
  explicit RecordFields(const RecordLine& record) : r_(record) {}
  std::string where() const;
  [[noreturn]] void fail_field(std::string_view field, std::string_view problem) const;

  // Optional fields may be left out but not null.
  std::string string(const char* field) const;  // required, non-empty
  std::optional<std::string> optional_string(const char* field) const;
  bool boolean(const char* field) const;  // required
  bool optional_boolean(const char* field, bool fallback) const;
  double number(const char* field) const;  // required, finite
  std::optional<double> optional_number(const char* field, double min, double max) const;
  std::vector<std::string> optional_strings(const char* field) const;  // array of strings
  // Seconds since 1970 (UTC): an integer, or an RFC 3339 / ISO 8601 date-time string
  // ("2026-11-30T12:00:00Z", fractional seconds and ±hh:mm offsets allowed).
  double time(const char* field) const;
  // The user id (see validate_user_id), in canonical form (canonical_user_id).
  std::string user(const char* field) const;
  // "messages", when present: a conversation (parse_chat_messages).
  std::vector<ChatMessage> messages() const;
  const nlohmann::json& object() const { return r_.value; }

 private:
  const nlohmann::json* find(const char* field) const;
  const RecordLine& r_;
};

// User ids: `did:lux:<chain id>:0x<40 hex digits>` (a Lux DID; the address is checked as
// validate_evm_address does), or any id the adapter-id rules allow ([A-Za-z0-9._:@-]{1,128}).
// Throws Error saying which rule failed.
void validate_user_id(std::string_view id);

// The form records keep: a Lux DID's address in lowercase hex (one wallet, one user, however the
// DID was written); other ids as they are.
std::string canonical_user_id(std::string_view id);

// EVM addresses: 0x + 40 hex digits; all-lowercase or all-uppercase hex is accepted as is,
// mixed case must match its EIP-55 checksum (Keccak-256 of the lowercase hex). Throws Error.
void validate_evm_address(std::string_view address);
// Whether two EVM addresses name the same account (hex digits compared in any letter case).
bool same_evm_address(std::string_view a, std::string_view b);
// The EIP-55 checksummed form of a valid address.
std::string eip55_checksum(std::string_view address);

// RFC 3339 date-time → seconds since 1970 (UTC). Throws Error on anything else.
double parse_rfc3339(std::string_view text);

}  // namespace bitdelta
