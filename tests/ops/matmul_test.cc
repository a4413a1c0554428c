// Every compiled SIMD target of matmul() against the scalar reference, on shapes that are not
// multiples of the vector width, for every weight dtype and token count (decode and prefill).
#include "ops/matmul.h"

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "ops/amx_tiles.h"
#include "ops/matmul_amx.h"
#include "ops/matmul_bf16dot.h"

namespace bitdelta {
namespace {

std::vector<uint8_t> random_weights(DType dtype, int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> f(static_cast<size_t>(n));
  for (auto& v : f) v = dist(rng);
  std::vector<uint8_t> out(static_cast<size_t>(n) * dtype_size(dtype));
  convert_from_f32(dtype, f.data(), out.data(), f.size());
  return out;
}

class MatmulAllTargets : public ::testing::Test {
 protected:
  void TearDown() override {
    hwy::SetSupportedTargetsForTest(0);
    set_f32_activations(false);
    set_amx_tiles(true);
  }
};

// The activation modes this CPU runs: F32 activations always; BF16 dot products where the CPU
// has AVX512_BF16 (then BF16 weights take them by default), on VDPBF16PS and, where the CPU has
// AMX-BF16, on AMX tiles.
struct Mode {
  bool f32 = true;
  bool amx = false;
  void set() const {
    set_f32_activations(f32);
    set_amx_tiles(amx);
  }
  const char* name() const {
    return f32 ? " (F32 activations)" : amx ? " (AMX tiles)" : " (BF16 dot products)";
  }
};
std::vector<Mode> activation_modes() {
  set_f32_activations(false);
  set_amx_tiles(true);
  std::vector<Mode> modes{{true, false}};
  if (bf16_dot_products()) modes.push_back({false, false});
  if (amx_tile_products()) modes.push_back({false, true});
  std::string names;
  for (const Mode& m : modes) names += m.name();
  std::printf("activation modes tested:%s\n", names.c_str());
  return modes;
}

// x rounded to BF16, to nearest even (as VCVTNEPS2BF16 does for normal numbers).
float round_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
  std::memcpy(&x, &bits, 4);
  return x;
}

// Batch invariance: each token's outputs are bitwise the same computed alone (decode), among a
// few tokens (batched decode) or many (prefill), at any position, on 1 or 2 threads — on every
// target and weight dtype. The transformer's batch invariance rests on this.
TEST_F(MatmulAllTargets, EachTokensOutputIsIndependentOfTheBatch) {
  std::mt19937 rng(7);
  ThreadPool pool(2), one(1);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (const Mode& mode : activation_modes()) {
    mode.set();
    for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
      hwy::SetSupportedTargetsForTest(target);
      for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
        // (256 × 1024 is wide enough that the pool splits its rows between two threads.)
        for (auto [N, K] : std::vector<std::pair<int64_t, int64_t>>{
                 {37, 71}, {64, 512}, {21, 1030}, {256, 1024}}) {
          auto w = random_weights(dtype, N * K, rng);
          const WeightMatrix m{dtype, w.data(), N, K};
          std::vector<float> bias(static_cast<size_t>(N));
          for (auto& b : bias) b = dist(rng);
          const int64_t T = 53;  // several token tiles and a ragged end
          std::vector<float> x(static_cast<size_t>(T * K));
          for (auto& v : x) v = dist(rng);
          std::vector<float> ref(static_cast<size_t>(T * N));
          for (int64_t t = 0; t < T; ++t) {
            matmul(x.data() + t * K, 1, m, bias.data(), ref.data() + t * N, t % 2 ? one : pool);
          }
          for (int64_t count : {2, 3, 4, 5, 7, 24, 25, 53}) {
            for (int64_t first : {int64_t{0}, T - count}) {
              std::vector<float> y(static_cast<size_t>(count * N));
              matmul(x.data() + first * K, count, m, bias.data(), y.data(), count % 2 ? one : pool);
              ASSERT_EQ(0, std::memcmp(y.data(), ref.data() + first * N, y.size() * 4))
                  << hwy::TargetName(target) << " " << dtype_name(dtype) << " N=" << N << " K=" << K
                  << " tokens " << first << ".." << first + count << mode.name();
            }
          }
        }
      }
    }
  }
}

TEST_F(MatmulAllTargets, MatchesScalarReferenceOnOddShapes) {
  std::mt19937 rng(42);
  ThreadPool pool(2);
  std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  ASSERT_FALSE(targets.empty());
  std::string names;
  for (int64_t t : targets) names += std::string(hwy::TargetName(t)) + " ";
  RecordProperty("targets", names);
  std::printf("targets tested: %s\n", names.c_str());
  struct Shape {
    int64_t tokens, rows, cols;
  };
  const Shape shapes[] = {{1, 1, 1},  {1, 7, 13},   {2, 33, 65},  {3, 17, 100}, {4, 9, 31},
                          {5, 64, 64}, {7, 130, 17}, {16, 40, 129}, {1, 300, 257}, {30, 50, 70}, {24, 33, 40}};
  for (const Mode& mode : activation_modes()) {
    mode.set();
    for (int64_t target : targets) {
      hwy::SetSupportedTargetsForTest(target);
      for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
        const bool rounded = dtype == DType::kBF16 && bf16_dot_products();
        for (const auto& s : shapes) {
          auto w_bytes = random_weights(dtype, s.rows * s.cols + 1, rng);
          // Offset by one element so the weights are deliberately misaligned.
          WeightMatrix w{dtype, w_bytes.data() + dtype_size(dtype), s.rows, s.cols};
          std::normal_distribution<float> dist(0.f, 1.f);
          std::vector<float> x(static_cast<size_t>(s.tokens * s.cols));
          for (auto& v : x) v = dist(rng);
          std::vector<float> bias(static_cast<size_t>(s.rows));
          for (auto& v : bias) v = dist(rng);
          std::vector<float> expected(static_cast<size_t>(s.tokens * s.rows));
          std::vector<float> actual(expected.size(), NAN);
          // On the BF16 dot path the reference multiplies the same BF16-rounded activations.
          std::vector<float> xr = x;
          if (rounded) {
            for (auto& v : xr) v = round_bf16(v);
          }
          matmul_reference(xr.data(), s.tokens, w, bias.data(), expected.data());
          matmul(x.data(), s.tokens, w, bias.data(), actual.data(), pool);
          for (size_t i = 0; i < expected.size(); ++i) {
            ASSERT_NEAR(actual[i], expected[i], 1e-4 * std::sqrt(double(s.cols)) + 1e-5)
                << hwy::TargetName(target) << " " << dtype_name(dtype) << " T=" << s.tokens
                << " N=" << s.rows << " K=" << s.cols << " at " << i << mode.name();
          }
        }
      }
    }
  }
}

