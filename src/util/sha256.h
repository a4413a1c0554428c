// SHA-256 as lowercase hex, through OpenSSL (it uses the CPU's SHA extensions: ~1.4 GB/s per
// core here, where libsodium's portable code manages a fraction of that — fingerprints of
// multi-GB bases depend on it).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace bitdelta {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::span<const uint8_t> bytes);
  void update(std::string_view text);
  std::string hex_digest();  // finishes the hash

 private:
  void* context_;  // EVP_MD_CTX
};

std::string sha256_hex(std::span<const uint8_t> bytes);
// SHA-256 of a whole file, read in 1 MiB pieces; Error naming the file when it cannot be read.
std::string sha256_file(const std::filesystem::path& path);

// Frees OpenSSL's per-thread state. Call it at the end of a task that hashed on a worker thread:
// a worker that outlives OpenSSL's atexit cleanup would otherwise leak that state.
void sha256_thread_done();

}  // namespace bitdelta
