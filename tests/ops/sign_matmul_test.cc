// The fused 1-bit kernels on every compiled SIMD target against scalar references, on odd
// shapes (columns not a multiple of 8 or of the vector width), per-tensor and per-row scales.
#include "ops/sign_matmul.h"

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cmath>
#include <random>
#include <vector>

#include "ops/matmul.h"

namespace bitdelta {
namespace {

struct RandomSigns {
  std::vector<uint8_t> bits;
  std::vector<float> scales;
  SignMatrix matrix;
  RandomSigns(int64_t rows, int64_t cols, bool per_row, std::mt19937& rng) {
    const int64_t row_bytes = (cols + 7) / 8;
    bits.resize(static_cast<size_t>(rows * row_bytes));
    for (int64_t n = 0; n < rows; ++n) {
      for (int64_t k = 0; k < cols; ++k) {
        if (rng() & 1) bits[n * row_bytes + k / 8] |= static_cast<uint8_t>(1u << (k % 8));
      }
    }
    std::uniform_real_distribution<float> scale(0.001f, 0.05f);
    scales.resize(per_row ? static_cast<size_t>(rows) : 1);
    for (auto& s : scales) s = scale(rng);
    matrix = SignMatrix{bits.data(), rows, cols, scales.data(), per_row};
  }
};

std::vector<float> random_vector(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& e : v) e = dist(rng);
  return v;
}

class SignKernels : public ::testing::Test {
 protected:
  void TearDown() override { hwy::SetSupportedTargetsForTest(0); }
};

TEST_F(SignKernels, SignMatmulAddMatchesReferenceOnEveryTarget) {
  std::mt19937 rng(9);
  ThreadPool pool(2);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (bool per_row : {false, true}) {
      for (auto [T, N, K] : std::vector<std::array<int64_t, 3>>{
               {1, 1, 1}, {1, 5, 7}, {2, 17, 8}, {3, 33, 13}, {4, 20, 64}, {5, 9, 100},
               {9, 40, 129}, {1, 130, 1023}}) {
        RandomSigns s(N, K, per_row, rng);
        auto x = random_vector(static_cast<size_t>(T * K), rng);
        auto y0 = random_vector(static_cast<size_t>(T * N), rng);
        std::vector<float> expected = y0, actual = y0;
        sign_matmul_add_reference(x.data(), T, s.matrix, expected.data());
        sign_matmul_add(x.data(), T, s.matrix, actual.data(), pool);
        for (size_t i = 0; i < expected.size(); ++i) {
          ASSERT_NEAR(actual[i], expected[i], 1e-5 * std::sqrt(double(K)) + 1e-6)
              << hwy::TargetName(target) << " T=" << T << " N=" << N << " K=" << K
              << " per_row=" << per_row;
        }
      }
    }
  }
}

// matmul_with_signs equals a plain matmul against the dense W + α ⊙ S, for decode-sized and
// prefill-sized token counts (the two code paths), every weight dtype and target.
TEST_F(SignKernels, FusedLinearEqualsDenseMergedWeights) {
  std::mt19937 rng(10);
  ThreadPool pool(2);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      for (int64_t T : {1, 2, 3, 5, 13, 30}) {
        const int64_t N = 37, K = 71;
        RandomSigns s(N, K, T % 2 == 0, rng);
        auto w32 = random_vector(static_cast<size_t>(N * K), rng);
        std::vector<uint8_t> w_bytes(w32.size() * dtype_size(dtype));
        convert_from_f32(dtype, w32.data(), w_bytes.data(), w32.size());
        convert_to_f32(dtype, w_bytes.data(), w32.data(), w32.size());
        std::vector<float> merged = w32;
        for (int64_t n = 0; n < N; ++n) add_scaled_signs_row(s.matrix, n, merged.data() + n * K);
        auto x = random_vector(static_cast<size_t>(T * K), rng);
        auto bias = random_vector(static_cast<size_t>(N), rng);
        std::vector<float> expected(static_cast<size_t>(T * N)), actual(expected.size());
        matmul_reference(x.data(), T,
                         WeightMatrix{DType::kF32, reinterpret_cast<uint8_t*>(merged.data()), N, K},
                         bias.data(), expected.data());
        matmul_with_signs(x.data(), T, WeightMatrix{dtype, w_bytes.data(), N, K}, bias.data(),
                          &s.matrix, actual.data(), pool);
        for (size_t i = 0; i < expected.size(); ++i) {
          ASSERT_NEAR(actual[i], expected[i], 2e-4 * std::sqrt(double(K)))
              << hwy::TargetName(target) << " " << dtype_name(dtype) << " T=" << T << " at " << i;
        }
      }
    }
  }
}

TEST(SignLayout, AddScaledSignsRowDecodesTheLayout) {
  // Row 0: bits 0b00000101 then a partial byte with bit 0 set: +,−,+,−,−,−,−,−,+ (9 columns).
  std::vector<uint8_t> bits = {0x05, 0x01};
  float scale = 0.5f;
  SignMatrix s{bits.data(), 1, 9, &scale, false};
  std::vector<float> dst(9, 0.0f);
  add_scaled_signs_row(s, 0, dst.data());
  EXPECT_EQ(dst, (std::vector<float>{0.5f, -0.5f, 0.5f, -0.5f, -0.5f, -0.5f, -0.5f, -0.5f, 0.5f}));
}

}  // namespace
}  // namespace bitdelta
