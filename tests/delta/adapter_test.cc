// Serving with adapters: the fused path equals the merged model; several users' adapters in one
// batch equal each alone; bad adapter files are refused with clear errors.
#include "delta/adapter.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "delta/compress.h"
#include "delta/delta_test_util.h"
#include "delta/merge.h"
#include "model/synth.h"
#include "ops/sign_matmul.h"
#include "util/error.h"

namespace bitdelta {
namespace {

using testing::ScratchDir;

// Logits of every token of `ids`, in one forward or one token at a time (decode).
std::vector<float> logits(Transformer& model, std::span<const int32_t> ids,
                          const AdapterWeights* adapter, ThreadPool& pool, bool one_at_a_time) {
  KVCache cache = model.new_cache();
  std::vector<float> all, step;
  if (!one_at_a_time) {
    SequenceInput in{&cache, ids, true, adapter};
    model.forward({&in, 1}, &all, pool);
    return all;
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    SequenceInput in{&cache, ids.subspan(i, 1), true, adapter};
    model.forward({&in, 1}, &step, pool);
    all.insert(all.end(), step.begin(), step.end());
  }
  return all;
}

class Adapters : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    testing::make_base(dir_->path() / "base");
    ThreadPool pool(2);
    for (int user : {1, 2}) {
      const auto ft = dir_->path() / ("ft" + std::to_string(user));
      testing::make_finetune(dir_->path() / "base", ft, 10 + user, 0.08f);
      CompressOptions options;
      options.granularity = user == 1 ? ScaleGranularity::kTensor : ScaleGranularity::kRow;
      options.adapter_id = AdapterId::parse("gaming/user" + std::to_string(user) + "/v1");
      compress_adapter(dir_->path() / "base", ft, adapter_path(user), options, pool);
      merge_adapter(dir_->path() / "base", adapter_path(user),
                    dir_->path() / ("merged" + std::to_string(user)), pool);
    }
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::filesystem::path base() { return dir_->path() / "base"; }
  static std::filesystem::path adapter_path(int user) {
    return dir_->path() / ("user" + std::to_string(user) + ".bdelta");
  }
  static std::filesystem::path merged(int user) {
    return dir_->path() / ("merged" + std::to_string(user));
  }
  static ScratchDir* dir_;
  ThreadPool pool_{2};
};
ScratchDir* Adapters::dir_ = nullptr;

void expect_close(const std::vector<float>& a, const std::vector<float>& b, double tol,
                  const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double max_abs = 0, max_diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_abs = std::max(max_abs, std::fabs(double(b[i])));
    max_diff = std::max(max_diff, std::fabs(double(a[i]) - b[i]));
  }
  EXPECT_LE(max_diff, tol * std::max(1.0, max_abs)) << what << ": max diff " << max_diff;
}

TEST_F(Adapters, FusedLogitsEqualTheMergedModel) {
  auto model = Transformer::load(base());
  const std::vector<int32_t> ids = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298};
  for (int user : {1, 2}) {
    auto adapter = Adapter::open(adapter_path(user));
    BaseFingerprints fp(model->files());
    adapter->bind(*model, fp, pool_);
    auto merged_model = Transformer::load(merged(user));
    auto expected = logits(*merged_model, ids, nullptr, pool_, false);
    // Prefill (α·S merged into the GEMM panels) and decode (a pass over the bits) paths.
    expect_close(logits(*model, ids, &adapter->weights(), pool_, false), expected, 1e-4,
                 "prefill user " + std::to_string(user));
    expect_close(logits(*model, ids, &adapter->weights(), pool_, true), expected, 1e-4,
                 "decode user " + std::to_string(user));
    // And the adapter really changes the model.
    auto base_logits = logits(*model, ids, nullptr, pool_, false);
    double diff = 0;
    for (size_t i = 0; i < base_logits.size(); ++i) diff += std::fabs(base_logits[i] - expected[i]);
    EXPECT_GT(diff / base_logits.size(), 1e-3);
  }
}

