// Highway kernels for sign_matmul_add(). S·x without multiplies: a byte of sign bits selects,
// through a 256-entry table, a vector of 8 sign masks (0 for +1, the float sign bit for −1);
// XOR flips the signs of 8 activations at once and an ADD accumulates them.
#include <cstring>
#include <vector>

#include "ops/sign_matmul.h"

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

// Σ_k s[k] · x[k] over the full bytes of one row, for C tokens at once (x rows K apart).
template <int C>
HWY_INLINE void row_sign_dots(const uint8_t* bits, int64_t full_bytes, const float* x, int64_t K,
                              float* out) {
  const D8 d;
  const DU8 du;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  for (int64_t b = 0; b < full_bytes; ++b) {
    const uint32_t* masks = kSignMasks.mask[bits[b]];
    for (int64_t sub = 0; sub < 8; sub += lanes) {
      const auto m = hn::Load(du, masks + sub);
      const int64_t k = 8 * b + sub;
      a0 = hn::Add(a0, hn::BitCast(d, hn::Xor(hn::BitCast(du, hn::LoadU(d, x + k)), m)));
      if constexpr (C > 1) {
        a1 = hn::Add(a1, hn::BitCast(d, hn::Xor(hn::BitCast(du, hn::LoadU(d, x + K + k)), m)));
      }
      if constexpr (C > 2) {
        a2 = hn::Add(a2, hn::BitCast(d, hn::Xor(hn::BitCast(du, hn::LoadU(d, x + 2 * K + k)), m)));
      }
      if constexpr (C > 3) {
        a3 = hn::Add(a3, hn::BitCast(d, hn::Xor(hn::BitCast(du, hn::LoadU(d, x + 3 * K + k)), m)));
      }
    }
  }
  out[0] = hn::GetLane(hn::SumOfLanes(d, a0));
  if constexpr (C > 1) out[1] = hn::GetLane(hn::SumOfLanes(d, a1));
  if constexpr (C > 2) out[2] = hn::GetLane(hn::SumOfLanes(d, a2));
  if constexpr (C > 3) out[3] = hn::GetLane(hn::SumOfLanes(d, a3));
}

template <int C>
void rows_signs(const float* x, int64_t t0, const uint8_t* bits, int64_t row_bytes, int64_t K,
                const float* scales, bool per_row, int64_t n_begin, int64_t n_end, int64_t N,
                float* y) {
  const int64_t full_bytes = K / 8;
  const float* xt = x + t0 * K;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* row = bits + n * row_bytes;
    float sums[4] = {0, 0, 0, 0};
    row_sign_dots<C>(row, full_bytes, xt, K, sums);
    for (int64_t k = full_bytes * 8; k < K; ++k) {  // the partial last byte
      const bool plus = (row[k / 8] >> (k % 8)) & 1;
      for (int c = 0; c < C; ++c) sums[c] += plus ? xt[c * K + k] : -xt[c * K + k];
    }
    const float scale = per_row ? scales[n] : scales[0];
    for (int c = 0; c < C; ++c) y[(t0 + c) * N + n] += scale * sums[c];
  }
}

void SignMatmulAdd(const float* x, int64_t T, const uint8_t* bits, int64_t row_bytes, int64_t N,
                   int64_t K, const float* scales, bool per_row, int64_t n_begin, int64_t n_end,
                   float* y) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) rows_signs<4>(x, t, bits, row_bytes, K, scales, per_row, n_begin, n_end, N, y);
  switch (T - t) {
    case 3: rows_signs<3>(x, t, bits, row_bytes, K, scales, per_row, n_begin, n_end, N, y); break;
    case 2: rows_signs<2>(x, t, bits, row_bytes, K, scales, per_row, n_begin, n_end, N, y); break;
    case 1: rows_signs<1>(x, t, bits, row_bytes, K, scales, per_row, n_begin, n_end, N, y); break;
    default: break;
  }
}

}  // namespace bitdelta::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bitdelta {

HWY_EXPORT(SignMatmulAdd);

void sign_matmul_add(const float* x, int64_t tokens, const SignMatrix& s, float* y,
                     ThreadPool& pool) {
  if (tokens <= 0 || s.rows == 0) return;
  const int64_t blocks = (s.rows + 15) / 16;
  const int64_t grain = std::max<int64_t>(1, (1 << 20) / std::max<int64_t>(1, 16 * s.cols * tokens));
  pool.parallel_for(blocks, [&](int64_t b_begin, int64_t b_end) {
    HWY_DYNAMIC_DISPATCH(SignMatmulAdd)(x, tokens, s.bits, s.row_bytes(), s.rows, s.cols, s.scales,
                                        s.per_row, b_begin * 16, std::min(s.rows, b_end * 16), y);
  }, grain);
}

void sign_matmul_add_reference(const float* x, int64_t tokens, const SignMatrix& s, float* y) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t n = 0; n < s.rows; ++n) {
      double sum = 0;
      for (int64_t k = 0; k < s.cols; ++k) {
        const bool plus = (s.bits[n * s.row_bytes() + k / 8] >> (k % 8)) & 1;
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
