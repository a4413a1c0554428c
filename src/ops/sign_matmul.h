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

// y[t, n] += scale_n · Σ_k s[n, k] · x[t, k] for t < T (x: [T, K], y: [T, N]): the serving
// path (decode, batched decode and prompts; on CPUs with AMX-INT8 a job of 4 or more tokens gets
// the tables' integer sums from AMX tiles instead, bitwise the same: ops/sign_matmul_amx.h). Whole
// 16-row tiles over whole vectors of bits go through lookup tables over int8-quantized activations
// (one scale per 128 activations, T-MAC style); the error of that part is at most scale_n ·
// sign_matmul_quantization_bound(x_t, K) for each output, well under the BF16 rounding of the base
// weights. What is left (odd shapes, the SCALAR target) is exact. The result for a token is bitwise
// independent of the other tokens and jobs and of the thread count (batch-invariant, like matmul),
// so prompts and generated tokens of every sequence take this pass alike. Highway SIMD with
// run-time dispatch; rows split across the pool's threads.
void sign_matmul_add(const float* x, int64_t tokens, const SignMatrix& s, float* y,
                     ThreadPool& pool);

// Makes sign_matmul_add(_many) use the exact float pass throughout (process-wide; default off):
// decode then matches the merged model within float tolerance at ~3× the cost of the 1-bit pass.
// `bitdelta generate/logits/serve --exact-deltas`.
void set_exact_sign_pass(bool exact);
bool exact_sign_pass();

// The same sum in float throughout (no activation quantization), for training-time uses such as
// the scale gradients of calibration.
void sign_matmul_add_exact(const float* x, int64_t tokens, const SignMatrix& s, float* y,
                           ThreadPool& pool);

// Σ over the complete 128-activation blocks of x[0, cols) of 128 · (max|x_block| / 127) / 2: a
// bound on |(S·x)_n − exact| for the table pass, before the row's scale.
double sign_matmul_quantization_bound(const float* x, int64_t cols);

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
