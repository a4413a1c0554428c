// Highway kernels for S·x, S a packed ±1 matrix, in two passes:
// - the table pass (serving): int8 activations, 16-entry tables per 4 of them looked up with byte
//   shuffles (described above SignLutRows);
// - the exact pass (tails, the SCALAR target, calibration): a byte of sign bits selects, through
//   a 256-entry table, a vector of 8 sign masks (0 for +1, the float sign bit for −1); XOR flips
//   the signs of 8 activations at once and an ADD accumulates them.
#include "ops/sign_matmul.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "ops/aligned_buffer.h"
#include "ops/matmul.h"
#include "ops/sign_matmul_amx.h"
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

// The table pass quantizes activations to ±kQuantMax in blocks of kSignQuantBlock (16 bytes of
// bits: one 128-bit block of a transposed chunk), the most whose int16 sum cannot overflow.
constexpr int64_t kSignQuantBlock = 128;
static_assert(kSignQuantBlock == amxint8::kQuantBlock, "the AMX pass reproduces these blocks");
constexpr float kQuantMax = 127.0f;
// Tokens of one job from which the AMX pass (when the CPU has it) beats the tables.
constexpr int64_t kAmxMinTokens = 4;
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
                     int64_t b_begin, const float* scales, bool per_row, int64_t n_begin,
                     int64_t n_end, float* y) {
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
    for (int64_t b = b_begin; b < full_bytes; ++b) {
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
    // One chain, as in the blocks of four and in signs_few_tokens: a row's sum is added up in
    // the same order whichever loop (thread split, token count) computes it.
    const uint8_t* r = bits + n * row_bytes;
    auto a0 = hn::Zero(d);
    for (int64_t b = b_begin; b < full_bytes; ++b) {
      const uint32_t* m = kSignMasks.mask[r[b]];
      for (int64_t sub = 0; sub < 8; sub += lanes) {
        a0 = hn::Add(a0, flip(hn::LoadU(d, x + 8 * b + sub), m + sub));
      }
    }
    y[n] += (per_row ? scales[n] : scales[0]) *
            (hn::GetLane(hn::SumOfLanes(d, a0)) + tail_sum(r, x, K));
  }
}

