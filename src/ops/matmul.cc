// Highway kernels for matmul(), compiled once per SIMD target (foreach_target) and dispatched at
// run time, once per call per thread.
//
// Decode (T = 1) is memory-bound: rows are read one after another so the weights stream through
// memory in a single sequential pass. Batched decode (T ≤ 24) keeps that order in blocks of four
// rows, over which groups of three tokens pass from L1 while the next blocks are prefetched. Prefill (T > 3) is compute-bound: a panel of 2 vectors' worth
// of rows is widened to F32 and transposed once ([K][NR], in L2), then a 6-token × NR
// outer-product micro-kernel accumulates in 12 registers with no horizontal sums — the
// register-blocking scheme of BLIS/OpenBLAS.
#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/matmul.h"
#include "util/error.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/matmul.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/aligned_allocator.h>
#include <hwy/highway.h>

#include "ops/widen-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bitdelta::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;

// Dot products of one row with C tokens: y[t0 + c, n] for c < C.
template <int C, typename WT>
HWY_INLINE void row_dots(const float* x, int64_t K, const WT* row, int64_t n, int64_t N, float* y) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  hn::Vec<DF> acc[C];
  for (int c = 0; c < C; ++c) acc[c] = hn::Zero(df);
  int64_t k = 0;
  for (; k + lanes <= K; k += lanes) {
    const auto wv = load_widened(df, row + k);
    for (int c = 0; c < C; ++c) acc[c] = hn::MulAdd(wv, hn::LoadU(df, x + c * K + k), acc[c]);
  }
  for (int c = 0; c < C; ++c) {
    float sum = hn::GetLane(hn::SumOfLanes(df, acc[c]));
    for (int64_t kk = k; kk < K; ++kk) sum += widen_scalar(row + kk) * x[c * K + kk];
    y[c * N + n] = sum;
  }
}

// Four rows × C tokens (C ≤ 3): each weight vector is widened once for C tokens and each
// activation vector loaded once for four rows; 4·C accumulators, as named variables (see
// outer_kernel6).
template <int C, typename WT>
HWY_INLINE void rows4_dots(const float* x, int64_t K, const WT* w, int64_t n, int64_t N,
                           float* y) {
  static_assert(C >= 1 && C <= 3);
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const WT* r0 = w + n * K;
  const WT* r1 = r0 + K;
  const WT* r2 = r1 + K;
  const WT* r3 = r2 + K;
  const float* x0 = x;
  const float* x1 = x + K;
  const float* x2 = x + 2 * K;
  auto a00 = hn::Zero(df), a10 = hn::Zero(df), a20 = hn::Zero(df), a30 = hn::Zero(df);
  auto a01 = hn::Zero(df), a11 = hn::Zero(df), a21 = hn::Zero(df), a31 = hn::Zero(df);
  auto a02 = hn::Zero(df), a12 = hn::Zero(df), a22 = hn::Zero(df), a32 = hn::Zero(df);
  int64_t k = 0;
  for (; k + lanes <= K; k += lanes) {
    const auto v0 = hn::LoadU(df, x0 + k);
    const auto v1 = C > 1 ? hn::LoadU(df, x1 + k) : v0;
    const auto v2 = C > 2 ? hn::LoadU(df, x2 + k) : v0;
    // One row's weights, widened once, into its C accumulators.
    const auto row = [&](const WT* r, hn::Vec<DF>& c0, hn::Vec<DF>& c1, hn::Vec<DF>& c2) {
      const auto wv = load_widened(df, r + k);
      c0 = hn::MulAdd(wv, v0, c0);
      if constexpr (C > 1) c1 = hn::MulAdd(wv, v1, c1);
      if constexpr (C > 2) c2 = hn::MulAdd(wv, v2, c2);
    };
    row(r0, a00, a01, a02);
    row(r1, a10, a11, a12);
    row(r2, a20, a21, a22);
    row(r3, a30, a31, a32);
  }
  const WT* rows[4] = {r0, r1, r2, r3};
  const float* xs[3] = {x0, x1, x2};
  const hn::Vec<DF> acc[4][3] = {{a00, a01, a02}, {a10, a11, a12}, {a20, a21, a22}, {a30, a31, a32}};
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < C; ++c) {
      float sum = hn::GetLane(hn::SumOfLanes(df, acc[r][c]));
      for (int64_t kk = k; kk < K; ++kk) sum += widen_scalar(rows[r] + kk) * xs[c][kk];
      y[c * N + n + r] = sum;
    }
  }
}

