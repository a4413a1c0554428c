// Highway kernels for sign_matmul_add(). S·x without multiplies: a byte of sign bits selects,
// through a 256-entry table, a vector of 8 sign masks (0 for +1, the float sign bit for −1);
// XOR flips the signs of 8 activations at once and an ADD accumulates them.
#include <cstring>
#include <vector>

#include "ops/sign_matmul.h"
#include "util/error.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/sign_matmul.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#ifndef BITDELTA_SIGN_MASK_TABLE
#define BITDELTA_SIGN_MASK_TABLE
namespace bitdelta {
namespace {
// kSignMask[byte][j]: the float sign bit when bit j of byte is 0 (weight −1), else 0.
struct SignMaskTable {
  alignas(64) uint32_t mask[256][8];
  SignMaskTable() {
    for (int b = 0; b < 256; ++b) {
      for (int j = 0; j < 8; ++j) mask[b][j] = ((b >> j) & 1) ? 0u : 0x80000000u;
    }
  }
};
const SignMaskTable kSignMasks;
}  // namespace
}  // namespace bitdelta
#endif

HWY_BEFORE_NAMESPACE();
namespace bitdelta::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// At most 8 lanes, so that one table row (8 masks) covers a whole number of vectors.
using D8 = hn::CappedTag<float, 8>;
using DU8 = hn::RebindToUnsigned<D8>;

HWY_INLINE hn::Vec<D8> flip(hn::Vec<D8> x, const uint32_t* masks) {
  const D8 d;
  const DU8 du;
  return hn::BitCast(d, hn::Xor(hn::BitCast(du, x), hn::Load(du, masks)));
}

// Adds scale_n · Σ_k s[n, k] · x[t, k] over the partial last byte (cols % 8 columns).
HWY_INLINE float tail_sum(const uint8_t* row, const float* x, int64_t K) {
  float sum = 0;
  for (int64_t k = (K / 8) * 8; k < K; ++k) sum += ((row[k / 8] >> (k % 8)) & 1) ? x[k] : -x[k];
  return sum;
}

// One token, four rows at a time: each activation vector is loaded once for four rows, and the
// four accumulators are independent add chains (an add takes 3 cycles, so one chain would
// stall).
void signs_one_token(const float* x, const uint8_t* bits, int64_t row_bytes, int64_t K,
                     const float* scales, bool per_row, int64_t n_begin, int64_t n_end,
                     float* y) {
  const D8 d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const int64_t full_bytes = K / 8;
  int64_t n = n_begin;
  for (; n + 4 <= n_end; n += 4) {
    const uint8_t* r0 = bits + n * row_bytes;
    const uint8_t* r1 = r0 + row_bytes;
    const uint8_t* r2 = r1 + row_bytes;
    const uint8_t* r3 = r2 + row_bytes;
    auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
    for (int64_t b = 0; b < full_bytes; ++b) {
      const uint32_t* m0 = kSignMasks.mask[r0[b]];
      const uint32_t* m1 = kSignMasks.mask[r1[b]];
      const uint32_t* m2 = kSignMasks.mask[r2[b]];
      const uint32_t* m3 = kSignMasks.mask[r3[b]];
      for (int64_t sub = 0; sub < 8; sub += lanes) {
        const auto xv = hn::LoadU(d, x + 8 * b + sub);
        a0 = hn::Add(a0, flip(xv, m0 + sub));
        a1 = hn::Add(a1, flip(xv, m1 + sub));
        a2 = hn::Add(a2, flip(xv, m2 + sub));
        a3 = hn::Add(a3, flip(xv, m3 + sub));
      }
    }
    const float s0 = hn::GetLane(hn::SumOfLanes(d, a0)) + tail_sum(r0, x, K);
    const float s1 = hn::GetLane(hn::SumOfLanes(d, a1)) + tail_sum(r1, x, K);
    const float s2 = hn::GetLane(hn::SumOfLanes(d, a2)) + tail_sum(r2, x, K);
    const float s3 = hn::GetLane(hn::SumOfLanes(d, a3)) + tail_sum(r3, x, K);
    y[n] += (per_row ? scales[n] : scales[0]) * s0;
    y[n + 1] += (per_row ? scales[n + 1] : scales[0]) * s1;
    y[n + 2] += (per_row ? scales[n + 2] : scales[0]) * s2;
    y[n + 3] += (per_row ? scales[n + 3] : scales[0]) * s3;
  }
  for (; n < n_end; ++n) {
    const uint8_t* r = bits + n * row_bytes;
    auto a0 = hn::Zero(d), a1 = hn::Zero(d);
    for (int64_t b = 0; b < full_bytes; ++b) {
      const uint32_t* m = kSignMasks.mask[r[b]];
      for (int64_t sub = 0; sub < 8; sub += lanes) {
        if ((sub / lanes) % 2 == 0) {
          a0 = hn::Add(a0, flip(hn::LoadU(d, x + 8 * b + sub), m + sub));
        } else {
          a1 = hn::Add(a1, flip(hn::LoadU(d, x + 8 * b + sub), m + sub));
        }
      }
    }
    y[n] += (per_row ? scales[n] : scales[0]) *
            (hn::GetLane(hn::SumOfLanes(d, hn::Add(a0, a1))) + tail_sum(r, x, K));
  }
}

