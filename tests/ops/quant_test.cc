// Q8_0 / Q4_0 base weights: the quantizers against hand-worked blocks in llama.cpp's definition,
// the error bound of a round trip, and the quantized matmul on every SIMD target against the
// scalar reference (dequantized rows, double sums) and for batch invariance.
#include "ops/quant.h"

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "ops/matmul.h"
#include "ops/quant_vnni.h"

namespace bitdelta {
namespace {

struct Quantized {
  std::vector<uint16_t> scales;
  std::vector<uint8_t> codes;
  WeightMatrix matrix(Quant q, int64_t rows, int64_t cols) const {
    WeightMatrix m{DType::kF32, codes.data(), rows, cols};
    m.quant = q;
    m.scales = scales.data();
    return m;
  }
};

Quantized quantize(Quant q, const std::vector<float>& w, int64_t rows, int64_t cols) {
  ThreadPool pool(2);
  Quantized out;
  out.scales.resize(static_cast<size_t>(rows * quant_blocks(cols)));
  out.codes.resize(static_cast<size_t>(quant_code_bytes_total(q, rows, cols)));
  quantize_matrix(q, DType::kF32, reinterpret_cast<const uint8_t*>(w.data()), rows, cols,
                  out.scales.data(), out.codes.data(), pool);
  return out;
}

TEST(Quant, Q8_0BlockAsLlamaCppDefinesIt) {
  std::vector<float> w(32, 0.f);
  w[0] = 2.54f;   // the largest magnitude: d = 2.54 / 127 = 0.02
  w[1] = -1.0f;   // −1 / 0.02 = −50
  w[2] = 0.01f;   // 0.5 rounds away from zero: 1
  w[3] = -0.03f;  // −1.5 → −2
  const Quantized qz = quantize(Quant::kQ8_0, w, 1, 32);
  EXPECT_EQ(qz.scales[0], f32_to_f16(2.54f / 127.0f));
  EXPECT_EQ(static_cast<int8_t>(qz.codes[0]), 127);
  EXPECT_EQ(static_cast<int8_t>(qz.codes[1]), -50);
  EXPECT_EQ(static_cast<int8_t>(qz.codes[2]), 1);
  EXPECT_EQ(static_cast<int8_t>(qz.codes[3]), -2);
  EXPECT_EQ(static_cast<int8_t>(qz.codes[4]), 0);
}

TEST(Quant, Q4_0BlockAsLlamaCppDefinesIt) {
  std::vector<float> w(32, 0.f);
  w[0] = -8.0f;   // the largest magnitude, negative: d = −8 / −8 = 1, code 0
  w[1] = 7.0f;    // 7 + 8.5 = 15.5 → 15
  w[16] = 3.2f;   // 11.7 → 11, stored in the high nibble of byte 0
  w[17] = -2.6f;  // 5.9 → 5
  const Quantized qz = quantize(Quant::kQ4_0, w, 1, 32);
  EXPECT_EQ(f16_to_f32(qz.scales[0]), 1.0f);
  EXPECT_EQ(qz.codes[0], 0 | (11 << 4));
  EXPECT_EQ(qz.codes[1], 15 | (5 << 4));
  EXPECT_EQ(qz.codes[2], 8 | (8 << 4));  // zeros are code 8
  std::vector<float> back(32);
  dequantize_row(Quant::kQ4_0, qz.scales.data(), qz.codes.data(), 1, 0, 32, back.data());
  EXPECT_EQ(back[0], -8.0f);
  EXPECT_EQ(back[1], 7.0f);
  EXPECT_EQ(back[16], 3.0f);
  EXPECT_EQ(back[17], -3.0f);
  EXPECT_EQ(back[5], 0.0f);
}

// Round trip within half a step of each block (Q4_0: one step), plus the F16 rounding of the scale.
TEST(Quant, RoundTripWithinHalfAStep) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.f, 1.f);
  const int64_t rows = 5, cols = 70;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = dist(rng);
  for (Quant q : {Quant::kQ8_0, Quant::kQ4_0}) {
    const Quantized qz = quantize(q, w, rows, cols);
    std::vector<float> back(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row(q, qz.scales.data(), qz.codes.data(), rows, r, cols, back.data());
      for (int64_t k = 0; k < cols; ++k) {
        const int64_t b = k / kQuantBlock;
        float amax = 0;
        for (int64_t i = b * kQuantBlock; i < std::min(cols, (b + 1) * kQuantBlock); ++i) {
          amax = std::max(amax, std::fabs(w[r * cols + i]));
        }
        // Half a step (Q4_0: a whole one, its codes reach −8 steps but only +7 on the other
        // side), plus |q| ≤ qmax steps times the F16 rounding of the scale (2^-11).
        const float qmax = q == Quant::kQ8_0 ? 127 : 8;
        const float step = amax / qmax;
        const float rounding = q == Quant::kQ8_0 ? 0.5f : 1.0f;
        ASSERT_LE(std::fabs(back[k] - w[r * cols + k]), step * (rounding + qmax / 2048) + 1e-6f)
            << quant_name(q) << " row " << r << " col " << k;
      }
    }
    // 70 columns: 3 blocks, padded to 2 steps of two.
    EXPECT_EQ(quant_matrix_bytes(q, rows, cols),
              static_cast<uint64_t>(rows * (3 * 2 + 4 * quant_code_bytes(q))));
  }
  EXPECT_EQ(parse_quant("Q8_0"), Quant::kQ8_0);
  EXPECT_EQ(parse_quant("q4_0"), Quant::kQ4_0);
  EXPECT_FALSE(parse_quant("q5_k").has_value());
}

