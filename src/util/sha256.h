// SHA-256 (libsodium), as lowercase hex.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include <sodium.h>

namespace bitdelta {

class Sha256 {
 public:
  Sha256();
  void update(std::span<const uint8_t> bytes);
  void update(std::string_view text);
  std::string hex_digest();  // finishes the hash

 private:
  crypto_hash_sha256_state state_;
};

std::string sha256_hex(std::span<const uint8_t> bytes);

}  // namespace bitdelta