// Decode: four accumulators per row hide the FMA latency.
template <typename WT>
void gemv_kernel(const float* x, const WT* w, int64_t K, int64_t n_begin, int64_t n_end,
                 float* y) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  for (int64_t n = n_begin; n < n_end; ++n) {
    const WT* row = w + n * K;
    auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
    int64_t k = 0;
    for (; k + 4 * lanes <= K; k += 4 * lanes) {
      a0 = hn::MulAdd(load_widened(df, row + k), hn::LoadU(df, x + k), a0);
      a1 = hn::MulAdd(load_widened(df, row + k + lanes), hn::LoadU(df, x + k + lanes), a1);
      a2 = hn::MulAdd(load_widened(df, row + k + 2 * lanes), hn::LoadU(df, x + k + 2 * lanes), a2);
      a3 = hn::MulAdd(load_widened(df, row + k + 3 * lanes), hn::LoadU(df, x + k + 3 * lanes), a3);
    }
    for (; k + lanes <= K; k += lanes) {
      a0 = hn::MulAdd(load_widened(df, row + k), hn::LoadU(df, x + k), a0);
    }
    float sum = hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
    for (; k < K; ++k) sum += widen_scalar(row + k) * x[k];
    y[n] = sum;
  }
}

// Stores one token's NR results (or the first `rows` of them) at dst.
HWY_INLINE void store_row(hn::Vec<DF> lo, hn::Vec<DF> hi, int64_t rows, float* dst) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  if (rows == 2 * lanes) {
    hn::StoreU(lo, df, dst);
    hn::StoreU(hi, df, dst + lanes);
    return;
  }
  HWY_ALIGN float tmp[2 * hn::MaxLanes(df)];
  hn::Store(lo, df, tmp);
  hn::Store(hi, df, tmp + lanes);
  for (int64_t j = 0; j < rows; ++j) dst[j] = tmp[j];
}

// y[t0 .. t0+6, n0 .. n0+rows) from the packed panel [K][NR]: 12 accumulators, written out
// as named variables because GCC spills an array of vectors to the stack on every iteration.
HWY_INLINE void outer_kernel6(const float* x, int64_t K, const float* packed, int64_t t0,
                              int64_t n0, int64_t rows, int64_t N, float* y) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  auto c0l = hn::Zero(df), c0h = hn::Zero(df), c1l = hn::Zero(df), c1h = hn::Zero(df);
  auto c2l = hn::Zero(df), c2h = hn::Zero(df), c3l = hn::Zero(df), c3h = hn::Zero(df);
  auto c4l = hn::Zero(df), c4h = hn::Zero(df), c5l = hn::Zero(df), c5h = hn::Zero(df);
  const float* x0 = x + t0 * K;
  const float* x1 = x0 + K;
  const float* x2 = x1 + K;
  const float* x3 = x2 + K;
  const float* x4 = x3 + K;
  const float* x5 = x4 + K;
  const float* p = packed;
  for (int64_t k = 0; k < K; ++k, p += 2 * lanes) {
    const auto w0 = hn::Load(df, p);
    const auto w1 = hn::Load(df, p + lanes);
    auto b = hn::Set(df, x0[k]);
    c0l = hn::MulAdd(b, w0, c0l);
    c0h = hn::MulAdd(b, w1, c0h);
    b = hn::Set(df, x1[k]);
    c1l = hn::MulAdd(b, w0, c1l);
    c1h = hn::MulAdd(b, w1, c1h);
    b = hn::Set(df, x2[k]);
    c2l = hn::MulAdd(b, w0, c2l);
    c2h = hn::MulAdd(b, w1, c2h);
    b = hn::Set(df, x3[k]);
    c3l = hn::MulAdd(b, w0, c3l);
    c3h = hn::MulAdd(b, w1, c3h);
    b = hn::Set(df, x4[k]);
    c4l = hn::MulAdd(b, w0, c4l);
    c4h = hn::MulAdd(b, w1, c4h);
    b = hn::Set(df, x5[k]);
    c5l = hn::MulAdd(b, w0, c5l);
    c5h = hn::MulAdd(b, w1, c5h);
  }
  float* d = y + t0 * N + n0;
  store_row(c0l, c0h, rows, d);
  store_row(c1l, c1h, rows, d + N);
  store_row(c2l, c2h, rows, d + 2 * N);
  store_row(c3l, c3h, rows, d + 3 * N);
  store_row(c4l, c4h, rows, d + 4 * N);
  store_row(c5l, c5h, rows, d + 5 * N);
}