// C tokens (2..4) of one row at a time: C independent chains.
template <int C>
void signs_few_tokens(const float* x, const uint8_t* bits, int64_t row_bytes, int64_t K,
                      const float* scales, bool per_row, int64_t n_begin, int64_t n_end,
                      int64_t N, float* y) {
  const D8 d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const int64_t full_bytes = K / 8;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* r = bits + n * row_bytes;
    auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
    for (int64_t b = 0; b < full_bytes; ++b) {
      const uint32_t* m = kSignMasks.mask[r[b]];
      for (int64_t sub = 0; sub < 8; sub += lanes) {
        const int64_t k = 8 * b + sub;
        a0 = hn::Add(a0, flip(hn::LoadU(d, x + k), m + sub));
        a1 = hn::Add(a1, flip(hn::LoadU(d, x + K + k), m + sub));
        if constexpr (C > 2) a2 = hn::Add(a2, flip(hn::LoadU(d, x + 2 * K + k), m + sub));
        if constexpr (C > 3) a3 = hn::Add(a3, flip(hn::LoadU(d, x + 3 * K + k), m + sub));
      }
    }
    const float scale = per_row ? scales[n] : scales[0];
    y[n] += scale * (hn::GetLane(hn::SumOfLanes(d, a0)) + tail_sum(r, x, K));
    y[N + n] += scale * (hn::GetLane(hn::SumOfLanes(d, a1)) + tail_sum(r, x + K, K));
    if constexpr (C > 2) {
      y[2 * N + n] += scale * (hn::GetLane(hn::SumOfLanes(d, a2)) + tail_sum(r, x + 2 * K, K));
    }
    if constexpr (C > 3) {
      y[3 * N + n] += scale * (hn::GetLane(hn::SumOfLanes(d, a3)) + tail_sum(r, x + 3 * K, K));
    }
  }
}

void SignMatmulAdd(const float* x, int64_t T, const uint8_t* bits, int64_t row_bytes, int64_t N,
                   int64_t K, const float* scales, bool per_row, int64_t n_begin, int64_t n_end,
                   float* y) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) {
    signs_few_tokens<4>(x + t * K, bits, row_bytes, K, scales, per_row, n_begin, n_end, N,
                        y + t * N);
  }
  switch (T - t) {
    case 3:
      signs_few_tokens<3>(x + t * K, bits, row_bytes, K, scales, per_row, n_begin, n_end, N,
                          y + t * N);
      break;
    case 2:
      signs_few_tokens<2>(x + t * K, bits, row_bytes, K, scales, per_row, n_begin, n_end, N,
                          y + t * N);
      break;
    case 1:
      signs_one_token(x + t * K, bits, row_bytes, K, scales, per_row, n_begin, n_end, y + t * N);
      break;
    default:
      break;
  }
}

}  // namespace bitdelta::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bitdelta {

HWY_EXPORT(SignMatmulAdd);

void sign_matmul_add(const float* x, int64_t tokens, const SignMatrix& s, float* y,
                     ThreadPool& pool) {
  const SignMatmulJob job{x, tokens, &s, y};
  sign_matmul_add_many({&job, 1}, pool);
}

void sign_matmul_add_many(std::span<const SignMatmulJob> jobs, ThreadPool& pool) {
  if (jobs.empty()) return;
  const int64_t rows = jobs[0].signs->rows, row_bytes = jobs[0].signs->row_bytes();
  int64_t tokens = 0;
  for (const auto& j : jobs) {
    BD_CHECK(j.signs->rows == rows && j.signs->cols == jobs[0].signs->cols);
    tokens += j.tokens;
  }
  if (tokens <= 0 || rows == 0) return;
  const int64_t blocks = (rows + 15) / 16;
  // A block of 16 rows costs ~1.5 cycles per byte of bits per token; a chunk of ≥ 32 K such
  // byte-steps (~20 µs) is worth waking a thread for.
  const int64_t grain = std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(1, 16 * row_bytes * tokens));
  pool.parallel_for(blocks, [&](int64_t b_begin, int64_t b_end) {
    const int64_t n_begin = b_begin * 16, n_end = std::min(rows, b_end * 16);
    for (const auto& j : jobs) {
      const SignMatrix& s = *j.signs;
      HWY_DYNAMIC_DISPATCH(SignMatmulAdd)(j.x, j.tokens, s.bits, row_bytes, rows, s.cols, s.scales,
                                          s.per_row, n_begin, n_end, j.y);
    }
  }, grain);
}

void sign_matmul_add_reference(const float* x, int64_t tokens, const SignMatrix& s, float* y) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t n = 0; n < s.rows; ++n) {
      double sum = 0;
      for (int64_t k = 0; k < s.cols; ++k) {
        const bool plus = s.plus(n, k);
        sum += plus ? x[t * s.cols + k] : -double(x[t * s.cols + k]);
      }
      y[t * s.rows + n] += static_cast<float>(s.scale(n) * sum);
    }
  }
}

void add_scaled_signs_row(const SignMatrix& s, int64_t row, float* dst) {
  const float a = s.scale(row);
  const uint8_t* bits = s.bits + row * s.row_bytes();
  for (int64_t k = 0; k < s.cols; ++k) dst[k] += ((bits[k / 8] >> (k % 8)) & 1) ? a : -a;
}

}  // namespace bitdelta
#endif  // HWY_ONCE
