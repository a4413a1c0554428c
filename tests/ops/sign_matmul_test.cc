// The fused 1-bit kernels on every compiled SIMD target against scalar references, on odd
// shapes (columns not a multiple of 8 or of the vector width), per-tensor and per-row scales.
#include "ops/sign_matmul.h"

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "ops/amx_tiles.h"
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
  void TearDown() override {
    hwy::SetSupportedTargetsForTest(0);
    set_f32_activations(false);
    set_amx_tiles(true);
  }
};

// The serving pass: exact where it is exact, and within the documented int8 quantization bound
// where the lookup tables cover (whole 16-row tiles of shapes with ≥ 256 columns).
TEST_F(SignKernels, SignMatmulAddMatchesReferenceOnEveryTarget) {
  std::mt19937 rng(9);
  ThreadPool pool(2);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (bool per_row : {false, true}) {
      for (auto [T, N, K] : std::vector<std::array<int64_t, 3>>{
               {1, 1, 1}, {1, 5, 7}, {2, 17, 8}, {3, 33, 13}, {4, 20, 64}, {5, 9, 100},
               {9, 40, 129}, {1, 130, 1023}, {1, 16, 256}, {2, 48, 512}, {11, 35, 777},
               {3, 64, 2048}, {1, 32, 3072}}) {
        RandomSigns s(N, K, per_row, rng);
        auto x = random_vector(static_cast<size_t>(T * K), rng);
        if (K >= 256) x[static_cast<size_t>(K / 2)] = 40.0f;  // an outlier in one block
        auto y0 = random_vector(static_cast<size_t>(T * N), rng);
        std::vector<float> expected = y0, actual = y0, exact = y0;
        sign_matmul_add_reference(x.data(), T, s.matrix, expected.data());
        sign_matmul_add(x.data(), T, s.matrix, actual.data(), pool);
        sign_matmul_add_exact(x.data(), T, s.matrix, exact.data(), pool);
        for (int64_t t = 0; t < T; ++t) {
          const double bound = sign_matmul_quantization_bound(x.data() + t * K, K);
          for (int64_t n = 0; n < N; ++n) {
            const size_t i = static_cast<size_t>(t * N + n);
            const double float_tol = 1e-5 * std::sqrt(double(K)) + 1e-6;
            ASSERT_NEAR(exact[i], expected[i], float_tol)
                << "exact " << hwy::TargetName(target) << " T=" << T << " N=" << N << " K=" << K;
            ASSERT_NEAR(actual[i], expected[i], s.matrix.scale(n) * bound + float_tol)
                << hwy::TargetName(target) << " T=" << T << " N=" << N << " K=" << K
                << " per_row=" << per_row << " t=" << t << " n=" << n;
          }
        }
      }
    }
  }
}

// The quantization error is not just bounded but small: on Gaussian activations the table
// pass's relative error against the exact S·x is ~0.6% (max of 128 normals ≈ 2.6σ, so a step of
// 2.6σ/127), next to the ~60-80% relative error of the 1-bit approximation α·S of Δ itself; and it
// is not exact, so the table pass really ran.
TEST_F(SignKernels, TablePassErrorIsSmallOnTypicalActivations) {
  std::mt19937 rng(19);
  ThreadPool pool(2);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    if (target == HWY_SCALAR) continue;
    hwy::SetSupportedTargetsForTest(target);
    const int64_t N = 64, K = 1024;
    RandomSigns s(N, K, true, rng);
    for (auto& a : s.scales) a = 1.0f;
    auto x = random_vector(static_cast<size_t>(K), rng);
    std::vector<float> expected(N, 0.0f), actual(N, 0.0f);
    sign_matmul_add_reference(x.data(), 1, s.matrix, expected.data());
    sign_matmul_add(x.data(), 1, s.matrix, actual.data(), pool);
    double err = 0, norm = 0;
    for (int64_t n = 0; n < N; ++n) {
      err += (actual[n] - expected[n]) * double(actual[n] - expected[n]);
      norm += double(expected[n]) * expected[n];
    }
    const double rel = std::sqrt(err / norm);
    EXPECT_LT(rel, 1e-2) << hwy::TargetName(target);
    EXPECT_GT(rel, 1e-6) << hwy::TargetName(target) << ": the table pass did not run";
  }
}

