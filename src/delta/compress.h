// BitDelta compression: a fine-tune becomes packed sign bits plus scales against its base.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "delta/adapter_id.h"
#include "util/thread_pool.h"

namespace bitdelta {

enum class ScaleGranularity { kTensor, kRow };
enum class EmbeddingMode { kExact, kBit, kBase };

struct CompressOptions {
  ScaleGranularity granularity = ScaleGranularity::kTensor;
  // Embedding and LM head: 1-bit with per-row scales (default), an exact F32 delta, or left at
  // the base (dropped).
  EmbeddingMode embeddings = EmbeddingMode::kBit;
  std::optional<AdapterId> adapter_id;  // default: general/<fine-tuned folder name>/v1
  std::string base_model;               // default: the base folder's name
  std::string metadata_json = "{}";     // domain metadata, recorded as-is (must be a JSON object)
  // The chat format the fine-tune was trained in when it is not the base's own template (e.g.
  // "plain"); recorded as metadata "chat_format" so serving renders chats the same way.
  std::string chat_format;
};

struct TensorStats {
  std::string name;
  std::string kind;  // "1bit" or "exact"
  std::vector<int64_t> shape;
  double scale = 0;        // α (the mean over rows for per-row scales)
  double plus_share = 0;   // share of +1 signs
  double delta_norm = 0;   // ‖Δ‖₂
  double rel_error = 0;    // ‖Δ − α⊙S‖₂ / ‖Δ‖₂ (0 for exact)
};

struct CompressResult {
  std::vector<TensorStats> tensors;  // in file order
  size_t unchanged = 0;              // tensors whose delta is zero: not stored
  uint64_t file_bytes = 0;
  uint64_t finetuned_bytes = 0;      // weight bytes of the fine-tuned model
  uint64_t bf16_delta_bytes = 0;     // what the same deltas would take as BF16
  std::string base_fingerprint;
  AdapterId adapter_id;
};

// Reads both models one tensor at a time through mmap (peak memory: one tensor) and writes the
// .bdelta atomically. Refuses models whose configs or tensors do not match, naming the first
// mismatch.
CompressResult compress_adapter(const std::filesystem::path& base_dir,
                                const std::filesystem::path& finetuned_dir,
                                const std::filesystem::path& out, const CompressOptions& options,
                                ThreadPool& pool);

// Which base tensors BitDelta compresses to 1 bit: the q/k/v/o and gate/up/down projection
// weights of the transformer blocks.
bool is_block_linear(std::string_view name);
bool is_embedding_or_head(std::string_view name);

}  // namespace bitdelta
