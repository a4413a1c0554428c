// sign_matmul_add's AMX path for jobs of several tokens (internal to ops): on CPUs with AMX-INT8
// the table pass's integer sums come from TDPBSSD instead of byte shuffles. The table pass
// (ops/sign_matmul.cc) quantizes each token's activations to int8 per block of 128 and, per row,
// adds up the block's ±q exactly in integers, then folds the blocks into a float accumulator in
// order, acc = fma(qscale_block, sum_block, acc), and adds scale_row · acc to y. Here the signs
// are expanded to ±1 int8 (16 rows × 64 columns per tile), the same int8 activations are the
// right-hand tiles, and each block's sums (exact in int32) are folded into the accumulator by the
// same fused multiply-adds in the same order: every output is bitwise the table pass's, so a
// prompt's tokens, taking this path, get exactly what they would one by one (batch invariance).
#pragma once

#include <cstdint>

namespace bitdelta::amxint8 {

// Tokens per tile, activations per quantization block, and per tile step.
constexpr int64_t kTokens = 16;
constexpr int64_t kQuantBlock = 128;
constexpr int64_t kStep = 64;

// The prepared activations of T tokens over Kq columns (a multiple of kQuantBlock): the int8
// values as right-hand tiles, per block of 16 tokens and step of 64 columns a 16×64-byte tile
// whose row p holds columns 64s + 4p .. 64s + 4p + 3 of each token; then, per token block and
// quantization block, the 16 tokens' scales. Tokens past T are zero in both.
struct Prepared {
  uint32_t* tiles;  // tile_elements(T, Kq), 64-byte aligned
  float* scales;    // scale_elements(T, Kq), 64-byte aligned
};
inline int64_t token_blocks(int64_t T) { return (T + kTokens - 1) / kTokens; }
inline int64_t tile_elements(int64_t T, int64_t Kq) { return token_blocks(T) * Kq / 4 * kTokens; }
inline int64_t scale_elements(int64_t T, int64_t Kq) {
  return token_blocks(T) * (Kq / kQuantBlock) * kTokens;
}

// Zeroes the last token block's lanes past T (call once before writing the tokens).
void clear_tail(const Prepared& p, int64_t T, int64_t Kq);
// Writes token t (q: Kq int8 values, qscales: Kq / 128 scales) into its lanes.
void put_token(const Prepared& p, int64_t t, int64_t Kq, const int8_t* q, const float* qscales);

// y[t, n] += scale_n · Σ_blocks (fma fold of qscale · Σ_k s[n, k] q[t, k]) over the first Kq
// columns, for t < T and rows [n_begin, n_end) (both multiples of 16). bits: the sign matrix's
// rows (row_bytes each, LSB first, 1 = +1); y: [T, N]. Requires amx::cpu_supported() and AVX-512BW
// (every AMX CPU has it).
void sign_rows(const Prepared& p, int64_t T, int64_t Kq, const uint8_t* bits, int64_t row_bytes,
               int64_t N, const float* scales, bool per_row, int64_t n_begin, int64_t n_end,
               float* y);

}  // namespace bitdelta::amxint8
