// The AMX-BF16 kernels (see matmul_amx.h); the tile instructions come from ops/amx_tiles.h.
//
// Blocking: RB blocks of 16 weight rows against CB blocks of 16 tokens, RB·CB + RB + CB ≤ 8
// tiles: 2×2 for prefill, 1×1 when a single token block is left (decode and small batches). In
// prefill k goes in chunks of 8 steps (256 columns): a chunk of the 32 rows' weights (16 KiB) stays
// in L1 while every token block of a token tile (1 MiB, in L2) passes over it, the output tiles
// stored and reloaded between chunks (+10–35% over whole rows of k per token block in gemm_bench on
// the Xeon VM).
#include "ops/matmul_amx.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "io/dtype.h"
#include "ops/aligned_buffer.h"
#include "ops/amx_tiles.h"

namespace bitdelta::amxbf16 {
namespace {

using namespace amx;

// The uint32 elements of one prepared 16×16 activation block (one token block, one k step).
constexpr int64_t kBlock = kTokens * kStep / 2;

// Steps of k per chunk: a chunk of the rows' weights (up to 2 · 16 rows · 256 columns, 16 KiB)
// stays in L1 while every token block of the tile passes over it.
constexpr int64_t kChunkSteps = 8;

// Bytes of prepared activations a token tile keeps in L2 while the weight rows pass over it.
constexpr int64_t kTileBytes = 1 << 20;

}  // namespace

void prepare(const uint16_t* xb, int64_t T, int64_t K, uint32_t* out) {
  const int64_t steps = (K + kStep - 1) / kStep;
  amx::transpose_blocks(reinterpret_cast<const uint32_t*>(xb), steps * kStep / 2, T, steps, out);
}

void rows(const uint32_t* xv, int64_t T, const uint16_t* w, int64_t N, int64_t K, int64_t n_begin,
          int64_t n_end, float* y) {
  const int64_t steps = (K + kStep - 1) / kStep, Kp = steps * kStep;
  const int64_t blocks = (T + kTokens - 1) / kTokens, b_next = steps * kBlock;
  const bool ragged_k = Kp != K;
  // Weight blocks that are not whole tiles (a ragged K, or the matrix's last rows) are copied
  // here, zero-padded: 0 · 0 adds nothing to any output that is kept.
  thread_local std::vector<uint16_t> padded;
  thread_local AlignedBuffer<float> accumulators;
  const int64_t tile_blocks =
      std::max<int64_t>(2, kTileBytes / (b_next * 4) / 2 * 2);  // whole pairs of token blocks
  if (ragged_k || n_end % 16 != 0) padded.resize(static_cast<size_t>(2 * 16 * Kp));
  configure_tiles();
  for (int64_t b0 = 0; b0 < blocks; b0 += tile_blocks) {
    const int64_t b1 = std::min(blocks, b0 + tile_blocks);
    for (int64_t n = n_begin; n < n_end;) {
      // One token block (decode): one row block at a time, whose 16 rows are as many read
      // streams; 48 (three blocks) are more than the L2 streamer follows well (3–5% slower
      // decode on the Xeon VM). Decode is bound by memory, not by the one accumulation chain.
      const int64_t most = b1 - b0 == 1 ? 1 : 2;
      const int64_t rb = std::min<int64_t>(most, (n_end - n + 15) / 16);
      const uint8_t* a[2];  // the row blocks' bytes, for multiply_blocks
      int64_t a_stride[2], valid[2];
      for (int64_t r = 0; r < rb; ++r) {
        const int64_t row0 = n + 16 * r;
        valid[r] = std::min<int64_t>(16, n_end - row0);
        if (!ragged_k && valid[r] == 16) {
          a[r] = reinterpret_cast<const uint8_t*>(w + row0 * K);
          a_stride[r] = K * 2;
          continue;
        }
        uint16_t* p = padded.data() + r * 16 * Kp;
        std::fill(p, p + 16 * Kp, uint16_t{0});
        for (int64_t i = 0; i < valid[r]; ++i) {
          std::memcpy(p + i * Kp, w + (row0 + i) * K, static_cast<size_t>(K) * 2);
        }
        a[r] = reinterpret_cast<const uint8_t*>(p);
        a_stride[r] = Kp * 2;
      }
      // k in chunks outside, token blocks inside; the output tiles wait in `acc` between
      // chunks (one region of four tiles per pair of token blocks).
      const int64_t pairs = (b1 - b0 + 1) / 2;
      float* acc = accumulators.reserve(pairs * 4 * kTokens * 16);
      // (One token block, as in decode, has nothing to reuse: one chunk.)
      const int64_t chunk = b1 - b0 == 1 ? steps : kChunkSteps;
      for (int64_t s0 = 0; s0 < steps; s0 += chunk) {
        const int64_t s1 = std::min(steps, s0 + chunk);
        for (int64_t b = b0; b < b1;) {
          const int64_t cb = b + 1 < b1 ? 2 : 1;
          const auto* bv = reinterpret_cast<const uint8_t*>(xv + b * b_next);
          const int64_t bn = b_next * 4;
          float* c = acc + (b - b0) / 2 * 4 * kTokens * 16;
          constexpr Dot kD = Dot::kBf16;
          if (rb == 2) {
            cb == 2 ? multiply_blocks<kD, 2, 2>(a, a_stride, bv, bn, s0, s1, s0 == 0, c)
                    : multiply_blocks<kD, 2, 1>(a, a_stride, bv, bn, s0, s1, s0 == 0, c);
          } else {
            cb == 2 ? multiply_blocks<kD, 1, 2>(a, a_stride, bv, bn, s0, s1, s0 == 0, c)
                    : multiply_blocks<kD, 1, 1>(a, a_stride, bv, bn, s0, s1, s0 == 0, c);
          }
          b += cb;
        }
      }
      // Output tile (r, j) holds rows × tokens; y is tokens × rows.
      for (int64_t b = b0; b < b1;) {
        const int64_t cb = b + 1 < b1 ? 2 : 1;
        const float* c = acc + (b - b0) / 2 * 4 * kTokens * 16;
        for (int64_t j = 0; j < cb; ++j) {
          const int64_t t0 = (b + j) * kTokens, tokens = std::min(kTokens, T - t0);
          for (int64_t r = 0; r < rb; ++r) {
            const float* tile = c + (r * cb + j) * kTokens * 16;
            for (int64_t t = 0; t < tokens; ++t) {
              float* yt = y + (t0 + t) * N + n + 16 * r;
              for (int64_t i = 0; i < valid[r]; ++i) yt[i] = tile[i * kTokens + t];
            }
          }
        }
        b += cb;
      }
      n += rb * 16;
    }
  }
  release_tiles();
}

void rows_reference(const uint16_t* xb, int64_t T, const uint16_t* w, int64_t N, int64_t K,
                    float* y) {
  const int64_t xs = (K + kStep - 1) / kStep * kStep;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t n = 0; n < N; ++n) {
      double sum = 0.0;
      for (int64_t k = 0; k < K; ++k)
        sum += double(bf16_to_f32(xb[t * xs + k])) * bf16_to_f32(w[n * K + k]);
      y[t * N + n] = static_cast<float>(sum);
    }
  }
}

}  // namespace bitdelta::amxbf16