class QuantAllTargets : public ::testing::Test {
 protected:
  void TearDown() override {
    hwy::SetSupportedTargetsForTest(0);
    set_f32_activations(false);
  }
};

// x as the integer path sees it: per block of 32, d = max|x| / 127 and x ≈ d · round(x / d).
std::vector<float> int8_activations(const std::vector<float>& x, int64_t T, int64_t K) {
  std::vector<float> out(x.size());
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < K; b += kQuantBlock) {
      const int64_t e = std::min(K, b + kQuantBlock);
      float amax = 0;
      for (int64_t k = b; k < e; ++k) amax = std::max(amax, std::fabs(x[t * K + k]));
      const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
      for (int64_t k = b; k < e; ++k) out[t * K + k] = d * std::nearbyint(x[t * K + k] * id);
    }
  }
  return out;
}

TEST_F(QuantAllTargets, MatmulMatchesReferenceAndIsBatchInvariant) {
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.f, 1.f);
  ThreadPool pool(2), one(1);
  // Both paths where the CPU has the integer one; it does not depend on Highway's target.
  set_f32_activations(false);
  const bool has_int8 = int8_quantized_products();
  for (bool f32 : has_int8 ? std::vector<bool>{false, true} : std::vector<bool>{true}) {
    set_f32_activations(f32);
    const bool int8 = int8_quantized_products();
    for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
      hwy::SetSupportedTargetsForTest(target);
      for (Quant q : {Quant::kQ8_0, Quant::kQ4_0}) {
        for (auto [N, K] :
             std::vector<std::pair<int64_t, int64_t>>{{7, 32}, {37, 71}, {64, 172}, {300, 1024}}) {
          std::vector<float> w(static_cast<size_t>(N * K));
          for (auto& v : w) v = dist(rng);
          const Quantized qz = quantize(q, w, N, K);
          const WeightMatrix m = qz.matrix(q, N, K);
          std::vector<float> bias(static_cast<size_t>(N));
          for (auto& b : bias) b = dist(rng);
          const int64_t T = 11;
          std::vector<float> x(static_cast<size_t>(T * K));
          for (auto& v : x) v = dist(rng);
          std::vector<float> expected(static_cast<size_t>(T * N)), all(expected.size());
          const std::vector<float> xr = int8 ? int8_activations(x, T, K) : x;
          matmul_reference(xr.data(), T, m, bias.data(), expected.data());
          matmul(x.data(), T, m, bias.data(), all.data(), pool);
          for (size_t i = 0; i < expected.size(); ++i) {
            ASSERT_NEAR(all[i], expected[i], 1e-4 * std::sqrt(double(K)) + 1e-5)
                << hwy::TargetName(target) << " " << quant_name(q) << " N=" << N << " K=" << K
                << (int8 ? " (int8 activations)" : "");
          }
          for (int64_t count : {1, 2, 3, 4, 5}) {
            for (int64_t first : {int64_t{0}, T - count}) {
              std::vector<float> y(static_cast<size_t>(count * N));
              matmul(x.data() + first * K, count, m, bias.data(), y.data(), count % 2 ? one : pool);
              ASSERT_EQ(0, std::memcmp(y.data(), all.data() + first * N, y.size() * 4))
                  << hwy::TargetName(target) << " " << quant_name(q) << " N=" << N << " K=" << K
                  << " tokens " << first << ".." << first + count;
            }
          }
        }
      }
    }
  }
}

// The vectorized activation quantizer against its one-code-at-a-time definition, bit for bit,
// for row lengths with whole steps, an odd block and a partial block, and values with ties.
TEST(Quant, Int8ActivationsMatchTheReferenceBitForBit) {
  if (!qvnni::cpu_supported()) GTEST_SKIP() << "no AVX512_VNNI here";
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.f, 3.f);
  for (Quant q : {Quant::kQ8_0, Quant::kQ4_0}) {
    for (int64_t K : {32, 64, 71, 96, 172, 1024, 3072}) {
      const int64_t T = 3;
      std::vector<float> x(static_cast<size_t>(T * K));
      for (size_t i = 0; i < x.size(); ++i) {
        // Every fifth value a multiple of half a step of its block (round-half-even ties).
        x[i] = i % 5 == 0 ? 0.5f * static_cast<float>(static_cast<int>(dist(rng) * 4)) : dist(rng);
      }
      x[0] = 0;  // a block may hold zeros only: d = 0
      for (int64_t k = 0; k < std::min<int64_t>(K, 32); ++k) x[static_cast<size_t>(k)] = 0;
      qvnni::Activations fast, reference;
      qvnni::prepare(q, x.data(), T, K, fast);
      qvnni::prepare_reference(q, x.data(), T, K, reference);
      EXPECT_EQ(fast.steps, reference.steps);
      EXPECT_EQ(fast.codes, reference.codes) << quant_name(q) << " K=" << K;
      EXPECT_EQ(fast.starts, reference.starts) << quant_name(q) << " K=" << K;
      ASSERT_EQ(fast.scales.size(), reference.scales.size());
      EXPECT_EQ(0, std::memcmp(fast.scales.data(), reference.scales.data(),
                               fast.scales.size() * sizeof(float)))
          << quant_name(q) << " K=" << K;
    }
  }
}

}  // namespace
}  // namespace bitdelta
