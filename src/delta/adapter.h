// A loaded .bdelta adapter: mapped with zero copies, validated, and bound to a base model as the
// AdapterWeights views the forward pass applies per sequence.
#pragma once

#include <filesystem>
#include <list>
#include <map>
#include <memory>
#include <string>

#include "delta/adapter_id.h"
#include "delta/fingerprint.h"
#include "io/safetensors.h"
#include "io/weight_files.h"
#include "model/adapter_weights.h"
#include "model/transformer.h"

namespace bitdelta {

class Adapter {
 public:
  // Maps and validates the file on its own: safetensors header, format=bitdelta,
  // format_version=1, the required metadata, the checksums of the header and of every tensor's
  // bytes (files written before checksums existed have none: accepted with a warning), tensor
  // naming (.signs/.scale/.delta) and pairing, dtypes, shapes, and that every scale is finite
  // and ≥ 0. Throws Error naming the file (and the damaged tensor).
  // With a pool, the checksums are verified on its threads.
  static std::shared_ptr<Adapter> open(const std::filesystem::path& path,
                                       ThreadPool* pool = nullptr);

  // Checks the adapter against a base: fingerprint, every tensor present with a matching shape,
  // sign padding bits zero. Throws Error that says which base the adapter was made for.
  void check_base(const WeightFiles& base, BaseFingerprints& fingerprints, ThreadPool& pool) const;

  // check_base, then builds the views for `model` (norms and biases merged into small F32
  // vectors; the sign bits stay in the mapping).
  void bind(const Transformer& model, BaseFingerprints& fingerprints, ThreadPool& pool);
  bool bound() const { return bound_; }
  const AdapterWeights& weights() const { return weights_; }

  const std::map<std::string, std::string>& metadata() const { return file_.metadata(); }
  const AdapterId& id() const { return id_; }
  const std::string& base_fingerprint() const { return metadata().at("base_fingerprint"); }
  const SafetensorsFile& file() const { return file_; }
  uint64_t file_bytes() const { return file_.file_size(); }
  // Whether open() checked the data against checksums in the file (false: a file written before
  // adapters carried them, whose data nothing can verify).
  bool checksums_verified() const { return checksums_verified_; }
  // Heap bytes this adapter owns beyond its mapping (merged norms, bias deltas).
  uint64_t owned_bytes() const;

  // The base tensors this adapter changes, and how: "1bit" (signs + scale) or "exact" (delta).
  struct Entry {
    std::string base_name;
    const TensorInfo* signs = nullptr;
    const TensorInfo* scale = nullptr;
    const TensorInfo* delta = nullptr;
  };
  const std::vector<Entry>& entries() const { return entries_; }
  // α ⊙ S of a 1-bit entry as a SignMatrix (cols from the base shape).
  SignMatrix sign_matrix(const Entry& e, int64_t cols);

 private:
  explicit Adapter(SafetensorsFile file) : file_(std::move(file)) {}
  SafetensorsFile file_;
  AdapterId id_;
  std::vector<Entry> entries_;
  AdapterWeights weights_;
  std::list<std::vector<float>> scale_copies_;  // stable addresses
  bool bound_ = false;
  bool checksums_verified_ = false;
};

// Adapter::open + bind to `model`, with fingerprints computed for this call only: for tools that
// load one adapter per run (generate, eval). Throws Error naming the file, or the base it was
// made for.
std::shared_ptr<Adapter> open_adapter_for(const std::filesystem::path& path,
                                          const Transformer& model, ThreadPool& pool);

}  // namespace bitdelta
