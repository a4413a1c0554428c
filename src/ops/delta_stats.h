// The inner loop of BitDelta compression, for one row: Δ = finetuned − base, its sign bits, and
// the sums the scales and error statistics need.
#pragma once

#include <cstdint>

#include "io/dtype.h"

namespace bitdelta {

struct RowDeltaStats {
  double abs_sum = 0;  // Σ |Δ|
  double sq_sum = 0;   // Σ Δ²
  int64_t plus = 0;    // #{Δ > 0}
};

// Writes ceil(n / 8) bytes of sign bits (bit j of byte b ⇔ Δ[8b + j] > 0, padding bits 0) and
// returns the sums. `base` and `finetuned` hold n elements of their dtypes (F32/F16/BF16, any
// alignment). Highway SIMD with run-time dispatch.
RowDeltaStats delta_signs_row(const void* base, DType base_dtype, const void* finetuned,
                              DType finetuned_dtype, int64_t n, uint8_t* bits);

// Scalar reference, for tests.
RowDeltaStats delta_signs_row_reference(const void* base, DType base_dtype, const void* finetuned,
                                        DType finetuned_dtype, int64_t n, uint8_t* bits);

}  // namespace bitdelta
