// The AMX-INT8 sign pass (see sign_matmul_amx.h).
//
// Blocking: RB blocks of 16 rows (their signs expanded once to ±1 int8, RB · 16 · Kq bytes that
// stay in L2) against CB blocks of 16 tokens, 2×2 where the shape allows. Per quantization block
// (two steps of 64 columns) the RB·CB int32 tiles are zeroed, multiplied into, stored and folded
// into float accumulators, [rows × tokens] like the tiles, with one vector of the 16 tokens'
// scales: exactly the table pass's fold, token by token.
#include "ops/sign_matmul_amx.h"

#include <immintrin.h>

// GCC 12 warns inside its own AVX-512 intrinsics (their "undefined" pass-through operands).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/amx_tiles.h"

namespace bitdelta::amxint8 {
namespace {

using namespace amx;

constexpr int64_t kTile = kTokens * 16;  // elements of a 16×16 tile of int32 or float

// rows × Kq signs from bits as ±1 int8 (dst row stride Kq).
__attribute__((target("avx512f,avx512bw"))) void expand(const uint8_t* bits, int64_t row_bytes,
                                                        int64_t rows, int64_t Kq, int8_t* dst) {
  const __m512i plus = _mm512_set1_epi8(1), minus = _mm512_set1_epi8(-1);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = bits + r * row_bytes;
    int8_t* out = dst + r * Kq;
    for (int64_t s = 0; s < Kq / kStep; ++s) {
      uint64_t m;
      std::memcpy(&m, row + 8 * s, 8);
      _mm512_storeu_si512(out + kStep * s, _mm512_mask_blend_epi8(m, minus, plus));
    }
  }
}

// acc[i·16 + t] = fma(scales[t], c[i·16 + t], acc[...]) for one tile: the table pass's fold.
__attribute__((target("avx512f"))) inline void fold(const int32_t* c, const float* scales,
                                                    float* acc) {
  const __m512 s = _mm512_load_ps(scales);
  for (int64_t i = 0; i < 16; ++i) {
    const __m512 v = _mm512_cvtepi32_ps(_mm512_load_si512(c + i * 16));
    _mm512_store_ps(acc + i * 16, _mm512_fmadd_ps(s, v, _mm512_load_ps(acc + i * 16)));
  }
}

// Bytes of prepared tiles a token tile keeps in L2 while the rows pass over it.
constexpr int64_t kTileBytes = 1 << 20;

}  // namespace

void clear_tail(const Prepared& p, int64_t T, int64_t Kq) {
  if (T % kTokens == 0) return;
  const int64_t b = T / kTokens, steps = Kq / kStep, nqb = Kq / kQuantBlock;
  std::memset(p.tiles + b * steps * kTile, 0, static_cast<size_t>(steps * kTile) * 4);
  std::memset(p.scales + b * nqb * kTokens, 0, static_cast<size_t>(nqb * kTokens) * 4);
}

void put_token(const Prepared& p, int64_t t, int64_t Kq, const int8_t* q, const float* qscales) {
  const int64_t b = t / kTokens, lane = t % kTokens, steps = Kq / kStep, nqb = Kq / kQuantBlock;
  uint32_t* tiles = p.tiles + b * steps * kTile + lane;
  for (int64_t s = 0; s < steps; ++s) {
    for (int64_t r = 0; r < 16; ++r) {
      uint32_t quad;
      std::memcpy(&quad, q + s * kStep + 4 * r, 4);
      tiles[s * kTile + r * kTokens] = quad;
    }
  }
  float* sc = p.scales + b * nqb * kTokens + lane;
  for (int64_t j = 0; j < nqb; ++j) sc[j * kTokens] = qscales[j];
}

void sign_rows(const Prepared& p, int64_t T, int64_t Kq, const uint8_t* bits, int64_t row_bytes,
               int64_t N, const float* scales, bool per_row, int64_t n_begin, int64_t n_end,
               float* y) {
  const int64_t steps = Kq / kStep, nqb = Kq / kQuantBlock, blocks = token_blocks(T);
  const int64_t b_next = steps * kTile;  // uint32 elements per token block
  const int64_t tile_blocks = std::max<int64_t>(2, kTileBytes / (b_next * 4) / 2 * 2);
  thread_local std::vector<int8_t> signs;
  signs.resize(static_cast<size_t>(2 * 16 * Kq));
  alignas(64) int32_t c[4 * kTile];
  alignas(64) float acc[4 * kTile];
  configure_tiles();
  for (int64_t b0 = 0; b0 < blocks; b0 += tile_blocks) {
    const int64_t b1 = std::min(blocks, b0 + tile_blocks);
    for (int64_t n = n_begin; n < n_end; n += 32) {
      const int64_t rb = std::min<int64_t>(2, (n_end - n) / 16);
      expand(bits + n * row_bytes, row_bytes, 16 * rb, Kq, signs.data());
      const auto* a = reinterpret_cast<const uint8_t*>(signs.data());
      const int64_t a_stride[2] = {Kq, Kq};
      for (int64_t b = b0; b < b1;) {
        const int64_t cb = b + 1 < b1 ? 2 : 1;
        std::fill(acc, acc + rb * cb * kTile, 0.0f);
        for (int64_t qb = 0; qb < nqb; ++qb) {
          // The block's two steps of 64 columns, from zero: its own integer sums.
          const uint8_t* aq[2] = {a + qb * kQuantBlock, a + 16 * Kq + qb * kQuantBlock};
          const auto* bq = reinterpret_cast<const uint8_t*>(p.tiles + b * b_next) +
                           qb * (kQuantBlock / kStep) * kTile * 4;
          const int64_t bn = b_next * 4, s1 = kQuantBlock / kStep;
          constexpr Dot kD = Dot::kInt8;
          if (rb == 2) {
            cb == 2 ? multiply_blocks<kD, 2, 2>(aq, a_stride, bq, bn, 0, s1, true, c)
                    : multiply_blocks<kD, 2, 1>(aq, a_stride, bq, bn, 0, s1, true, c);
          } else {
            cb == 2 ? multiply_blocks<kD, 1, 2>(aq, a_stride, bq, bn, 0, s1, true, c)
                    : multiply_blocks<kD, 1, 1>(aq, a_stride, bq, bn, 0, s1, true, c);
          }
          for (int64_t r = 0; r < rb; ++r) {
            for (int64_t j = 0; j < cb; ++j) {
              const int64_t i = r * cb + j;
              fold(c + i * kTile, p.scales + ((b + j) * nqb + qb) * kTokens, acc + i * kTile);
            }
          }
        }
        // Tile (r, j) holds rows × tokens; y is tokens × rows. As the table pass: y += s · acc.
        for (int64_t j = 0; j < cb; ++j) {
          const int64_t t0 = (b + j) * kTokens, tokens = std::min(kTokens, T - t0);
          for (int64_t r = 0; r < rb; ++r) {
            const float* tile = acc + (r * cb + j) * kTile;
            const int64_t row0 = n + 16 * r;
            for (int64_t t = 0; t < tokens; ++t) {
              float* yt = y + (t0 + t) * N + row0;
              for (int64_t i = 0; i < 16; ++i) {
                yt[i] += (per_row ? scales[row0 + i] : scales[0]) * tile[i * kTokens + t];
              }
            }
          }
        }
        b += cb;
      }
    }
  }
  release_tiles();
}

}  // namespace bitdelta::amxint8
