// Quantized bases (model/quantized_base.h): the cache file (made once, reused, rebuilt when stale
// or damaged, skipped when its folder cannot be written), and the forward pass on Q8_0 / Q4_0
// (batch-invariant, close to the unquantized model).
#include "model/quantized_base.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "model/synth.h"
#include "model/transformer.h"
#include "support/test_support.h"

namespace bitdelta {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;

void make_model(const fs::path& dir, uint64_t seed) {
  SynthOptions so;
  so.like = "tiny";
  so.hidden_size = 128;
  so.intermediate_size = 200;  // not a multiple of 32: a padded block and an odd step
  so.seed = seed;
  synth_model(so, dir);
}

std::vector<float> logits_of(Transformer& m, std::vector<int32_t> ids) {
  ThreadPool pool(2);
  KVCache cache = m.new_cache();
  SequenceInput in{&cache, ids, true};
  std::vector<float> logits;
  m.forward({&in, 1}, &logits, pool);
  return logits;
}

const std::vector<int32_t> kIds = {1, 17, 42, 99, 7, 3, 250, 11};

TEST(QuantizedBase, QuantizesOnceThenMapsTheCache) {
  ScratchDir dir;
  make_model(dir / "m", 1);
  QuantOptions q;
  q.quant = Quant::kQ8_0;
  int64_t reported = 0;
  q.progress = [&](int64_t done, int64_t total) {
    EXPECT_LE(done, total);
    reported = done;
  };
  auto first = Transformer::load(dir / "m", q);
  ASSERT_NE(first->quantized(), nullptr);
  EXPECT_FALSE(first->quantized()->from_cache());
  EXPECT_GT(reported, 0);
  const fs::path file = first->quantized()->cache_file();
  EXPECT_EQ(file.parent_path(), dir / "m" / ".bitdelta-cache");
  ASSERT_TRUE(fs::exists(file));
  EXPECT_EQ(first->weights().layers[0].q.weight.quant, Quant::kQ8_0);
  EXPECT_EQ(first->weights().lm_head.quant, Quant::kQ8_0);
  EXPECT_EQ(first->weights().embed.quant, Quant::kNone);  // lookups read the checkpoint
  const auto a = logits_of(*first, kIds);

  reported = 0;
  auto second = Transformer::load(dir / "m", q);
  EXPECT_TRUE(second->quantized()->from_cache());
  EXPECT_EQ(reported, 0);
  EXPECT_EQ(second->quantized()->key(), first->quantized()->key());
  const auto b = logits_of(*second, kIds);
  ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4));

  q.use_cache = false;
  auto in_memory = Transformer::load(dir / "m", q);
  EXPECT_TRUE(in_memory->quantized()->cache_file().empty());
  const auto c = logits_of(*in_memory, kIds);
  ASSERT_EQ(0, std::memcmp(a.data(), c.data(), a.size() * 4));
}

TEST(QuantizedBase, DamagedOrStaleCachesAreRebuilt) {
  ScratchDir dir;
  make_model(dir / "m", 1);
  QuantOptions q;
  q.quant = Quant::kQ4_0;
  fs::path file;
  std::vector<float> expected;
  {
    auto m = Transformer::load(dir / "m", q);
    file = m->quantized()->cache_file();
    expected = logits_of(*m, kIds);
  }
  // A damaged header: rebuilt, same results.
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);
    f.write("XXXX", 4);
  }
  {
    auto m = Transformer::load(dir / "m", q);
    EXPECT_FALSE(m->quantized()->from_cache());
    const auto got = logits_of(*m, kIds);
    ASSERT_EQ(0, std::memcmp(expected.data(), got.data(), got.size() * 4));
  }
  // A truncated file: rebuilt.
  fs::resize_file(file, fs::file_size(file) / 2);
  EXPECT_FALSE(Transformer::load(dir / "m", q)->quantized()->from_cache());
  EXPECT_TRUE(Transformer::load(dir / "m", q)->quantized()->from_cache());
  // Other weights in the folder: another key, a new file, the stale one removed.
  fs::remove(dir / "m" / "model.safetensors");
  make_model(dir / "other", 2);
  fs::copy_file(dir / "other" / "model.safetensors", dir / "m" / "model.safetensors");
  auto m = Transformer::load(dir / "m", q);
  EXPECT_FALSE(m->quantized()->from_cache());
  EXPECT_NE(m->quantized()->cache_file(), file);
  EXPECT_FALSE(fs::exists(file));
}

TEST(QuantizedBase, AnUnwritableCacheFolderKeepsTheCopyInMemory) {
  ScratchDir dir;
  make_model(dir / "m", 1);
  testing::write_text(dir / "file", "not a folder");
  QuantOptions q;
  q.quant = Quant::kQ8_0;
  q.cache_dir = dir / "file" / "cache";
  auto m = Transformer::load(dir / "m", q);
  EXPECT_TRUE(m->quantized()->cache_file().empty());
  for (float v : logits_of(*m, kIds)) ASSERT_TRUE(std::isfinite(v));
}

// Relative RMS difference of the logits from the unquantized model's: Q8_0 small, Q4_0 larger.
TEST(QuantizedBase, LogitsStayCloseToTheUnquantizedModel) {
  ScratchDir dir;
  make_model(dir / "m", 1);
  const auto ref = logits_of(*Transformer::load(dir / "m"), kIds);
  double error[2];
  for (int i = 0; i < 2; ++i) {
    QuantOptions q;
    q.quant = i == 0 ? Quant::kQ8_0 : Quant::kQ4_0;
    const auto got = logits_of(*Transformer::load(dir / "m", q), kIds);
    double diff = 0, norm = 0;
    for (size_t k = 0; k < ref.size(); ++k) {
      diff += (got[k] - ref[k]) * double(got[k] - ref[k]);
      norm += ref[k] * double(ref[k]);
    }
    error[i] = std::sqrt(diff / norm);
  }
  EXPECT_LT(error[0], 0.02);
  EXPECT_LT(error[1], 0.25);
  EXPECT_LT(error[0], error[1]);
}

// A sequence's logits do not depend on what it is batched with, on a quantized base too.
TEST(QuantizedBase, BatchEqualsEachSequenceAlone) {
  ScratchDir dir;
  make_model(dir / "m", 1);
  for (Quant quant : {Quant::kQ8_0, Quant::kQ4_0}) {
    QuantOptions q;
    q.quant = quant;
    auto m = Transformer::load(dir / "m", q);
    const std::vector<int32_t> other = {5, 6, 7};
    const auto alone_a = logits_of(*m, kIds), alone_b = logits_of(*m, other);
    ThreadPool pool(2);
    KVCache ca = m->new_cache(), cb = m->new_cache();
    SequenceInput in[2] = {{&ca, kIds, true}, {&cb, other, true}};
    std::vector<float> both;
    m->forward(in, &both, pool);
    ASSERT_EQ(both.size(), alone_a.size() + alone_b.size());
    EXPECT_EQ(0, std::memcmp(both.data(), alone_a.data(), alone_a.size() * 4)) << quant_name(quant);
    EXPECT_EQ(0, std::memcmp(both.data() + alone_a.size(), alone_b.data(), alone_b.size() * 4))
        << quant_name(quant);
  }
}

}  // namespace
}  // namespace bitdelta
