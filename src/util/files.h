// Whole-file reads and atomic writes. Every file the project writes goes through AtomicFile:
// the data lands in a temporary file beside the target, is fsynced, then renamed over the
// target, so a crash or an error never leaves a partial file behind.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace bitdelta {

// Reads a whole file. Throws Error naming the path on failure.
std::string read_file(const std::filesystem::path& path);

class AtomicFile {
 public:
  // Creates a temporary file beside `target` (the target's folder must exist).
  explicit AtomicFile(std::filesystem::path target);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  // Removes the temporary file unless commit() succeeded.
  ~AtomicFile();

  void write(std::span<const uint8_t> bytes);
  void write(std::string_view text);
  uint64_t bytes_written() const { return written_; }
  // Overwrites bytes already written, at `offset` (used to finish a header once the data is
  // known).
  void write_at(uint64_t offset, std::span<const uint8_t> bytes);
  // fsync, rename over the target, fsync the folder.
  void commit();
  // The same to another path on the same filesystem, for names known only once the bytes are
  // (e.g. content-addressed blobs named by their hash).
  void commit_to(const std::filesystem::path& target);
  // Where the bytes are until commit (to read them back, e.g. to validate before committing).
  const std::filesystem::path& temp_path() const { return temp_; }

 private:
  std::filesystem::path target_;
  std::filesystem::path temp_;
  int fd_ = -1;
  uint64_t written_ = 0;
  bool committed_ = false;
};

// Writes `text` to `target` atomically.
void write_file_atomic(const std::filesystem::path& target, std::string_view text);

}  // namespace bitdelta
