// The compressor's per-row kernel on every compiled target against its scalar reference.
#include "ops/delta_stats.h"

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <random>
#include <vector>

namespace bitdelta {
namespace {

TEST(DeltaStats, EveryTargetMatchesReference) {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (DType bd : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (DType fd : {DType::kF32, DType::kBF16}) {
        for (int64_t n : {1, 7, 8, 9, 64, 100, 1023}) {
          std::vector<float> b(n), f(n);
          for (int64_t i = 0; i < n; ++i) {
            b[i] = dist(rng);
            f[i] = i % 5 == 0 ? b[i] : b[i] + 0.01f * dist(rng);  // some exact zeros
          }
          std::vector<uint8_t> bb(n * dtype_size(bd)), fb(n * dtype_size(fd));
          convert_from_f32(bd, b.data(), bb.data(), n);
          convert_from_f32(fd, f.data(), fb.data(), n);
          std::vector<uint8_t> bits((n + 7) / 8, 0xff), ref_bits((n + 7) / 8);
          RowDeltaStats got = delta_signs_row(bb.data(), bd, fb.data(), fd, n, bits.data());
          RowDeltaStats want = delta_signs_row_reference(bb.data(), bd, fb.data(), fd, n,
                                                         ref_bits.data());
          ASSERT_EQ(bits, ref_bits) << hwy::TargetName(target) << " n=" << n;
          EXPECT_EQ(got.plus, want.plus);
          EXPECT_NEAR(got.abs_sum, want.abs_sum, 1e-5 * (1 + want.abs_sum));
          EXPECT_NEAR(got.sq_sum, want.sq_sum, 1e-5 * (1 + want.sq_sum));
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace
}  // namespace bitdelta
