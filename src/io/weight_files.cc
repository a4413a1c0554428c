#include "io/weight_files.h"

#include <map>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/files.h"

namespace bitdelta {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Shard names come from a file we did not write: never let them leave the model folder.
void check_shard_name(const std::string& name, const fs::path& index_path) {
  if (name.empty() || name.find('/') != std::string::npos ||
      name.find('\\') != std::string::npos || name == "." || name == ".." ||
      name.find('\0') != std::string::npos) {
    fail("{}: shard file name '{}' is not a plain file name in the model folder",
         index_path.string(), name);
  }
}

}  // namespace

WeightFiles WeightFiles::open(const fs::path& dir) {
  WeightFiles w;
  w.dir_ = dir;
  const fs::path single = dir / "model.safetensors";
  const fs::path index_path = dir / "model.safetensors.index.json";
  if (fs::exists(single)) {
    w.shards_.push_back(SafetensorsFile::open(single));
    for (const auto& t : w.shards_[0].tensors()) {
      w.shard_of_.emplace(t.name, 0);
      w.names_.push_back(t.name);
    }
    return w;
  }
  if (!fs::exists(index_path)) {
    fail("{}: no model weights found (expected model.safetensors or "
         "model.safetensors.index.json)",
         dir.string());
  }
  json index;
  try {
    index = json::parse(read_file(index_path));
  } catch (const json::parse_error& e) {
    fail("{}: not valid JSON ({})", index_path.string(), e.what());
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    fail("{}: needs a \"weight_map\" object mapping tensor names to shard files",
         index_path.string());
  }
  std::map<std::string, size_t> shard_index;  // file name → position in shards_
  std::vector<std::pair<std::string, std::string>> entries;
  for (auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string()) {
      fail("{}: weight_map entry for '{}' must be a file name", index_path.string(), tensor);
    }
    std::string name = file.get<std::string>();
    check_shard_name(name, index_path);
    shard_index.emplace(name, 0);
    entries.emplace_back(tensor, name);
  }
  for (auto& [name, position] : shard_index) {
    position = w.shards_.size();
    const fs::path shard_path = dir / name;
    if (!fs::exists(shard_path)) {
      fail("{}: shard '{}' listed in the index is missing", dir.string(), name);
    }
    w.shards_.push_back(SafetensorsFile::open(shard_path));
  }
  for (const auto& [tensor, file] : entries) {
    size_t s = shard_index.at(file);
    if (!w.shards_[s].contains(tensor)) {
      fail("{}: the index places '{}' in '{}', but that shard has no such tensor",
           index_path.string(), tensor, file);
    }
    w.shard_of_.emplace(tensor, s);
  }
  for (size_t s = 0; s < w.shards_.size(); ++s) {
    for (const auto& t : w.shards_[s].tensors()) {
      auto it = w.shard_of_.find(t.name);
      if (it == w.shard_of_.end()) {
        fail("{}: tensor '{}' in shard '{}' is not listed in the index", index_path.string(),
             t.name, w.shards_[s].path().filename().string());
      }
      if (it->second != s) {
        fail("{}: tensor '{}' appears in more than one shard", dir.string(), t.name);
      }
      w.names_.push_back(t.name);
    }
  }
  return w;
}

const TensorInfo* WeightFiles::find(std::string_view name) const {
  auto it = shard_of_.find(std::string(name));
  return it == shard_of_.end() ? nullptr : shards_[it->second].find(name);
}

TensorView WeightFiles::view(std::string_view name) const {
  auto it = shard_of_.find(std::string(name));
  if (it == shard_of_.end()) fail("{}: the model has no tensor '{}'", dir_.string(), name);
  return shards_[it->second].view(name);
}

uint64_t WeightFiles::tensor_bytes() const {
  uint64_t total = 0;
  for (const auto& shard : shards_) {
    for (const auto& t : shard.tensors()) total += t.nbytes();
  }
  return total;
}

}  // namespace bitdelta
