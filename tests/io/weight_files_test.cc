#include "io/weight_files.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/test_support.h"
#include "util/error.h"

namespace bitdelta {
namespace {

using testing::ScratchDir;

void write_shard(const std::filesystem::path& path, const std::vector<std::string>& names) {
  SafetensorsWriter w;
  for (size_t i = 0; i < names.size(); ++i) {
    std::vector<float> v(4, static_cast<float>(i + 1));
    w.add_f32(names[i], {2, 2}, v);
  }
  w.write(path);
}

void write_index(const std::filesystem::path& dir, const nlohmann::json& weight_map) {
  testing::write_text(dir / "model.safetensors.index.json",
                      nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}
                          .dump());
}

std::string error_of(const std::filesystem::path& dir) {
  try {
    WeightFiles::open(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(WeightFiles, OpensSingleFile) {
  ScratchDir dir;
  write_shard(dir / "model.safetensors", {"a", "b"});
  auto w = WeightFiles::open(dir.path());
  EXPECT_EQ(w.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(w.view("b").to_f32()[0], 2.0f);
  EXPECT_EQ(w.tensor_bytes(), 32u);
}

TEST(WeightFiles, OpensShardedCheckpoint) {
  ScratchDir dir;
  write_shard(dir / "model-00001-of-00002.safetensors", {"a", "b"});
  write_shard(dir / "model-00002-of-00002.safetensors", {"c"});
  write_index(dir.path(), {{"a", "model-00001-of-00002.safetensors"},
                           {"b", "model-00001-of-00002.safetensors"},
                           {"c", "model-00002-of-00002.safetensors"}});
  auto w = WeightFiles::open(dir.path());
  EXPECT_EQ(w.shards().size(), 2u);
  EXPECT_EQ(w.names().size(), 3u);
  EXPECT_EQ(w.view("c").to_f32()[3], 1.0f);
  EXPECT_TRUE(w.contains("a"));
  EXPECT_FALSE(w.contains("d"));
  EXPECT_NE(std::string(error_of(dir.path())), "x");
}

TEST(WeightFiles, RejectsInconsistentIndexes) {
  ScratchDir dir;
  write_shard(dir / "s1.safetensors", {"a", "b"});
  write_shard(dir / "s2.safetensors", {"b"});
  write_index(dir.path(), {{"a", "s1.safetensors"}, {"b", "s3.safetensors"}});
  EXPECT_NE(error_of(dir.path()).find("missing"), std::string::npos);
  write_index(dir.path(), {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}});
  EXPECT_NE(error_of(dir.path()).find("'b' appears in more than one shard"),
            std::string::npos)
      << error_of(dir.path());
  write_index(dir.path(), {{"a", "s1.safetensors"}, {"z", "s1.safetensors"}});
  EXPECT_NE(error_of(dir.path()).find("no such tensor"), std::string::npos);
  write_index(dir.path(), {{"a", "../s1.safetensors"}});
  EXPECT_NE(error_of(dir.path()).find("not a plain file name"), std::string::npos);
  testing::write_text(dir / "model.safetensors.index.json", "{\"weight_map\": ");
  EXPECT_NE(error_of(dir.path()).find("not valid JSON"), std::string::npos);
}

TEST(WeightFiles, ExplainsMissingWeights) {
  ScratchDir dir;
  EXPECT_NE(error_of(dir.path()).find("no model weights"), std::string::npos);
}

}  // namespace
}  // namespace bitdelta