// The same for one token (the < 6 tokens left over at the end).
HWY_INLINE void outer_kernel1(const float* x, int64_t K, const float* packed, int64_t t,
                              int64_t n0, int64_t rows, int64_t N, float* y) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  auto lo0 = hn::Zero(df), hi0 = hn::Zero(df), lo1 = hn::Zero(df), hi1 = hn::Zero(df);
  const float* xr = x + t * K;
  int64_t k = 0;
  for (; k + 2 <= K; k += 2) {
    const float* p = packed + k * 2 * lanes;
    lo0 = hn::MulAdd(hn::Set(df, xr[k]), hn::Load(df, p), lo0);
    hi0 = hn::MulAdd(hn::Set(df, xr[k]), hn::Load(df, p + lanes), hi0);
    lo1 = hn::MulAdd(hn::Set(df, xr[k + 1]), hn::Load(df, p + 2 * lanes), lo1);
    hi1 = hn::MulAdd(hn::Set(df, xr[k + 1]), hn::Load(df, p + 3 * lanes), hi1);
  }
  if (k < K) {
    const float* p = packed + k * 2 * lanes;
    lo0 = hn::MulAdd(hn::Set(df, xr[k]), hn::Load(df, p), lo0);
    hi0 = hn::MulAdd(hn::Set(df, xr[k]), hn::Load(df, p + lanes), hi0);
  }
  store_row(hn::Add(lo0, lo1), hn::Add(hi0, hi1), rows, y + t * N + n0);
}

// Prefill: rows [n_begin, n_end) for T > 3 tokens.
template <typename WT>
void gemm_kernel(const float* x, int64_t T, const WT* w, int64_t K, int64_t n_begin,
                 int64_t n_end, int64_t N, const SignMatrix* signs, float* y) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const int64_t NR = 2 * lanes;
  constexpr int64_t MR = 6;
  thread_local hwy::AlignedFreeUniquePtr<float[]> packed;
  thread_local int64_t packed_size = 0;
  if (packed_size < K * NR) {
    packed = hwy::AllocateAligned<float>(static_cast<size_t>(K * NR));
    packed_size = K * NR;
  }
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t n0 = n_begin; n0 < n_end; n0 += NR) {
    const int64_t rows = std::min(NR, n_end - n0);
    for (int64_t j = 0; j < NR; ++j) {
      if (j < rows) {
        const WT* src = w + (n0 + j) * K;
        int64_t k = 0;
        for (; k + lanes <= K; k += lanes) hn::StoreU(load_widened(df, src + k), df, row.data() + k);
        for (; k < K; ++k) row[k] = widen_scalar(src + k);
        if (signs != nullptr) add_scaled_signs_row(*signs, n0 + j, row.data());
        for (k = 0; k < K; ++k) packed[k * NR + j] = row[k];
      } else {
        for (int64_t k = 0; k < K; ++k) packed[k * NR + j] = 0.0f;
      }
    }
    int64_t t = 0;
    for (; t + MR <= T; t += MR) outer_kernel6(x, K, packed.get(), t, n0, rows, N, y);
    for (; t < T; ++t) outer_kernel1(x, K, packed.get(), t, n0, rows, N, y);
  }
}

template <typename WT>
void rows_kernel(const float* x, int64_t T, const WT* w, int64_t K, int64_t n_begin,
                 int64_t n_end, int64_t N, const SignMatrix* signs, float* y) {
  if (T == 1) {
    gemv_kernel(x, w, K, n_begin, n_end, y);
  } else if (T <= kMatmulMaxRowDotTokens) {
    // Blocks of four rows are fetched from memory once and stay in L1 while groups of up to
    // three tokens pass over them.
    int64_t n = n_begin;
    for (; n + 4 <= n_end; n += 4) {
      // The block is computed from L1 over several passes, long enough to fetch the next one
      // from DRAM meanwhile (the hardware prefetchers, seeing four strided streams, lag).
      if (n + 12 <= n_end) {
        const char* next = reinterpret_cast<const char*>(w + (n + 8) * K);
        const int64_t bytes = 4 * K * static_cast<int64_t>(sizeof(WT));
        for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(next + off);
      }
      int64_t t = 0;
      for (; t + 3 <= T; t += 3) rows4_dots<3>(x + t * K, K, w, n, N, y + t * N);
      if (T - t == 2) rows4_dots<2>(x + t * K, K, w, n, N, y + t * N);
      if (T - t == 1) rows4_dots<1>(x + t * K, K, w, n, N, y + t * N);
    }
    for (; n < n_end; ++n) {
      const WT* row = w + n * K;
      int64_t t = 0;
      for (; t + 4 <= T; t += 4) row_dots<4>(x + t * K, K, row, n, N, y + t * N);
      switch (T - t) {
        case 3: row_dots<3>(x + t * K, K, row, n, N, y + t * N); break;
        case 2: row_dots<2>(x + t * K, K, row, n, N, y + t * N); break;
        case 1: row_dots<1>(x + t * K, K, row, n, N, y + t * N); break;
        default: break;
      }
    }
  } else {
    gemm_kernel(x, T, w, K, n_begin, n_end, N, signs, y);
  }
}

