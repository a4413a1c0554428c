// attend() on every compiled SIMD target against the scalar reference, on odd sizes.
#include "ops/attention.h"

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <random>
#include <vector>

namespace bitdelta {
namespace {

TEST(Attention, EveryTargetMatchesReference) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (int64_t D : {1, 7, 8, 17, 64, 128}) {
      for (int64_t len : {1, 2, 5, 33, 100}) {
        const int64_t stride = D + 3;
        std::vector<float> q(D), keys(len * stride), values(len * stride), scores(len);
        for (auto* v : {&q, &keys, &values}) {
          for (auto& e : *v) e = dist(rng);
        }
        std::vector<float> expected(D), actual(D);
        attend_reference(q.data(), keys.data(), values.data(), stride, len, D, 0.3f,
                         expected.data());
        attend(q.data(), keys.data(), values.data(), stride, len, D, 0.3f, scores.data(),
               actual.data());
        for (int64_t d = 0; d < D; ++d) {
          ASSERT_NEAR(actual[d], expected[d], 1e-5)
              << hwy::TargetName(target) << " D=" << D << " len=" << len;
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

// A group of query heads sharing keys and values gets, head by head, bitwise what attend() gives
// each head alone (the grouped kernel only shares the loads).
TEST(Attention, GroupEqualsHeadsAloneBitForBit) {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (int64_t D : {7, 32, 64, 128, 136}) {
      for (int64_t heads : {1, 2, 3, 4, 7}) {
        for (int64_t len : {1, 6, 77}) {
          const int64_t stride = D + 5;
          std::vector<float> q(heads * D), keys(len * stride), values(len * stride);
          for (auto* v : {&q, &keys, &values}) {
            for (auto& e : *v) e = dist(rng);
          }
          std::vector<float> scores(heads * len), grouped(heads * D), alone(heads * D);
          attend_group(q.data(), heads, keys.data(), values.data(), stride, len, D, 0.2f,
                       scores.data(), grouped.data());
          for (int64_t g = 0; g < heads; ++g) {
            attend(q.data() + g * D, keys.data(), values.data(), stride, len, D, 0.2f,
                   scores.data(), alone.data() + g * D);
          }
          for (int64_t i = 0; i < heads * D; ++i) {
            ASSERT_EQ(grouped[i], alone[i]) << hwy::TargetName(target) << " D=" << D
                                            << " heads=" << heads << " len=" << len << " i=" << i;
          }
          std::vector<float> expected(D);
          attend_reference(q.data() + (heads - 1) * D, keys.data(), values.data(), stride, len, D,
                           0.2f, expected.data());
          for (int64_t d = 0; d < D; ++d) {
            ASSERT_NEAR(grouped[(heads - 1) * D + d], expected[d], 1e-5);
          }
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

// A position's score is summed the same way whether it falls in a whole block of 16 positions
// (on AVX-512 those are reduced together, transposed) or in the last few one at a time: the same
// key at position j < 16 and at 16 + j gets bitwise the same attention weight.
TEST(Attention, BlockAndTailScoresAgree) {
  std::mt19937 rng(9);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (int64_t D : {32, 64, 128}) {
      for (int64_t heads : {1, 2, 3}) {
        const int64_t len = 16 + 15, stride = D;
        std::vector<float> q(heads * D), keys(len * stride), values(len * stride);
        for (auto* v : {&q, &values}) {
          for (auto& e : *v) e = dist(rng);
        }
        for (int64_t i = 0; i < 16 * stride; ++i) keys[i] = dist(rng);
        for (int64_t i = 16 * stride; i < len * stride; ++i) keys[i] = keys[i - 16 * stride];
        std::vector<float> scores(heads * len), out(heads * D);
        attend_group(q.data(), heads, keys.data(), values.data(), stride, len, D, 0.1f,
                     scores.data(), out.data());
        for (int64_t g = 0; g < heads; ++g) {
          for (int64_t j = 0; j + 16 < len; ++j) {
            ASSERT_EQ(scores[g * len + j], scores[g * len + 16 + j])
                << hwy::TargetName(target) << " D=" << D << " head " << g << " position " << j;
          }
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace
}  // namespace bitdelta
