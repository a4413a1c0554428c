#include "delta/signature.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <chrono>
#include <set>

#include "util/error.h"
#include "util/sha256.h"

namespace bitdelta {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kFormat = "bitdelta-adapter-signature";

std::string now_utc() {
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}",
                     std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()));
}

}  // namespace

json AdapterSignature::to_json() const {
  return json{{"format", kFormat},        {"version", 1},
              {"algorithm", "ed25519"},   {"file_sha256", file_sha256},
              {"file_bytes", file_bytes}, {"key_id", key_id},
              {"public_key", public_key}, {"signed_at", signed_at},
              {"signature", signature}};
}

std::string AdapterSignature::statement() const {
  return fmt::format(
      "bitdelta-adapter-signature-v1\nsha256: {}\nbytes: {}\nkey_id: {}\nsigned_at: {}\n",
      file_sha256, file_bytes, key_id, signed_at);
}

AdapterSignature AdapterSignature::parse(const std::string& text, const std::string& what) {
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) fail("{} is not a JSON object (a signature file)", what);
  static const std::set<std::string> kFields = {"format",      "version",    "algorithm",
                                                "file_sha256", "file_bytes", "key_id",
                                                "public_key",  "signed_at",  "signature"};
  for (const auto& [key, value] : j.items()) {
    if (!kFields.count(key)) fail("{}: unknown field \"{}\"", what, key);
  }
  for (const std::string& key : kFields) {
    if (!j.contains(key)) fail("{}: \"{}\" is missing", what, key);
  }
  auto text_field = [&](const char* key) {
    if (!j[key].is_string()) fail("{}: \"{}\" must be a string", what, key);
    return j[key].get<std::string>();
  };
  if (text_field("format") != kFormat) fail("{}: format must be \"{}\"", what, kFormat);
  if (!j["version"].is_number_integer() || j["version"] != 1) {
    fail("{}: version {} is not supported (this build reads version 1)", what, j["version"].dump());
  }
  if (text_field("algorithm") != "ed25519") fail("{}: algorithm must be \"ed25519\"", what);
  AdapterSignature s;
  s.file_sha256 = text_field("file_sha256");
  std::array<uint8_t, 32> digest{};
  from_hex(s.file_sha256, digest, what + ": file_sha256");
  if (!j["file_bytes"].is_number_unsigned())
    fail("{}: \"file_bytes\" must be a whole number", what);
  s.file_bytes = j["file_bytes"];
  s.key_id = text_field("key_id");
  s.public_key = text_field("public_key");
  const PublicKey key = parse_public_key(s.public_key, what);
  if (key.key_id != s.key_id) {
    fail("{}: key_id {} is not the id of its public key ({})", what, s.key_id, key.key_id);
  }
  s.signed_at = text_field("signed_at");
  s.signature = text_field("signature");
  std::array<uint8_t, 64> signature{};
  from_hex(s.signature, signature, what + ": signature");
  return s;
}

AdapterSignature sign_adapter_digest(const std::string& sha256, uint64_t bytes,
                                     const SigningKey& key) {
  AdapterSignature s;
  s.file_sha256 = sha256;
  s.file_bytes = bytes;
  s.key_id = key.public_key().key_id;
  s.public_key = key.public_key().hex();
  s.signed_at = now_utc();
  s.signature = to_hex(key.sign(s.statement()));
  return s;
}

AdapterSignature sign_adapter(const fs::path& path, const SigningKey& key) {
  if (!fs::is_regular_file(path)) fail("'{}' is not a file", path.string());
  return sign_adapter_digest(sha256_file(path), fs::file_size(path), key);
}

fs::path signature_path(const fs::path& adapter) {
  return adapter.parent_path() / (adapter.filename().string() + ".sig.json");
}

std::string_view status_name(SignatureStatus status) {
  switch (status) {
    case SignatureStatus::kValid:
      return "valid";
    case SignatureStatus::kUnsigned:
      return "unsigned";
    case SignatureStatus::kMalformed:
      return "malformed";
    case SignatureStatus::kUnknownKey:
      return "unknown key";
    case SignatureStatus::kBadSignature:
      return "bad signature";
    case SignatureStatus::kFileChanged:
      return "file changed after signing";
  }
  return "?";
}

SignatureCheck check_adapter_signature(const std::string& sha256, uint64_t bytes,
                                       const std::optional<std::string>& signature_json,
                                       const TrustedKeys* trusted) {
  SignatureCheck c;
  if (!signature_json) {
    c.status = SignatureStatus::kUnsigned;
    c.message =
        "no signature: the adapter is not signed (sign it with bitdelta sign F --key DIR "
        "and send F.sig.json with it)";
    return c;
  }
  try {
    c.signature = AdapterSignature::parse(*signature_json, "the signature");
  } catch (const Error& e) {
    c.status = SignatureStatus::kMalformed;
    c.message = e.what();
    return c;
  }
  const AdapterSignature& s = *c.signature;
  PublicKey key = parse_public_key(s.public_key, "the signature");
  if (trusted != nullptr) {
    const PublicKey* known = trusted->find(s.key_id);
    if (known == nullptr) {
      c.status = SignatureStatus::kUnknownKey;
      c.message = fmt::format("unknown key: the signer {} is not among the trusted keys", s.key_id);
      return c;
    }
    key = *known;
    c.trusted = true;
  }
  std::array<uint8_t, 64> signature{};
  from_hex(s.signature, signature, "the signature");
  if (!verify_signature(key, s.statement(), signature)) {
    c.status = SignatureStatus::kBadSignature;
    c.message = fmt::format(
        "bad signature: it does not verify with key {} (forged, or the "
        "signature file was edited)",
        s.key_id);
    return c;
  }
  if (s.file_sha256 != sha256 || s.file_bytes != bytes) {
    c.status = SignatureStatus::kFileChanged;
    c.message = fmt::format(
        "file changed after signing: key {} signed {} bytes with SHA-256 {} "
        "on {}; this file has {} bytes with SHA-256 {}",
        s.key_id, s.file_bytes, s.file_sha256, s.signed_at, bytes, sha256);
    return c;
  }
  c.status = SignatureStatus::kValid;
  c.message =
      fmt::format("valid: signed by {} on {}{}", s.key_id, s.signed_at,
                  trusted != nullptr ? " (a trusted key)" : " (not checked against trusted keys)");
  return c;
}

}  // namespace bitdelta