// A model wide enough (hidden 512, intermediate 1024: the table pass covers whole 512-column
// chunks on AVX-512, 256 on AVX2) that its decode takes the table pass over int8-quantized
// activations for q/k/v/gate/up/down: its logits stay within a small, measured
// distance of the (F32) merged model's, far below the adapter's own effect, and its greedy text
// is the merged model's; with --exact-deltas they equal the merged model's within float
// tolerance.
TEST(WideAdapters, TablePassDecodeMatchesTheMergedModel) {
  ScratchDir dir;
  ThreadPool pool(2);
  // F32, so that the merged model holds W + α·S unrounded.
  testing::make_wide_base(dir.path() / "base", DType::kF32);
  testing::make_finetune(dir.path() / "base", dir.path() / "ft", 7, 0.3f);
  CompressOptions options;
  options.granularity = ScaleGranularity::kRow;
  options.adapter_id = AdapterId::parse("general/wide/v1");
  compress_adapter(dir.path() / "base", dir.path() / "ft", dir.path() / "a.bdelta", options, pool);
  merge_adapter(dir.path() / "base", dir.path() / "a.bdelta", dir.path() / "merged", pool);

  auto model = Transformer::load(dir.path() / "base");
  auto merged = Transformer::load(dir.path() / "merged");
  auto adapter = Adapter::open(dir.path() / "a.bdelta");
  BaseFingerprints fp(model->files());
  adapter->bind(*model, fp, pool);
  const std::vector<int32_t> ids = {72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33};
  // Decode, one token at a time.
  const auto run = [&](Transformer& m, const AdapterWeights* a) {
    return logits(m, ids, a, pool, true);
  };
  const auto fused = run(*model, &adapter->weights());
  const auto expected = run(*merged, nullptr);
  const auto base = run(*model, nullptr);
  double max_err = 0, max_effect = 0;
  for (size_t i = 0; i < fused.size(); ++i) {
    max_err = std::max(max_err, std::fabs(double(fused[i]) - expected[i]));
    max_effect = std::max(max_effect, std::fabs(double(base[i]) - expected[i]));
  }
  EXPECT_GT(max_effect, 0.05) << "the fine-tune should move the logits";
  // Measured: 0.43% (0.0040 against 0.92); the int8 rounding of each matrix input is ~0.6% of
  // its delta term.
  EXPECT_LT(max_err, 0.015 * max_effect) << "table pass error " << max_err << " vs adapter effect "
                                       << max_effect;
  EXPECT_GT(max_err, 0.0) << "the table pass should have run (exact results suggest it did not)";

  // --exact-deltas: the float pass throughout, within float tolerance of the merged model.
  set_exact_sign_pass(true);
  const auto exact = run(*model, &adapter->weights());
  set_exact_sign_pass(false);
  double max_exact_err = 0;
  for (size_t i = 0; i < exact.size(); ++i) {
    max_exact_err = std::max(max_exact_err, std::fabs(double(exact[i]) - expected[i]));
  }
  EXPECT_LT(max_exact_err, 1e-4) << "exact pass";

  // Greedy generation: the same tokens as the merged model.
  auto greedy = [&](Transformer& m, const AdapterWeights* a) {
    KVCache cache = m.new_cache();
    std::vector<int32_t> out;
    std::vector<float> logits;
    int32_t next = 72;
    for (int i = 0; i < 24; ++i) {
      SequenceInput in{&cache, {&next, 1}, false, a};
      m.forward({&in, 1}, &logits, pool);
      next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      out.push_back(next);
    }
    return out;
  };
  EXPECT_EQ(greedy(*model, &adapter->weights()), greedy(*merged, nullptr));
}

