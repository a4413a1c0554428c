#include "store/audit_log.h"

#include <fcntl.h>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>

#include "util/error.h"
#include "util/files.h"
#include "util/sha256.h"

namespace bitdelta {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

namespace {

const std::string kGenesis(64, '0');

std::string hash_of(const std::string& line) {
  return sha256_hex({reinterpret_cast<const uint8_t*>(line.data()), line.size()});
}

std::string now_utc() {
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}",
                     std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()));
}

fs::path head_path(const fs::path& log) {
  return log.parent_path() / (log.filename().string() + ".head");
}

std::string head_statement(int64_t seq, const std::string& hash) {
  return fmt::format("bitdelta-audit-head-v1\nseq: {}\nsha256: {}\n", seq, hash);
}

// The log's lines; `complete` false when the last one has no newline (cut off mid-write).
std::vector<std::string> read_lines(const fs::path& path, bool* complete) {
  const std::string text = fs::exists(path) ? read_file(path) : std::string();
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = text.find('\n', start);
    if (end == std::string::npos) {
      lines.push_back(text.substr(start));
      *complete = false;
      return lines;
    }
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  *complete = true;
  return lines;
}

// The last complete line of the open log (without its newline), or "" when it is empty.
std::string last_line(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size == 0) return "";
  std::string tail;
  for (off_t chunk = 4096;; chunk *= 4) {
    const off_t start = std::max<off_t>(0, st.st_size - chunk);
    tail.resize(static_cast<size_t>(st.st_size - start));
    if (::pread(fd, tail.data(), tail.size(), start) != static_cast<ssize_t>(tail.size())) {
      fail("cannot read the audit log's end: {}", std::strerror(errno));
    }
    if (tail.back() != '\n')
      fail("the audit log ends in a cut-off entry; run bitdelta audit verify");
    const size_t before = tail.find_last_of('\n', tail.size() - 2);
    if (before != std::string::npos) return tail.substr(before + 1, tail.size() - before - 2);
    if (start == 0) return tail.substr(0, tail.size() - 1);
  }
}

}  // namespace

AuditLog::AuditLog(fs::path path, const SigningKey* key) : path_(std::move(path)), key_(key) {
  const AuditVerification v = verify_audit_log(path_);
  if (!v.ok) {
    fail(
        "the audit log {} is damaged: {}; it is never appended to in that state (inspect it "
        "with bitdelta audit verify)",
        path_.string(), v.problem);
  }
  bool complete = true;
  const auto lines = read_lines(path_, &complete);
  seq_ = static_cast<int64_t>(lines.size());
  last_hash_ = lines.empty() ? kGenesis : hash_of(lines.back());
}

json AuditLog::append(const AuditEvent& e) {
  std::lock_guard lock(mutex_);
  const int fd = ::open(path_.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) fail("cannot open the audit log {}: {}", path_.string(), std::strerror(errno));
  // Another process (the CLI beside a server) may append to the same log: take the file lock and
  // continue the chain from the log's real last line, not from what this object saw last.
  struct Closer {
    int fd;
    ~Closer() {
      ::flock(fd, LOCK_UN);
      ::close(fd);
    }
  } closer{fd};
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR)
      fail("cannot lock the audit log {}: {}", path_.string(), std::strerror(errno));
  }
  const std::string last = last_line(fd);
  if (last.empty()) {
    seq_ = 0;
    last_hash_ = kGenesis;
  } else {
    const json previous = json::parse(last, nullptr, false);
    if (previous.is_discarded() || !previous.contains("seq") ||
        !previous["seq"].is_number_integer()) {
      fail("the audit log {} ends in a damaged entry; run bitdelta audit verify", path_.string());
    }
    seq_ = previous["seq"].get<int64_t>();
    last_hash_ = hash_of(last);
  }
  ordered_json entry = {
      {"seq", seq_ + 1},      {"time", now_utc()},          {"actor", e.actor},
      {"action", e.action},   {"adapter_id", e.adapter_id}, {"file_sha256", e.file_sha256},
      {"details", e.details}, {"prev", last_hash_}};
  const std::string line = entry.dump();
  const std::string data = line + "\n";
  size_t written = 0;
  while (written < data.size()) {
    const ssize_t n = ::write(fd, data.data() + written, data.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("cannot write the audit log {}: {}", path_.string(), std::strerror(errno));
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0)
    fail("cannot fsync the audit log {}: {}", path_.string(), std::strerror(errno));
  ++seq_;
  last_hash_ = hash_of(line);
  json head = {{"seq", seq_}, {"sha256", last_hash_}, {"time", entry["time"]}};
  if (key_ != nullptr) {
    head["key_id"] = key_->public_key().key_id;
    head["public_key"] = key_->public_key().hex();
    head["signature"] = to_hex(key_->sign(head_statement(seq_, last_hash_)));
  }
  write_file_atomic(head_path(path_), head.dump() + "\n");  // still under the lock
  return json(entry);
}