// C tokens (2..4) of one row at a time: C independent chains.
template <int C>
void signs_few_tokens(const float* x, const uint8_t* bits, int64_t row_bytes, int64_t K,
                      int64_t b_begin, const float* scales, bool per_row, int64_t n_begin,
                      int64_t n_end, int64_t N, float* y) {
  const D8 d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const int64_t full_bytes = K / 8;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* r = bits + n * row_bytes;
    auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
    for (int64_t b = b_begin; b < full_bytes; ++b) {
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

// dst[k] += ±a for one row of signs (an embedding row's delta; merge and calibration build
// W + α·S with it).
void AddScaledSignsRow(const uint8_t* bits, int64_t K, float a, float* dst) {
  const D8 d;
  const DU8 du;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto va = hn::BitCast(du, hn::Set(d, a));
  const int64_t full_bytes = K / 8;
  for (int64_t b = 0; b < full_bytes; ++b) {
    const uint32_t* m = kSignMasks.mask[bits[b]];
    for (int64_t sub = 0; sub < 8; sub += lanes) {
      float* p = dst + 8 * b + sub;
      hn::StoreU(hn::Add(hn::LoadU(d, p), hn::BitCast(d, hn::Xor(va, hn::LoadU(du, m + sub)))), d,
                 p);
    }
  }
  for (int64_t k = full_bytes * 8; k < K; ++k) dst[k] += ((bits[k / 8] >> (k % 8)) & 1) ? a : -a;
}

// The exact pass over bytes [b_begin, row_bytes) of rows [n_begin, n_end).
void SignMatmulAddExact(const float* x, int64_t T, const uint8_t* bits, int64_t row_bytes,
                        int64_t N, int64_t K, int64_t b_begin, const float* scales, bool per_row,
                        int64_t n_begin, int64_t n_end, float* y) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) {
    signs_few_tokens<4>(x + t * K, bits, row_bytes, K, b_begin, scales, per_row, n_begin, n_end,
                        N, y + t * N);
  }
  switch (T - t) {
    case 3:
      signs_few_tokens<3>(x + t * K, bits, row_bytes, K, b_begin, scales, per_row, n_begin, n_end,
                          N, y + t * N);
      break;
    case 2:
      signs_few_tokens<2>(x + t * K, bits, row_bytes, K, b_begin, scales, per_row, n_begin, n_end,
                          N, y + t * N);
      break;
    case 1:
      signs_one_token(x + t * K, bits, row_bytes, K, b_begin, scales, per_row, n_begin, n_end,
                      y + t * N);
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// The lookup-table pass (T-MAC style). Activations are quantized to int8 per block of 128
// (scale = max|x| / 127). For every group of 4 activations a 16-entry table holds the int16 sums
// ±q0 ±q1 ±q2 ±q3 for all sign patterns, split into a low-byte and a high-byte plane; a nibble of
// sign bits indexes it. A byte shuffle then looks up one nibble for 16 rows per 128-bit block at
// once, so the cost per weight is a fraction of an instruction instead of an add.
//
// The bits stay in the file's row-major layout: a chunk of W bytes (one vector) of 16 rows is
// transposed in registers (16 × 16 bytes per 128-bit block), after which vector p holds, in block
// j, byte 16j + p of the chunk for rows 0..15 — its low nibble is group 2(16j + p), its high
// nibble group 2(16j + p) + 1. The tables are laid out to match: for chunk c, byte p, nibble h
// and plane (low, high) one vector whose block j is that plane of group 2(cW + 16j + p) + h.
// Block j of a chunk covers exactly one quantization block (16 bytes = 128 activations), whose
// int16 sum is at most 127 · 128 in magnitude, so int16 accumulation is exact within it.
#if HWY_TARGET != HWY_SCALAR
using DB = hn::ScalableTag<uint8_t>;
using DW = hn::Repartition<uint16_t, DB>;
using VB = hn::Vec<DB>;
constexpr int64_t kLutTokens = 8;  // tokens per pass over a chunk's transposed bits

HWY_INLINE void transpose_16_rows(const VB (&r)[16], VB (&out)[16]) {
  const DB d8;
  const hn::Repartition<uint16_t, DB> d16;
  const hn::Repartition<uint32_t, DB> d32;
  const hn::Repartition<uint64_t, DB> d64;
  // a[i][h]: rows 2i, 2i+1; columns 8h..8h+7 as u16 pairs.
  hn::Vec<decltype(d16)> a[8][2];
  for (int i = 0; i < 8; ++i) {
    a[i][0] = hn::BitCast(d16, hn::InterleaveLower(d8, r[2 * i], r[2 * i + 1]));
    a[i][1] = hn::BitCast(d16, hn::InterleaveUpper(d8, r[2 * i], r[2 * i + 1]));
  }
  // b[m][q]: rows 4m..4m+3; columns 4q..4q+3 as u32 quads.
  hn::Vec<decltype(d32)> b[4][4];
  for (int m = 0; m < 4; ++m) {
    for (int h = 0; h < 2; ++h) {
      b[m][2 * h] = hn::BitCast(d32, hn::InterleaveLower(d16, a[2 * m][h], a[2 * m + 1][h]));
      b[m][2 * h + 1] = hn::BitCast(d32, hn::InterleaveUpper(d16, a[2 * m][h], a[2 * m + 1][h]));
    }
  }
  // c[o][e]: rows 8o..8o+7; columns 2e, 2e+1 as u64 octets.
  hn::Vec<decltype(d64)> c[2][8];
  for (int o = 0; o < 2; ++o) {
    for (int q = 0; q < 4; ++q) {
      c[o][2 * q] = hn::BitCast(d64, hn::InterleaveLower(d32, b[2 * o][q], b[2 * o + 1][q]));
      c[o][2 * q + 1] = hn::BitCast(d64, hn::InterleaveUpper(d32, b[2 * o][q], b[2 * o + 1][q]));
    }
  }
  for (int e = 0; e < 8; ++e) {
    out[2 * e] = hn::BitCast(d8, hn::InterleaveLower(d64, c[0][e], c[1][e]));
    out[2 * e + 1] = hn::BitCast(d8, hn::InterleaveUpper(d64, c[0][e], c[1][e]));
  }
}

// Bytes of bits per chunk (one vector), or 0 where the table pass is not compiled.
int64_t LutChunkBytes() { return static_cast<int64_t>(hn::Lanes(DB())); }

// Whether hn::MulAdd fuses on this target (one rounding): the AMX pass folds with a fused
// multiply-add, so it reproduces the table pass only where the table pass fuses too.
bool LutFoldFuses() { return HWY_NATIVE_FMA != 0; }

// Quantizes x[0, 8 · lut_bytes) and writes its tables (64 bytes per byte of bits; none when
// `tables` is null), the quantization scales (one per 128 activations) and, when `q_out` is not
// null, the int8 values themselves (for the AMX pass, ops/sign_matmul_amx.h).
void BuildLut(const float* x, int64_t lut_bytes, uint8_t* tables, float* qscales, int8_t* q_out) {
  const DB d8;
  const int64_t W = static_cast<int64_t>(hn::Lanes(d8));
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const int64_t lf = static_cast<int64_t>(hn::Lanes(df));
  using D16 = hn::CappedTag<int16_t, 16>;
  const D16 d16;
  const hn::RebindToUnsigned<D16> du16;
  const hn::Rebind<uint8_t, D16> dn8;
  const int64_t l16 = static_cast<int64_t>(hn::Lanes(d16));
  // kSigns[j][e]: the sign of activation j of a group in table entry e (+1 where bit j is set).
  alignas(64) static constexpr int16_t kSigns[4][16] = {
      {-1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1},
      {-1, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1},
      {-1, -1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1, 1, 1, 1, 1},
      {-1, -1, -1, -1, -1, -1, -1, -1, 1, 1, 1, 1, 1, 1, 1, 1}};
  alignas(64) int32_t q[kSignQuantBlock];
  for (int64_t blk = 0; blk < lut_bytes / 16; ++blk) {
    const float* xb = x + kSignQuantBlock * blk;
    auto vmax = hn::Zero(df);
    for (int64_t i = 0; i < kSignQuantBlock; i += lf)
      vmax = hn::Max(vmax, hn::Abs(hn::LoadU(df, xb + i)));
    const float m = hn::GetLane(hn::MaxOfLanes(df, vmax));
    qscales[blk] = m / kQuantMax;
    const auto inv = hn::Set(df, m > 0 ? kQuantMax / m : 0.0f);
    for (int64_t i = 0; i < kSignQuantBlock; i += lf) {
      hn::Store(hn::NearestInt(hn::Mul(hn::LoadU(df, xb + i), inv)), di, q + i);
    }
    if (q_out != nullptr) {
      for (int64_t i = 0; i < kSignQuantBlock; ++i) {
        q_out[kSignQuantBlock * blk + i] = static_cast<int8_t>(q[i]);
      }
    }
    if (tables == nullptr) continue;
    for (int64_t gl = 0; gl < 32; ++gl) {
      const int64_t byte = 16 * blk + gl / 2, h = gl % 2;
      const int64_t c = byte / W, within = byte % W, j = within / 16, p = within % 16;
      uint8_t* lo = tables + (((c * 16 + p) * 2 + h) * 2) * W + 16 * j;
      uint8_t* hi = lo + W;
      const int32_t* qg = q + 4 * gl;
      for (int64_t e = 0; e < 16; e += l16) {
        auto v = hn::Mul(hn::Set(d16, static_cast<int16_t>(qg[0])), hn::Load(d16, kSigns[0] + e));
        for (int k = 1; k < 4; ++k) {
          v = hn::Add(v, hn::Mul(hn::Set(d16, static_cast<int16_t>(qg[k])),
                                 hn::Load(d16, kSigns[k] + e)));
        }
        // v = L + 64 · H with L in [0, 63] and H in [−8, 7] (|v| ≤ 508).
        hn::StoreU(hn::TruncateTo(dn8, hn::BitCast(du16, v)), dn8, lo + e);
        hn::StoreU(hn::TruncateTo(dn8, hn::ShiftRight<8>(hn::BitCast(du16, v))), dn8, hi + e);
      }
    }
  }
}

// y[t, n] += scale_n · Σ (table sums) for whole 16-row tiles [n_begin, n_end) over the first
// lut_bytes bytes of each row; tables/qscales from BuildLut, `table_bytes`/`nqb` per token.
void SignLutRows(int64_t T, const uint8_t* bits, int64_t row_bytes, int64_t N, int64_t lut_bytes,
                 const uint8_t* tables, const float* qscales, const float* scales, bool per_row,
                 int64_t n_begin, int64_t n_end, float* y) {
  const DB d8;
  const DW d16;
  const hn::CappedTag<float, 8> df;
  const hn::Rebind<int16_t, decltype(df)> di16;
  const hn::RebindToSigned<decltype(df)> di32;
  const int64_t W = static_cast<int64_t>(hn::Lanes(d8));
  const int64_t lf = static_cast<int64_t>(hn::Lanes(df));
  const int64_t chunks = lut_bytes / W, blocks = W / 16;
  const int64_t table_bytes = 64 * lut_bytes, nqb = lut_bytes / 16;
  // Per 128-bit block: 8 int16 sums (rows 0..7 from the low zip, 8..15 from the high zip).
  using DI16 = hn::RebindToSigned<DW>;
  HWY_ALIGN uint8_t idx[32][HWY_MAX_BYTES];
  HWY_ALIGN int16_t part[2][HWY_MAX_BYTES / 2];
  HWY_ALIGN float acc[kLutTokens][16];
  // Token groups outside, row tiles inside: a group's tables (64 bytes per byte of a row, per
  // token: 24 KiB per token for K = 3072) stay in L2 while every tile of rows passes, and only the
  // bits, 1/64 of their size per token, are read again for the next group. (Rows outside kept a
  // long prompt's tables, megabytes, streaming from L3 once per tile.)
  for (int64_t t0 = 0; t0 < T; t0 += kLutTokens) {
    const int64_t tb = std::min(kLutTokens, T - t0);
    for (int64_t n = n_begin; n + 16 <= n_end; n += 16) {
      // A tile is 16 · row_bytes contiguous bytes read as 16 strided streams, which the hardware
      // prefetchers follow poorly: fetch the next tile ahead while this one is computed.
      if (n + 32 <= n_end) {
        const uint8_t* next = bits + (n + 16) * row_bytes;
        for (int64_t off = 0; off < 16 * row_bytes; off += 64) __builtin_prefetch(next + off);
      }
      for (int64_t t = 0; t < tb; ++t) {
        for (int r = 0; r < 16; ++r) acc[t][r] = 0.0f;
      }
      for (int64_t c = 0; c < chunks; ++c) {
        VB rows[16], cols[16];
        for (int r = 0; r < 16; ++r) rows[r] = hn::LoadU(d8, bits + (n + r) * row_bytes + c * W);
        transpose_16_rows(rows, cols);
        const auto low4 = hn::Set(d8, 0x0F);
        for (int p = 0; p < 16; ++p) {
          hn::Store(hn::And(cols[p], low4), d8, idx[2 * p]);
          hn::Store(hn::And(hn::BitCast(d8, hn::ShiftRight<4>(hn::BitCast(d16, cols[p]))), low4),
                    d8, idx[2 * p + 1]);
        }
        for (int64_t t = 0; t < tb; ++t) {
          const uint8_t* tab = tables + (t0 + t) * table_bytes + c * 64 * W;
          const DI16 di16w;
          auto sum_lo = hn::Zero(d16), sum_hi = hn::Zero(d16);
          for (int i = 0; i < 32; ++i) {
            const VB ix = hn::Load(d8, idx[i]);
            const VB l = hn::TableLookupBytes(hn::LoadU(d8, tab + 2 * i * W), ix);
            const VB h = hn::TableLookupBytes(hn::LoadU(d8, tab + (2 * i + 1) * W), ix);
            sum_lo = hn::Add(sum_lo, hn::ZipLower(d16, l, h));
            sum_hi = hn::Add(sum_hi, hn::ZipUpper(d16, l, h));
          }
          hn::Store(hn::BitCast(di16w, sum_lo), di16w, part[0]);
          hn::Store(hn::BitCast(di16w, sum_hi), di16w, part[1]);
          const float* qs = qscales + (t0 + t) * nqb + c * blocks;
          for (int64_t j = 0; j < blocks; ++j) {
            const auto s = hn::Set(df, qs[j]);
            for (int half = 0; half < 2; ++half) {
              for (int64_t r = 0; r < 8; r += lf) {
                float* a = acc[t] + 8 * half + r;
                const auto v = hn::PromoteTo(di32, hn::LoadU(di16, part[half] + 8 * j + r));
                hn::Store(hn::MulAdd(s, hn::ConvertTo(df, v), hn::Load(df, a)), df, a);
              }
            }
          }
        }
      }
      for (int64_t t = 0; t < tb; ++t) {
        float* yt = y + (t0 + t) * N + n;
        for (int r = 0; r < 16; ++r) yt[r] += (per_row ? scales[n + r] : scales[0]) * acc[t][r];
      }
    }
  }
}
#else
int64_t LutChunkBytes() { return 0; }
bool LutFoldFuses() { return false; }
void BuildLut(const float*, int64_t, uint8_t*, float*, int8_t*) {}
void SignLutRows(int64_t, const uint8_t*, int64_t, int64_t, int64_t, const uint8_t*, const float*,
                 const float*, bool, int64_t, int64_t, float*) {}
#endif  // HWY_TARGET != HWY_SCALAR

}  // namespace bitdelta::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bitdelta {

HWY_EXPORT(SignMatmulAddExact);
HWY_EXPORT(AddScaledSignsRow);
HWY_EXPORT(LutChunkBytes);
HWY_EXPORT(LutFoldFuses);
HWY_EXPORT(BuildLut);
HWY_EXPORT(SignLutRows);

namespace {

// Splits rows across the pool in blocks of 16 (the table pass's tile); `body(n_begin, n_end)`
// runs every job over those rows. Cost: bytes of bits × tokens.
void for_row_blocks(int64_t rows, int64_t work_per_row, double cycles_per_unit, ThreadPool& pool,
                    const std::function<void(int64_t, int64_t)>& body) {
  const int64_t blocks = (rows + 15) / 16;
  // A chunk worth ~5 µs (~15 K cycles) is worth handing to a thread (the pool's threads spin
  // between loops, so a hand-off costs about a microsecond).
  const double per_block = std::max(1.0, 16.0 * double(work_per_row) * cycles_per_unit);
  const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(1.5e4 / per_block));
  pool.parallel_for(blocks, [&](int64_t b_begin, int64_t b_end) {
    body(b_begin * 16, std::min(rows, b_end * 16));
  }, grain);
}

}  // namespace