// A sequence's logits are bitwise the same whatever it is batched with and however its prompt is
// split into chunks — with an adapter (the int8 table pass, on a model wide enough to take it on
// AVX-512 too), with --exact-deltas, and on the base. Before, a prompt prefilled alone took the
// merged-panel GEMM and the same prompt beside other users the table pass (and the base GEMM summed
// in another order than the decode kernels), so near-tied greedy picks changed with the batch.
TEST(WideAdapters, LogitsDoNotDependOnTheBatchOrOnPromptChunking) {
  ScratchDir dir;
  ThreadPool pool(2);
  testing::make_wide_base(dir.path() / "base");
  for (int user : {1, 2}) {
    const auto ft = dir.path() / ("ft" + std::to_string(user));
    testing::make_finetune(dir.path() / "base", ft, 30 + user, 0.3f);
    CompressOptions options;
    options.granularity = user == 1 ? ScaleGranularity::kRow : ScaleGranularity::kTensor;
    options.adapter_id = AdapterId::parse("general/wide" + std::to_string(user) + "/v1");
    compress_adapter(dir.path() / "base", ft, dir.path() / (std::to_string(user) + ".bdelta"),
                     options, pool);
  }
  auto model = Transformer::load(dir.path() / "base");
  BaseFingerprints fp(model->files());
  auto a1 = Adapter::open(dir.path() / "1.bdelta");
  auto a2 = Adapter::open(dir.path() / "2.bdelta");
  a1->bind(*model, fp, pool);
  a2->bind(*model, fp, pool);
  const AdapterWeights* w1 = &a1->weights();
  const AdapterWeights* w2 = &a2->weights();

  std::mt19937 rng(5);
  auto ids = [&](size_t n) {
    std::vector<int32_t> v(n);
    for (auto& id : v) id = static_cast<int32_t>(rng() % 256);
    return v;
  };
  // The sequence under test: a 40-token prompt, then 6 tokens fed one at a time.
  const std::vector<int32_t> prompt = ids(40), next = ids(6);
  // Companions: another user's, a base and the same user's sequence.
  const std::vector<int32_t> other = ids(30), plain = ids(40), same_user = ids(30);

  // One schedule: steps of batches; the tested sequence's entries ask for all logits, and its
  // rows are collected from each step's output.
  struct Entry {
    int who;  // 0: tested, 1: other user, 2: base, 3: same user
    int64_t count;
  };
  const auto run = [&](const AdapterWeights* adapter,
                       const std::vector<std::vector<Entry>>& steps) {
    const AdapterWeights* who_adapter[] = {adapter, w2, nullptr, w1};
    const std::vector<int32_t>* who_ids[] = {nullptr, &other, &plain, &same_user};
    std::vector<int32_t> tested = prompt;
    tested.insert(tested.end(), next.begin(), next.end());
    who_ids[0] = &tested;
    std::vector<KVCache> caches;
    for (int i = 0; i < 4; ++i) caches.push_back(model->new_cache());
    size_t used[4] = {0, 0, 0, 0};
    std::vector<float> collected, out;
    const int64_t V = model->config().vocab_size;
    for (const auto& step : steps) {
      std::vector<SequenceInput> batch;
      int64_t row = 0, tested_row = -1, tested_rows = 0;
      for (const Entry& e : step) {
        std::span<const int32_t> span(who_ids[e.who]->data() + used[e.who],
                                      static_cast<size_t>(e.count));
        used[e.who] += static_cast<size_t>(e.count);
        const bool all = e.who == 0;
        batch.push_back({&caches[e.who], span, all, who_adapter[e.who]});
        if (all) {
          tested_row = row;
          tested_rows = e.count;
        }
        row += all ? e.count : 1;
      }
      model->forward(batch, &out, pool);
      if (tested_row >= 0) {
        collected.insert(collected.end(), out.begin() + tested_row * V,
                         out.begin() + (tested_row + tested_rows) * V);
      }
    }
    return collected;
  };
  std::vector<std::vector<Entry>> alone = {{{0, 40}}};
  std::vector<std::vector<Entry>> chunked = {{{0, 7}}, {{0, 13}}, {{0, 20}}};
  std::vector<std::vector<Entry>> mixed = {
      {{1, 9}, {0, 7}, {2, 3}, {3, 5}}, {{3, 1}, {0, 13}, {1, 1}}, {{2, 25}, {0, 20}, {3, 1}}};
  for (int i = 0; i < 6; ++i) {
    alone.push_back({{0, 1}});
    chunked.push_back({{0, 1}});
    if (i % 2 == 0) {
      mixed.push_back({{1, 1}, {0, 1}, {3, 1}, {2, 1}});
    } else {
      mixed.push_back({{0, 1}, {2, 1}});
    }
  }
  for (bool exact : {false, true}) {
    set_exact_sign_pass(exact);
    for (const AdapterWeights* adapter : {w1, static_cast<const AdapterWeights*>(nullptr)}) {
      const auto reference = run(adapter, alone);
      ASSERT_EQ(reference.size(), 46u * static_cast<size_t>(model->config().vocab_size));
      for (const auto* schedule : {&chunked, &mixed}) {
        const auto got = run(adapter, *schedule);
        ASSERT_EQ(got.size(), reference.size());
        size_t differ = 0;
        for (size_t i = 0; i < got.size(); ++i)
          differ += std::memcmp(&got[i], &reference[i], 4) != 0;
        EXPECT_EQ(differ, 0u) << (schedule == &mixed ? "mixed batch" : "chunked prompt")
                              << (adapter != nullptr ? ", adapter" : ", base")
                              << (exact ? ", exact deltas" : ", table pass");
      }
    }
  }
  set_exact_sign_pass(false);
}

