// The forward pass against logits from an independent PyTorch implementation
// (tools/gen_model_fixtures.py), and its own consistency: prefill-then-decode equals one full
// forward, and a batch of sequences equals each sequence alone.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "io/safetensors.h"
#include "model/transformer.h"
#include "ops/matmul.h"
#include "support/test_support.h"
#include "util/error.h"

namespace bitdelta {
namespace {

const char* kFixtures[] = {"llama3_rope_scaling", "llama_gqa4_untied", "mistral_gqa2_f16",
                           "qwen2_mha_bias",      "qwen3_gqa2_bf16",   "qwen3_gqa2_tied"};

std::filesystem::path fixture(const std::string& name) {
  return testing::test_data("model/" + name);
}

std::vector<int32_t> fixture_ids(const SafetensorsFile& expected) {
  auto v = expected.view("ids");
  std::vector<int32_t> ids(static_cast<size_t>(v.numel()));
  std::memcpy(ids.data(), v.data, ids.size() * 4);
  return ids;
}

// |a − b| ≤ tol · max(|b|, rms of the row): relative to the logit scale of the row, so tiny
// logits near zero do not demand impossible precision.
void expect_close_rows(const std::vector<float>& actual, const std::vector<float>& expected,
                       int64_t vocab, double tol, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t row = 0; row * vocab < expected.size(); ++row) {
    double sum_sq = 0;
    for (int64_t i = 0; i < vocab; ++i) sum_sq += double(expected[row * vocab + i]) * expected[row * vocab + i];
    const double rms = std::sqrt(sum_sq / vocab);
    for (int64_t i = 0; i < vocab; ++i) {
      const double e = expected[row * vocab + i], a = actual[row * vocab + i];
      ASSERT_LE(std::fabs(a - e), tol * std::max(std::fabs(e), rms))
          << what << " row " << row << " token " << i << ": " << a << " vs " << e;
    }
  }
}

class ReferenceLogits : public ::testing::TestWithParam<const char*> {};

TEST_P(ReferenceLogits, MatchPyTorchWithin1e4Relative) {
  auto model = Transformer::load(fixture(GetParam()));
  auto expected = SafetensorsFile::open(fixture(GetParam()) / "expected.safetensors");
  std::vector<int32_t> ids = fixture_ids(expected);
  ThreadPool pool(2);
  const auto run = [&] {
    KVCache cache = model->new_cache();
    SequenceInput input{&cache, ids, true};
    std::vector<float> logits;
    model->forward({&input, 1}, &logits, pool);
    return logits;
  };
  // F32 activations: weights of every dtype are widened exactly to F32 and the reference used
  // those same values, so BF16 and F16 checkpoints are held to the same bound as F32 ones.
  set_f32_activations(true);
  expect_close_rows(run(), expected.view("logits").to_f32(), model->config().vocab_size, 1e-4,
                    GetParam());
  set_f32_activations(false);
  // BF16 dot products (the default for BF16 weights on CPUs with AVX512_BF16) against the
  // reference that rounds every linear layer's input to BF16 the same way.
  if (model->weights().layers[0].q.weight.dtype == DType::kBF16 && bf16_dot_products()) {
    ASSERT_NE(expected.find("logits_bf16_activations"), nullptr);
    expect_close_rows(run(), expected.view("logits_bf16_activations").to_f32(),
                      model->config().vocab_size, 1e-4, GetParam());
  }
}

TEST_P(ReferenceLogits, PrefillThenDecodeEqualsFullForward) {
  auto model = Transformer::load(fixture(GetParam()));
  auto expected = SafetensorsFile::open(fixture(GetParam()) / "expected.safetensors");
  std::vector<int32_t> ids = fixture_ids(expected);
  ThreadPool pool(2);
  const int64_t V = model->config().vocab_size;
  std::vector<float> full;
  {
    KVCache cache = model->new_cache();
    SequenceInput input{&cache, ids, true};
    model->forward({&input, 1}, &full, pool);
  }
  // Prefill 4 tokens, then a chunk of 3, then one token at a time.
  KVCache cache = model->new_cache();
  std::vector<float> stepped, logits;
  size_t pos = 0;
  for (size_t chunk : {size_t{4}, size_t{3}, size_t{1}, size_t{1}, size_t{1}, size_t{1}}) {
    SequenceInput input{&cache, std::span(ids).subspan(pos, chunk), true};
    model->forward({&input, 1}, &logits, pool);
    stepped.insert(stepped.end(), logits.begin(), logits.end());
    pos += chunk;
  }
  ASSERT_EQ(pos, ids.size());
  EXPECT_EQ(cache.length(), static_cast<int64_t>(ids.size()));
  expect_close_rows(stepped, full, V, 1e-5, "stepped");
}

TEST_P(ReferenceLogits, BatchEqualsEachSequenceAlone) {
  auto model = Transformer::load(fixture(GetParam()));
  ThreadPool pool(2);
  const int64_t V = model->config().vocab_size;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(V - 1));
  // Three sequences: one mid-decode, one fresh prefill, one with a long history.
  std::vector<std::vector<int32_t>> history = {{}, {}, {}}, fresh = {{}, {}, {}};
  for (int i = 0; i < 5; ++i) history[0].push_back(token(rng));
  for (int i = 0; i < 20; ++i) history[2].push_back(token(rng));
  fresh[0] = {token(rng)};
  for (int i = 0; i < 7; ++i) fresh[1].push_back(token(rng));
  fresh[2] = {token(rng), token(rng)};