std::atomic<bool> g_exact_sign_pass{false};

void set_exact_sign_pass(bool exact) { g_exact_sign_pass = exact; }
bool exact_sign_pass() { return g_exact_sign_pass; }

void sign_matmul_add(const float* x, int64_t tokens, const SignMatrix& s, float* y,
                     ThreadPool& pool) {
  const SignMatmulJob job{x, tokens, &s, y};
  sign_matmul_add_many({&job, 1}, pool);
}

void sign_matmul_add_many(std::span<const SignMatmulJob> jobs, ThreadPool& pool) {
  if (jobs.empty()) return;
  const int64_t rows = jobs[0].signs->rows, cols = jobs[0].signs->cols;
  const int64_t row_bytes = jobs[0].signs->row_bytes();
  int64_t tokens = 0;
  for (const auto& j : jobs) {
    BD_CHECK(j.signs->rows == rows && j.signs->cols == cols);
    tokens += j.tokens;
  }
  if (tokens <= 0 || rows == 0) return;
  // The table pass covers whole vectors of complete bytes of whole 16-row tiles; what is left
  // (odd shapes, and all of it on targets without byte shuffles) takes the exact pass.
  const int64_t W = exact_sign_pass() ? 0 : HWY_DYNAMIC_DISPATCH(LutChunkBytes)();
  const int64_t lut_bytes = W > 0 ? (cols / 8) / W * W : 0;
  const int64_t lut_rows = lut_bytes > 0 ? rows / 16 * 16 : 0;
  const int64_t Kq = 8 * lut_bytes;
  // Jobs of several tokens (a prompt) take the table pass's sums from AMX tiles where the CPU has
  // them, bitwise the same (ops/sign_matmul_amx.h); single tokens keep the tables, which cost
  // less than expanding the signs.
  // (Kq is a whole number of vectors of bytes of bits, so of 128-activation blocks.)
  const bool amx = lut_rows > 0 && amx_tiles_enabled() && HWY_DYNAMIC_DISPATCH(LutFoldFuses)();
  const auto on_amx = [&](const SignMatmulJob& j) { return amx && j.tokens >= kAmxMinTokens; };
  thread_local std::vector<uint8_t> tables;
  thread_local std::vector<float> qscales;
  thread_local AlignedBuffer<uint32_t> amx_tiles;
  thread_local AlignedBuffer<float> amx_scales;
  // Per job: its AMX operands (null tiles for a table-pass job) and its first table slot.
  thread_local std::vector<amxint8::Prepared> prepared;
  thread_local std::vector<int64_t> table_slot;
  const int64_t table_bytes = 64 * lut_bytes, nqb = lut_bytes / 16;
  prepared.assign(jobs.size(), {});
  table_slot.assign(jobs.size(), 0);
  if (lut_rows > 0) {
    int64_t table_tokens = 0, tile_elems = 0, scale_elems = 0;
    for (size_t i = 0; i < jobs.size(); ++i) {
      const auto& j = jobs[i];
      if (!on_amx(j)) {
        table_slot[i] = table_tokens;
        table_tokens += j.tokens;
        continue;
      }
      tile_elems += amxint8::tile_elements(j.tokens, Kq);
      scale_elems += amxint8::scale_elements(j.tokens, Kq);
    }
    tables.resize(static_cast<size_t>(table_tokens * table_bytes));
    qscales.resize(static_cast<size_t>(tokens * nqb));
    uint32_t* tiles = amx_tiles.reserve(tile_elems);
    float* scales = amx_scales.reserve(scale_elems);
    // Per token: its x and (job, token within the job).
    thread_local std::vector<const float*> token_x;
    thread_local std::vector<std::pair<int64_t, int64_t>> token_job;
    token_x.clear();
    token_job.clear();
    for (size_t i = 0; i < jobs.size(); ++i) {
      const auto& j = jobs[i];
      if (on_amx(j)) {
        prepared[i] = {tiles, scales};
        amxint8::clear_tail(prepared[i], j.tokens, Kq);
        tiles += amxint8::tile_elements(j.tokens, Kq);
        scales += amxint8::scale_elements(j.tokens, Kq);
      }
      for (int64_t t = 0; t < j.tokens; ++t) {
        token_x.push_back(j.x + t * cols);
        token_job.emplace_back(int64_t(i), t);
      }
    }
    // Pointers, not the thread_local names: the pool's threads have copies of their own.
    uint8_t* tab = tables.data();
    float* qs = qscales.data();
    const float* const* xs = token_x.data();
    const std::pair<int64_t, int64_t>* tj = token_job.data();
    const amxint8::Prepared* prep = prepared.data();
    const int64_t* slot = table_slot.data();
    const auto build = [&](int64_t b, int64_t e) {
      thread_local std::vector<int8_t> q;
      for (int64_t t = b; t < e; ++t) {
        const auto [job, in_job] = tj[t];
        if (prep[job].tiles == nullptr) {
          HWY_DYNAMIC_DISPATCH(BuildLut)
          (xs[t], lut_bytes, tab + (slot[job] + in_job) * table_bytes, qs + t * nqb, nullptr);
          continue;
        }
        q.resize(static_cast<size_t>(Kq));
        HWY_DYNAMIC_DISPATCH(BuildLut)(xs[t], lut_bytes, nullptr, qs + t * nqb, q.data());
        amxint8::put_token(prep[job], in_job, Kq, q.data(), qs + t * nqb);
      }
    };
    if (tokens == 1) {
      build(0, 1);
    } else {
      pool.parallel_for(tokens, build);
    }
  }
  const uint8_t* tab = tables.data();
  const float* qs = qscales.data();
  const amxint8::Prepared* prep = prepared.data();
  const int64_t* slot = table_slot.data();
  for_row_blocks(rows, row_bytes * tokens, lut_rows > 0 ? 0.4 : 1.5, pool,
                 [&](int64_t n_begin, int64_t n_end) {
    int64_t token = 0;
    for (size_t i = 0; i < jobs.size(); ++i) {
      const SignMatmulJob& j = jobs[i];
      const SignMatrix& s = *j.signs;
      const int64_t lut_end = std::min(n_end, lut_rows);
      if (n_begin < lut_end) {
        if (prep[i].tiles != nullptr) {
          amxint8::sign_rows(prep[i], j.tokens, Kq, s.bits, row_bytes, rows, s.scales, s.per_row,
                             n_begin, lut_end, j.y);
        } else {
          HWY_DYNAMIC_DISPATCH(SignLutRows)
          (j.tokens, s.bits, row_bytes, rows, lut_bytes, tab + slot[i] * table_bytes,
           qs + token * nqb, s.scales, s.per_row, n_begin, lut_end, j.y);
        }
        if (lut_bytes < row_bytes) {
          HWY_DYNAMIC_DISPATCH(SignMatmulAddExact)(j.x, j.tokens, s.bits, row_bytes, rows, cols,
                                                   lut_bytes, s.scales, s.per_row, n_begin,
                                                   lut_end, j.y);
        }
      }
      const int64_t exact_begin = std::max(n_begin, lut_end);
      if (exact_begin < n_end) {
        HWY_DYNAMIC_DISPATCH(SignMatmulAddExact)(j.x, j.tokens, s.bits, row_bytes, rows, cols, 0,
                                                 s.scales, s.per_row, exact_begin, n_end, j.y);
      }
      token += j.tokens;
    }
  });
}

void sign_matmul_add_exact(const float* x, int64_t tokens, const SignMatrix& s, float* y,
                           ThreadPool& pool) {
  if (tokens <= 0 || s.rows == 0) return;
  for_row_blocks(s.rows, s.row_bytes() * tokens, 1.5, pool, [&](int64_t n_begin, int64_t n_end) {
    HWY_DYNAMIC_DISPATCH(SignMatmulAddExact)(x, tokens, s.bits, s.row_bytes(), s.rows, s.cols, 0,
                                             s.scales, s.per_row, n_begin, n_end, y);
  });
}

double sign_matmul_quantization_bound(const float* x, int64_t cols) {
  double bound = 0;
  for (int64_t b = 0; b + kSignQuantBlock <= cols; b += kSignQuantBlock) {
    float m = 0;
    for (int64_t k = b; k < b + kSignQuantBlock; ++k) m = std::max(m, std::fabs(x[k]));
    bound += kSignQuantBlock * 0.5 * (m / double(kQuantMax));
  }
  return bound;
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
  HWY_DYNAMIC_DISPATCH(AddScaledSignsRow)(s.bits + row * s.row_bytes(), s.cols, s.scale(row), dst);
}

}  // namespace bitdelta
#endif  // HWY_ONCE
