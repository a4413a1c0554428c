// The embedded adapter store. Layout of the folder:
//   registry.db             SQLite registry (WAL mode): tables `adapters`, `schema_version`
//   blobs/sha256/ab/<hex>   each distinct .bdelta once, named by the SHA-256 of its bytes
//   tmp/                    uploads being written and validated; never a blob or a record
//
// An add copies the bytes into tmp/ (hashing them on the way), validates that copy — the bytes
// that will be stored, not a source that could change meanwhile — and only then, holding SQLite's
// write lock, renames it into its blob and inserts the record. Blob renames and unlinks happen
// only under that lock, so a remove can never delete a blob that a concurrent add is about to
// point at. A crash leaves at worst an unreferenced blob (reused by the next add of the same
// bytes) or a stale tmp/ file (swept at the next open after a day), never a record without a blob.
#include "store/adapter_store.h"

#include <fcntl.h>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <span>

#include "delta/adapter.h"
#include "util/error.h"
#include "util/files.h"
#include "util/sha256.h"

namespace bitdelta {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kSchemaVersion = 1;
// Writers hold the lock only for a rename and an insert; a long wait means a stuck process.
constexpr int kBusyTimeoutMs = 30'000;
// tmp/ files older than this belong to a process that died mid-upload.
constexpr auto kStaleTempAge = std::chrono::hours(24);

bool is_sha256_hex(std::string_view s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// Ids reach SQL only as bound parameters and never reach paths, but a hand-built AdapterId can
// hold anything; only what AdapterId::parse accepts is stored or looked up.
void check_id(const AdapterId& id, bool allow_latest) {
  const AdapterId reparsed = AdapterId::parse(id.to_string(), allow_latest);
  if (!(reparsed == id)) {
    fail("adapter id '{}' is invalid (domain '{}', user '{}', version {}); expected "
         "domain/user/vN",
         id.to_string(), id.domain, id.user, id.version);
  }
}

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);  // best effort: makes a rename durable
    ::close(fd);
  }
}

std::string now_rfc3339() {
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", fmt::gmtime(std::chrono::system_clock::now()));
}

// A file being written into tmp/, removed when this object dies unless it was moved away. The
// store cannot use AtomicFile: a blob's name is its hash, known only once every byte is written.
// An upload or added file on its way into the store: written (and hashed) into tmp/, validated
// there, then committed under its content address — the name is only known at the end.
class StagedFile {
 public:
  explicit StagedFile(const fs::path& tmp_dir) : file_(tmp_dir / "upload.bdelta") {}
  void write(std::span<const uint8_t> bytes) {
    hash_.update(bytes);
    file_.write(bytes);
  }
  std::string sha256() { return hash_.hex_digest(); }
  // fsync, rename to `blob`, fsync its folder; until then the destructor removes the file.
  void commit_to(const fs::path& blob) { file_.commit_to(blob); }
  const fs::path& path() const { return file_.temp_path(); }
  uint64_t bytes() const { return file_.bytes_written(); }

 private:
  AtomicFile file_;
  Sha256 hash_;
};

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  if (from.empty()) return text;
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// One prepared statement. Every value enters through a bind; no SQL is ever built from data.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql, const fs::path& store) : db_(db), store_(store) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) throw_error(sql);
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  Statement& bind(int index, std::string_view text) {
    check(sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()),
                            SQLITE_TRANSIENT));
    return *this;
  }
  Statement& bind(int index, int64_t value) {
    check(sqlite3_bind_int64(stmt_, index, value));
    return *this;
  }
  Statement& bind_optional(int index, const std::optional<std::string>& text) {  // NULL if absent
    if (text) return bind(index, std::string_view(*text));
    check(sqlite3_bind_null(stmt_, index));
    return *this;
  }

  // True while there is a row to read; false when done.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw_error(sqlite3_sql(stmt_));
  }
  void run() {
    while (step()) {
    }
  }

  std::string text(int column) const {
    const auto* p = sqlite3_column_text(stmt_, column);
    return p == nullptr ? std::string()
                        : std::string(reinterpret_cast<const char*>(p),
                                      static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
  }
  int64_t integer(int column) const { return sqlite3_column_int64(stmt_, column); }
  bool is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) throw_error(sqlite3_sql(stmt_));
  }
  [[noreturn]] void throw_error(const char* sql) const {
    const int code = sqlite3_errcode(db_);
    if (code == SQLITE_NOTADB) {
      fail("'{}' is not an adapter store: its registry.db is not an SQLite database (point "
           "--store at a store folder, or at a new or empty folder to create one)",
           store_.string());
    }
    if (code == SQLITE_BUSY) {
      fail("the adapter store '{}' stayed locked by another process for {} s; try again, or "
           "look for a stuck bitdelta process",
           store_.string(), kBusyTimeoutMs / 1000);
    }
    fail("adapter store '{}': the registry failed: {} (SQL: {})", store_.string(),
         sqlite3_errmsg(db_), sql == nullptr ? "?" : sql);
  }

  sqlite3* db_;
  const fs::path& store_;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE: takes the write lock up front (waiting up to the busy timeout), so a
