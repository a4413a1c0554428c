// The AVX512_VNNI kernels for quantized weights (see quant_vnni.h). Only rows() and its helpers
// are compiled for AVX-512 (function attributes), and matmul() calls them only after
// cpu_supported().
#include "ops/quant_vnni.h"

#include <immintrin.h>

// GCC 12 warns inside its own AVX-512 intrinsics (their "undefined" pass-through operands).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cmath>

#define BD_VNNI_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))

namespace bitdelta::qvnni {
namespace {

constexpr int64_t kStepBytes = 64;  // two blocks of 32

// Which of a step's two blocks byte p (0..63) and int32 lane l (0..15) belong to, and which
// element of it byte p is. Q8_0 codes lie block after block; Q4_0's low nibbles of both blocks
// come first (elements 0-15 of each), then the high nibbles (elements 16-31).
int block_of_byte(Quant q, int p) { return q == Quant::kQ8_0 ? p / 32 : (p / 16) % 2; }
int element_of_byte(Quant q, int p) {
  return q == Quant::kQ8_0 ? p % 32 : p % 16 + (p >= 32 ? 16 : 0);
}
int block_of_lane(Quant q, int l) { return block_of_byte(q, 4 * l); }

// What the unsigned weights carry on top of their value: Q8_0 codes + 128, Q4_0 q = w / d + 8.
int32_t weight_offset(Quant q) { return q == Quant::kQ8_0 ? 128 : 8; }

// The 16 lanes summed, always in the same tree: halves, quarters, then pairs.
BD_VNNI_TARGET inline float sum_lanes(__m512 v) {
  const __m256 a = _mm256_add_ps(_mm512_extractf32x8_ps(v, 0), _mm512_extractf32x8_ps(v, 1));
  const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
  return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}

// For step j of a window of eight, lane l takes scale 2·(j mod 8) + (the block of lane l).
struct Picks {
  alignas(64) int32_t index[8][16];
};
Picks make_picks(Quant q) {
  Picks p;
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 16; ++l) p.index[j][l] = 2 * j + block_of_lane(q, l);
  }
  return p;
}

// One step's 64 unsigned weight bytes (`p`: the row's codes of that step).
template <Quant Q>
BD_VNNI_TARGET inline __m512i load_weights(const uint8_t* p) {
  if constexpr (Q == Quant::kQ8_0) {
    // Two's complement + 128 = the code with its top bit flipped (padding codes become 128s
    // that meet zero activations).
    return _mm512_xor_si512(_mm512_loadu_si512(p), _mm512_set1_epi8(static_cast<char>(0x80)));
  } else {
    const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    const __m256i low = _mm256_and_si256(bytes, _mm256_set1_epi8(0x0f));
    const __m256i high = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), _mm256_set1_epi8(0x0f));
    return _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
  }
}

// R rows against C tokens from token t: y[(t + c)·N + r]. Row r's step j is at
// rows + r·kStep + j·step_stride (the interleaved layout of ops/quant.h), its F16 block scales
// at scales + r·nb. Per output: one F32 accumulator of 16 lanes, steps in order, then the lanes
// summed; the same sequence whatever R and C.
template <Quant Q, int R, int C>
BD_VNNI_TARGET inline void tile(const Activations& a, int64_t t, const uint8_t* rows,
                                int64_t step_stride, const uint16_t* scales, int64_t nb, float* y,
                                int64_t N) {
  const int64_t steps = a.steps;
  // Lane → which of the step's two block scales, for each step of a window of eight: the row's
  // scales are widened sixteen at a time (eight steps), and each step picks its two.
  alignas(64) static const Picks picks = make_picks(Q);
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  constexpr int64_t kStep = Q == Quant::kQ8_0 ? 64 : 32;
  __m512 window[R];
  for (int64_t j = 0; j < steps; ++j) {
    __m512i w[R];
    __m512 dwv[R];
    const uint8_t* at_j = rows + j * step_stride;
    for (int r = 0; r < R; ++r) w[r] = load_weights<Q>(at_j + r * kStep);
    if (j % 8 == 0) {
      // The next sixteen F16 block scales of each row (fewer, and zeros, at a row's end).
      const int64_t left = nb - 2 * j;
      const __mmask16 m = left >= 16 ? __mmask16(0xffff) : _cvtu32_mask16((1u << left) - 1u);
      for (int r = 0; r < R; ++r) {
        window[r] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, scales + r * nb + 2 * j));
      }
    }
    const __m512i pick = _mm512_load_si512(picks.index[j % 8]);
    for (int r = 0; r < R; ++r) dwv[r] = _mm512_permutexvar_ps(pick, window[r]);
    for (int c = 0; c < C; ++c) {
      const int64_t at = (t + c) * steps + j;
      const __m512i x = _mm512_loadu_si512(a.codes.data() + at * kStepBytes);
      const __m512i start = _mm512_loadu_si512(a.starts.data() + at * 16);
      const __m512 dx = _mm512_loadu_ps(a.scales.data() + at * 16);
      for (int r = 0; r < R; ++r) {
        const __m512i dot = _mm512_dpbusd_epi32(start, w[r], x);
        acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dwv[r], dx), acc[r][c]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) y[(t + c) * N + r] = sum_lanes(acc[r][c]);
  }
}

