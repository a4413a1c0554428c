// Ed25519 keys in files (libsodium), for signing adapters and, later, receipts and audit entries
// (docs/signatures.md). A key folder holds signing_key.json (the private seed, mode 0600) and
// public_key.json; a key's id is the first 16 bytes of the SHA-256 of its public key, in hex.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>

namespace bitdelta {

struct PublicKey {
  std::array<uint8_t, 32> bytes{};
  std::string key_id;  // 32 hex digits
  std::string hex() const;
};

// The key id of a public key.
std::string key_id_of(std::span<const uint8_t, 32> public_key);
// A public key from 64 hex digits; Error saying what is wrong.
PublicKey parse_public_key(std::string_view hex, std::string_view what);

class SigningKey {
 public:
  // Writes a new key pair into `dir` (created if missing): signing_key.json with mode 0600 and
  // public_key.json. Refuses a folder that already holds a key.
  static PublicKey generate(const std::filesystem::path& dir);
  // Reads DIR/signing_key.json. Error for a missing or corrupt file, another algorithm, a key id
  // that does not match the key, or a file other users may read (it must be mode 0600 or 0400).
  static SigningKey load(const std::filesystem::path& dir);

  SigningKey(SigningKey&&) noexcept;
  SigningKey& operator=(SigningKey&&) noexcept;
  ~SigningKey();  // wipes the secret

  const PublicKey& public_key() const { return public_; }
  std::array<uint8_t, 64> sign(std::string_view message) const;

 private:
  SigningKey() = default;
  std::array<uint8_t, 64> secret_{};  // libsodium's seed ‖ public key
  PublicKey public_;
};

// Whether `signature` is `key`'s Ed25519 signature of `message`.
bool verify_signature(const PublicKey& key, std::string_view message,
                      std::span<const uint8_t, 64> signature);

// The public keys an operator trusts: every *.json file of a folder that is a public key file
// (public_key.json as `keys generate` writes it, under any name). Error for an unreadable or
// corrupt file, a private key in the folder, or a key id that does not match its key.
class TrustedKeys {
 public:
  static TrustedKeys load(const std::filesystem::path& dir);
  const PublicKey* find(const std::string& key_id) const;
  size_t size() const { return keys_.size(); }

 private:
  std::map<std::string, PublicKey> keys_;
};

// Hex of bytes, and back (Error on bad hex or length).
std::string to_hex(std::span<const uint8_t> bytes);
void from_hex(std::string_view hex, std::span<uint8_t> out, std::string_view what);

}  // namespace bitdelta
