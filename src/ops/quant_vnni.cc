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
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  constexpr int64_t kStep = Q == Quant::kQ8_0 ? 64 : 32;
  __m512 window[R];
  for (int64_t j = 0; j < steps; ++j) {
    __m512i w[R];
    __m512 dwv[R];
    const uint8_t* at_j = rows + j * step_stride;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) w[r] = load_weights<Q>(at_j + r * kStep);
    if (j % 8 == 0) {
      // The next sixteen F16 block scales of each row (fewer, and zeros, at a row's end).
      const int64_t left = nb - 2 * j;
      const __mmask16 m = left >= 16 ? __mmask16(0xffff) : _cvtu32_mask16((1u << left) - 1u);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        window[r] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, scales + r * nb + 2 * j));
      }
    }
    const __m512i pick = _mm512_load_si512(picks.index[j % 8]);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) dwv[r] = _mm512_permutexvar_ps(pick, window[r]);
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) {
      const int64_t at = (t + c) * steps + j;
      const __m512i x = _mm512_loadu_si512(a.codes.data() + at * kStepBytes);
      const __m512i start = _mm512_loadu_si512(a.starts.data() + at * 16);
      const __m512 dx = _mm512_loadu_ps(a.scales.data() + at * 16);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m512i dot = _mm512_dpbusd_epi32(start, w[r], x);
        acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dwv[r], dx), acc[r][c]);
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) y[(t + c) * N + r] = sum_lanes(acc[r][c]);
  }
}

// Q4_0 two rows to a vector. A step of Q4_0 codes is 32 bytes per row, so one 64-byte load takes
// the step of two neighbouring rows of a group; its low nibbles (elements 0-15 of the step's two
// blocks) meet the activations' low half broadcast to both 256-bit halves, its high nibbles the
// high half, both into the same lanes: lane l of a half sums eight products of one block (lanes
// 0-3 the step's first block, 4-7 its second), lanes 0-7 for the first row, 8-15 for the second.
// The activations' starts and scales (prepare()) are laid out for that, the same in both halves.
// Per output: eight F32 lanes scaled by d_w · d_x step after step, then summed in a fixed tree,
// whether the row went through a pair (q4_pairs) or alone (q4_row, 256-bit, the same lane
// arithmetic), and whatever the number of tokens.
struct PairPicks {
  alignas(64) int32_t index[8][16];
};
PairPicks make_pair_picks() {
  PairPicks p;
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 16; ++l) p.index[j][l] = (l >= 8 ? 16 : 0) + 2 * j + (l % 8) / 4;
  }
  return p;
}

BD_VNNI_TARGET inline float sum_lanes8(__m256 a) {
  const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
  return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}

// The next sixteen F16 block scales of a row from step j on (fewer, and zeros, at its end).
BD_VNNI_TARGET inline __m512 scale_window(const uint16_t* row_scales, int64_t nb, int64_t j) {
  const int64_t left = nb - 2 * j;
  const __mmask16 m = left >= 16 ? __mmask16(0xffff) : _cvtu32_mask16((1u << left) - 1u);
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row_scales + 2 * j));
}

// P pairs of rows (2P consecutive rows of one group, `rows` their first one's step 0) against C
// tokens from token t: y[(t + c)·N + r].
template <int P, int C>
BD_VNNI_TARGET inline void q4_pairs(const Activations& a, int64_t t, const uint8_t* rows,
                                    int64_t step_stride, const uint16_t* scales, int64_t nb,
                                    float* y, int64_t N) {
  const int64_t steps = a.steps;
  alignas(64) static const PairPicks picks = make_pair_picks();
  const __m512i nibble = _mm512_set1_epi8(0x0f);
  __m512 acc[P][C];
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) acc[p][c] = _mm512_setzero_ps();
  }
  __m512 window[2 * P];
  for (int64_t j = 0; j < steps; ++j) {
    const uint8_t* at_j = rows + j * step_stride;
    __m512i lo[P], hi[P];
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) {
      const __m512i v = _mm512_loadu_si512(at_j + 64 * p);
      lo[p] = _mm512_and_si512(v, nibble);
      hi[p] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
    }
    if (j % 8 == 0) {
#pragma GCC unroll 16
      for (int r = 0; r < 2 * P; ++r) window[r] = scale_window(scales + r * nb, nb, j);
    }
    const __m512i pick = _mm512_load_si512(picks.index[j % 8]);
    __m512 dw[P];
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p)
      dw[p] = _mm512_permutex2var_ps(window[2 * p], pick, window[2 * p + 1]);
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) {
      const int64_t at = (t + c) * steps + j;
      const int8_t* xc = a.codes.data() + at * kStepBytes;
      const __m512i xlo =
          _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xc)));
      const __m512i xhi =
          _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xc + 32)));
      const __m512i start = _mm512_loadu_si512(a.starts.data() + at * 16);
      const __m512 dx = _mm512_loadu_ps(a.scales.data() + at * 16);
