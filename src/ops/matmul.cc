// Highway kernels for matmul(), compiled once per SIMD target (foreach_target) and dispatched at
// run time, once per call.
//
// Register blocking: a micro-kernel keeps R rows × C tokens of dot products in vector
// accumulators, so every weight vector loaded is used C times and every activation vector R
// times. Decode (T ≤ 3) streams each weight byte exactly once. For prefill, BF16/F16 rows are
// first widened into a small F32 panel that stays in L1 while all token blocks pass over it.
#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/matmul.h"
#include "util/error.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/matmul.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace bitdelta::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;

template <typename WT>
HWY_INLINE hn::Vec<DF> load_weights(DF df, const WT* p) {
  if constexpr (std::is_same_v<WT, float>) {
    return hn::LoadU(df, p);
  } else {
    const hn::Rebind<WT, DF> dw;
    return hn::PromoteTo(df, hn::LoadU(dw, p));
  }
}

template <typename WT>
HWY_INLINE float scalar_weight(const WT* p) {
  if constexpr (std::is_same_v<WT, float>) {
    float v;
    std::memcpy(&v, p, 4);
    return v;
  } else {
    uint16_t bits;
    std::memcpy(&bits, p, 2);
    if constexpr (std::is_same_v<WT, hwy::bfloat16_t>) {
      return bf16_to_f32(bits);
    } else {
      return f16_to_f32(bits);
    }
  }
}

// y[t, n] for n in [n0, n0+R), t in [t0, t0+C).
template <int R, int C, typename WT>
HWY_INLINE void micro_kernel(const float* x, int64_t K, const WT* w, int64_t w_stride, int64_t n0,
                             int64_t t0, int64_t N, float* y) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  hn::Vec<DF> acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = hn::Zero(df);
  }
  const WT* wrow[R];
  for (int r = 0; r < R; ++r) wrow[r] = w + (n0 + r) * w_stride;
  const float* xrow[C];
  for (int c = 0; c < C; ++c) xrow[c] = x + (t0 + c) * K;
  int64_t k = 0;
  for (; k + lanes <= K; k += lanes) {
    hn::Vec<DF> xv[C];
    for (int c = 0; c < C; ++c) xv[c] = hn::LoadU(df, xrow[c] + k);
    for (int r = 0; r < R; ++r) {
      const auto wv = load_weights(df, wrow[r] + k);
      for (int c = 0; c < C; ++c) acc[r][c] = hn::MulAdd(wv, xv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      float sum = hn::GetLane(hn::SumOfLanes(df, acc[r][c]));
      for (int64_t kk = k; kk < K; ++kk) sum += scalar_weight(wrow[r] + kk) * xrow[c][kk];
      y[(t0 + c) * N + n0 + r] = sum;
    }
  }
}

// Decode (one token): rows are read one after another, so the weights stream through memory
// in a single sequential pass, which the hardware prefetchers follow best; four accumulators
// hide the FMA latency.
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
      a0 = hn::MulAdd(load_weights(df, row + k), hn::LoadU(df, x + k), a0);
      a1 = hn::MulAdd(load_weights(df, row + k + lanes), hn::LoadU(df, x + k + lanes), a1);
      a2 = hn::MulAdd(load_weights(df, row + k + 2 * lanes), hn::LoadU(df, x + k + 2 * lanes), a2);
      a3 = hn::MulAdd(load_weights(df, row + k + 3 * lanes), hn::LoadU(df, x + k + 3 * lanes), a3);
    }
    for (; k + lanes <= K; k += lanes) {
      a0 = hn::MulAdd(load_weights(df, row + k), hn::LoadU(df, x + k), a0);
    }
    float sum = hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
    for (; k < K; ++k) sum += scalar_weight(row + k) * x[k];
    y[n] = sum;
  }
}

