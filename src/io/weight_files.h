// The weight tensors of a Hugging Face model folder: one `model.safetensors`, or shards listed by
// `model.safetensors.index.json`. Every file is mapped and validated; views are zero-copy.
#pragma once

#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/safetensors.h"

namespace bitdelta {

class WeightFiles {
 public:
  // Throws Error naming the folder and the problem (no weights, bad index, missing shard, a
  // tensor in two shards, a weight_map entry absent from its shard).
  static WeightFiles open(const std::filesystem::path& dir);

  const TensorInfo* find(std::string_view name) const;
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  // Throws Error naming the folder when the tensor is missing.
  TensorView view(std::string_view name) const;
  // Every tensor name, in the order the files store them.
  const std::vector<std::string>& names() const { return names_; }
  const std::vector<SafetensorsFile>& shards() const { return shards_; }
  uint64_t tensor_bytes() const;  // sum of tensor data bytes
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  std::vector<SafetensorsFile> shards_;
  std::unordered_map<std::string, size_t> shard_of_;
  std::vector<std::string> names_;
};

}  // namespace bitdelta
