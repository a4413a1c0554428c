// Compression, the .bdelta format, inspect and merge, on synthetic fine-tunes of stories260K.
#include "delta/compress.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "delta/adapter.h"
#include "delta/delta_test_util.h"
#include "delta/merge.h"
#include "io/weight_files.h"
#include "util/error.h"

namespace bitdelta {
namespace {

using testing::ScratchDir;

class Compress : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    testing::make_base(dir_->path() / "base");
    testing::make_finetune(dir_->path() / "base", dir_->path() / "ft", 1, 0.05f);
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::filesystem::path base() { return dir_->path() / "base"; }
  static std::filesystem::path ft() { return dir_->path() / "ft"; }
  static ScratchDir* dir_;
  ThreadPool pool_{2};
};
ScratchDir* Compress::dir_ = nullptr;

TEST_F(Compress, WritesTheDocumentedFormat) {
  ScratchDir out;
  CompressOptions options;
  options.adapter_id = AdapterId::parse("education/did:lux:122:0xabc/v3");
  options.metadata_json = R"({"course": "shakespeare"})";
  CompressResult r = compress_adapter(base(), ft(), out / "a.bdelta", options, pool_);
  auto st = SafetensorsFile::open(out / "a.bdelta");
  const auto& m = st.metadata();
  EXPECT_EQ(m.at("format"), "bitdelta");
  EXPECT_EQ(m.at("format_version"), "1");
  EXPECT_EQ(m.at("adapter_id"), "education/did:lux:122:0xabc/v3");
  EXPECT_EQ(m.at("domain"), "education");
  EXPECT_EQ(m.at("user_id"), "did:lux:122:0xabc");
  EXPECT_EQ(m.at("version"), "3");
  EXPECT_EQ(m.at("scale_granularity"), "tensor");
  EXPECT_EQ(m.at("base_fingerprint").size(), 64u);
  EXPECT_EQ(nlohmann::json::parse(m.at("metadata"))["course"], "shakespeare");
  EXPECT_TRUE(nlohmann::json::parse(m.at("quality")).contains("tensors"));
  for (const char* key : {"base_model", "created_at", "created_by"}) EXPECT_TRUE(m.count(key)) << key;
  // 5 layers × 7 linears in 1 bit, the tied embedding in 1 bit with per-row scales; 11 norms exact.
  size_t signs = 0, deltas = 0;
  for (const auto& t : st.tensors()) {
    if (t.name.ends_with(".signs")) ++signs;
    if (t.name.ends_with(".delta")) ++deltas;
  }
  EXPECT_EQ(signs, 36u);
  EXPECT_EQ(deltas, 11u);
  EXPECT_EQ(st.find("model.embed_tokens.weight.scale")->shape, (std::vector<int64_t>{512}));
  EXPECT_EQ(st.find("model.layers.0.mlp.down_proj.weight.signs")->shape,
            (std::vector<int64_t>{64, 22}));  // [64, ceil(172 / 8)]
  EXPECT_EQ(r.unchanged, 0u);
}

// The sign bits and α = mean|Δ| are exactly what the definition says, per tensor and per row.
TEST_F(Compress, SignsAndScalesFollowTheDefinition) {
  for (auto granularity : {ScaleGranularity::kTensor, ScaleGranularity::kRow}) {
    ScratchDir out;
    CompressOptions options;
    options.granularity = granularity;
    compress_adapter(base(), ft(), out / "a.bdelta", options, pool_);
    auto st = SafetensorsFile::open(out / "a.bdelta");
    auto b = WeightFiles::open(base()), f = WeightFiles::open(ft());
    const std::string name = "model.layers.2.mlp.down_proj.weight";  // [64, 172]: padded rows
    auto wb = b.view(name).to_f32(), wf = f.view(name).to_f32();
    auto bits = st.view(name + ".signs");
    auto scales = st.view(name + ".scale").to_f32();
    const int64_t rows = 64, cols = 172, row_bytes = 22;
    double total = 0;
    for (int64_t r = 0; r < rows; ++r) {
      double row_abs = 0;
      for (int64_t k = 0; k < cols; ++k) {
        const float d = wf[r * cols + k] - wb[r * cols + k];
        const bool bit = (bits.data[r * row_bytes + k / 8] >> (k % 8)) & 1;
        ASSERT_EQ(bit, d > 0) << "row " << r << " col " << k;
        row_abs += std::fabs(d);
      }
      for (int64_t k = cols; k < row_bytes * 8; ++k) {
        ASSERT_FALSE((bits.data[r * row_bytes + k / 8] >> (k % 8)) & 1) << "padding bit set";
      }
      if (granularity == ScaleGranularity::kRow) {
        EXPECT_NEAR(scales[r], row_abs / cols, 1e-6);
      }
      total += row_abs;
    }
    if (granularity == ScaleGranularity::kTensor) {
      ASSERT_EQ(scales.size(), 1u);
      EXPECT_NEAR(scales[0], total / (rows * cols), 1e-6);
    }
  }
}

TEST_F(Compress, UnchangedTensorsCostNothing) {
  ScratchDir out;
  testing::make_finetune(base(), out / "ft1", 2, 0.05f, [](const std::string& n) {
    return n == "model.layers.1.self_attn.v_proj.weight";
  });
  CompressResult r = compress_adapter(base(), out / "ft1", out / "a.bdelta", {}, pool_);
  auto st = SafetensorsFile::open(out / "a.bdelta");
  EXPECT_EQ(st.tensors().size(), 2u);  // .signs and .scale of the one changed matrix
  EXPECT_EQ(r.unchanged, 46u);
  EXPECT_THROW(compress_adapter(base(), base(), out / "none.bdelta", {}, pool_), Error);
  EXPECT_FALSE(std::filesystem::exists(out / "none.bdelta"));
}

TEST_F(Compress, EmbeddingModes) {
  ScratchDir out;
  CompressOptions exact;
  exact.embeddings = EmbeddingMode::kExact;
  compress_adapter(base(), ft(), out / "exact.bdelta", exact, pool_);
  EXPECT_TRUE(SafetensorsFile::open(out / "exact.bdelta").contains("model.embed_tokens.weight.delta"));
  CompressOptions keep;
  keep.embeddings = EmbeddingMode::kBase;
  compress_adapter(base(), ft(), out / "base.bdelta", keep, pool_);
  auto st = SafetensorsFile::open(out / "base.bdelta");
  EXPECT_FALSE(st.contains("model.embed_tokens.weight.signs"));
  EXPECT_FALSE(st.contains("model.embed_tokens.weight.delta"));
}

TEST_F(Compress, RefusesMismatchedModelsNamingTheProblem) {
  ScratchDir out;
  // Another architecture: a different config.
  std::filesystem::copy(ft(), out / "other", std::filesystem::copy_options::recursive);
  std::string config = testing::read_text(out / "other" / "config.json");
  config.replace(config.find("\"num_hidden_layers\": 5"), 22, "\"num_hidden_layers\": 4");
  testing::write_text(out / "other" / "config.json", config);
  try {
    compress_adapter(base(), out / "other", out / "x.bdelta", {}, pool_);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_hidden_layers"), std::string::npos) << e.what();
  }
  // Same config, one tensor with another shape.
  std::filesystem::create_directories(out / "shape");
  testing::rewrite(ft() / "model.safetensors", out / "shape" / "model.safetensors",
                   [](auto&, std::map<std::string, testing::RawTensor>& t) {
                     auto& v = t.at("model.layers.3.mlp.up_proj.weight");
                     v.shape = {86, 128};
                   });
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"}) {
    std::filesystem::copy(ft() / f, out / "shape" / f);
  }
  try {
    compress_adapter(base(), out / "shape", out / "x.bdelta", {}, pool_);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.3.mlp.up_proj.weight"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(out / "x.bdelta"));
}

TEST_F(Compress, MergeWritesAWorkingFolder) {
  ScratchDir out;
  compress_adapter(base(), ft(), out / "a.bdelta", {}, pool_);
  MergeResult r = merge_adapter(base(), out / "a.bdelta", out / "merged", pool_);
  EXPECT_EQ(r.changed_tensors, 47u);
  auto merged = WeightFiles::open(out / "merged");
  auto b = WeightFiles::open(base());
  auto adapter = Adapter::open(out / "a.bdelta");
  // merged = base + α·sign(Δ) for a 1-bit tensor.
  const std::string name = "model.layers.0.self_attn.q_proj.weight";
  auto m = merged.view(name).to_f32(), w = b.view(name).to_f32();
  const float alpha = SafetensorsFile::open(out / "a.bdelta").view(name + ".scale").to_f32()[0];
  for (size_t i = 0; i < m.size(); ++i) ASSERT_NEAR(std::fabs(m[i] - w[i]), alpha, 1e-6);
  EXPECT_TRUE(std::filesystem::exists(out / "merged" / "tokenizer.json"));
  EXPECT_THROW(merge_adapter(base(), out / "a.bdelta", base(), pool_), Error);

  // An existing folder is never overwritten silently: the CLI refuses it unless --force, which
  // replaces the merged files and leaves the user's other files alone.
  const std::string cmd = "merge --base '" + base().string() + "' --adapter '" +
                          (out / "a.bdelta").string() + "' --out '" + (out / "merged").string() +
                          "'";
  const auto before = std::filesystem::last_write_time(out / "merged" / "model.safetensors");
  auto refused = testing::run_cli(cmd);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("already exists and is not an empty folder"), std::string::npos)
      << refused.err;
  EXPECT_NE(refused.err.find("--force"), std::string::npos) << refused.err;
  EXPECT_EQ(std::filesystem::last_write_time(out / "merged" / "model.safetensors"), before);
  testing::write_text(out / "merged" / "notes.txt", "mine");
  std::filesystem::remove(out / "merged" / "model.safetensors");
  auto forced = testing::run_cli(cmd + " --force");
  EXPECT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_EQ(testing::read_text(out / "merged" / "notes.txt"), "mine");
  EXPECT_NO_THROW(WeightFiles::open(out / "merged"));
}

}  // namespace
}  // namespace bitdelta