// Rows [n_begin, n_end) of y for all T tokens; w points at row 0 (stride K).
template <typename WT>
void rows_kernel(const float* x, int64_t T, const WT* w, int64_t K, int64_t n_begin,
                 int64_t n_end, int64_t N, float* y) {
  if (T == 1) {
    gemv_kernel(x, w, K, n_begin, n_end, y);
    return;
  }
  // Few tokens (batched decode) are memory-bound: one row at a time keeps the weight reads a
  // single sequential stream. Many tokens are compute-bound: 4 rows × 3 tokens per block.
  if (T <= 3) {
    for (int64_t n = n_begin; n < n_end; ++n) {
      if (T == 3) micro_kernel<1, 3>(x, K, w, K, n, 0, N, y);
      if (T == 2) micro_kernel<1, 2>(x, K, w, K, n, 0, N, y);
    }
    return;
  }
  constexpr int R = 4;
  auto token_blocks = [&](auto row_block, int64_t n0) {
    int64_t t = 0;
    for (; t + 3 <= T; t += 3) row_block(std::integral_constant<int, 3>(), n0, t);
    if (T - t == 2) row_block(std::integral_constant<int, 2>(), n0, t);
    if (T - t == 1) row_block(std::integral_constant<int, 1>(), n0, t);
  };
  int64_t n = n_begin;
  for (; n + R <= n_end; n += R) {
    token_blocks([&](auto c, int64_t n0, int64_t t0) {
      micro_kernel<R, decltype(c)::value>(x, K, w, K, n0, t0, N, y);
    }, n);
  }
  for (; n < n_end; ++n) {
    token_blocks([&](auto c, int64_t n0, int64_t t0) {
      micro_kernel<1, decltype(c)::value>(x, K, w, K, n0, t0, N, y);
    }, n);
  }
}

// Prefill path for 16-bit weights: widen a panel of rows to F32 once, then reuse it for every
// token block.
template <typename WT>
void rows_kernel_panel(const float* x, int64_t T, const WT* w, int64_t K, int64_t n_begin,
                       int64_t n_end, int64_t N, float* y) {
  constexpr int64_t kPanelRows = 8;
  thread_local std::vector<float> panel;
  panel.resize(static_cast<size_t>(kPanelRows * K));
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  for (int64_t p0 = n_begin; p0 < n_end; p0 += kPanelRows) {
    const int64_t rows = std::min(kPanelRows, n_end - p0);
    for (int64_t r = 0; r < rows; ++r) {
      const WT* src = w + (p0 + r) * K;
      float* dst = panel.data() + r * K;
      int64_t k = 0;
      for (; k + lanes <= K; k += lanes) hn::StoreU(load_weights(df, src + k), df, dst + k);
      for (; k < K; ++k) dst[k] = scalar_weight(src + k);
    }
    // The panel holds rows p0..p0+rows; index it as rows 0..rows of a matrix whose output
    // columns start at p0.
    float* y_shifted = y + p0;
    rows_kernel<float>(x, T, panel.data(), K, 0, rows, N, y_shifted);
  }
}

void Matmul(const float* x, int64_t T, DType dtype, const uint8_t* data, int64_t N, int64_t K,
            int64_t n_begin, int64_t n_end, float* y) {
  switch (dtype) {
    case DType::kF32:
      rows_kernel(x, T, reinterpret_cast<const float*>(data), K, n_begin, n_end, N, y);
      return;
    case DType::kBF16:
      if (T > 3) {
        rows_kernel_panel(x, T, reinterpret_cast<const hwy::bfloat16_t*>(data), K, n_begin, n_end,
                          N, y);
      } else {
        rows_kernel(x, T, reinterpret_cast<const hwy::bfloat16_t*>(data), K, n_begin, n_end, N, y);
      }
      return;
    case DType::kF16:
      if (T > 3) {
        rows_kernel_panel(x, T, reinterpret_cast<const hwy::float16_t*>(data), K, n_begin, n_end,
                          N, y);
      } else {
        rows_kernel(x, T, reinterpret_cast<const hwy::float16_t*>(data), K, n_begin, n_end, N, y);
      }
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
  if (tokens <= 0 || w.rows == 0) return;
  // Chunks of whole 8-row panels keep the row split aligned with the kernels' blocking.
  const int64_t panels = (w.rows + 7) / 8;
  pool.parallel_for(panels, [&](int64_t p_begin, int64_t p_end) {
    const int64_t n_begin = p_begin * 8;
    const int64_t n_end = std::min(w.rows, p_end * 8);
    HWY_DYNAMIC_DISPATCH(Matmul)(x, tokens, w.dtype, w.data, w.rows, w.cols, n_begin, n_end, y);
    if (bias != nullptr) {
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t n = n_begin; n < n_end; ++n) y[t * w.rows + n] += bias[n];
      }
    }
  }, /*grain=*/std::max<int64_t>(4, kMinMacsPerThread / std::max<int64_t>(1, 8 * w.cols * tokens)));
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
