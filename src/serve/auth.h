// API keys and who may touch which adapter. The keys file names each key (or only its SHA-256)
// with a role; only hashes are kept in memory, and a bearer token is checked by hashing it and
// comparing hashes in constant time.
//
// Keys file (JSON):
//   {"keys": [
//     {"key": "sk-admin-…", "role": "admin"},
//     {"sha256": "<64 hex>", "role": "tenant", "users": ["did:lux:122:0xabc"],
//      "domains": ["education"]}
//   ]}
//
// Authorization rule, the same for using, listing, uploading and deleting an adapter:
//   admin  — every adapter.
//   tenant — an adapter whose user is in `users` OR whose domain is in `domains`. A tenant with
//            users [] and domains [] may use no adapter, only the base model (which every
//            authenticated caller may use).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "delta/adapter_id.h"

namespace bitdelta {

enum class Role { kAdmin, kTenant };

// "admin" or "tenant".
std::string_view role_name(Role role);

// Who made a request, once their key has been checked.
struct Principal {
  Role role = Role::kTenant;
  std::vector<std::string> users;    // tenant only; sorted, no duplicates
  std::vector<std::string> domains;  // tenant only; sorted, no duplicates
  // First 8 hex digits of the key's SHA-256: safe to log, enough to tell keys apart.
  // "anonymous" when authentication is off (ApiKeys::none()).
  std::string key_id;

  bool is_admin() const { return role == Role::kAdmin; }
};

// Generating with (or loading) the adapter.
bool may_use(const Principal& principal, const AdapterId& adapter);
// Seeing the adapter in listings (GET /v1/models and the like).
bool may_list(const Principal& principal, const AdapterId& adapter);
// Uploading a new version of, or deleting, the adapter.
bool may_modify(const Principal& principal, const AdapterId& adapter);

class ApiKeys {
 public:
  // Reads and validates a keys file (format above). Throws Error naming the file and, for a bad
  // entry, its index: not JSON, no keys, unknown field or role, neither or both of key/sha256,
  // sha256 not 64 hex digits, the same key twice, users/domains not a list of valid names.
  static ApiKeys load(const std::filesystem::path& path);
  // The same from text; `source` names it in errors.
  static ApiKeys parse(std::string_view json_text, std::string_view source);
  // No authentication: every caller, with or without a token, is an admin. The server must only
  // allow this on a loopback address.
  static ApiKeys none();

  // The principal whose key is `bearer_token`, or nullopt when no key matches (or the token is
  // empty). With none(), always an admin with key_id "anonymous". Hashes on the calling thread
  // (see sha256_thread_done for worker threads). Thread-safe: the object is immutable.
  std::optional<Principal> authenticate(std::string_view bearer_token) const;

  bool enabled() const { return enabled_; }
  size_t size() const { return entries_.size(); }  // number of keys

 private:
  struct Entry {
    std::array<uint8_t, 32> key_sha256;
    Principal principal;
  };
  ApiKeys() = default;

  bool enabled_ = true;
  std::vector<Entry> entries_;
};

// The token in an Authorization header value "Bearer <token>" (scheme case-insensitive,
// surrounding spaces and tabs ignored). nullopt when the scheme is not Bearer, the token is
// empty, or it contains whitespace or control characters.
std::optional<std::string_view> parse_bearer(std::string_view header_value);

}  // namespace bitdelta