// R rows against all T tokens, three at a time.
template <Quant Q, int R>
BD_VNNI_TARGET inline void tokens(const Activations& a, const uint8_t* rows, int64_t step_stride,
                                  const uint16_t* scales, int64_t nb, float* y, int64_t N) {
  const int64_t T = a.tokens;
  int64_t t = 0;
  for (; t + 3 <= T; t += 3) tile<Q, R, 3>(a, t, rows, step_stride, scales, nb, y, N);
  if (T - t == 2) tile<Q, R, 2>(a, t, rows, step_stride, scales, nb, y, N);
  if (T - t == 1) tile<Q, R, 1>(a, t, rows, step_stride, scales, nb, y, N);
}

// Rows [n_begin, n_end): whole groups
// of four rows at once (one sequential stream of codes; the activations' loads shared by the four
// rows), the rest one by one.
template <Quant Q>
BD_VNNI_TARGET void rows_q(const Activations& a, const uint16_t* scales, const uint8_t* codes,
                           int64_t N, int64_t K, int64_t n_begin, int64_t n_end, float* y) {
  const int64_t nb = quant_blocks(K);
  const int64_t step = Q == Quant::kQ8_0 ? 64 : 32;
  int64_t n = n_begin;
  while (n < n_end) {
    const int64_t first = n / kQuantRowGroup * kQuantRowGroup;
    const int64_t in_group = std::min(kQuantRowGroup, N - first);
    const uint8_t* row = codes + quant_step_offset(Q, N, K, n, 0);
    if (n == first && in_group == kQuantRowGroup && n + kQuantRowGroup <= n_end) {
      tokens<Q, kQuantRowGroup>(a, row, kQuantRowGroup * step, scales + n * nb, nb, y + n, N);
      n += kQuantRowGroup;
    } else {
      tokens<Q, 1>(a, row, in_group * step, scales + n * nb, nb, y + n, N);
      ++n;
    }
  }
}

}  // namespace

bool cpu_supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("f16c") &&
         __builtin_cpu_supports("fma");
}

void prepare(Quant q, const float* x, int64_t T, int64_t K, Activations& out) {
  const int64_t nb = quant_blocks(K), steps = (nb + 1) / 2;
  out.quant = q;
  out.tokens = T;
  out.steps = steps;
  out.codes.resize(static_cast<size_t>(T * steps * kStepBytes));
  out.scales.resize(static_cast<size_t>(T * steps * 16));
  out.starts.resize(static_cast<size_t>(T * steps * 16));
  int8_t block[2][kQuantBlock];
  float d[2];
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * K;
    for (int64_t j = 0; j < steps; ++j) {
      // The step's two blocks, Q8_0 as llama.cpp quantizes activations (d = max|x| / 127).
      for (int h = 0; h < 2; ++h) {
        const int64_t b = 2 * j + h, first = b * kQuantBlock;
        const int64_t count = b < nb ? std::min(kQuantBlock, K - first) : 0;
        float amax = 0;
        for (int64_t i = 0; i < count; ++i) amax = std::max(amax, std::fabs(xt[first + i]));
        d[h] = amax / 127.0f;
        const float id = d[h] != 0 ? 1.0f / d[h] : 0.0f;
        for (int64_t i = 0; i < kQuantBlock; ++i) {
          block[h][i] = i < count ? static_cast<int8_t>(std::nearbyint(xt[first + i] * id)) : 0;
        }
      }
      const int64_t at = t * steps + j;
      int8_t* codes = out.codes.data() + at * kStepBytes;
      for (int p = 0; p < kStepBytes; ++p)
        codes[p] = block[block_of_byte(q, p)][element_of_byte(q, p)];
      for (int l = 0; l < 16; ++l) {
        int32_t sum = 0;
        for (int p = 4 * l; p < 4 * l + 4; ++p) sum += codes[p];
        out.starts[at * 16 + l] = -weight_offset(q) * sum;
        out.scales[at * 16 + l] = d[block_of_lane(q, l)];
      }
    }
  }
}

BD_VNNI_TARGET void rows(const Activations& a, const uint16_t* scales, const uint8_t* codes,
                         int64_t N, int64_t K, int64_t n_begin, int64_t n_end, float* y) {
  if (a.quant == Quant::kQ8_0) {
    rows_q<Quant::kQ8_0>(a, scales, codes, N, K, n_begin, n_end, y);
  } else {
    rows_q<Quant::kQ4_0>(a, scales, codes, N, K, n_begin, n_end, y);
  }
}

}  // namespace bitdelta::qvnni