// One forward with a base sequence and two users' sequences (one prefilling, two decoding)
// equals each sequence run alone.
TEST_F(Adapters, MixedBatchEqualsEachAlone) {
  auto model = Transformer::load(base());
  BaseFingerprints fp(model->files());
  auto a1 = Adapter::open(adapter_path(1));
  auto a2 = Adapter::open(adapter_path(2));
  a1->bind(*model, fp, pool_);
  a2->bind(*model, fp, pool_);
  const AdapterWeights* adapters[] = {nullptr, &a1->weights(), &a2->weights(), &a1->weights()};
  std::vector<std::vector<int32_t>> history = {{1, 403}, {1, 261, 378}, {1}, {}};
  std::vector<std::vector<int32_t>> fresh = {{407}, {432}, {383, 286, 261, 376, 298}, {1, 13}};
  std::vector<float> alone;
  for (int s = 0; s < 4; ++s) {
    KVCache cache = model->new_cache();
    std::vector<float> out;
    if (!history[s].empty()) {
      SequenceInput h{&cache, history[s], false, adapters[s]};
      model->forward({&h, 1}, &out, pool_);
    }
    SequenceInput f{&cache, fresh[s], true, adapters[s]};
    model->forward({&f, 1}, &out, pool_);
    alone.insert(alone.end(), out.begin(), out.end());
  }
  std::vector<KVCache> caches;
  for (int s = 0; s < 4; ++s) caches.push_back(model->new_cache());
  std::vector<float> out;
  for (int s = 0; s < 4; ++s) {
    if (history[s].empty()) continue;
    SequenceInput h{&caches[s], history[s], false, adapters[s]};
    model->forward({&h, 1}, &out, pool_);
  }
  std::vector<SequenceInput> batch;
  for (int s = 0; s < 4; ++s) batch.push_back({&caches[s], fresh[s], true, adapters[s]});
  std::vector<float> batched;
  model->forward(batch, &batched, pool_);
  expect_close(batched, alone, 1e-4, "mixed batch");
}

TEST_F(Adapters, LoadedAdapterCostsLittleBeyondItsFile) {
  auto model = Transformer::load(base());
  BaseFingerprints fp(model->files());
  auto a = Adapter::open(adapter_path(2));
  a->bind(*model, fp, pool_);
  // The bits stay in the mapping; only norms (exact deltas merged) are copied.
  EXPECT_LE(a->owned_bytes(), a->file_bytes() / 5);
  EXPECT_EQ(a->id().to_string(), "gaming/user2/v1");
}

// ---- Bad input ------------------------------------------------------------------------------