// read-then-write never fails halfway on a lock upgrade. Rolls back unless committed.
class WriteTransaction {
 public:
  WriteTransaction(sqlite3* db, const fs::path& store) : db_(db), store_(store) {
    Statement(db_, "BEGIN IMMEDIATE", store_).run();
  }
  WriteTransaction(const WriteTransaction&) = delete;
  WriteTransaction& operator=(const WriteTransaction&) = delete;
  ~WriteTransaction() {
    if (!done_ && sqlite3_get_autocommit(db_) == 0) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }
  void commit() {
    Statement(db_, "COMMIT", store_).run();
    done_ = true;
  }

 private:
  sqlite3* db_;
  const fs::path& store_;
  bool done_ = false;
};

// Every record query selects these columns in this order (read by read_record).
#define BD_SELECT_RECORD                                                                  \
  "SELECT domain, user, version, sha256, file_bytes, base_fingerprint, base_model, "      \
  "metadata_json, created_at, "                                                           \
  "version = (SELECT MAX(version) FROM adapters b WHERE b.domain = a.domain AND b.user = " \
  "a.user) FROM adapters a "

AdapterRecord read_record(const Statement& s) {
  AdapterRecord r;
  r.id.domain = s.text(0);
  r.id.user = s.text(1);
  r.id.version = s.integer(2);
  r.sha256 = s.text(3);
  r.file_bytes = static_cast<uint64_t>(s.integer(4));
  r.base_fingerprint = s.text(5);
  r.base_model = s.text(6);
  r.metadata_json = s.text(7);
  r.created_at = s.text(8);
  r.latest = s.integer(9) != 0;
  return r;
}

// Adds (or replaces) one document of an adapter version; inside the caller's transaction.
void insert_attachment(sqlite3* db, const fs::path& store, const AdapterId& id,
                       const std::string& kind, const std::string& body,
                       const std::string& added_at) {
  Statement(db,
            "INSERT OR REPLACE INTO attachments (domain, user, version, kind, body, added_at) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            store)
      .bind(1, id.domain)
      .bind(2, id.user)
      .bind(3, id.version)
      .bind(4, kind)
      .bind(5, body)
      .bind(6, added_at)
      .run();
}

}  // namespace

struct AdapterStore::Impl {
  fs::path dir;
  sqlite3* db = nullptr;
  // One connection per store object; this serializes its use by the threads of this process
  // (SQLite's own locking orders this connection against other processes and other objects).
  std::mutex mutex;

  ~Impl() {
    if (db != nullptr) sqlite3_close_v2(db);
  }

  fs::path tmp_dir() const { return dir / "tmp"; }
  fs::path blob_path(const std::string& sha256) const {
    if (!is_sha256_hex(sha256)) {
      fail("adapter store '{}': '{}' is not a SHA-256 (64 lowercase hex digits); the registry "
           "is corrupt",
           dir.string(), sha256);
    }
    return dir / "blobs" / "sha256" / sha256.substr(0, 2) / sha256;
  }

