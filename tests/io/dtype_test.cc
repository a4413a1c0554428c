#include "io/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

namespace bitdelta {
namespace {

TEST(DType, NamesRoundTrip) {
  for (auto d : {DType::kF32, DType::kF16, DType::kBF16, DType::kU8, DType::kI8, DType::kI32,
                 DType::kI64, DType::kF64, DType::kBool}) {
    EXPECT_EQ(parse_dtype(dtype_name(d)), d);
  }
  EXPECT_FALSE(parse_dtype("F8_E5M2").has_value());
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (down).
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
  // 1 + 3*2^-8 is halfway too: ties to even (up).
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(-2.5f)), -2.5f);
}

// F16 conversion against the hardware-independent definition: every one of the 65536 half values
// converts to a float and back to itself (NaNs stay NaN).
TEST(DType, F16RoundTripsEveryValue) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    float f = f16_to_f32(static_cast<uint16_t>(bits));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
    } else {
      ASSERT_EQ(f32_to_f16(f), bits) << "half bits " << bits << " value " << f;
    }
  }
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), 5.960464477539063e-08f);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);  // overflow → inf
}

// Rounding of floats between half values: the nearest half is chosen (ties to even).
TEST(DType, F16RoundsToNearest) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-70000.f, 70000.f);
  for (int i = 0; i < 100000; ++i) {
    float x = dist(rng) * (i % 3 == 0 ? 1e-6f : 1.f);
    uint16_t h = f32_to_f16(x);
    float y = f16_to_f32(h);
    if (std::isinf(y)) {
      EXPECT_GE(std::fabs(x), 65504.f);
      continue;
    }
    float below = f16_to_f32(static_cast<uint16_t>(h - 1));
    float above = f16_to_f32(static_cast<uint16_t>(h + 1));
    if (!std::isnan(below)) {
      EXPECT_LE(std::fabs(x - y), std::fabs(x - below) + 1e-30f) << x;
    }
    if (!std::isinf(above) && !std::isnan(above)) {
      EXPECT_LE(std::fabs(x - y), std::fabs(x - above) + 1e-30f) << x;
    }
  }
}

}  // namespace
}  // namespace bitdelta
