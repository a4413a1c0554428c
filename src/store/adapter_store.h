// The embedded adapter store: a local folder of content-addressed blobs (blobs/sha256/ab/<hex>)
// and a SQLite registry (registry.db) of adapter records. No server process is needed. Safe for
// several threads of one process and for several processes on one folder (SQLite's locking).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "delta/adapter_id.h"
#include "util/error.h"

namespace bitdelta {

class Adapter;

// Extra validation of an adapter before it enters the store (e.g. Adapter::check_base against
// the server's loaded model); throws Error to refuse it.
using AdapterCheck = std::function<void(const Adapter&)>;
// Documents registered with an adapter version in the same transaction, by kind (see
// put_attachment).
using Attachments = std::map<std::string, std::string>;

struct AdapterRecord {
  AdapterId id;
  std::string sha256;            // of the whole .bdelta file; names its blob
  uint64_t file_bytes = 0;
  std::string base_fingerprint;  // from the file's metadata
  std::string base_model;        // from the file's metadata
  std::string metadata_json;     // the file's metadata, all of it, as one JSON object
  std::string created_at;        // RFC 3339, when it entered the store
  bool latest = false;           // the highest version of its domain/user
};

// A personalization job as the registry keeps it (docs/jobs.md): enough to report it, and to
// resume or fail it after the server restarts. The JSON columns are the server's to define.
struct JobRecord {
  std::string id;                      // "job-" + 24 hex digits
  std::string state;                   // queued | running | succeeded | failed | cancelled
  std::string domain, user;            // whose adapter
  std::string owner;                   // key id of the creator
  std::string request_json;            // the options it was submitted with
  std::string progress_json;           // the last progress event
  std::string result_json;             // on success: the adapter id and metrics
  std::string error;                   // on failure: the reason
  std::string adapter_id;              // the id it registers (fixed once it starts running)
  std::string created_at, updated_at;  // RFC 3339
};

// A user's consent to personalization (docs/consent.md): per domain, or "*" for every domain (a
// record for the domain itself wins). No record: the operator's default applies.
struct ConsentRecord {
  std::string user, domain;  // canonical user id; a domain name or "*"
  bool personalization = false;
  std::string note;                    // why, as the user or operator gave it
  std::string updated_at, updated_by;  // RFC 3339; the key id (or "cli") that set it
};

// Thrown when a user's consent does not allow personalizing them (withdrawn, or not given where
// the operator requires it).
struct ConsentRefused : Error {
  using Error::Error;
};

class AdapterStore {
 public:
  // Opens or creates the store in `dir` (created if missing). Throws Error if it is not a store.
  static AdapterStore open(const std::filesystem::path& dir);

  // Validates `file` as a .bdelta (Adapter::open: format, metadata, finite non-negative scales)
  // and, when `expected_base_fingerprint` is given, that it was made for that base; then copies
  // it into its blob (atomically) and registers it under `id` (default: the file's adapter_id).
  // Refuses an id that already exists. `check`, when given, runs on the opened adapter before it
  // is registered. `attachments` are registered with it, in the same transaction. Nothing is
  // left behind when anything fails.
  AdapterRecord add(const std::filesystem::path& file, std::optional<AdapterId> id = {},
                    std::optional<std::string> expected_base_fingerprint = {},
                    const AdapterCheck& check = {}, const Attachments& attachments = {});
  // The same from bytes in memory (an HTTP upload): written to a temp file in the store first.
  AdapterRecord add_bytes(std::string_view bytes, std::optional<AdapterId> id = {},
                          std::optional<std::string> expected_base_fingerprint = {},
                          const AdapterCheck& check = {}, const Attachments& attachments = {});

  // "domain/user/vN" exactly, or "domain/user" (version 0) for its latest version.
  std::optional<AdapterRecord> find(const AdapterId& id) const;
  // Every record, ordered by domain, user, version; filters are exact matches when given.
  std::vector<AdapterRecord> list(std::optional<std::string> domain = {},
                                  std::optional<std::string> user = {}) const;
  // Removes the record; the blob goes too when no other record points at it. False if absent.
  bool remove(const AdapterId& id);

  // Personalization jobs, in the same registry (table `jobs`). put_job inserts or replaces by id
  // and stamps updated_at (and created_at when new).
  void put_job(JobRecord job);
  std::optional<JobRecord> find_job(const std::string& id) const;
  // Oldest first; only those in `state` when given.
  std::vector<JobRecord> list_jobs(std::optional<std::string> state = {}) const;
  // A job's folder (its uploaded records and working files): dir()/jobs/<id>. Error for an id
  // that is not "job-" + hex.
  std::filesystem::path job_dir(const std::string& id) const;

  // The detached signature (docs/signatures.md) of the blob `sha256`, as JSON text; it goes when
  // the blob goes. Callers verify before they put.
  void put_signature(const std::string& sha256, const std::string& signature_json);
  std::optional<std::string> find_signature(const std::string& sha256) const;

  // A document about one exact version, by kind ("safety": its safety-gate report, "receipt":
  // its compute receipt), replacing one of the same kind; it goes when the version goes. Error
  // when the version is not in the store.
  void put_attachment(const AdapterId& id, const std::string& kind, const std::string& body);
  std::optional<std::string> find_attachment(const AdapterId& id, const std::string& kind) const;

  // Sets the user's consent for a domain, or for every domain with "*" (which also drops the
  // user's per-domain records: the newest decision counts), and returns the record that decided
  // for that scope before (for one domain, possibly the user's "*"). Error for a domain that is
  // neither a name of letters, digits, '-' or '_' nor "*", or a bad user id.
  std::optional<ConsentRecord> put_consent(ConsentRecord record);
  // The user's records, "*" first then by domain.
  std::vector<ConsentRecord> list_consent(const std::string& user) const;
  // The record that decides for `domain`: the domain's own, else the user's "*"; nullopt: none.
  std::optional<ConsentRecord> consent_for(const std::string& user,
                                           const std::string& domain) const;
  // Throws ConsentRefused, saying why and how to change it, unless the user's consent allows
  // personalizing them in `domain` (granted; or, when not required, not withdrawn).
  void check_consent(const std::string& user, const std::string& domain,
                     bool require_explicit) const;

  // Where the record's blob lives (never derived from the id: ids never become paths).
  std::filesystem::path blob_path(const AdapterRecord& record) const;
  const std::filesystem::path& dir() const;

  AdapterStore(AdapterStore&&) noexcept;
  AdapterStore& operator=(AdapterStore&&) noexcept;
  ~AdapterStore();

 private:
  struct Impl;
  explicit AdapterStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace bitdelta
