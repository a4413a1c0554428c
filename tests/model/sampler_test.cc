#include "model/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "util/error.h"

namespace bitdelta {
namespace {

std::vector<float> logits() { return {1.0f, 3.0f, 2.5f, -1.0f, 0.0f}; }

int32_t sample_once(SamplingParams p, std::vector<float> l, std::vector<int32_t> history = {}) {
  Sampler s(p);
  return s.sample(l, history);
}

TEST(Sampler, GreedyPicksArgmax) { EXPECT_EQ(sample_once({}, logits()), 1); }

TEST(Sampler, SameSeedSameSequence) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 123;
  Sampler a(p), b(p);
  for (int i = 0; i < 100; ++i) {
    auto la = logits(), lb = logits();
    ASSERT_EQ(a.sample(la, {}), b.sample(lb, {}));
  }
}

TEST(Sampler, TopKOneAndTinyTopPAndFullMinPAreGreedy) {
  SamplingParams p;
  p.temperature = 2.0f;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    p.seed = seed;
    SamplingParams k = p;
    k.top_k = 1;
    EXPECT_EQ(sample_once(k, logits()), 1);
    SamplingParams tp = p;
    tp.top_p = 0.01f;
    EXPECT_EQ(sample_once(tp, logits()), 1);
    SamplingParams mp = p;
    mp.min_p = 1.0f;
    EXPECT_EQ(sample_once(mp, logits()), 1);
  }
}

TEST(Sampler, FrequenciesFollowSoftmaxAtTemperatureOne) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 5;
  Sampler s(p);
  std::vector<float> l = logits();
  std::vector<double> probs(l.size());
  double total = 0;
  for (size_t i = 0; i < l.size(); ++i) total += probs[i] = std::exp(l[i]);
  const int draws = 40000;
  std::vector<int> counts(l.size());
  for (int i = 0; i < draws; ++i) {
    auto copy = l;
    counts[s.sample(copy, {})]++;
  }
  for (size_t i = 0; i < l.size(); ++i) {
    const double expected = probs[i] / total;
    const double sigma = std::sqrt(expected * (1 - expected) / draws);
    EXPECT_NEAR(counts[i] / double(draws), expected, 5 * sigma + 1e-4) << "token " << i;
  }
}

TEST(Sampler, TopKRestrictsToTheBestK) {
  SamplingParams p;
  p.temperature = 5.0f;
  p.top_k = 2;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    p.seed = seed;
    int32_t id = sample_once(p, logits());
    EXPECT_TRUE(id == 1 || id == 2) << id;
  }
}

TEST(Sampler, RepetitionPenaltyDiscouragesSeenTokens) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  // Token 1 (logit 3.0) was seen: 3.0 / 2 = 1.5 < 2.5, so greedy moves to token 2.
  EXPECT_EQ(sample_once(p, logits(), {1, 1}), 2);
  // A negative seen logit is multiplied (made more negative), never promoted.
  std::vector<float> l = {-0.5f, -0.4f};
  EXPECT_EQ(sample_once(p, l, {1}), 0);
}

TEST(Sampler, RejectsInvalidParameters) {
  SamplingParams p;
  p.temperature = -1;
  EXPECT_THROW(validate(p), Error);
  p = {};
  p.top_p = 0;
  EXPECT_THROW(validate(p), Error);
  p = {};
  p.top_k = -3;
  EXPECT_THROW(validate(p), Error);
  p = {};
  p.min_p = 1.5f;
  EXPECT_THROW(validate(p), Error);
  p = {};
  p.repetition_penalty = 0;
  EXPECT_THROW(validate(p), Error);
}

}  // namespace
}  // namespace bitdelta
