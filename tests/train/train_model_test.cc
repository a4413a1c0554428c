// The training forward and backward of whole models: finite-difference gradient checks in
// double precision, and the training forward against the inference engine's logits.
#include "train/train_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "model/transformer.h"
#include "ops/backward.h"
#include "ops/matmul.h"
#include "support/test_support.h"

namespace bitdelta {
namespace {

const char* kModels[] = {"qwen3_gqa2_tied", "llama_gqa4_untied", "qwen2_mha_bias",
                         "llama3_rope_scaling"};

std::filesystem::path model_dir(const std::string& name) {
  return testing::test_data("model/" + name);
}

struct Case {
  std::vector<int32_t> tokens, targets;
  int64_t batch = 2, seq_len = 6;
};

Case make_case(int64_t vocab, uint32_t seed) {
  Case c;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab - 1));
  for (int64_t i = 0; i < c.batch * c.seq_len; ++i) {
    c.tokens.push_back(id(rng));
    c.targets.push_back(i % 5 == 2 ? -1 : id(rng));  // a few masked targets
  }
  return c;
}

double loss_of(TrainModel<double>& m, const Case& c) {
  auto logits = m.forward(c.tokens, c.batch, c.seq_len);
  std::vector<double> d(logits.size());
  return cross_entropy_forward_backward(logits.data(), std::span<const int32_t>(c.targets),
                                        m.config().vocab_size, d.data());
}

class WholeModelGradient : public ::testing::TestWithParam<const char*> {};

TEST_P(WholeModelGradient, MatchesFiniteDifferencesInDouble) {
  const auto dir = model_dir(GetParam());
  WeightFiles files = WeightFiles::open(dir);
  TrainModel<double> m(load_model_config(dir / "config.json"), files);
  const Case c = make_case(m.config().vocab_size, 7);
  auto logits = m.forward(c.tokens, c.batch, c.seq_len);
  std::vector<double> dlogits(logits.size());
  cross_entropy_forward_backward(logits.data(), std::span<const int32_t>(c.targets),
                                 m.config().vocab_size, dlogits.data());
  m.zero_grads();
  m.backward(dlogits, {});
  std::vector<double> analytic(m.grads().begin(), m.grads().end());

  // Every tensor, a few entries each (the largest-gradient one and random ones).
  std::mt19937 rng(3);
  const double h = 1e-5;
  int checked = 0;
  for (const ParamInfo& p : m.params()) {
    std::vector<int64_t> picks;
    int64_t best = 0;
    for (int64_t i = 1; i < p.size; ++i) {
      if (std::fabs(analytic[p.offset + i]) > std::fabs(analytic[p.offset + best])) best = i;
    }
    picks.push_back(best);
    for (int k = 0; k < 3; ++k) picks.push_back(std::uniform_int_distribution<int64_t>(0, p.size - 1)(rng));
    for (int64_t i : picks) {
      double& w = m.values()[p.offset + i];
      const double saved = w;
      w = saved + h;
      const double up = loss_of(m, c);
      w = saved - h;
      const double down = loss_of(m, c);
      w = saved;
      const double numeric = (up - down) / (2 * h);
      const double a = analytic[p.offset + i];
      EXPECT_NEAR(a, numeric, 1e-7 + 1e-5 * std::fabs(numeric)) << p.name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 40);
}

INSTANTIATE_TEST_SUITE_P(Models, WholeModelGradient, ::testing::ValuesIn(kModels));

class TrainingForward : public ::testing::TestWithParam<const char*> {};

TEST_P(TrainingForward, EqualsTheInferenceEngine) {
  const auto dir = model_dir(GetParam());
  auto engine = Transformer::load(dir);
  TrainModel<float> m(engine->config(), engine->files());
  ThreadPool pool(2);
  // Training computes in F32 throughout: compare with the engine's F32-activation path (its BF16
  // dot products, where the CPU has them, are checked against PyTorch in reference_test).
  set_f32_activations(true);
  struct Restore {
    ~Restore() { set_f32_activations(false); }
  } restore;
  const Case c = make_case(m.config().vocab_size, 11);
  auto logits = m.forward(c.tokens, c.batch, c.seq_len);
  const int64_t V = m.config().vocab_size, S = c.seq_len;
  for (int64_t b = 0; b < c.batch; ++b) {
    KVCache cache = engine->new_cache();
    SequenceInput in{&cache, std::span<const int32_t>(c.tokens).subspan(b * S, S), true, nullptr};
    std::vector<float> expected;
    engine->forward({&in, 1}, &expected, pool);
    for (int64_t i = 0; i < S * V; ++i) {
      ASSERT_NEAR(logits[b * S * V + i], expected[i], 2e-4 * (1 + std::fabs(expected[i])))
          << "sequence " << b << " entry " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, TrainingForward,
                         ::testing::Values("qwen3_gqa2_tied", "qwen3_gqa2_bf16",
                                           "llama_gqa4_untied", "qwen2_mha_bias",
                                           "mistral_gqa2_f16", "llama3_rope_scaling"));

}  // namespace
}  // namespace bitdelta