// A token's result does not depend on what else is in the batch: alone, with other tokens of
// its adapter, or beside other adapters' jobs, the bits are identical (so batching users together
// cannot change anyone's greedy output).
TEST_F(SignKernels, TokenResultIndependentOfBatch) {
  std::mt19937 rng(29);
  ThreadPool pool(2), one(1);
  // Every target, both passes, whole table tiles and odd shapes, 1 and 2 threads.
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (bool exact : {false, true}) {
      set_exact_sign_pass(exact);
      // (512 × 1024 is big enough that the pool splits its row tiles between two threads.)
      for (auto [N, K] :
           std::vector<std::pair<int64_t, int64_t>>{{48, 1024}, {35, 777}, {17, 9}, {512, 1024}}) {
        for (int64_t T : {2, 3, 5, 9}) {
          RandomSigns sm(N, K, T % 2 == 0, rng);
          auto xs = random_vector(static_cast<size_t>(T * K), rng);
          auto y0 = random_vector(static_cast<size_t>(T * N), rng);
          std::vector<float> all = y0;
          sign_matmul_add(xs.data(), T, sm.matrix, all.data(), pool);
          for (int64_t t = 0; t < T; ++t) {
            std::vector<float> alone(y0.begin() + t * N, y0.begin() + (t + 1) * N);
            sign_matmul_add(xs.data() + t * K, 1, sm.matrix, alone.data(), t % 2 ? one : pool);
            ASSERT_EQ(0, std::memcmp(alone.data(), all.data() + t * N, N * 4))
                << hwy::TargetName(target) << (exact ? " exact" : " table") << " N=" << N
                << " K=" << K << " T=" << T << " t=" << t;
          }
        }
      }
    }
  }
  set_exact_sign_pass(false);
  hwy::SetSupportedTargetsForTest(0);
  const int64_t N = 80, K = 1000, T = 10;
  RandomSigns a(N, K, true, rng), b(N, K, false, rng);
  auto x = random_vector(static_cast<size_t>(T * K), rng);
  std::vector<float> together(static_cast<size_t>(T * N), 0.0f);
  std::vector<float> other(static_cast<size_t>(3 * N), 0.0f);
  const SignMatmulJob jobs[] = {{x.data(), 3, &b.matrix, other.data()},
                                {x.data(), T, &a.matrix, together.data()}};
  sign_matmul_add_many(jobs, pool);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<float> alone(static_cast<size_t>(N), 0.0f);
    sign_matmul_add(x.data() + t * K, 1, a.matrix, alone.data(), pool);
    for (int64_t n = 0; n < N; ++n) ASSERT_EQ(alone[n], together[t * N + n]) << t << " " << n;
  }
}

// Prompts (jobs of 4 or more tokens) take their integer sums from AMX-INT8 tiles where the CPU
// has them: every output must be bitwise what the table pass gives, for every blocking (one and
// two row tiles, one and two token tiles, a partial last token tile), split across threads or
// not, and beside other jobs.
TEST_F(SignKernels, AmxTilesGiveTheTablePassBitForBit) {
  if (!amx::cpu_supported()) GTEST_SKIP() << "this CPU has no AMX-INT8 (or the OS refused it)";
  std::mt19937 rng(31);
  ThreadPool pool(2), one(1);
  for (auto [N, K] : std::vector<std::pair<int64_t, int64_t>>{
           {48, 1024}, {16, 512}, {35, 777}, {80, 3072}, {512, 1024}}) {
    for (int64_t T : {4, 16, 17, 33, 40}) {
      RandomSigns sm(N, K, T % 2 == 0, rng);
      auto x = random_vector(static_cast<size_t>(T * K), rng);
      auto y0 = random_vector(static_cast<size_t>(T * N), rng);
      ThreadPool& p = T % 3 ? pool : one;
      std::vector<float> tables = y0, tiles = y0;
      set_amx_tiles(false);
      sign_matmul_add(x.data(), T, sm.matrix, tables.data(), p);
      set_amx_tiles(true);
      sign_matmul_add(x.data(), T, sm.matrix, tiles.data(), p);
      for (int64_t i = 0; i < T * N; ++i) {
        ASSERT_EQ(tables[i], tiles[i])
            << "N=" << N << " K=" << K << " T=" << T << " token " << i / N << " row " << i % N;
      }
      // Beside a single-token job (tables) and another prompt, in one call.
      std::vector<float> single(static_cast<size_t>(N), 0.0f), other(static_cast<size_t>(5 * N));
      std::vector<float> together = y0;
      const SignMatmulJob jobs[] = {{x.data(), 1, &sm.matrix, single.data()},
                                    {x.data(), T, &sm.matrix, together.data()},
                                    {x.data(), 5, &sm.matrix, other.data()}};
      sign_matmul_add_many(jobs, pool);
      ASSERT_EQ(0, std::memcmp(together.data(), tables.data(), static_cast<size_t>(T * N) * 4))
          << "N=" << N << " K=" << K << " T=" << T << " beside other jobs";
    }
  }
}

// The fused linear (matmul, then sign_matmul_add) equals a plain matmul against the dense
// W + α ⊙ S, for decode-sized and prefill-sized token counts, every weight dtype and target.
TEST_F(SignKernels, FusedLinearEqualsDenseMergedWeights) {
  std::mt19937 rng(10);
  ThreadPool pool(2);
  // The base product with F32 activations, so that what is compared is the fused sum itself
  // (BF16 dot products would add the activations' rounding; matmul_test covers that path).
  set_f32_activations(true);
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
        matmul(x.data(), T, WeightMatrix{dtype, w_bytes.data(), N, K}, bias.data(), actual.data(),
               pool);
        sign_matmul_add(x.data(), T, s.matrix, actual.data(), pool);
        for (size_t i = 0; i < expected.size(); ++i) {
          ASSERT_NEAR(actual[i], expected[i], 2e-4 * std::sqrt(double(K)))
              << hwy::TargetName(target) << " " << dtype_name(dtype) << " T=" << T << " at " << i;
        }
      }
    }
  }
}

TEST_F(SignKernels, AddScaledSignsRowOnEveryTarget) {
  std::mt19937 rng(39);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (int64_t K : {1, 7, 8, 9, 31, 64, 100, 1023}) {
      RandomSigns s(3, K, true, rng);
      auto dst = random_vector(static_cast<size_t>(K), rng);
      std::vector<float> expected = dst;
      for (int64_t k = 0; k < K; ++k) expected[k] += s.matrix.plus(2, k) ? s.scales[2] : -s.scales[2];
      add_scaled_signs_row(s.matrix, 2, dst.data());
      ASSERT_EQ(dst, expected) << hwy::TargetName(target) << " K=" << K;
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
