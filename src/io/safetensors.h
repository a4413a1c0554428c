// Safetensors files: a validating reader over mmap with zero-copy tensor views, and an atomic
// writer. Format: u64 little-endian header length N, N bytes of JSON header
// {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then
// the data section; offsets are relative to the start of the data section.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/dtype.h"
#include "util/mapped_file.h"
#include "util/thread_pool.h"

namespace bitdelta {

// Largest header accepted (the reference implementation's limit).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets in the data section
  uint64_t end = 0;
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// A tensor inside a mapped file. The data pointer is only byte-aligned in general; it stays valid
// as long as the file object that produced it lives.
struct TensorView {
  const TensorInfo* info = nullptr;
  const uint8_t* data = nullptr;

  const std::string& name() const { return info->name; }
  DType dtype() const { return info->dtype; }
  const std::vector<int64_t>& shape() const { return info->shape; }
  int64_t numel() const { return info->numel(); }
  uint64_t nbytes() const { return info->nbytes(); }
  std::span<const uint8_t> bytes() const { return {data, static_cast<size_t>(nbytes())}; }
  // Elements converted to float (F32/F16/BF16 only).
  std::vector<float> to_f32() const;
};

// Integrity of a file's contents: the metadata entry `checksums` holds the JSON object
// {"algorithm": "xxh3-64", "header": HEX, "tensors": {NAME: HEX, ...}}, where each tensor's
// value is the XXH3-64 of its bytes and "header" that of the canonical header (every other
// metadata entry and every tensor's name, dtype, shape and offsets; see checksum_header_text).
// HEX is 16 lowercase hex digits. The writer adds it when asked (set_checksums); readers check
// it with verify_checksums.
inline constexpr const char* kChecksumsKey = "checksums";
inline constexpr const char* kChecksumAlgorithm = "xxh3-64";

// The bytes the "header" checksum covers: metadata entries in key order (except `checksums`) as
// "m <key length> <key> <value length> <value>\n", then tensors in data order (by begin, end,
// name) as "t <name length> <name> <dtype> <d0>x<d1>... <begin> <end>\n".
std::string checksum_header_text(const std::map<std::string, std::string>& metadata,
                                 const std::vector<TensorInfo>& tensors);
// XXH3-64 of `bytes` as 16 lowercase hex digits.
std::string xxh3_hex(std::span<const uint8_t> bytes);

enum class ChecksumStatus { kVerified, kAbsent };

class SafetensorsFile {
 public:
  // Maps and fully validates `path`; throws Error naming the file and the problem.
  static SafetensorsFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_.path(); }
  // Tensors in data-section order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const;
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  // Throws Error if the tensor is missing.
  TensorView view(std::string_view name) const;
  TensorView view(const TensorInfo& info) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t file_size() const { return file_.size(); }
  uint64_t data_offset() const { return data_offset_; }
  // Checks the header and every tensor's bytes against the `checksums` metadata (reading the
  // whole data section once). Throws Error naming the tensor (or the header) whose bytes changed,
  // or a malformed/incomplete `checksums` entry; kAbsent when the file has none.
  // With a pool, tensors are hashed on its threads.
  ChecksumStatus verify_checksums(ThreadPool* pool = nullptr) const;

 private:
  MappedFile file_;
  uint64_t data_offset_ = 0;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string_view, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Parses and validates a header (exposed for tests and fuzzing). `what` names the file in errors.
void parse_safetensors_header(std::string_view header_json, uint64_t data_bytes,
                              const std::string& what, std::vector<TensorInfo>* tensors,
                              std::map<std::string, std::string>* metadata);

// Collects tensors, then writes them atomically (temp file, fsync, rename).
class SafetensorsWriter {
 public:
  void set_metadata(std::string key, std::string value);
  // The bytes must stay valid until write(); numel × dtype size must equal data.size().
  void add(std::string name, DType dtype, std::vector<int64_t> shape, std::span<const uint8_t> data);
  // Same, taking ownership of the bytes.
  void add_owned(std::string name, DType dtype, std::vector<int64_t> shape,
                 std::vector<uint8_t> data);
  void add_f32(std::string name, std::vector<int64_t> shape, std::span<const float> values);
  // Bytes produced at write time by `fill` (called once, with a buffer of exactly the tensor's
  // size): peak memory stays one tensor, not the whole file.
  void add_generated(std::string name, DType dtype, std::vector<int64_t> shape,
                     std::function<void(std::span<uint8_t>)> fill);
  size_t size() const { return entries_.size(); }
  // Adds the `checksums` metadata entry (see kChecksumsKey), computed while the data is written.
  // Without it, a `checksums` entry set (or copied from another file) is dropped, so a file never
  // carries checksums of other bytes.
  void set_checksums(bool on) { checksums_ = on; }
  void write(const std::filesystem::path& path) const;
  // Like write(), for metadata that is only known once every tensor has been produced (e.g.
  // statistics computed by the fill callbacks): `header_reserve` bytes are set aside for it and
  // `late_metadata` is called after the data is written; its entries join the header, which is
  // rewritten in place. Throws if they do not fit in the reserve.
  void write(const std::filesystem::path& path, size_t header_reserve,
             const std::function<std::map<std::string, std::string>()>& late_metadata) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::span<const uint8_t> data;
    uint64_t nbytes = 0;
    std::function<void(std::span<uint8_t>)> fill;  // set for generated tensors
  };
  void add_entry(Entry entry);
  std::string header_json(const std::map<std::string, std::string>& metadata) const;
  std::vector<Entry> entries_;
  std::vector<std::unique_ptr<std::vector<uint8_t>>> owned_;
  std::map<std::string, std::string> metadata_;
  bool checksums_ = false;
};

}  // namespace bitdelta
