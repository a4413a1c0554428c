// The BF16 dot-product kernels (see matmul_bf16dot.h). Only the functions below are compiled for
// AVX512_BF16 (function attributes, not file-wide flags), so nothing else in the program can pick
// up these instructions; matmul() calls them only after cpu_supported().
//
// Loop order, as in matmul.cc's Highway kernels: one to three tokens read the rows one after
// another in a single sequential stream (memory-bound decode); more tokens take the rows in
// blocks of four, kept in L1 while tiles of six tokens pass over them (24 accumulators: 4 weight
// and 6 activation loads feed 24 VDPBF16PS), and the tokens in tiles of up to ~384 KiB of
// activations that stay in L2 while a thread's rows stream past once per tile.
#include "ops/matmul_bf16dot.h"

#include <immintrin.h>

#include <algorithm>

#define BD_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

namespace bitdelta::bf16dot {
namespace {

constexpr int64_t kStep = 32;  // BF16 values per vector

BD_BF16_TARGET inline __m512bh load(const uint16_t* p) {
  return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p));
}

BD_BF16_TARGET inline __m512bh load_masked(const uint16_t* p, __mmask32 m) {
  return reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(m, p));
}

// The 16 lanes summed, always in the same tree: halves, quarters, then pairs.
BD_BF16_TARGET inline float sum_lanes(__m512 v) {
  const __m256 a = _mm256_add_ps(_mm512_extractf32x8_ps(v, 0), _mm512_extractf32x8_ps(v, 1));
  const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
  return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}

// y[c·N + r] = Σ_k w[r·K + k] · x[c·K + k] for r < R rows and c < C tokens. Each output's
// accumulator sees the same instructions in the same order whatever R and C are.
template <int R, int C>
BD_BF16_TARGET inline void tile(const uint16_t* w, const uint16_t* x, int64_t K, int64_t xs,
                                int64_t N, float* y) {
  __m512 acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  int64_t k = 0;
  for (; k + kStep <= K; k += kStep) {
    __m512bh wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = load(w + r * K + k);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m512bh xv = load(x + c * xs + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wv[r], xv);
    }
  }
  if (k < K) {
    // The last K % 32 columns: the lanes past K load zeros, and 0 · 0 adds nothing.
    const __mmask32 m = _cvtu32_mask32((1u << (K - k)) - 1u);
    __m512bh wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = load_masked(w + r * K + k, m);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m512bh xv = load_masked(x + c * xs + k, m);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wv[r], xv);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) y[c * N + r] = sum_lanes(acc[r][c]);
  }
}

// R rows against `count` tokens (any count), in tiles of six.
template <int R>
BD_BF16_TARGET inline void tokens(const uint16_t* w, const uint16_t* x, int64_t count, int64_t K,
                                  int64_t N, float* y) {
  const int64_t xs = padded(K);
  int64_t t = 0;
  for (; t + 6 <= count; t += 6) tile<R, 6>(w, x + t * xs, K, xs, N, y + t * N);
  const uint16_t* xt = x + t * xs;
  float* yt = y + t * N;
  switch (count - t) {
    case 5:
      tile<R, 5>(w, xt, K, xs, N, yt);
      break;
    case 4:
      tile<R, 4>(w, xt, K, xs, N, yt);
      break;
    case 3:
      tile<R, 3>(w, xt, K, xs, N, yt);
      break;
    case 2:
      tile<R, 2>(w, xt, K, xs, N, yt);
      break;
    case 1:
      tile<R, 1>(w, xt, K, xs, N, yt);
      break;
    default:
      break;
  }
}

// Bytes of activations a token tile keeps in L2.
constexpr int64_t kTileBytes = 384 << 10;

}  // namespace

bool cpu_supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bf16");
}

BD_BF16_TARGET void round_activations(const float* x, int64_t T, int64_t K, uint16_t* out) {
  const int64_t stride = padded(K);
  for (int64_t t = 0; t < T; ++t) {
    const float* in = x + t * K;
    uint16_t* o = out + t * stride;
    int64_t i = 0;
    for (; i + 16 <= K; i += 16) {
      const __m256bh b = _mm512_cvtneps_pbh(_mm512_loadu_ps(in + i));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i), reinterpret_cast<__m256i>(b));
    }
    if (i < K) {
      // The same instruction for the last few, so that a value rounds the same wherever it sits.
      const __mmask16 m = _cvtu32_mask16((1u << (K - i)) - 1u);
      const __m256bh b = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, in + i));
      _mm256_mask_storeu_epi16(o + i, m, reinterpret_cast<__m256i>(b));
    }
    for (int64_t k = K; k < stride; ++k) o[k] = 0;
  }
}

BD_BF16_TARGET void rows(const uint16_t* xb, int64_t T, const uint16_t* w, int64_t N, int64_t K,
                         int64_t n_begin, int64_t n_end, float* y) {
  if (T <= 3) {
    for (int64_t n = n_begin; n < n_end; ++n) tokens<1>(w + n * K, xb, T, K, N, y + n);
    return;
  }
  const int64_t tile_tokens = std::max<int64_t>(6, kTileBytes / (2 * padded(K)) / 6 * 6);
  for (int64_t t0 = 0; t0 < T; t0 += tile_tokens) {
    const int64_t tt = std::min(tile_tokens, T - t0);
    const uint16_t* xt = xb + t0 * padded(K);
    float* yt = y + t0 * N;
    int64_t n = n_begin;
    for (; n + 4 <= n_end; n += 4) {
      // The next-but-one block is fetched while this one is computed from L1 (the hardware
      // prefetchers lag behind four strided streams).
      if (n + 12 <= n_end) {
        const char* next = reinterpret_cast<const char*>(w + (n + 8) * K);
        for (int64_t off = 0; off < 8 * K; off += 64) _mm_prefetch(next + off, _MM_HINT_T0);
      }
      tokens<4>(w + n * K, xt, tt, K, N, yt + n);
    }
    for (; n < n_end; ++n) tokens<1>(w + n * K, xt, tt, K, N, yt + n);
  }
}

}  // namespace bitdelta::bf16dot