class BadAdapters : public Adapters {
 protected:
  std::string error_opening(const std::filesystem::path& p) {
    try {
      auto model = Transformer::load(base());
      BaseFingerprints fp(model->files());
      auto a = Adapter::open(p);
      a->bind(*model, fp, pool_);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  void expect_error(const std::filesystem::path& p, const std::string& needle) {
    std::string e = error_opening(p);
    EXPECT_NE(e.find(needle), std::string::npos) << "got: '" << e << "'";
  }
  ScratchDir scratch_;
};

TEST_F(BadAdapters, TruncatedAndCorruptedFiles) {
  const std::string full = testing::read_text(adapter_path(1));
  testing::write_text(scratch_ / "t.bdelta", full.substr(0, full.size() / 2));
  expect_error(scratch_ / "t.bdelta", "truncated");
  uint64_t header = 0;
  std::memcpy(&header, full.data(), 8);
  for (size_t i = 8; i < 8 + header; i += 13) {
    std::string c = full;
    c[i] = static_cast<char>(c[i] ^ 0x5a);
    testing::write_text(scratch_ / "c.bdelta", c);
    (void)error_opening(scratch_ / "c.bdelta");  // an error or a valid file, never a crash
  }
}

TEST_F(BadAdapters, UnknownFormatVersionAndNotAnAdapter) {
  // std::string("2"), not "2": GCC 12 flags the inlined literal copy with a false -Wrestrict
  // (GCC bug 105651).
  testing::rewrite(adapter_path(1), scratch_ / "v2.bdelta",
                   [](auto& meta, auto&) { meta["format_version"] = std::string("2"); });
  expect_error(scratch_ / "v2.bdelta", "format_version 2 is not supported");
  expect_error(base() / "model.safetensors", "not a BitDelta adapter");
}

TEST_F(BadAdapters, WrongBase) {
  ScratchDir other;
  testing::make_finetune(base(), other / "other_base", 99, 0.01f);
  auto model = Transformer::load(other / "other_base");
  BaseFingerprints fp(model->files());
  auto a = Adapter::open(adapter_path(1));
  try {
    a->bind(*model, fp, pool_);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("was made for base"), std::string::npos) << e.what();
  }
}

TEST_F(BadAdapters, MissingTensorsAndShapeMismatches) {
  testing::rewrite(adapter_path(1), scratch_ / "half.bdelta", [](auto&, auto& t) {
    t.erase("model.layers.0.self_attn.q_proj.weight.scale");
  });
  expect_error(scratch_ / "half.bdelta", "needs both .signs and .scale");
  testing::rewrite(adapter_path(1), scratch_ / "extra.bdelta", [](auto&, auto& t) {
    t["model.layers.9.mlp.up_proj.weight.delta"] =
        testing::RawTensor{DType::kF32, {2}, std::vector<uint8_t>(8, 0)};
  });
  expect_error(scratch_ / "extra.bdelta", "does not have");
  testing::rewrite(adapter_path(1), scratch_ / "shape.bdelta", [](auto&, auto& t) {
    auto& s = t.at("model.layers.1.mlp.up_proj.weight.signs");
    s.shape = {86, 16};  // [172, 8] reshaped
  });
  expect_error(scratch_ / "shape.bdelta", "needs [172, 8]");
}

TEST_F(BadAdapters, NonFiniteAndNegativeScales) {
  for (float bad : {std::nanf(""), INFINITY, -0.5f}) {
    testing::rewrite(adapter_path(1), scratch_ / "s.bdelta", [&](auto&, auto& t) {
      std::memcpy(t.at("model.layers.2.self_attn.o_proj.weight.scale").bytes.data(), &bad, 4);
    });
    expect_error(scratch_ / "s.bdelta", "scales must be finite and ≥ 0");
  }
}

// Bytes changed after the file was written — a sign byte, a byte of an exact norm delta, a scale,
// a metadata value — fail the checksums, naming the tensor; before checksums, every one of these
// opened (the sign and norm flips still pass every other check) and ran a different model. A file
// without checksums (as written before they existed) still opens.
TEST_F(BadAdapters, DamagedDataFailsItsChecksum) {
  const auto path = adapter_path(1);
  const std::string full = testing::read_text(path);
  auto st = SafetensorsFile::open(path);
  ASSERT_TRUE(st.metadata().count("checksums"));
  EXPECT_TRUE(Adapter::open(path)->checksums_verified());
  int n = 0;
  auto flip = [&](const std::string& tensor, uint64_t at, uint8_t mask) {
    const TensorInfo* t = st.find(tensor);
    ASSERT_NE(t, nullptr) << tensor;
    std::string c = full;
    c[st.data_offset() + t->begin + at] ^= static_cast<char>(mask);
    const auto out = scratch_ / ("flip" + std::to_string(n++) + ".bdelta");
    testing::write_text(out, c);
    expect_error(out, "tensor '" + tensor + "' does not match its checksum");
    // Without the checksums the same damage passes every other check.
    testing::rewrite(out, scratch_ / "unchecked.bdelta", [](auto&, auto&) {});
    EXPECT_EQ(error_opening(scratch_ / "unchecked.bdelta"), "") << tensor;
  };
  flip("model.layers.0.self_attn.q_proj.weight.signs", 5, 0x10);
  flip("model.layers.3.mlp.down_proj.weight.signs", 77, 0xff);
  flip("model.layers.1.input_layernorm.weight.delta", 6, 0x01);
  flip("model.layers.2.mlp.up_proj.weight.scale", 1, 0x01);

  std::string c = full;
  const size_t at = c.find("gaming/user1/v1");
  ASSERT_NE(at, std::string::npos);
  c[at + 14] = '7';  // adapter_id gaming/user1/v7: a valid id, but not the one written
  testing::write_text(scratch_ / "meta.bdelta", c);
  expect_error(scratch_ / "meta.bdelta", "the header (metadata or tensor table) does not match");

  testing::rewrite(path, scratch_ / "legacy.bdelta", [](auto&, auto&) {});
  EXPECT_FALSE(SafetensorsFile::open(scratch_ / "legacy.bdelta").metadata().count("checksums"));
  auto legacy = Adapter::open(scratch_ / "legacy.bdelta");
  EXPECT_FALSE(legacy->checksums_verified());

  // The CLI: generate and store add refuse the damaged file; inspect reports the checksums.
  const std::string damaged = (scratch_ / "flip0.bdelta").string();
  auto gen = testing::run_cli("generate --model '" + base().string() + "' --adapter '" + damaged +
                              "' --prompt-ids 1 -n 3");
  EXPECT_EQ(gen.exit_code, 1);
  EXPECT_NE(gen.err.find("does not match its checksum"), std::string::npos) << gen.err;
  auto add = testing::run_cli("store add --store '" + (scratch_ / "store").string() + "' '" +
                              damaged + "' --model '" + base().string() + "'");
  EXPECT_EQ(add.exit_code, 1);
  EXPECT_NE(add.err.find("does not match its checksum"), std::string::npos) << add.err;
  auto inspect = testing::run_cli("inspect '" + path.string() + "'");
  EXPECT_NE(inspect.out.find("checksums: verified (xxh3-64"), std::string::npos) << inspect.out;
  auto inspect_legacy = testing::run_cli("inspect '" + (scratch_ / "legacy.bdelta").string() + "'");
  EXPECT_NE(inspect_legacy.out.find("checksums: none"), std::string::npos) << inspect_legacy.out;
}

TEST_F(BadAdapters, CliRefusesAndWritesNothing) {
  testing::rewrite(adapter_path(1), scratch_ / "v9.bdelta",
                   [](auto& meta, auto&) { meta["format_version"] = std::string("9"); });
  auto gen = testing::run_cli("generate --model '" + base().string() + "' --adapter '" +
                              (scratch_ / "v9.bdelta").string() + "' --prompt-ids 1 -n 3");
  EXPECT_EQ(gen.exit_code, 1);
  EXPECT_NE(gen.err.find("format_version 9"), std::string::npos) << gen.err;
  auto merge = testing::run_cli("merge --base '" + base().string() + "' --adapter '" +
                                (scratch_ / "v9.bdelta").string() + "' --out '" +
                                (scratch_ / "m").string() + "'");
  EXPECT_EQ(merge.exit_code, 1);
  EXPECT_FALSE(std::filesystem::exists(scratch_ / "m" / "model.safetensors"));
  auto inspect = testing::run_cli("inspect '" + (scratch_ / "v9.bdelta").string() + "'");
  EXPECT_EQ(inspect.exit_code, 1);
  auto compress = testing::run_cli("compress --base '" + base().string() + "' --finetuned '" +
                                   base().string() + "' --out '" + (scratch_ / "x.bdelta").string() +
                                   "'");
  EXPECT_EQ(compress.exit_code, 1);
  EXPECT_NE(compress.err.find("identical"), std::string::npos) << compress.err;
  EXPECT_FALSE(std::filesystem::exists(scratch_ / "x.bdelta"));
}

TEST_F(Adapters, CliGenerateInspectAndLogitsWithAdapter) {
  auto gen_base = testing::run_cli("generate --model '" + base().string() +
                                   "' --prompt-ids 1 -n 20 --print-ids");
  auto gen_user = testing::run_cli("generate --model '" + base().string() + "' --adapter '" +
                                   adapter_path(1).string() + "' --prompt-ids 1 -n 20 --print-ids");
  auto gen_merged = testing::run_cli("generate --model '" + merged(1).string() +
                                     "' --prompt-ids 1 -n 20 --print-ids");
  ASSERT_EQ(gen_user.exit_code, 0) << gen_user.err;
  EXPECT_EQ(gen_user.out, gen_merged.out);
  auto gen_exact = testing::run_cli("generate --model '" + base().string() + "' --adapter '" +
                                    adapter_path(1).string() +
                                    "' --exact-deltas --prompt-ids 1 -n 20 --print-ids");
  ASSERT_EQ(gen_exact.exit_code, 0) << gen_exact.err;
  EXPECT_EQ(gen_exact.out, gen_merged.out);
  // Greedy tokens can coincide with the base's; the logits cannot.
  const std::string ids = " --ids 1,403,407,261,378 --out ";
  ASSERT_EQ(testing::run_cli("logits --model '" + base().string() + "' --adapter '" +
                             adapter_path(1).string() + "'" + ids + "'" +
                             (dir_->path() / "lu.safetensors").string() + "'")
                .exit_code,
            0);
  ASSERT_EQ(testing::run_cli("logits --model '" + base().string() + "'" + ids + "'" +
                             (dir_->path() / "lb.safetensors").string() + "'")
                .exit_code,
            0);
  auto lu = SafetensorsFile::open(dir_->path() / "lu.safetensors").view("logits").to_f32();
  auto lb = SafetensorsFile::open(dir_->path() / "lb.safetensors").view("logits").to_f32();
  KVCache cache;
  auto merged_model = Transformer::load(merged(1));
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378};
  expect_close(lu, logits(*merged_model, prompt, nullptr, pool_, false), 1e-4, "cli logits");
  EXPECT_NE(lu, lb);
  auto inspect = testing::run_cli("inspect --json '" + adapter_path(2).string() + "'");
  ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
  auto j = nlohmann::json::parse(inspect.out);
  EXPECT_GT(j["ratio_vs_bf16_delta"].get<double>(), 4.0);
  EXPECT_EQ(j["metadata"]["scale_granularity"], "row");
  EXPECT_EQ(j["tensors"].size(), 47u);
  for (const auto& t : j["tensors"]) {
    if (t["kind"] == "1bit") {
      EXPECT_GT(t["rel_error"].get<double>(), 0.3);  // 1-bit of Gaussian noise: ~0.6
      EXPECT_LT(t["rel_error"].get<double>(), 0.9);
      EXPECT_NEAR(t["plus_share"].get<double>(), 0.5, 0.1);
    }
  }
}

}  // namespace
}  // namespace bitdelta
