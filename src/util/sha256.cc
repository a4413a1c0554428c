#include "util/sha256.h"

#include "util/error.h"

namespace bitdelta {

Sha256::Sha256() {
  BD_CHECK(sodium_init() >= 0, "libsodium failed to initialise");
  crypto_hash_sha256_init(&state_);
}

void Sha256::update(std::span<const uint8_t> bytes) {
  crypto_hash_sha256_update(&state_, bytes.data(), bytes.size());
}

void Sha256::update(std::string_view text) {
  update({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

std::string Sha256::hex_digest() {
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&state_, digest);
  char hex[2 * crypto_hash_sha256_BYTES + 1];
  sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
  return hex;
}

std::string sha256_hex(std::span<const uint8_t> bytes) {
  Sha256 h;
  h.update(bytes);
  return h.hex_digest();
}

}  // namespace bitdelta