#pragma GCC unroll 16
      for (int p = 0; p < P; ++p) {
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(start, lo[p], xlo), hi[p], xhi);
        acc[p][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw[p], dx), acc[p][c]);
      }
    }
  }
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) {
      y[(t + c) * N + 2 * p] = sum_lanes8(_mm512_castps512_ps256(acc[p][c]));
      y[(t + c) * N + 2 * p + 1] = sum_lanes8(_mm512_extractf32x8_ps(acc[p][c], 1));
    }
  }
}

// One row alone, in 256-bit vectors: the lanes of a pair's first row, computed the same way.
template <int C>
BD_VNNI_TARGET inline void q4_row(const Activations& a, int64_t t, const uint8_t* row,
                                  int64_t step_stride, const uint16_t* scales, int64_t nb, float* y,
                                  int64_t N) {
  const int64_t steps = a.steps;
  alignas(64) static const PairPicks picks = make_pair_picks();
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  __m256 acc[C];
  for (int c = 0; c < C; ++c) acc[c] = _mm256_setzero_ps();
  __m512 window = _mm512_setzero_ps();
  for (int64_t j = 0; j < steps; ++j) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + j * step_stride));
    const __m256i lo = _mm256_and_si256(v, nibble);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
    if (j % 8 == 0) window = scale_window(scales, nb, j);
    const __m256 dw = _mm512_castps512_ps256(
        _mm512_permutexvar_ps(_mm512_load_si512(picks.index[j % 8]), window));
    for (int c = 0; c < C; ++c) {
      const int64_t at = (t + c) * steps + j;
      const int8_t* xc = a.codes.data() + at * kStepBytes;
      const __m256i xlo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xc));
      const __m256i xhi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xc + 32));
      const __m256i start =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.starts.data() + at * 16));
      const __m256 dx = _mm256_loadu_ps(a.scales.data() + at * 16);
      const __m256i dot = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(start, lo, xlo), hi, xhi);
      acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dw, dx), acc[c]);
    }
  }
  for (int c = 0; c < C; ++c) y[(t + c) * N] = sum_lanes8(acc[c]);
}

// A whole group of four rows (two pairs), or one row, against all T tokens, four at a time.
template <bool kGroup>
BD_VNNI_TARGET inline void q4_tokens(const Activations& a, const uint8_t* rows, int64_t step_stride,
                                     const uint16_t* scales, int64_t nb, float* y, int64_t N) {
  const auto run = [&]<int C>(int64_t t) {
    if constexpr (kGroup) {
      q4_pairs<2, C>(a, t, rows, step_stride, scales, nb, y, N);
    } else {
      q4_row<C>(a, t, rows, step_stride, scales, nb, y, N);
    }
  };
  const int64_t T = a.tokens;
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) run.template operator()<4>(t);
  switch (T - t) {
    case 3:
      run.template operator()<3>(t);
      break;
    case 2:
      run.template operator()<2>(t);
      break;
    case 1:
      run.template operator()<1>(t);
      break;
    default:
      break;
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
      if constexpr (Q == Quant::kQ4_0) {
        q4_tokens<true>(a, row, kQuantRowGroup * step, scales + n * nb, nb, y + n, N);
      } else {
        tokens<Q, kQuantRowGroup>(a, row, kQuantRowGroup * step, scales + n * nb, nb, y + n, N);
      }
      n += kQuantRowGroup;
    } else {
      if constexpr (Q == Quant::kQ4_0) {
        q4_tokens<false>(a, row, in_group * step, scales + n * nb, nb, y + n, N);
      } else {
        tokens<Q, 1>(a, row, in_group * step, scales + n * nb, nb, y + n, N);
      }
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

namespace {
void size_activations(Quant q, int64_t T, int64_t steps, Activations& out) {
  out.quant = q;
  out.tokens = T;
  out.steps = steps;
  out.codes.resize(static_cast<size_t>(T * steps * kStepBytes));
  out.scales.resize(static_cast<size_t>(T * steps * 16));
  out.starts.resize(static_cast<size_t>(T * steps * 16));
}
}  // namespace

void prepare_reference(Quant q, const float* x, int64_t T, int64_t K, Activations& out) {
  const int64_t nb = quant_blocks(K), steps = (nb + 1) / 2;
  size_activations(q, T, steps, out);
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
        if (q == Quant::kQ8_0) {
          for (int p = 4 * l; p < 4 * l + 4; ++p) sum += codes[p];
        } else {
          // Q4_0's lane l (and l + 8, the pair's second row) meets bytes 4l..4l+3 of both the
          // low-nibble and the high-nibble half.
          const int h = l % 8;
          for (int p = 4 * h; p < 4 * h + 4; ++p) sum += codes[p] + codes[32 + p];
        }
        out.starts[at * 16 + l] = -weight_offset(q) * sum;
        out.scales[at * 16 + l] = d[block_of_lane(q, l)];
      }
    }
  }
}