  int64_t references(const std::string& sha256) {
    Statement s(db, "SELECT COUNT(*) FROM adapters WHERE sha256 = ?1", dir);
    s.bind(1, sha256);
    BD_CHECK(s.step());
    return s.integer(0);
  }
  std::optional<int64_t> latest_version(const AdapterId& id) {
    Statement s(db, "SELECT MAX(version) FROM adapters WHERE domain = ?1 AND user = ?2", dir);
    s.bind(1, id.domain).bind(2, id.user);
    BD_CHECK(s.step());
    if (s.is_null(0)) return std::nullopt;
    return s.integer(0);
  }
  // Call with the write lock held (inside a WriteTransaction).
  void remove_blob(const std::string& sha256) {
    const fs::path blob = blob_path(sha256);
    if (::unlink(blob.c_str()) != 0 && errno != ENOENT) {
      spdlog::warn("adapter store: cannot remove unreferenced blob '{}': {}", blob.string(),
                   std::strerror(errno));
      return;
    }
    ::rmdir(blob.parent_path().c_str());  // only succeeds when the shard folder is empty
    fsync_dir(blob.parent_path().parent_path());
  }

  AdapterRecord register_staged(StagedFile& staged, const std::string& sha256,
                                const std::string& what, std::optional<AdapterId> id,
                                const std::optional<std::string>& expected_base_fingerprint,
                                const AdapterCheck& check, const Attachments& attachments);
};