// The BF16 dot path really rounds the activations (and so differs from F32 activations by about
// their rounding), while the F32 path does not: a check that the mode switch works.
TEST_F(MatmulAllTargets, Bf16DotProductsRoundTheActivations) {
  set_f32_activations(false);
  if (!bf16_dot_products()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  ThreadPool pool(1);
  std::vector<uint16_t> w(64, 0x3f80);  // 1.0 in BF16: y = Σ x
  const WeightMatrix m{DType::kBF16, reinterpret_cast<const uint8_t*>(w.data()), 1, 64};
  std::vector<float> x(64, 0.f);
  x[0] = 1.0f + 1.0f / 1024;  // not a BF16 value: rounds to 1.0
  float y = 0;
  matmul(x.data(), 1, m, nullptr, &y, pool);
  EXPECT_EQ(y, 1.0f);
  set_f32_activations(true);
  matmul(x.data(), 1, m, nullptr, &y, pool);
  EXPECT_EQ(y, x[0]);
}

// The AMX kernel against the exact sum of the same BF16 products, on ragged shapes (partial
// weight tiles and k steps), 1 to 40 tokens: within 4·2^-24 of Σ|products| (the hardware measures
// under 1·2^-24; an F32 accumulator rounding each sum, as VDPBF16PS does, measures up to ~1.5),
// so a lost or doubled k step, a misplaced token or row, or a pair read the wrong way round fails.
TEST_F(MatmulAllTargets, AmxTilesMatchTheExactSum) {
  if (!amx::cpu_supported()) GTEST_SKIP() << "this CPU has no AMX-BF16 (or the OS refused it)";
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.f, 1.f);
  struct Shape {
    int64_t tokens, rows, cols;
  };
  for (const Shape& s : {Shape{1, 16, 32}, Shape{1, 50, 64}, Shape{3, 17, 100}, Shape{16, 48, 96},
                         Shape{17, 33, 70}, Shape{40, 80, 1024}}) {
    auto w_bytes = random_weights(DType::kBF16, s.rows * s.cols, rng);
    const auto* w = reinterpret_cast<const uint16_t*>(w_bytes.data());
    std::vector<float> x(static_cast<size_t>(s.tokens * s.cols));
    for (auto& v : x) v = dist(rng);
    const int64_t xs = bf16dot::padded(s.cols);
    std::vector<uint16_t> xb(static_cast<size_t>(s.tokens * xs));
    bf16dot::round_activations(x.data(), s.tokens, s.cols, xb.data());
    std::vector<uint32_t> xv(static_cast<size_t>(amxbf16::prepared_size(s.tokens, s.cols)));
    amxbf16::prepare(xb.data(), s.tokens, s.cols, xv.data());
    std::vector<float> expected(static_cast<size_t>(s.tokens * s.rows)), actual(expected.size());
    amxbf16::rows_reference(xb.data(), s.tokens, w, s.rows, s.cols, expected.data());
    amxbf16::rows(xv.data(), s.tokens, w, s.rows, s.cols, 0, s.rows, actual.data());
    for (int64_t t = 0; t < s.tokens; ++t) {
      for (int64_t n = 0; n < s.rows; ++n) {
        double magnitude = 0;
        for (int64_t k = 0; k < s.cols; ++k) {
          magnitude +=
              std::fabs(double(bf16_to_f32(xb[t * xs + k])) * bf16_to_f32(w[n * s.cols + k]));
        }
        const size_t i = static_cast<size_t>(t * s.rows + n);
        ASSERT_LE(std::fabs(double(actual[i]) - expected[i]), 4.0 * magnitude / (1 << 24) + 1e-30)
            << "T=" << s.tokens << " N=" << s.rows << " K=" << s.cols << " token " << t << " row "
            << n << ": " << actual[i] << " against " << expected[i];
      }
    }
  }
}

TEST(Matmul, NoBiasAndSingleThread) {
  ThreadPool pool(1);
  std::vector<float> w = {1, 2, 3, 4, 5, 6};  // [2, 3]
  std::vector<float> x = {1, 0, -1, 0.5f, 0.5f, 0.5f};  // [2, 3]
  std::vector<float> y(4);
  matmul(x.data(), 2, WeightMatrix{DType::kF32, reinterpret_cast<uint8_t*>(w.data()), 2, 3},
         nullptr, y.data(), pool);
  EXPECT_EQ(y, (std::vector<float>{-2, -2, 3, 7.5f}));
}

}  // namespace
}  // namespace bitdelta
