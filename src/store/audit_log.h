// The audit log (docs/audit.md): an append-only, hash-chained JSON-lines file in the store
// (audit.jsonl). Each entry carries the SHA-256 of the line before it; a head file beside it
// (audit.jsonl.head) holds the last entry's number and hash, signed with the server's key when it
// has one, so an edited, removed, reordered or cut-off entry — the last one included — is found
// by `bitdelta audit verify`. Every line and the head are fsynced before append() returns.
#pragma once

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "util/keys.h"

namespace bitdelta {

struct AuditEvent {
  std::string action;       // create, upload, sign, delete, personalize, cancel, fail, key_use, ...
  std::string actor;        // the key id that did it ("cli" for the local command line)
  std::string adapter_id;   // domain/user/vN, or domain/user for jobs, or ""
  std::string file_sha256;  // the adapter file's, when there is one
  nlohmann::json details = nlohmann::json::object();
};

class AuditLog {
 public:
  // Opens (creating) the log at `path`; with `key`, heads are signed. Error when the log's tail is
  // damaged (a partial last line, a head that does not match): run `bitdelta audit verify`.
  AuditLog(std::filesystem::path path, const SigningKey* key = nullptr);
  // Appends one entry (seq, time, the event, prev) and fsyncs it and the head. Thread safe.
  nlohmann::json append(const AuditEvent& event);
  // Every entry, oldest first.
  std::vector<nlohmann::json> entries() const;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const SigningKey* key_;
  mutable std::mutex mutex_;
  int64_t seq_ = 0;
  std::string last_hash_;
};

struct AuditVerification {
  bool ok = true;
  int64_t entries = 0;
  std::string problem;  // the first one found, naming the line
  bool head_signed = false;
};

// Walks the chain: every line parses, numbers run 1, 2, 3, ..., each `prev` is the SHA-256 of
// the line before, the file ends with a newline, and the head names the last line (with
// `trusted`, its signature must be by a trusted key).
AuditVerification verify_audit_log(const std::filesystem::path& path,
                                   const TrustedKeys* trusted = nullptr);

}  // namespace bitdelta
