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

}  // namespace
}  // namespace bitdelta
