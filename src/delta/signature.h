// Detached signatures of adapter files (docs/signatures.md): `F.bdelta.sig.json` holds the
// file's SHA-256 and size, the signer's key id and public key, the time, and an Ed25519
// signature over a statement of those; the registry keeps the same JSON beside the record.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "util/keys.h"

namespace bitdelta {

struct AdapterSignature {
  std::string file_sha256;  // 64 hex digits
  uint64_t file_bytes = 0;
  std::string key_id;
  std::string public_key;  // 64 hex digits
  std::string signed_at;   // RFC 3339, UTC
  std::string signature;   // 128 hex digits

  nlohmann::json to_json() const;
  // Error naming `what` and the field for anything malformed (missing or extra fields, wrong
  // types, bad hex, a key id that is not the public key's).
  static AdapterSignature parse(const std::string& text, const std::string& what);
  // What the signature signs: "bitdelta-adapter-signature-v1\n" then one "name: value" line each
  // for sha256, bytes, key_id and signed_at.
  std::string statement() const;
};

// Signs the file at `path` (its SHA-256 and size) with `key`, now.
AdapterSignature sign_adapter(const std::filesystem::path& path, const SigningKey& key);
// The same for a file whose SHA-256 and size are known (a content-addressed blob).
AdapterSignature sign_adapter_digest(const std::string& sha256, uint64_t bytes,
                                     const SigningKey& key);

// The path of a file's detached signature: F.bdelta.sig.json.
std::filesystem::path signature_path(const std::filesystem::path& adapter);

enum class SignatureStatus {
  kValid,         // a good signature of these bytes, by a trusted key (or, with no trusted keys
                  // given, by the key it names)
  kUnsigned,      // no signature
  kMalformed,     // the signature file cannot be read
  kUnknownKey,    // a signer that is not among the trusted keys
  kBadSignature,  // the signature does not verify (forged, or edited after signing)
  kFileChanged,   // a good signature of other bytes: the file changed after it was signed
};
std::string_view status_name(SignatureStatus status);  // "valid", "unsigned", ...

struct SignatureCheck {
  SignatureStatus status = SignatureStatus::kUnsigned;
  std::string message;  // for people: which check failed and what it means
  std::optional<AdapterSignature> signature;
  bool trusted = false;  // checked against a trusted key (not just the key it names)
};

// Checks `signature_json` (nullopt: none) against a file of `sha256`/`bytes`. The checks run in
// this order: readable, signer trusted (when `trusted` is given), the signature verifies, it is
// of these bytes.
SignatureCheck check_adapter_signature(const std::string& sha256, uint64_t bytes,
                                       const std::optional<std::string>& signature_json,
                                       const TrustedKeys* trusted);

}  // namespace bitdelta