AdapterRecord AdapterStore::Impl::register_staged(
    StagedFile& staged, const std::string& sha256, const std::string& what,
    std::optional<AdapterId> id, const std::optional<std::string>& expected_base_fingerprint,
    const AdapterCheck& check, const Attachments& attachments) {
  AdapterRecord r;
  {
    std::shared_ptr<Adapter> adapter;
    try {
      adapter = Adapter::open(staged.path());
    } catch (const Error& e) {
      // The message names the staged copy; name what the caller gave instead.
      throw Error(replace_all(e.what(), staged.path().string(), what));
    }
    r.id = id.value_or(adapter->id());
    check_id(r.id, /*allow_latest=*/false);
    const auto& meta = adapter->metadata();
    r.base_fingerprint = adapter->base_fingerprint();
    r.base_model = meta.count("base_model") ? meta.at("base_model") : "";
    if (expected_base_fingerprint && *expected_base_fingerprint != r.base_fingerprint) {
      fail("{}: adapter {} was made for base '{}' (fingerprint {}…), not for this store's base "
           "(fingerprint {}…); compress the fine-tune against that base",
           what, adapter->id().to_string(), r.base_model.empty() ? "?" : r.base_model,
           r.base_fingerprint.substr(0, 12), expected_base_fingerprint->substr(0, 12));
    }
    if (check) {
      try {
        check(*adapter);
      } catch (const Error& e) {
        throw Error(replace_all(e.what(), staged.path().string(), what));
      }
    }
    r.metadata_json = nlohmann::json(meta).dump();
  }  // unmapped before the file moves
  r.sha256 = sha256;
  r.file_bytes = staged.bytes();
  r.created_at = now_rfc3339();

  std::lock_guard lock(mutex);
  WriteTransaction tx(db, dir);
  const std::optional<int64_t> latest = latest_version(r.id);
  {
    Statement exists(db,
                     "SELECT 1 FROM adapters WHERE domain = ?1 AND user = ?2 AND version = ?3",
                     dir);
    exists.bind(1, r.id.domain).bind(2, r.id.user).bind(3, r.id.version);
    if (exists.step()) {
      fail("adapter {} is already in the store '{}' (versions are immutable); register the new "
           "adapter as {}/{}/v{}",
           r.id.to_string(), dir.string(), r.id.domain, r.id.user, latest.value_or(0) + 1);
    }
  }
  const bool referenced = references(sha256) > 0;
  const fs::path blob = blob_path(sha256);
  std::error_code ec;
  fs::create_directories(blob.parent_path(), ec);
  if (ec) {
    fail("cannot create '{}' in the adapter store: {}", blob.parent_path().string(), ec.message());
  }
  // Identical bytes may already be there; replacing them with this verified copy is harmless
  // (a reader that mapped the old file keeps its inode).
  staged.commit_to(blob);
  try {
    Statement insert(db,
                     "INSERT INTO adapters (domain, user, version, sha256, file_bytes, "
                     "base_fingerprint, base_model, metadata_json, created_at) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                     dir);
    insert.bind(1, r.id.domain)
        .bind(2, r.id.user)
        .bind(3, r.id.version)
        .bind(4, r.sha256)
        .bind(5, static_cast<int64_t>(r.file_bytes))
        .bind(6, r.base_fingerprint)
        .bind(7, r.base_model)
        .bind(8, r.metadata_json)
        .bind(9, r.created_at);
    insert.run();
    for (const auto& [kind, body] : attachments) {
      insert_attachment(db, dir, r.id, kind, body, r.created_at);
    }
    r.latest = r.id.version > latest.value_or(0);
    tx.commit();
  } catch (...) {
    if (!referenced) remove_blob(sha256);  // still under the write lock
    throw;
  }
  return r;
}

AdapterStore AdapterStore::open(const fs::path& dir_in) {
  auto impl = std::make_unique<Impl>();
  impl->dir = fs::absolute(dir_in).lexically_normal();
  const fs::path& dir = impl->dir;
  const fs::path registry = dir / "registry.db";
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    fail("'{}' is a file, not an adapter store folder; give --store a folder (it is created if "
         "missing)",
         dir.string());
  }
  if (fs::is_directory(dir, ec) && !fs::exists(registry, ec) && !fs::is_empty(dir, ec)) {
    fail("'{}' is not an adapter store: it holds files but no registry.db (point --store at a "
         "store folder, or at a new or empty folder to create one)",
         dir.string());
  }
  for (const fs::path& sub : {dir / "blobs" / "sha256", impl->tmp_dir()}) {
    fs::create_directories(sub, ec);
    if (ec) fail("cannot create the adapter store folder '{}': {}", sub.string(), ec.message());
  }

  const int rc = sqlite3_open_v2(registry.c_str(), &impl->db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    fail("cannot open the adapter registry '{}': {}", registry.string(),
         impl->db != nullptr ? sqlite3_errmsg(impl->db) : sqlite3_errstr(rc));
  }
  sqlite3* db = impl->db;
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  {
    Statement wal(db, "PRAGMA journal_mode = WAL", dir);
    if (wal.step() && wal.text(0) != "wal") {
      spdlog::warn("adapter store '{}': SQLite could not switch to WAL mode (journal mode {}); "
                   "writers will block readers (is the folder on a network file system?)",
                   dir.string(), wal.text(0));
    }
  }
  Statement(db, "PRAGMA synchronous = FULL", dir).run();

  WriteTransaction tx(db, dir);
  Statement has_schema(db,
                       "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND "
                       "name = 'schema_version'",
                       dir);
  BD_CHECK(has_schema.step());
  if (has_schema.integer(0) == 0) {
    Statement any(db, "SELECT COUNT(*) FROM sqlite_master", dir);
    BD_CHECK(any.step());
    if (any.integer(0) != 0) {
      fail("'{}' is not an adapter store: its registry.db is some other SQLite database",
           dir.string());
    }
    Statement(db, "CREATE TABLE schema_version (version INTEGER NOT NULL)", dir).run();
    Statement(db,
              "CREATE TABLE adapters ("
              "domain TEXT NOT NULL, "
              "user TEXT NOT NULL, "
              "version INTEGER NOT NULL CHECK (version >= 1), "
              "sha256 TEXT NOT NULL, "
              "file_bytes INTEGER NOT NULL, "
              "base_fingerprint TEXT NOT NULL, "
              "base_model TEXT NOT NULL, "
              "metadata_json TEXT NOT NULL, "
              "created_at TEXT NOT NULL, "
              "PRIMARY KEY (domain, user, version))",
              dir)
        .run();
    Statement(db, "CREATE INDEX adapters_by_sha256 ON adapters (sha256)", dir).run();
    Statement(db, "INSERT INTO schema_version (version) VALUES (?1)", dir)
        .bind(1, kSchemaVersion)
        .run();
  } else {
    Statement version(db, "SELECT MAX(version) FROM schema_version", dir);
    BD_CHECK(version.step());
    const int64_t found = version.integer(0);
    if (found != kSchemaVersion) {
      fail("the adapter store '{}' has registry schema version {}; this build of bitdelta reads "
           "version {} ({})",
           dir.string(), found, kSchemaVersion,
           found > kSchemaVersion ? "upgrade bitdelta" : "the registry is corrupt");
    }
  }
  // Jobs arrived after schema version 1; the table is additive, so older stores gain it here.
  Statement(db,
            "CREATE TABLE IF NOT EXISTS jobs ("
            "id TEXT PRIMARY KEY, state TEXT NOT NULL, domain TEXT NOT NULL, user TEXT NOT NULL, "
            "owner TEXT NOT NULL, request_json TEXT NOT NULL, progress_json TEXT NOT NULL, "
            "result_json TEXT NOT NULL, error TEXT NOT NULL, adapter_id TEXT NOT NULL, "
            "created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
            dir)
      .run();
  // Detached signatures of blobs (docs/signatures.md), by the blob's SHA-256; additive too.
  Statement(db,
            "CREATE TABLE IF NOT EXISTS signatures (sha256 TEXT PRIMARY KEY, "
            "signature_json TEXT NOT NULL, added_at TEXT NOT NULL)",
            dir)
      .run();
  // Users' consent to personalization (docs/consent.md); additive too.
  Statement(db,
            "CREATE TABLE IF NOT EXISTS consent (user TEXT NOT NULL, domain TEXT NOT NULL, "
            "personalization INTEGER NOT NULL, note TEXT NOT NULL, updated_at TEXT NOT NULL, "
            "updated_by TEXT NOT NULL, PRIMARY KEY (user, domain))",
            dir)
      .run();
  // Documents about one adapter version (its safety report, its compute receipt), by id and
  // kind; they go when the version goes. Additive too.
  Statement(db,
            "CREATE TABLE IF NOT EXISTS attachments (domain TEXT NOT NULL, user TEXT NOT NULL, "
            "version INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL, "
            "added_at TEXT NOT NULL, PRIMARY KEY (domain, user, version, kind))",
            dir)
      .run();
  tx.commit();

  // Sweep uploads abandoned by processes that died mid-copy.
  const auto now = fs::file_time_type::clock::now();
  for (const auto& entry : fs::directory_iterator(impl->tmp_dir(), ec)) {
    std::error_code ignored;
    if (entry.is_regular_file(ignored) && now - entry.last_write_time(ignored) > kStaleTempAge) {
      fs::remove(entry.path(), ignored);
    }
  }
  return AdapterStore(std::move(impl));
}