  std::vector<float> alone;
  for (int s = 0; s < 3; ++s) {
    KVCache cache = model->new_cache();
    std::vector<float> logits;
    if (!history[s].empty()) {
      SequenceInput h{&cache, history[s], false};
      model->forward({&h, 1}, &logits, pool);
    }
    SequenceInput f{&cache, fresh[s], s == 1};
    model->forward({&f, 1}, &logits, pool);
    alone.insert(alone.end(), logits.begin(), logits.end());
  }
  std::vector<KVCache> caches = {model->new_cache(), model->new_cache(), model->new_cache()};
  std::vector<float> logits;
  for (int s : {0, 2}) {
    SequenceInput h{&caches[s], history[s], false};
    model->forward({&h, 1}, &logits, pool);
  }
  std::vector<SequenceInput> batch;
  for (int s = 0; s < 3; ++s) batch.push_back({&caches[s], fresh[s], s == 1});
  std::vector<float> batched;
  model->forward(batch, &batched, pool);
  EXPECT_EQ(batched.size(), static_cast<size_t>((1 + 7 + 1) * V));
  expect_close_rows(batched, alone, V, 1e-5, "batched");
}

INSTANTIATE_TEST_SUITE_P(AllFamilies, ReferenceLogits, ::testing::ValuesIn(kFixtures));

TEST(TransformerErrors, RejectsOutOfRangeTokensAndOverlongSequences) {
  auto model = Transformer::load(fixture("qwen3_gqa2_tied"));
  ThreadPool pool(1);
  KVCache cache = model->new_cache();
  std::vector<float> logits;
  std::vector<int32_t> bad = {1, 97};
  SequenceInput input{&cache, bad, false};
  EXPECT_THROW(model->forward({&input, 1}, &logits, pool), Error);
  EXPECT_EQ(cache.length(), 0);
  std::vector<int32_t> too_long(65, 1);  // max_position_embeddings is 64
  SequenceInput long_input{&cache, too_long, false};
  EXPECT_THROW(model->forward({&long_input, 1}, &logits, pool), Error);
}

TEST(TransformerErrors, RefusesCheckpointThatDisagreesWithConfig) {
  testing::ScratchDir dir;
  std::filesystem::copy(fixture("qwen3_gqa2_tied"), dir.path(),
                        std::filesystem::copy_options::recursive);
  std::string config = testing::read_text(dir / "config.json");
  size_t at = config.find("\"intermediate_size\": 37");
  ASSERT_NE(at, std::string::npos);
  config.replace(at, 23, "\"intermediate_size\": 38");
  testing::write_text(dir / "config.json", config);
  try {
    Transformer::load(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mlp.gate_proj.weight"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bitdelta
