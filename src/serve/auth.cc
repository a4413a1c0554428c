#include "serve/auth.h"

#include <sodium.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/files.h"
#include "util/sha256.h"

namespace bitdelta {

namespace {

using Hash = std::array<uint8_t, 32>;

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<Hash> decode_hash_hex(std::string_view hex) {
  if (hex.size() != 64) return std::nullopt;
  Hash hash{};
  for (size_t i = 0; i < hash.size(); ++i) {
    const int high = hex_value(hex[2 * i]);
    const int low = hex_value(hex[2 * i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    hash[i] = static_cast<uint8_t>(high << 4 | low);
  }
  return hash;
}

Hash hash_key(std::string_view key) {
  Sha256 sha;
  sha.update(key);
  auto hash = decode_hash_hex(sha.hex_digest());
  BD_CHECK(hash.has_value());
  return *hash;
}

std::string key_id_of(const Hash& hash) {
  static const char* kHex = "0123456789abcdef";
  std::string id;
  for (size_t i = 0; i < 4; ++i) {
    id += kHex[hash[i] >> 4];
    id += kHex[hash[i] & 15];
  }
  return id;
}

// A key has to survive an Authorization header: printable ASCII, no spaces.
bool valid_key_text(std::string_view key) {
  if (key.empty()) return false;
  return std::all_of(key.begin(), key.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

// Names are checked by AdapterId::parse itself so the keys file and ids can never disagree.
bool valid_domain(const std::string& domain) {
  try {
    return AdapterId::parse(domain + "/u/v1").domain == domain;
  } catch (const Error&) {
    return false;
  }
}

bool valid_user(const std::string& user) {
  try {
    return AdapterId::parse("d/" + user + "/v1").user == user;
  } catch (const Error&) {
    return false;
  }
}

bool contains(const std::vector<std::string>& sorted, const std::string& value) {
  return std::binary_search(sorted.begin(), sorted.end(), value);
}

}  // namespace

std::string_view role_name(Role role) { return role == Role::kAdmin ? "admin" : "tenant"; }

bool may_use(const Principal& principal, const AdapterId& adapter) {
  if (principal.role == Role::kAdmin) return true;
  return contains(principal.users, adapter.user) || contains(principal.domains, adapter.domain);
}

bool may_list(const Principal& principal, const AdapterId& adapter) {
  return may_use(principal, adapter);
}

bool may_modify(const Principal& principal, const AdapterId& adapter) {
  return may_use(principal, adapter);
}

ApiKeys ApiKeys::load(const std::filesystem::path& path) {
  return parse(read_file(path), path.string());
}

ApiKeys ApiKeys::parse(std::string_view json_text, std::string_view source) {
  if (sodium_init() < 0) fail("libsodium failed to initialize");
  auto bad_file = [&](const std::string& why) {
    fail(
        "API keys file '{}': {}; expected {{\"keys\": [{{\"key\": \"...\", \"role\": "
        "\"admin\"}}, {{\"sha256\": \"<64 hex>\", \"role\": \"tenant\", \"users\": [...], "
        "\"domains\": [...]}}]}}",
        source, why);
  };
  if (json_text.find_first_not_of(" \t\r\n") == std::string_view::npos) bad_file("it is empty");
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::parse_error& e) {
    bad_file(fmt::format("not valid JSON ({})", e.what()));
  }
  if (!root.is_object()) bad_file("the top level is not a JSON object");
  for (const auto& [field, value] : root.items()) {
    if (field != "keys") bad_file(fmt::format("unknown top-level field '{}'", field));
  }
  if (!root.contains("keys") || !root["keys"].is_array())
    bad_file("'keys' is missing or not a list");
  if (root["keys"].empty()) {
    bad_file(
        "'keys' lists no keys (to turn authentication off, run the server on loopback "
        "without a keys file)");
  }

  ApiKeys keys;
  std::map<Hash, size_t> seen;  // hash → entry index, to name both entries of a duplicate
  const auto& list = root["keys"];
  for (size_t index = 0; index < list.size(); ++index) {
    const auto& entry = list[index];
    auto bad = [&](const std::string& why) {
      fail("API keys file '{}': keys[{}]: {}", source, index, why);
    };
    if (!entry.is_object()) bad("not a JSON object");
    for (const auto& [field, value] : entry.items()) {
      if (field != "key" && field != "sha256" && field != "role" && field != "users" &&
          field != "domains") {
        bad(fmt::format("unknown field '{}' (known: key, sha256, role, users, domains)", field));
      }
    }

    const bool has_key = entry.contains("key");
    const bool has_sha = entry.contains("sha256");
    if (has_key == has_sha)
      bad("give exactly one of 'key' (the key itself) or 'sha256' (its hash)");
    Hash hash{};
    if (has_key) {
      if (!entry["key"].is_string() ||
          !valid_key_text(entry["key"].get_ref<const std::string&>())) {
        bad("'key' must be a non-empty string of printable ASCII without spaces");
      }
      hash = hash_key(entry["key"].get_ref<const std::string&>());
    } else {
      std::optional<Hash> decoded;
      if (entry["sha256"].is_string()) {
        decoded = decode_hash_hex(entry["sha256"].get_ref<const std::string&>());
      }
      if (!decoded) bad("'sha256' must be 64 hex digits (the SHA-256 of the key)");
      hash = *decoded;
    }
    if (auto [it, inserted] = seen.emplace(hash, index); !inserted) {
      bad(fmt::format("the same key as keys[{}]", it->second));
    }

    if (!entry.contains("role") || !entry["role"].is_string()) {
      bad("'role' is missing; it must be \"admin\" or \"tenant\"");
    }
    const std::string& role = entry["role"].get_ref<const std::string&>();
    Principal principal;
    principal.key_id = key_id_of(hash);
    if (role == "admin") {
      principal.role = Role::kAdmin;
      if (entry.contains("users") || entry.contains("domains")) {
        bad("an admin may use every adapter; 'users' and 'domains' are for tenants only");
      }
    } else if (role == "tenant") {
      principal.role = Role::kTenant;
      auto read_names = [&](const char* field, bool (*valid)(const std::string&)) {
        std::vector<std::string> names;
        if (!entry.contains(field)) return names;
        const auto& value = entry[field];
        if (!value.is_array()) bad(fmt::format("'{}' must be a list of strings", field));
        for (const auto& name : value) {
          if (!name.is_string()) bad(fmt::format("'{}' must be a list of strings", field));
          const std::string& text = name.get_ref<const std::string&>();
          if (!valid(text)) {
            bad(fmt::format("'{}' has '{}', which is not a valid adapter-id {}", field, text,
                            std::string_view(field) == "users" ? "user" : "domain"));
          }
          names.push_back(text);
        }
        std::sort(names.begin(), names.end());
        names.erase(std::unique(names.begin(), names.end()), names.end());
        return names;
      };
      principal.users = read_names("users", valid_user);
      principal.domains = read_names("domains", valid_domain);
    } else {
      bad(fmt::format("unknown role '{}'; it must be \"admin\" or \"tenant\"", role));
    }
    keys.entries_.push_back({hash, std::move(principal)});
  }
  return keys;
}

ApiKeys ApiKeys::none() {
  ApiKeys keys;
  keys.enabled_ = false;
  return keys;
}

std::optional<Principal> ApiKeys::authenticate(std::string_view bearer_token) const {
  if (!enabled_) {
    Principal anonymous;
    anonymous.role = Role::kAdmin;
    anonymous.key_id = "anonymous";
    return anonymous;
  }
  if (bearer_token.empty()) return std::nullopt;
  const Hash hash = hash_key(bearer_token);
  // Every entry is compared, each in constant time, so the time taken says nothing about which
  // key (if any) matched.
  const Entry* match = nullptr;
  for (const Entry& entry : entries_) {
    if (sodium_memcmp(entry.key_sha256.data(), hash.data(), hash.size()) == 0) match = &entry;
  }
  if (match == nullptr) return std::nullopt;
  return match->principal;
}

std::optional<std::string_view> parse_bearer(std::string_view header_value) {
  auto is_blank = [](char c) { return c == ' ' || c == '\t'; };
  while (!header_value.empty() && is_blank(header_value.front())) header_value.remove_prefix(1);
  while (!header_value.empty() && is_blank(header_value.back())) header_value.remove_suffix(1);
  constexpr std::string_view kScheme = "bearer";
  if (header_value.size() <= kScheme.size()) return std::nullopt;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    const char c = header_value[i];
    if ((c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c) != kScheme[i]) return std::nullopt;
  }
  std::string_view rest = header_value.substr(kScheme.size());
  if (!is_blank(rest.front())) return std::nullopt;  // "Bearerxyz"
  while (!rest.empty() && is_blank(rest.front())) rest.remove_prefix(1);
  if (rest.empty() || !valid_key_text(rest)) return std::nullopt;
  return rest;
}

}  // namespace bitdelta
