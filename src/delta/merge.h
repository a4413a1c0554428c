// Base + decompressed adapter as a complete Hugging Face folder, for tools that need the merged
// model. (Serving never does this: it applies the 1-bit delta on the fly.)
#pragma once

#include <filesystem>

#include "util/thread_pool.h"

namespace bitdelta {

struct MergeResult {
  size_t changed_tensors = 0;
  uint64_t bytes = 0;
};

// Writes out_dir/model.safetensors (the base's dtypes) and copies config.json, generation and
// tokenizer files. Refuses an adapter made for another base, and an out_dir that already holds
// files unless `overwrite` (then the merged files replace those of the same names, each
// atomically; nothing else in the folder is touched — loaders take model.safetensors before any
// sharded index).
MergeResult merge_adapter(const std::filesystem::path& base_dir,
                          const std::filesystem::path& adapter_path,
                          const std::filesystem::path& out_dir, ThreadPool& pool,
                          bool overwrite = false);

}  // namespace bitdelta
