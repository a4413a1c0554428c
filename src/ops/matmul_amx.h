// matmul()'s AMX path for BF16 weights (internal to ops): on CPUs with AMX-BF16 (Intel Xeon since
// Sapphire Rapids) every product of BF16 weights with BF16-rounded activations runs on TDPBF16PS,
// which multiplies a 16×32 BF16 tile by a 32×16 one into a 16×16 F32 tile: 8192 multiply-adds per
// instruction against VDPBF16PS's 32. The weights stay as they are in the checkpoint (row-major
// [N, K], mmapped): they are the tile multiplication's left operand, 16 rows × 32 columns per
// tile, and the activations are the right one, re-laid out once per call into AMX's pair-
// interleaved form (see prepare). So the output tiles are transposed, [weight rows × tokens].
//
// Every output is accumulated in one tile element over k in steps of 32, in order, by the same
// instruction whatever the token count, the token's place among them, or the row range: bitwise
// batch-invariant, decode (one token) included, which is why one token takes this path too.
#pragma once

#include <cstdint>

namespace bitdelta::amxbf16 {

// Tokens per tile (the right operand's columns) and K per tile step.
constexpr int64_t kTokens = 16;
constexpr int64_t kStep = 32;

// uint32 elements of the prepared activations for T tokens of width K.
inline int64_t prepared_size(int64_t T, int64_t K) {
  return (T + kTokens - 1) / kTokens * ((K + kStep - 1) / kStep) * kStep / 2 * kTokens;
}

// The BF16 activations (xb: [T, padded(K)] from bf16dot::round_activations, padded to whole
// steps of 32) re-laid out as right-hand tiles: for token block b (16 tokens) and step s, a 16×16
// block of uint32 whose row p holds, for each token t of the block, its BF16 pair (k = 32s + 2p,
// 32s + 2p + 1). Tokens past T are zero. `out`: prepared_size(T, K) elements, 64-byte aligned.
void prepare(const uint16_t* xb, int64_t T, int64_t K, uint32_t* out);

// y[t, n] = Σ_k x[t, k] · w[n, k] for t < T, n in [n_begin, n_end) (xv from prepare; w: [N, K]
// BF16; y: [T, N]). n_begin must be a multiple of 16. Requires amx::cpu_supported()
// (ops/amx_tiles.h).
void rows(const uint32_t* xv, int64_t T, const uint16_t* w, int64_t N, int64_t K, int64_t n_begin,
          int64_t n_end, float* y);

// The same in exact arithmetic: each output the double-precision sum of the BF16 products (exact
// in F32 each), rounded once to F32. Scalar, for tests; xb as for prepare. Not bit-for-bit the
// hardware: the SDM describes TDPBF16PS as one F32 accumulator adding the pairs' products in
// order, rounding each sum, but the Sapphire Rapids silicon measurably sums more precisely than
// that (its results differ from that description in ~85% of outputs, and lie within 2^-24 of the
// exact sum relative to Σ|products|). So the test bounds the error against this exact sum;
// bitwise batch invariance is tested on its own.
void rows_reference(const uint16_t* xb, int64_t T, const uint16_t* w, int64_t N, int64_t K,
                    float* y);

}  // namespace bitdelta::amxbf16
