// The 1-bit half of BitDelta's fused linear layer: y += α ⊙ (S·x), where S is a ±1 matrix
// stored as packed sign bits (1 bit per weight, 1/16 of a BF16 matrix's bytes).
//   T tokens, N = rows (out features), K = cols (in features)
#pragma once

#include <cstdint>
#include <span>

#include "util/thread_pool.h"

namespace bitdelta {

// Packed signs in the .bdelta layout: row-major [rows, ceil(cols / 8)] bytes; bit j (LSB first)
// of byte b in row n is the sign of element (n, 8b + j): 1 → +1, 0 → −1; padding bits are 0.
struct SignMatrix {
  const uint8_t* bits = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  const float* scales = nullptr;  // [rows] when per_row, else [1]
  bool per_row = false;

  int64_t row_bytes() const { return (cols + 7) / 8; }
  float scale(int64_t row) const { return per_row ? scales[row] : scales[0]; }
  bool plus(int64_t row, int64_t col) const {
    return (bits[row * row_bytes() + col / 8] >> (col % 8)) & 1;
  }
  uint64_t nbytes() const { return static_cast<uint64_t>(rows * row_bytes()); }
};

// y[t, n] += scale_n · Σ_k s[n, k] · x[t, k] for t < T (x: [T, K], y: [T, N]). Highway SIMD
// with run-time dispatch; rows split across the pool's threads. Meant for a few tokens per
// adapter (decode); prefill merges α·S into the base panel instead (see matmul_with_signs).
void sign_matmul_add(const float* x, int64_t tokens, const SignMatrix& s, float* y,
                     ThreadPool& pool);

// Several adapters' passes over the same layer shape at once (one per distinct adapter in a
// batch): one split of the rows across threads for all of them, instead of one per adapter.
struct SignMatmulJob {
  const float* x;  // [tokens, K]
  int64_t tokens;
  const SignMatrix* signs;
  float* y;        // [tokens, N], added to
};
void sign_matmul_add_many(std::span<const SignMatmulJob> jobs, ThreadPool& pool);

// Scalar reference (double accumulation), for tests.
void sign_matmul_add_reference(const float* x, int64_t tokens, const SignMatrix& s, float* y);

// dst[k] += scale_row · s[row, k] for k < cols: one row of α·S, dense.
void add_scaled_signs_row(const SignMatrix& s, int64_t row, float* dst);

}  // namespace bitdelta