namespace {

// Block `b` of token row `xt` (K values) as int8 codes (16 per quarter, in `q`) with its scale:
// the same arithmetic as prepare_reference (max|x| exact, d = max / 127 by division, id = 1 / d,
// round(x · id) to nearest even as VCVTPS2DQ does under the default rounding mode).
BD_VNNI_TARGET inline float quantize_block(const float* xt, int64_t K, int64_t b, __m128i q[2]) {
  const int64_t first = b * kQuantBlock;
  __m512 v[2];
  for (int i = 0; i < 2; ++i) {
    const int64_t left = K - first - 16 * i;
    const __mmask16 m = left >= 16  ? __mmask16(0xffff)
                        : left <= 0 ? __mmask16(0)
                                    : _cvtu32_mask16((1u << left) - 1u);
    v[i] = _mm512_maskz_loadu_ps(m, xt + first + 16 * i);
  }
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
  const float d = amax / 127.0f;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  for (int i = 0; i < 2; ++i) {
    q[i] = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v[i], _mm512_set1_ps(id))));
  }
  return d;
}

}  // namespace

BD_VNNI_TARGET void prepare(Quant q, const float* x, int64_t T, int64_t K, Activations& out) {
  const int64_t nb = quant_blocks(K), steps = (nb + 1) / 2;
  size_activations(q, T, steps, out);
  // Which lanes take the step's second block's scale (block_of_lane).
  const __mmask16 second = q == Quant::kQ8_0 ? __mmask16(0xff00) : __mmask16(0xf0f0);
  const __m512i ones = _mm512_set1_epi8(1);
  const __m512i offset = _mm512_set1_epi32(-weight_offset(q));
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * K;
    for (int64_t j = 0; j < steps; ++j) {
      __m128i a[2], b[2] = {_mm_setzero_si128(), _mm_setzero_si128()};
      const float da = quantize_block(xt, K, 2 * j, a);
      const float db = 2 * j + 1 < nb ? quantize_block(xt, K, 2 * j + 1, b) : 0.0f;
      // Q8_0: block after block; Q4_0: the low halves (elements 0-15) of both, then the high.
      const __m512i codes =
          q == Quant::kQ8_0
              ? _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(a[1], a[0])),
                                   _mm256_set_m128i(b[1], b[0]), 1)
              : _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(b[0], a[0])),
                                   _mm256_set_m128i(b[1], a[1]), 1);
      const int64_t at = t * steps + j;
      _mm512_storeu_si512(out.codes.data() + at * kStepBytes, codes);
      // Per lane the sum of its four codes (VPDPBUSD with ones); Q4_0's lane l and l + 8 both
      // take lanes l and l + 8 of that (its low and high nibbles meet the same lanes).
      __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, codes);
      if (q == Quant::kQ4_0) sums = _mm512_add_epi32(sums, _mm512_shuffle_i64x2(sums, sums, 0x4e));
      _mm512_storeu_si512(out.starts.data() + at * 16, _mm512_mullo_epi32(sums, offset));
      _mm512_storeu_ps(out.scales.data() + at * 16,
                       _mm512_mask_blend_ps(second, _mm512_set1_ps(da), _mm512_set1_ps(db)));
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