std::vector<json> AuditLog::entries() const {
  std::lock_guard lock(mutex_);
  bool complete = true;
  std::vector<json> out;
  for (const std::string& line : read_lines(path_, &complete)) out.push_back(json::parse(line));
  return out;
}

AuditVerification verify_audit_log(const fs::path& path, const TrustedKeys* trusted) {
  AuditVerification v;
  auto problem = [&](std::string what) {
    v.ok = false;
    v.problem = std::move(what);
    return v;
  };
  bool complete = true;
  const std::vector<std::string> lines = read_lines(path, &complete);
  std::string prev = kGenesis;
  for (size_t i = 0; i < lines.size(); ++i) {
    const int64_t n = static_cast<int64_t>(i) + 1;
    if (i + 1 == lines.size() && !complete) {
      return problem(
          fmt::format("line {}: the last entry is cut off (no newline): a truncated tail", n));
    }
    const json e = json::parse(lines[i], nullptr, false);
    if (e.is_discarded() || !e.is_object())
      return problem(fmt::format("line {}: not a JSON entry", n));
    for (const char* key :
         {"seq", "time", "actor", "action", "adapter_id", "file_sha256", "prev"}) {
      if (!e.contains(key)) return problem(fmt::format("line {}: \"{}\" is missing", n, key));
    }
    if (!e["seq"].is_number_integer() || e["seq"].get<int64_t>() != n) {
      return problem(
          fmt::format("line {}: entry number {} where {} belongs: an entry was removed, "
                      "added or moved",
                      n, e["seq"].dump(), n));
    }
    if (e["prev"] != prev) {
      return problem(
          fmt::format("line {}: its prev hash does not match line {}: the entry before "
                      "it was edited, removed or moved",
                      n, n - 1));
    }
    prev = hash_of(lines[i]);
    v.entries = n;
  }
  const fs::path head_file = head_path(path);
  if (!fs::exists(head_file)) {
    if (lines.empty()) return v;
    return problem("the head file is missing: the end of the log cannot be checked");
  }
  const json head = json::parse(read_file(head_file), nullptr, false);
  if (head.is_discarded() || !head.contains("seq") || !head.contains("sha256")) {
    return problem(fmt::format("{} is not a head file", head_file.string()));
  }
  if (head["seq"] != v.entries) {
    return problem(fmt::format(
        "the head names entry {} but the log ends at {}: {}", head["seq"].dump(), v.entries,
        head["seq"].get<int64_t>() > v.entries ? "entries were cut off the end"
                                               : "entries were added without the log"));
  }
  if (head["sha256"] != prev) {
    return problem(fmt::format(
        "line {}: the last entry is not the one the head names: it was edited", v.entries));
  }
  if (head.contains("signature")) {
    try {
      const PublicKey key = parse_public_key(head.value("public_key", ""), "the audit head");
      std::array<uint8_t, 64> sig{};
      from_hex(head.value("signature", ""), sig, "the audit head's signature");
      if (!verify_signature(key, head_statement(v.entries, prev), sig)) {
        return problem("the head's signature does not verify: the head was edited");
      }
      if (trusted != nullptr && trusted->find(key.key_id) == nullptr) {
        return problem(
            fmt::format("the head is signed by {}, which is not a trusted key", key.key_id));
      }
      v.head_signed = true;
    } catch (const Error& e) {
      return problem(e.what());
    }
  } else if (trusted != nullptr) {
    return problem("the head is not signed, and trusted keys were given");
  }
  return v;
}

}  // namespace bitdelta
