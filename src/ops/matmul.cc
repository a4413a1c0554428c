// Highway kernels for matmul(), compiled once per SIMD target (foreach_target) and dispatched at
// run time, once per call per thread.
//
// Every output is one dot product computed the same way whatever the batch: a vector accumulator
// over k in steps of the vector width (fused multiply-adds, k ascending), summed across lanes,
// then the last K % lanes columns in order. So y[t, n] depends on x[t, :] and row n alone — not on
// how many tokens share the call, where token t sits among them, or how the rows are split across
// threads — and a sequence's logits do not change with what else is in the batch (greedy output
// of a request is the same whether it runs alone or beside others; see transformer.h).
//
// Since every kernel sums the same way, each token count gets the loop order that suits it:
// up to three tokens (decode, small batches: memory-bound) read the rows one after another in a
// single sequential stream; more tokens (batched decode, prefill: compute-bound) take the rows in
// blocks of four, fetched once per tile of tokens and kept in L1 while groups of three tokens pass
// over them (12 accumulators). On AVX-512 the latter beats the packed outer-product GEMM it
// replaced (which summed in another order) by ~10-20%.
#include "ops/matmul.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "ops/aligned_buffer.h"
#include "ops/amx_tiles.h"
#include "ops/matmul_amx.h"
#include "ops/matmul_bf16dot.h"
#include "ops/quant_vnni.h"
#include "util/error.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/matmul.cc"
#include <hwy/aligned_allocator.h>
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "ops/widen-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bitdelta::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;

// The end of every dot product: the lanes' partial sums, then the columns past the last whole
// vector in order. One function, so that every kernel finishes a sum the same way.
template <typename WT>
HWY_INLINE float finish_dot(hn::Vec<DF> acc, const WT* row, const float* x, int64_t k, int64_t K) {
  const DF df;
  float sum = hn::GetLane(hn::SumOfLanes(df, acc));
  for (; k < K; ++k) sum += widen_scalar(row + k) * x[k];
  return sum;
}

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
  for (int c = 0; c < C; ++c) y[c * N + n] = finish_dot(acc[c], row, x + c * K, k, K);
}

// Four rows × C tokens (C ≤ 3): each weight vector is widened once for C tokens and each
// activation vector loaded once for four rows; 4·C accumulators, as named variables (GCC
// spills an array of vectors to the stack on every iteration).
template <int C, typename WT>
HWY_INLINE void rows4_dots(const float* x, int64_t K, const WT* w, int64_t n, int64_t N, float* y) {
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
  const hn::Vec<DF> acc[4][3] = {
      {a00, a01, a02}, {a10, a11, a12}, {a20, a21, a22}, {a30, a31, a32}};
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < C; ++c) y[c * N + n + r] = finish_dot(acc[r][c], rows[r], xs[c], k, K);
  }
}

// One token (decode): rows one after another, so the weights stream through memory in a single
// sequential pass, which the hardware prefetchers follow at full bandwidth (blocks of four rows
// read as four strided streams reach about half of it). One accumulator per row, like every
// kernel here; consecutive rows' independent chains overlap in the out-of-order core.
template <typename WT>
void gemv_kernel(const float* x, const WT* w, int64_t K, int64_t n_begin, int64_t n_end, float* y) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  for (int64_t n = n_begin; n < n_end; ++n) {
    const WT* row = w + n * K;
    auto acc = hn::Zero(df);
    int64_t k = 0;
    for (; k + lanes <= K; k += lanes)
      acc = hn::MulAdd(load_widened(df, row + k), hn::LoadU(df, x + k), acc);
    y[n] = finish_dot(acc, row, x, k, K);
  }
}

// Tokens per tile: the tile's activations (tile × K floats) stay in L2 while the weights of a
// thread's rows stream past once per tile.
constexpr int64_t kTokenTile = 24;

template <typename WT>
void rows_kernel(const float* x, int64_t T, const WT* w, int64_t K, int64_t n_begin, int64_t n_end,
                 int64_t N, float* y) {
  if (T == 1) {
    gemv_kernel(x, w, K, n_begin, n_end, y);
    return;
  }
  // A few tokens: still one sequential stream of rows (measured: ~1.4x the blocks of four for
  // 2-3 tokens, from DRAM). From 4 tokens on, blocks of four rows reuse each activation load.
  if (T <= 3) {
    for (int64_t n = n_begin; n < n_end; ++n) {
      if (T == 3) {
        row_dots<3>(x, K, w + n * K, n, N, y);
      } else {
        row_dots<2>(x, K, w + n * K, n, N, y);
      }
    }
    return;
  }
  for (int64_t t0 = 0; t0 < T; t0 += kTokenTile) {
    const int64_t tt = std::min(kTokenTile, T - t0);
    const float* xt = x + t0 * K;
    float* yt = y + t0 * N;
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
      for (; t + 3 <= tt; t += 3) rows4_dots<3>(xt + t * K, K, w, n, N, yt + t * N);
      if (tt - t == 2) rows4_dots<2>(xt + t * K, K, w, n, N, yt + t * N);
      if (tt - t == 1) rows4_dots<1>(xt + t * K, K, w, n, N, yt + t * N);
    }
    for (; n < n_end; ++n) {
      const WT* row = w + n * K;
      int64_t t = 0;
      for (; t + 4 <= tt; t += 4) row_dots<4>(xt + t * K, K, row, n, N, yt + t * N);
      switch (tt - t) {
        case 3:
          row_dots<3>(xt + t * K, K, row, n, N, yt + t * N);
          break;
        case 2:
          row_dots<2>(xt + t * K, K, row, n, N, yt + t * N);
          break;
        case 1:
          row_dots<1>(xt + t * K, K, row, n, N, yt + t * N);
          break;
        default:
          break;
      }
    }
  }
}

