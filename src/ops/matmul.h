// Linear layers: y = x · Wᵀ (+ bias), x in F32, W in the Hugging Face [out, in] layout with F32,
// F16 or BF16 elements read in place from the mapped checkpoint (any alignment).
//   T tokens, N = w.rows (out features), K = w.cols (in features)
#pragma once

#include <cstdint>

#include "io/dtype.h"
#include "ops/sign_matmul.h"
#include "util/thread_pool.h"

namespace bitdelta {

// Up to this many tokens matmul() reads the weights row by row (memory-bound: decode and
// batched decode); beyond it, it widens them into panels for a compute-bound GEMM, whose packing
// cost only pays off over many tokens.
inline constexpr int64_t kMatmulMaxRowDotTokens = 24;

struct WeightMatrix {
  DType dtype = DType::kF32;
  const uint8_t* data = nullptr;  // rows × cols elements, row-major
  int64_t rows = 0;
  int64_t cols = 0;
  uint64_t nbytes() const { return static_cast<uint64_t>(rows * cols) * dtype_size(dtype); }
};

// y[t, n] = Σ_k x[t, k] · W[n, k] + bias[n]   (x: [T, K], y: [T, N], bias: [N] or null).
// SIMD through Highway (best target chosen at run time), rows split across the pool's threads.
void matmul(const float* x, int64_t tokens, const WeightMatrix& w, const float* bias, float* y,
            ThreadPool& pool);

// The fused BitDelta linear: y = x · (W + α ⊙ S)ᵀ + bias, without ever forming W + α ⊙ S.
// Up to 24 tokens: the base product, then one pass over the sign bits (sign_matmul_add). More
// tokens: α ⊙ S is added to each panel of W while it is widened for the GEMM, so the adapter
// costs no extra multiply-adds. `signs` may be null (plain matmul).
void matmul_with_signs(const float* x, int64_t tokens, const WeightMatrix& w, const float* bias,
                       const SignMatrix* signs, float* y, ThreadPool& pool);

// Plain scalar reference of the same (double accumulation), for tests.
void matmul_reference(const float* x, int64_t tokens, const WeightMatrix& w, const float* bias,
                      float* y);

}  // namespace bitdelta
