// Quantized base weights in llama.cpp's block formats (docs/quantized-bases.md):
//   Q8_0: blocks of 32 weights, w = d · q with q an int8 in [-127, 127] and d an F16 scale
//         (8.5 bits per weight);
//   Q4_0: blocks of 32 weights, w = d · (q − 8) with q a 4-bit code in [0, 15] and d an F16
//         scale (4.5 bits per weight); weight j < 16 of a block is the low nibble of its byte j,
//         weight j + 16 the high nibble (llama.cpp's order).
// The blocks and scales are llama.cpp's; in memory a matrix keeps its scales apart from its codes
// ([rows, blocks] F16 scales), so a row's scales widen to F32 sixteen at a time, and its codes are
// interleaved by groups of four rows, like llama.cpp's repacked CPU layouts: a row's blocks go in
// steps of two (64 bytes of Q8_0 codes, 32 of Q4_0), and a group stores step 0 of its four rows,
// then step 1 of each, and so on, so a kernel reading four rows at once reads one sequential
// stream. A row whose blocks do not fill its last step (an odd number of blocks) is padded with
// zero codes, and a row whose length is not a multiple of 32 ends in a block of zero weights.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "io/dtype.h"
#include "util/thread_pool.h"

namespace bitdelta {

enum class Quant : uint8_t { kNone, kQ8_0, kQ4_0 };

constexpr int64_t kQuantBlock = 32;

std::string_view quant_name(Quant q);                     // "none", "q8_0", "q4_0"
std::optional<Quant> parse_quant(std::string_view name);  // case-insensitive

inline int64_t quant_blocks(int64_t cols) { return (cols + kQuantBlock - 1) / kQuantBlock; }
// Bytes of codes per block: 32 for Q8_0, 16 for Q4_0; a step is two blocks.
int64_t quant_code_bytes(Quant q);
inline int64_t quant_steps(int64_t cols) { return (quant_blocks(cols) + 1) / 2; }
constexpr int64_t kQuantRowGroup = 4;
// Byte offset, in a [rows, cols] matrix's codes, of row r's step j (its blocks 2j and 2j + 1).
inline int64_t quant_step_offset(Quant q, int64_t rows, int64_t cols, int64_t r, int64_t j) {
  const int64_t step = 2 * quant_code_bytes(q), steps = quant_steps(cols);
  const int64_t group = r / kQuantRowGroup, first = group * kQuantRowGroup;
  const int64_t in_group = rows - first < kQuantRowGroup ? rows - first : kQuantRowGroup;
  return first * steps * step + j * in_group * step + (r - first) * step;
}
// Bytes of the codes and of the whole [rows, cols] matrix in `q` (scales plus codes).
uint64_t quant_code_bytes_total(Quant q, int64_t rows, int64_t cols);
uint64_t quant_matrix_bytes(Quant q, int64_t rows, int64_t cols);

// Quantizes rows [0, rows) of a [rows, cols] F32/F16/BF16 matrix (any alignment) into scales
// ([rows, blocks]) and codes (quant_code_bytes_total, the layout above), as llama.cpp's reference
// quantizers do: Q8_0 d = max|w| / 127, q = round(w / d); Q4_0 d = (the w of largest magnitude) /
// −8, q = min(15, trunc(w / d + 8.5)). Rows split across the pool's threads.
void quantize_matrix(Quant q, DType src_dtype, const uint8_t* src, int64_t rows, int64_t cols,
                     uint16_t* scales, uint8_t* codes, ThreadPool& pool);

// Row `row` of a quantized [rows, cols] matrix, back to F32 (cols values).
void dequantize_row(Quant q, const uint16_t* scales, const uint8_t* codes, int64_t rows,
                    int64_t row, int64_t cols, float* out);

namespace detail {
// matmul()'s kernel for quantized weights (x: [T, ·] F32 with row stride xs ≥ whole blocks, the
// padding zero): y[t, n] for n in [n_begin, n_end).
void quant_rows(Quant q, const float* x, int64_t T, int64_t xs, const uint16_t* scales,
                const uint8_t* codes, int64_t N, int64_t K, int64_t n_begin, int64_t n_end,
                float* y);
}  // namespace detail

}  // namespace bitdelta
