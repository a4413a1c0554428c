// Linear layers: y = x · Wᵀ (+ bias), x in F32, W in the Hugging Face [out, in] layout with F32,
// F16 or BF16 elements read in place from the mapped checkpoint (any alignment).
//   T tokens, N = w.rows (out features), K = w.cols (in features)
#pragma once

#include <cstdint>
#include <span>

#include "io/dtype.h"
#include "ops/quant.h"
#include "ops/sign_matmul.h"
#include "util/thread_pool.h"

namespace bitdelta {

struct WeightMatrix {
  DType dtype = DType::kF32;
  const uint8_t* data = nullptr;  // rows × cols elements, row-major (quantized: the codes)
  int64_t rows = 0;
  int64_t cols = 0;
  // A quantized matrix (ops/quant.h): `data` holds the codes, `scales` the F16 block scales, and
  // `dtype` is that of the weights it was quantized from.
  Quant quant = Quant::kNone;
  const uint16_t* scales = nullptr;
  uint64_t nbytes() const {
    if (quant != Quant::kNone) return quant_matrix_bytes(quant, rows, cols);
    return static_cast<uint64_t>(rows * cols) * dtype_size(dtype);
  }
};

// y[t, n] = Σ_k x[t, k] · W[n, k] + bias[n]   (x: [T, K], y: [T, N], bias: [N] or null).
// SIMD through Highway (best target chosen at run time), rows split across the pool's threads.
// Batch-invariant: y[t, n] is bitwise the same for any T, any place of token t in x, and any
// number of threads (each output is one dot product summed in a fixed order), so a sequence's
// numerics never depend on the other sequences it is batched with or on how its prompt is chunked.
void matmul(const float* x, int64_t tokens, const WeightMatrix& w, const float* bias, float* y,
            ThreadPool& pool);

// Several matrices of the same width and format applied to the same x (a layer's q, k and v, or
// its gate and up): the activations are prepared once and every matrix's rows are split across
// the threads in one loop. Each y is bitwise what matmul() gives it alone.
struct MatmulTarget {
  const WeightMatrix* w = nullptr;
  const float* bias = nullptr;  // [w->rows] or null
  float* y = nullptr;           // [T, w->rows]
};
void matmul_many(const float* x, int64_t tokens, std::span<const MatmulTarget> targets,
                 ThreadPool& pool);

// Products with BF16 weights, on CPUs with AVX512_BF16 (the default there): the activations are
// rounded to BF16 once per call (to nearest even) and multiplied on VDPBF16PS, as llama.cpp does
// for BF16 models — about 2x the prefill throughput of widening the weights to F32. Each term
// x_k · w_k then carries the rounding of x_k, a relative error of at most 2^-9; sums stay F32.
// Batch invariance holds on either path (every kernel of a path sums an output the same way).
// set_f32_activations(true) keeps the activations in F32 for every dtype (process-wide;
// `--f32-activations` on the commands that run a model). Elsewhere BF16 weights always take the
// F32 path.
void set_f32_activations(bool f32);
// Whether BF16 weights currently take the BF16 dot-product path.
bool bf16_dot_products();
// On CPUs with AMX-BF16 the BF16 dot products run on AMX tiles (ops/matmul_amx.h: TDPBF16PS, 16×
// the multiply-adds per instruction of VDPBF16PS; the default there), for every token count alike.
// The two kernels sum in different orders, so results differ between them by float rounding;
// either one alone is batch-invariant. set_amx_tiles(false) keeps VDPBF16PS, and the sign pass's
// prompts on its lookup tables (process-wide; `--no-amx` on the commands that run a model).
void set_amx_tiles(bool use);
// Whether BF16 weights currently take the AMX path.
bool amx_tile_products();
// Whether the CPU has AMX and set_amx_tiles(false) has not turned it off: the sign pass's prompts
// (ops/sign_matmul.h) use AMX-INT8 tiles then, with results bitwise those of its table pass.
bool amx_tiles_enabled();
// Whether quantized weights (ops/quant.h) currently take the integer path, on CPUs with
// AVX512_VNNI unless set_f32_activations(true): the activations quantized per block of 32 to
// int8 (Q8_0, d = max|x| / 127, rounded to nearest even), exact integer sums per block. Else the
// weights are widened to F32 and meet F32 activations.
bool int8_quantized_products();

// Plain scalar reference of the same (double accumulation), for tests.
void matmul_reference(const float* x, int64_t tokens, const WeightMatrix& w, const float* bias,
                      float* y);

}  // namespace bitdelta
