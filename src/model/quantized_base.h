// A quantized copy of a base model's matrices (Q8_0 or Q4_0, ops/quant.h), made once from the
// checkpoint's weights and cached on disk beside the model (docs/quantized-bases.md).
//
// What is quantized: every layer's q/k/v/o and gate/up/down matrix, in the chosen format, and the
// LM head in Q8_0 whatever the format (llama.cpp likewise keeps its output matrix at 6-8 bits in
// its 4-bit files). The embedding lookup, norms and biases stay as the checkpoint has them. The
// original files stay mapped, so adapters keep binding to the BF16 base's fingerprint.
//
// The cache file is keyed by the XXH3-128 of the quantized matrices' names, shapes, dtypes and
// bytes (so a changed checkpoint never meets a stale cache), written atomically and mapped
// read-only, so replicas on one machine share its pages.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "io/weight_files.h"
#include "model/weights.h"
#include "ops/quant.h"
#include "util/mapped_file.h"
#include "util/thread_pool.h"

namespace bitdelta {

struct QuantOptions {
  Quant quant = Quant::kNone;
  // Where cache files go: empty = "<model folder>/.bitdelta-cache". When the folder cannot be
  // written the quantized weights are kept in memory for this process only (with a warning).
  std::filesystem::path cache_dir;
  bool use_cache = true;
  // Called as matrices are quantized (done, total); not called on a cache hit.
  std::function<void(int64_t, int64_t)> progress;
};

class QuantizedBase {
 public:
  // Quantizes (or maps from the cache) the matrices of `weights` and points their views at the
  // result; `weights` must not outlive the returned object.
  static std::unique_ptr<QuantizedBase> attach(const WeightFiles& files, ModelWeights& weights,
                                               const QuantOptions& options, ThreadPool& pool);

  Quant quant() const { return quant_; }
  // The cache file in use (empty when kept in memory) and whether it already existed.
  const std::filesystem::path& cache_file() const { return cache_file_; }
  bool from_cache() const { return from_cache_; }
  // The cache key: "xxh3-128:<32 hex digits>".
  const std::string& key() const { return key_; }

 private:
  Quant quant_ = Quant::kNone;
  std::filesystem::path cache_file_;
  bool from_cache_ = false;
  std::string key_;
  MappedFile map_;
  std::vector<uint8_t> memory_;  // when not cached
};

}  // namespace bitdelta