AdapterRecord AdapterStore::add(const fs::path& file, std::optional<AdapterId> id,
                                std::optional<std::string> expected_base_fingerprint,
                                const AdapterCheck& check, const Attachments& attachments) {
  if (id) check_id(*id, /*allow_latest=*/false);
  StagedFile staged(impl_->tmp_dir());
  {
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("cannot open adapter file '{}': {}", file.string(), std::strerror(errno));
    std::vector<uint8_t> buffer(1 << 20);
    for (;;) {
      ssize_t n = ::read(fd, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int err = errno;
        ::close(fd);
        fail("cannot read adapter file '{}': {}", file.string(), std::strerror(err));
      }
      if (n == 0) break;
      try {
        staged.write({buffer.data(), static_cast<size_t>(n)});
      } catch (...) {
        ::close(fd);
        throw;
      }
    }
    ::close(fd);
  }
  const std::string sha256 = staged.sha256();
  return impl_->register_staged(staged, sha256, file.string(), std::move(id),
                                expected_base_fingerprint, check, attachments);
}

AdapterRecord AdapterStore::add_bytes(std::string_view bytes, std::optional<AdapterId> id,
                                      std::optional<std::string> expected_base_fingerprint,
                                      const AdapterCheck& check, const Attachments& attachments) {
  if (id) check_id(*id, /*allow_latest=*/false);
  StagedFile staged(impl_->tmp_dir());
  staged.write({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  const std::string sha256 = staged.sha256();
  return impl_->register_staged(staged, sha256, "the uploaded adapter", std::move(id),
                                expected_base_fingerprint, check, attachments);
}

std::optional<AdapterRecord> AdapterStore::find(const AdapterId& id) const {
  check_id(id, /*allow_latest=*/true);
  std::lock_guard lock(impl_->mutex);
  if (id.version > 0) {
    Statement s(impl_->db, BD_SELECT_RECORD "WHERE domain = ?1 AND user = ?2 AND version = ?3",
                impl_->dir);
    s.bind(1, id.domain).bind(2, id.user).bind(3, id.version);
    if (!s.step()) return std::nullopt;
    return read_record(s);
  }
  Statement s(impl_->db,
              BD_SELECT_RECORD "WHERE domain = ?1 AND user = ?2 ORDER BY version DESC LIMIT 1",
              impl_->dir);
  s.bind(1, id.domain).bind(2, id.user);
  if (!s.step()) return std::nullopt;
  return read_record(s);
}

std::vector<AdapterRecord> AdapterStore::list(std::optional<std::string> domain,
                                              std::optional<std::string> user) const {
  std::lock_guard lock(impl_->mutex);
  Statement s(impl_->db,
              BD_SELECT_RECORD "WHERE (?1 IS NULL OR domain = ?1) AND (?2 IS NULL OR user = ?2) "
                               "ORDER BY domain, user, version",
              impl_->dir);
  s.bind_optional(1, domain).bind_optional(2, user);
  std::vector<AdapterRecord> records;
  while (s.step()) records.push_back(read_record(s));
  return records;
}

namespace {

#define BD_SELECT_JOB                                                                        \
  "SELECT id, state, domain, user, owner, request_json, progress_json, result_json, error, " \
  "adapter_id, created_at, updated_at FROM jobs "

JobRecord read_job(const Statement& s) {
  JobRecord j;
  j.id = s.text(0);
  j.state = s.text(1);
  j.domain = s.text(2);
  j.user = s.text(3);
  j.owner = s.text(4);
  j.request_json = s.text(5);
  j.progress_json = s.text(6);
  j.result_json = s.text(7);
  j.error = s.text(8);
  j.adapter_id = s.text(9);
  j.created_at = s.text(10);
  j.updated_at = s.text(11);
  return j;
}

bool is_job_id(std::string_view id) {
  if (!id.starts_with("job-") || id.size() < 5 || id.size() > 68) return false;
  return std::all_of(id.begin() + 4, id.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

void AdapterStore::put_job(JobRecord job) {
  if (!is_job_id(job.id)) fail("'{}' is not a job id (job- and hex digits)", job.id);
  job.updated_at = now_rfc3339();
  if (job.created_at.empty()) job.created_at = job.updated_at;
  std::lock_guard lock(impl_->mutex);
  Statement(impl_->db,
            "INSERT OR REPLACE INTO jobs (id, state, domain, user, owner, request_json, "
            "progress_json, result_json, error, adapter_id, created_at, updated_at) VALUES "
            "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            impl_->dir)
      .bind(1, job.id)
      .bind(2, job.state)
      .bind(3, job.domain)
      .bind(4, job.user)
      .bind(5, job.owner)
      .bind(6, job.request_json)
      .bind(7, job.progress_json)
      .bind(8, job.result_json)
      .bind(9, job.error)
      .bind(10, job.adapter_id)
      .bind(11, job.created_at)
      .bind(12, job.updated_at)
      .run();
}

std::optional<JobRecord> AdapterStore::find_job(const std::string& id) const {
  if (!is_job_id(id)) return std::nullopt;
  std::lock_guard lock(impl_->mutex);
  Statement s(impl_->db, BD_SELECT_JOB "WHERE id = ?1", impl_->dir);
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return read_job(s);
}

std::vector<JobRecord> AdapterStore::list_jobs(std::optional<std::string> state) const {
  std::lock_guard lock(impl_->mutex);
  Statement s(impl_->db, BD_SELECT_JOB "WHERE (?1 IS NULL OR state = ?1) ORDER BY created_at, id",
              impl_->dir);
  s.bind_optional(1, state);
  std::vector<JobRecord> jobs;
  while (s.step()) jobs.push_back(read_job(s));
  return jobs;
}

void AdapterStore::put_signature(const std::string& sha256, const std::string& signature_json) {
  if (!is_sha256_hex(sha256)) fail("'{}' is not a SHA-256 (64 lowercase hex digits)", sha256);
  std::lock_guard lock(impl_->mutex);
  Statement(
      impl_->db,
      "INSERT OR REPLACE INTO signatures (sha256, signature_json, added_at) VALUES (?1, ?2, ?3)",
      impl_->dir)
      .bind(1, sha256)
      .bind(2, signature_json)
      .bind(3, now_rfc3339())
      .run();
}

std::optional<std::string> AdapterStore::find_signature(const std::string& sha256) const {
  std::lock_guard lock(impl_->mutex);
  Statement s(impl_->db, "SELECT signature_json FROM signatures WHERE sha256 = ?1", impl_->dir);
  s.bind(1, sha256);
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

namespace {

ConsentRecord read_consent(const Statement& s) {
  return ConsentRecord{s.text(0), s.text(1), s.text(2) == "1", s.text(3), s.text(4), s.text(5)};
}

constexpr const char* kConsentColumns =
    "user, domain, CAST(personalization AS TEXT), note, updated_at, updated_by";

}  // namespace

std::optional<ConsentRecord> AdapterStore::put_consent(ConsentRecord r) {
  check_id(AdapterId{r.domain == "*" ? "any" : r.domain, r.user, 1}, /*allow_latest=*/false);
  r.updated_at = now_rfc3339();
  std::lock_guard lock(impl_->mutex);
  WriteTransaction tx(impl_->db, impl_->dir);
  // What decided for this scope before: the record itself, or (for one domain) the user's "*".
  const std::string sql = fmt::format(
      "SELECT {} FROM consent WHERE user = ?1 AND domain IN (?2, '*') ORDER BY domain = '*' "
      "LIMIT 1",
      kConsentColumns);
  Statement find(impl_->db, sql.c_str(), impl_->dir);
  find.bind(1, r.user).bind(2, r.domain);
  std::optional<ConsentRecord> previous;
  if (find.step()) previous = read_consent(find);
  // A decision for every domain replaces the per-domain ones: the newest word is the user's.
  if (r.domain == "*") {
    Statement(impl_->db, "DELETE FROM consent WHERE user = ?1 AND domain != '*'", impl_->dir)
        .bind(1, r.user)
        .run();
  }
  Statement(impl_->db,
            "INSERT OR REPLACE INTO consent (user, domain, personalization, note, updated_at, "
            "updated_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            impl_->dir)
      .bind(1, r.user)
      .bind(2, r.domain)
      .bind(3, static_cast<int64_t>(r.personalization ? 1 : 0))
      .bind(4, r.note)
      .bind(5, r.updated_at)
      .bind(6, r.updated_by)
      .run();
  tx.commit();
  return previous;
}

std::vector<ConsentRecord> AdapterStore::list_consent(const std::string& user) const {
  std::lock_guard lock(impl_->mutex);
  const std::string sql = fmt::format(
      "SELECT {} FROM consent WHERE user = ?1 ORDER BY domain != '*', domain", kConsentColumns);
  Statement s(impl_->db, sql.c_str(), impl_->dir);
  s.bind(1, user);
  std::vector<ConsentRecord> out;
  while (s.step()) out.push_back(read_consent(s));
  return out;
}

std::optional<ConsentRecord> AdapterStore::consent_for(const std::string& user,
                                                       const std::string& domain) const {
  std::lock_guard lock(impl_->mutex);
  const std::string sql = fmt::format(
      "SELECT {} FROM consent WHERE user = ?1 AND domain IN (?2, '*') ORDER BY domain = '*' "
      "LIMIT 1",
      kConsentColumns);
  Statement s(impl_->db, sql.c_str(), impl_->dir);
  s.bind(1, user).bind(2, domain);
  if (!s.step()) return std::nullopt;
  return read_consent(s);
}

void AdapterStore::check_consent(const std::string& user, const std::string& domain,
                                 bool require_explicit) const {
  const std::optional<ConsentRecord> c = consent_for(user, domain);
  if (c && !c->personalization) {
    throw ConsentRefused(fmt::format(
        "{} withdrew consent to personalization{} on {}{}; nothing is trained on their records "
        "until it is given again (PUT /v1/consent/{} or bitdelta consent set)",
        user, c->domain == "*" ? "" : " in " + domain, c->updated_at,
        c->note.empty() ? "" : " (\"" + c->note + "\")", user));
  }
  if (!c && require_explicit) {
    throw ConsentRefused(fmt::format(
        "{} has not consented to personalization in {} and this operator requires it; record "
        "their consent first (PUT /v1/consent/{} or bitdelta consent set)",
        user, domain, user));
  }
}

void AdapterStore::put_attachment(const AdapterId& id, const std::string& kind,
                                  const std::string& body) {
  check_id(id, /*allow_latest=*/false);
  std::lock_guard lock(impl_->mutex);
  WriteTransaction tx(impl_->db, impl_->dir);
  Statement find(impl_->db,
                 "SELECT 1 FROM adapters WHERE domain = ?1 AND user = ?2 AND version = ?3",
                 impl_->dir);
  find.bind(1, id.domain).bind(2, id.user).bind(3, id.version);
  if (!find.step()) fail("{} is not in the store; nothing to attach a {} to", id.to_string(), kind);
  insert_attachment(impl_->db, impl_->dir, id, kind, body, now_rfc3339());
  tx.commit();
}

std::optional<std::string> AdapterStore::find_attachment(const AdapterId& id,
                                                         const std::string& kind) const {
  std::lock_guard lock(impl_->mutex);
  Statement s(impl_->db,
              "SELECT body FROM attachments WHERE domain = ?1 AND user = ?2 AND version = ?3 AND "
              "kind = ?4",
              impl_->dir);
  s.bind(1, id.domain).bind(2, id.user).bind(3, id.version).bind(4, kind);
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

fs::path AdapterStore::job_dir(const std::string& id) const {
  if (!is_job_id(id)) fail("'{}' is not a job id (job- and hex digits)", id);
  return impl_->dir / "jobs" / id;
}

bool AdapterStore::remove(const AdapterId& id) {
  check_id(id, /*allow_latest=*/true);
  if (id.version == 0) {
    fail("remove needs an exact version ({}/vN): removing whichever version is latest is too "
         "easy to get wrong",
         id.to_string());
  }
  std::lock_guard lock(impl_->mutex);
  std::string sha256;
  int64_t left = 0;
  {
    WriteTransaction tx(impl_->db, impl_->dir);
    Statement find(impl_->db,
                   "SELECT sha256 FROM adapters WHERE domain = ?1 AND user = ?2 AND version = ?3",
                   impl_->dir);
    find.bind(1, id.domain).bind(2, id.user).bind(3, id.version);
    if (!find.step()) return false;
    sha256 = find.text(0);
    for (const char* sql :
         {"DELETE FROM adapters WHERE domain = ?1 AND user = ?2 AND version = ?3",
          "DELETE FROM attachments WHERE domain = ?1 AND user = ?2 AND version = ?3"}) {
      Statement(impl_->db, sql, impl_->dir)
          .bind(1, id.domain)
          .bind(2, id.user)
          .bind(3, id.version)
          .run();
    }
    left = impl_->references(sha256);
    tx.commit();
  }
  if (left == 0) {
    // A second transaction: had the blob gone before the first commit and that commit failed,
    // a record would point at nothing. Re-counted under the lock, in case an add took it since.
    // The record is gone either way; a blob left behind here is only wasted space.
    try {
      WriteTransaction tx(impl_->db, impl_->dir);
      if (impl_->references(sha256) == 0) {
        impl_->remove_blob(sha256);
        Statement(impl_->db, "DELETE FROM signatures WHERE sha256 = ?1", impl_->dir)
            .bind(1, sha256)
            .run();
      }
      tx.commit();
    } catch (const Error& e) {
      spdlog::warn("adapter store '{}': {} was removed, but its blob stays: {}",
                   impl_->dir.string(), id.to_string(), e.what());
    }
  }
  return true;
}

fs::path AdapterStore::blob_path(const AdapterRecord& record) const {
  return impl_->blob_path(record.sha256);
}

const fs::path& AdapterStore::dir() const { return impl_->dir; }

AdapterStore::AdapterStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AdapterStore::AdapterStore(AdapterStore&&) noexcept = default;
AdapterStore& AdapterStore::operator=(AdapterStore&&) noexcept = default;
AdapterStore::~AdapterStore() = default;

}  // namespace bitdelta
