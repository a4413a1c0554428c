#include "util/keys.h"

#include <sodium.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/files.h"
#include "util/sha256.h"

namespace bitdelta {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kSigningFile = "signing_key.json";
constexpr const char* kPublicFile = "public_key.json";

void init_sodium() {
  if (sodium_init() < 0) fail("libsodium failed to initialize");
}

json read_json(const fs::path& path) {
  json j = json::parse(read_file(path), nullptr, false);
  if (j.is_discarded() || !j.is_object())
    fail("{} is not a JSON object (a key file)", path.string());
  return j;
}

std::string string_field(const json& j, const char* key, const fs::path& path) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string())
    fail("{}: \"{}\" is missing or not a string", path.string(), key);
  return *it;
}

void check_algorithm(const json& j, const fs::path& path) {
  const std::string algorithm = string_field(j, "algorithm", path);
  if (algorithm != "ed25519") {
    fail("{}: algorithm \"{}\" is not supported; keys are Ed25519 (bitdelta keys generate)",
         path.string(), algorithm);
  }
}

// The public key of a key file, its declared id checked against the key.
PublicKey public_key_of(const json& j, const fs::path& path) {
  PublicKey key = parse_public_key(string_field(j, "public_key", path), path.string());
  const std::string declared = string_field(j, "key_id", path);
  if (declared != key.key_id) {
    fail("{}: key_id {} does not belong to this public key (its id is {}); the file was edited",
         path.string(), declared, key.key_id);
  }
  return key;
}

}  // namespace

std::string to_hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes.size());
  for (uint8_t b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

void from_hex(std::string_view hex, std::span<uint8_t> out, std::string_view what) {
  if (hex.size() != 2 * out.size()) {
    fail("{}: expected {} hex digits, found {} characters", what, 2 * out.size(), hex.size());
  }
  auto digit = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    fail("{}: '{}' is not a hex digit", what, c);
  };
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<uint8_t>(digit(hex[2 * i]) << 4 | digit(hex[2 * i + 1]));
  }
}

std::string PublicKey::hex() const { return to_hex(bytes); }

std::string key_id_of(std::span<const uint8_t, 32> public_key) {
  return sha256_hex(public_key).substr(0, 32);
}

PublicKey parse_public_key(std::string_view hex, std::string_view what) {
  PublicKey key;
  from_hex(hex, key.bytes, fmt::format("{}: public_key", what));
  key.key_id = key_id_of(key.bytes);
  return key;
}

PublicKey SigningKey::generate(const fs::path& dir) {
  init_sodium();
  fs::create_directories(dir);
  if (fs::exists(dir / kSigningFile) || fs::exists(dir / kPublicFile)) {
    fail("{} already holds a key; keys are never overwritten (pick another folder)", dir.string());
  }
  std::array<uint8_t, 32> pk{};
  std::array<uint8_t, 64> sk{};
  crypto_sign_keypair(pk.data(), sk.data());
  PublicKey pub;
  pub.bytes = pk;
  pub.key_id = key_id_of(pk);
  std::string secret_json = json{{"algorithm", "ed25519"},
                                 {"key_id", pub.key_id},
                                 {"public_key", pub.hex()},
                                 {"secret_key", to_hex(std::span<const uint8_t>(sk.data(), 32))}}
                                .dump(2) +
                            "\n";
  sodium_memzero(sk.data(), sk.size());
  {
    // Created 0600 before a byte is written, then renamed into place.
    AtomicFile out(dir / kSigningFile);
    ::chmod(out.temp_path().c_str(), S_IRUSR | S_IWUSR);
    out.write(secret_json);
    out.commit();
  }
  sodium_memzero(secret_json.data(), secret_json.size());
  write_file_atomic(
      dir / kPublicFile,
      json{{"algorithm", "ed25519"}, {"key_id", pub.key_id}, {"public_key", pub.hex()}}.dump(2) +
          "\n");
  return pub;
}

SigningKey SigningKey::load(const fs::path& dir) {
  init_sodium();
  const fs::path path = dir / kSigningFile;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    fail("no signing key in {} (expected {}; make one with bitdelta keys generate --out DIR)",
         dir.string(), path.string());
  }
  if ((st.st_mode & 077) != 0) {
    fail(
        "{} may be read by other users (mode {:o}); a private key must be mode 0600: chmod 600 "
        "'{}'",
        path.string(), st.st_mode & 0777, path.string());
  }
  json j = read_json(path);
  check_algorithm(j, path);
  SigningKey key;
  key.public_ = public_key_of(j, path);
  std::array<uint8_t, 32> seed{};
  std::string secret = string_field(j, "secret_key", path);
  from_hex(secret, seed, fmt::format("{}: secret_key", path.string()));
  sodium_memzero(secret.data(), secret.size());
  std::array<uint8_t, 32> derived{};
  crypto_sign_seed_keypair(derived.data(), key.secret_.data(), seed.data());
  sodium_memzero(seed.data(), seed.size());
  if (derived != key.public_.bytes) {
    fail("{}: the secret key does not belong to its public key; the file is corrupt",
         path.string());
  }
  return key;
}

SigningKey::SigningKey(SigningKey&& o) noexcept
    : secret_(o.secret_), public_(std::move(o.public_)) {
  sodium_memzero(o.secret_.data(), o.secret_.size());
}
SigningKey& SigningKey::operator=(SigningKey&& o) noexcept {
  secret_ = o.secret_;
  public_ = std::move(o.public_);
  sodium_memzero(o.secret_.data(), o.secret_.size());
  return *this;
}
SigningKey::~SigningKey() { sodium_memzero(secret_.data(), secret_.size()); }

std::array<uint8_t, 64> SigningKey::sign(std::string_view message) const {
  std::array<uint8_t, 64> signature{};
  crypto_sign_detached(signature.data(), nullptr, reinterpret_cast<const uint8_t*>(message.data()),
                       message.size(), secret_.data());
  return signature;
}

bool verify_signature(const PublicKey& key, std::string_view message,
                      std::span<const uint8_t, 64> signature) {
  init_sodium();
  return crypto_sign_verify_detached(signature.data(),
                                     reinterpret_cast<const uint8_t*>(message.data()),
                                     message.size(), key.bytes.data()) == 0;
}

TrustedKeys TrustedKeys::load(const fs::path& dir) {
  if (!fs::is_directory(dir))
    fail("--trusted-keys {}: not a folder of public key files", dir.string());
  TrustedKeys t;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".json") continue;
    const json j = read_json(entry.path());
    if (j.contains("secret_key")) {
      fail(
          "{} holds a private key; a trusted-keys folder takes public keys only (copy "
          "public_key.json)",
          entry.path().string());
    }
    check_algorithm(j, entry.path());
    PublicKey key = public_key_of(j, entry.path());
    t.keys_[key.key_id] = key;
  }
  if (t.keys_.empty()) fail("--trusted-keys {}: no public key files (*.json) in it", dir.string());
  return t;
}

const PublicKey* TrustedKeys::find(const std::string& key_id) const {
  auto it = keys_.find(key_id);
  return it == keys_.end() ? nullptr : &it->second;
}

}  // namespace bitdelta