void Matmul(const float* x, int64_t T, DType dtype, const uint8_t* data, int64_t N, int64_t K,
            int64_t n_begin, int64_t n_end, float* y) {
  switch (dtype) {
    case DType::kF32:
      rows_kernel(x, T, reinterpret_cast<const float*>(data), K, n_begin, n_end, N, y);
      return;
    case DType::kBF16:
      rows_kernel(x, T, reinterpret_cast<const hwy::bfloat16_t*>(data), K, n_begin, n_end, N, y);
      return;
    case DType::kF16:
      rows_kernel(x, T, reinterpret_cast<const hwy::float16_t*>(data), K, n_begin, n_end, N, y);
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

namespace {

const bool kCpuHasBf16Dot = bf16dot::cpu_supported();
const bool kCpuHasAmx = kCpuHasBf16Dot && amx::cpu_supported();
const bool kCpuHasVnni = qvnni::cpu_supported();
std::atomic<bool> g_f32_activations{false};
std::atomic<bool> g_amx{true};

// The rows of every target split across the pool's threads, in one loop, in chunks of whole
// 16-row panels (aligned with every kernel's blocks of four rows): rows(i, n_begin, n_end) fills
// target i's y columns of those rows for every token, then the bias is added to them. A panel is
// computed the same way whichever thread and chunk it falls in.
template <typename Rows>
void split_rows(std::span<const MatmulTarget> targets, int64_t tokens, ThreadPool& pool,
                const Rows& rows) {
  int64_t panels = 0;
  for (const MatmulTarget& m : targets) panels += (m.w->rows + 15) / 16;
  const int64_t K = targets.front().w->cols;
  const auto run = [&](int64_t p_begin, int64_t p_end) {
    int64_t first = 0;  // the first panel of target i
    for (size_t i = 0; i < targets.size() && first < p_end; ++i) {
      const MatmulTarget& m = targets[i];
      const int64_t count = (m.w->rows + 15) / 16;
      const int64_t b = std::max(p_begin, first) - first;
      const int64_t e = std::min(p_end, first + count) - first;
      first += count;
      if (b >= e) continue;
      const int64_t n_begin = b * 16, n_end = std::min(m.w->rows, e * 16);
      rows(i, n_begin, n_end);
      if (m.bias != nullptr) {
        for (int64_t t = 0; t < tokens; ++t) {
          for (int64_t n = n_begin; n < n_end; ++n) m.y[t * m.w->rows + n] += m.bias[n];
        }
      }
    }
  };
  // Threads take chunks of panels as they come free (about eight each), so one that starts late
  // or reads slower does not leave the others waiting at the end of the loop.
  const int64_t grain =
      std::max<int64_t>(4, kMinMacsPerThread / std::max<int64_t>(1, 16 * K * tokens));
  const int64_t threads = std::min<int64_t>(pool.size(), std::max<int64_t>(1, panels / grain));
  if (threads <= 1) {
    run(0, panels);
    return;
  }
  const int64_t chunk = std::max<int64_t>(1, panels / (8 * threads));
  std::atomic<int64_t> next{0};
  pool.parallel_for(threads, [&](int64_t, int64_t) {
    for (int64_t b; (b = next.fetch_add(chunk, std::memory_order_relaxed)) < panels;) {
      run(b, std::min(panels, b + chunk));
    }
  });
}

// Quantized weights: integer dot products on int8 activations (quant_vnni.h), quantized once for
// every target, or the codes widened to F32 against the activations padded to whole blocks of 32.
void quant_matmul(const float* x, int64_t tokens, std::span<const MatmulTarget> targets,
                  ThreadPool& pool) {
  const WeightMatrix& w0 = *targets.front().w;
  const int64_t K = w0.cols, xs = quant_blocks(K) * kQuantBlock;
  if (int8_quantized_products()) {
    thread_local qvnni::Activations prepared;
    qvnni::prepare(w0.quant, x, tokens, K, prepared);
    const qvnni::Activations* a = &prepared;  // (the workers' own thread_local is another)
    split_rows(targets, tokens, pool, [&](size_t i, int64_t n_begin, int64_t n_end) {
      const WeightMatrix& w = *targets[i].w;
      qvnni::rows(*a, w.scales, w.data, w.rows, K, n_begin, n_end, targets[i].y);
    });
    return;
  }
  thread_local std::vector<float> padded;
  const float* xp = x;
  if (xs != K) {
    padded.assign(static_cast<size_t>(tokens * xs), 0.0f);
    for (int64_t t = 0; t < tokens; ++t) {
      std::memcpy(padded.data() + t * xs, x + t * K, static_cast<size_t>(K) * 4);
    }
    xp = padded.data();
  }
  split_rows(targets, tokens, pool, [&](size_t i, int64_t n_begin, int64_t n_end) {
    const WeightMatrix& w = *targets[i].w;
    detail::quant_rows(w.quant, xp, tokens, xs, w.scales, w.data, w.rows, K, n_begin, n_end,
                       targets[i].y);
  });
}

}  // namespace

void set_f32_activations(bool f32) { g_f32_activations = f32; }

bool bf16_dot_products() { return kCpuHasBf16Dot && !g_f32_activations; }

void set_amx_tiles(bool use) { g_amx = use; }

bool amx_tiles_enabled() { return kCpuHasAmx && g_amx; }

bool amx_tile_products() { return amx_tiles_enabled() && bf16_dot_products(); }

bool int8_quantized_products() { return kCpuHasVnni && !g_f32_activations; }

void matmul(const float* x, int64_t tokens, const WeightMatrix& w, const float* bias, float* y,
            ThreadPool& pool) {
  const MatmulTarget target{&w, bias, y};
  matmul_many(x, tokens, {&target, 1}, pool);
}

void matmul_many(const float* x, int64_t tokens, std::span<const MatmulTarget> targets,
                 ThreadPool& pool) {
  if (tokens <= 0 || targets.empty()) return;
  const WeightMatrix& w0 = *targets.front().w;
  for (const MatmulTarget& m : targets) {
    BD_CHECK(m.w->cols == w0.cols && m.w->dtype == w0.dtype && m.w->quant == w0.quant,
             "matmul_many: the matrices differ in width or format ({}x{} {} against {}x{} {})",
             m.w->rows, m.w->cols, dtype_name(m.w->dtype), w0.rows, w0.cols, dtype_name(w0.dtype));
  }
  if (w0.quant != Quant::kNone) {
    quant_matmul(x, tokens, targets, pool);
    return;
  }
  // BF16 weights on VDPBF16PS: the activations rounded once for every thread and target.
  const bool bf16_dot = w0.dtype == DType::kBF16 && bf16_dot_products();
  // (Per calling thread; the workers see it through xb, not as their own thread_local.)
  // 64-byte aligned rows (unaligned 64-byte loads would each touch two cache lines).
  thread_local AlignedBuffer<uint16_t> rounded;
  const uint16_t* xb = nullptr;
  if (bf16_dot) {
    uint16_t* r = rounded.reserve(tokens * bf16dot::padded(w0.cols));
    bf16dot::round_activations(x, tokens, w0.cols, r);
    xb = r;
  }
  // On AMX they are laid out once more as the tiles' right-hand operand.
  const bool amx = bf16_dot && amx_tile_products();
  thread_local AlignedBuffer<uint32_t> tiled;
  const uint32_t* xv = nullptr;
  if (amx) {
    uint32_t* v = tiled.reserve(amxbf16::prepared_size(tokens, w0.cols));
    amxbf16::prepare(xb, tokens, w0.cols, v);
    xv = v;
  }
  split_rows(targets, tokens, pool, [&](size_t i, int64_t n_begin, int64_t n_end) {
    const WeightMatrix& w = *targets[i].w;
    if (amx) {
      amxbf16::rows(xv, tokens, reinterpret_cast<const uint16_t*>(w.data), w.rows, w.cols, n_begin,
                    n_end, targets[i].y);
    } else if (bf16_dot) {
      bf16dot::rows(xb, tokens, reinterpret_cast<const uint16_t*>(w.data), w.rows, w.cols, n_begin,
                    n_end, targets[i].y);
    } else {
      HWY_DYNAMIC_DISPATCH(Matmul)
      (x, tokens, w.dtype, w.data, w.rows, w.cols, n_begin, n_end, targets[i].y);
    }
  });
}

void matmul_reference(const float* x, int64_t tokens, const WeightMatrix& w, const float* bias,
                      float* y) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  const size_t row_bytes = static_cast<size_t>(w.cols) * dtype_size(w.dtype);
  for (int64_t n = 0; n < w.rows; ++n) {
    if (w.quant != Quant::kNone) {
      dequantize_row(w.quant, w.scales, w.data, w.rows, n, w.cols, row.data());
    } else {
      convert_to_f32(w.dtype, w.data + n * row_bytes, row.data(), row.size());
    }
    for (int64_t t = 0; t < tokens; ++t) {
      double sum = bias != nullptr ? bias[n] : 0.0;
      for (int64_t k = 0; k < w.cols; ++k) sum += static_cast<double>(x[t * w.cols + k]) * row[k];
      y[t * w.rows + n] = static_cast<float>(sum);
    }
  }
}

}  // namespace bitdelta
#endif  // HWY_ONCE