void Matmul(const float* x, int64_t T, DType dtype, const uint8_t* data, int64_t N, int64_t K,
            int64_t n_begin, int64_t n_end, const SignMatrix* signs, float* y) {
  switch (dtype) {
    case DType::kF32:
      rows_kernel(x, T, reinterpret_cast<const float*>(data), K, n_begin, n_end, N, signs, y);
      return;
    case DType::kBF16:
      rows_kernel(x, T, reinterpret_cast<const hwy::bfloat16_t*>(data), K, n_begin, n_end, N, signs, y);
      return;
    case DType::kF16:
      rows_kernel(x, T, reinterpret_cast<const hwy::float16_t*>(data), K, n_begin, n_end, N, signs, y);
      return;
    default:
      BD_CHECK(false, "matmul: unsupported weight dtype {}", dtype_name(dtype));
  }
}

}  // namespace bitdelta::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bitdelta {

HWY_EXPORT(Matmul);

// Below this much work a second thread costs more in wake-up than it saves.
constexpr int64_t kMinMacsPerThread = 1 << 17;

void matmul(const float* x, int64_t tokens, const WeightMatrix& w, const float* bias, float* y,
            ThreadPool& pool) {
  matmul_with_signs(x, tokens, w, bias, nullptr, y, pool);
}

void matmul_with_signs(const float* x, int64_t tokens, const WeightMatrix& w, const float* bias,
                       const SignMatrix* signs, float* y, ThreadPool& pool) {
  if (tokens <= 0 || w.rows == 0) return;
  if (signs != nullptr) {
    BD_CHECK(signs->rows == w.rows && signs->cols == w.cols, "sign matrix shape mismatch");
  }
  // Packing happens only on the GEMM path; below it the bits get a pass of their own.
  const SignMatrix* merged = tokens > kMatmulMaxRowDotTokens ? signs : nullptr;
  // Chunks of whole 16-row panels keep the row split aligned with the kernels' blocking (2
  // vectors of 8 floats on AVX2).
  const int64_t panels = (w.rows + 15) / 16;
  pool.parallel_for(panels, [&](int64_t p_begin, int64_t p_end) {
    const int64_t n_begin = p_begin * 16;
    const int64_t n_end = std::min(w.rows, p_end * 16);
    HWY_DYNAMIC_DISPATCH(Matmul)(x, tokens, w.dtype, w.data, w.rows, w.cols, n_begin, n_end,
                                 merged, y);
    if (bias != nullptr) {
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t n = n_begin; n < n_end; ++n) y[t * w.rows + n] += bias[n];
      }
    }
  }, /*grain=*/std::max<int64_t>(4, kMinMacsPerThread / std::max<int64_t>(1, 16 * w.cols * tokens)));
  if (signs != nullptr && merged == nullptr) sign_matmul_add(x, tokens, *signs, y, pool);
}

void matmul_reference(const float* x, int64_t tokens, const WeightMatrix& w, const float* bias,
                      float* y) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  const size_t row_bytes = static_cast<size_t>(w.cols) * dtype_size(w.dtype);
  for (int64_t n = 0; n < w.rows; ++n) {
    convert_to_f32(w.dtype, w.data + n * row_bytes, row.data(), row.size());
    for (int64_t t = 0; t < tokens; ++t) {
      double sum = bias != nullptr ? bias[n] : 0.0;
      for (int64_t k = 0; k < w.cols; ++k) sum += static_cast<double>(x[t * w.cols + k]) * row[k];
      y[t * w.rows + n] = static_cast<float>(sum);
    }
  }
}

}  // namespace bitdelta
#endif  // HWY_ONCE
