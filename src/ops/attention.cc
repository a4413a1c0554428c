// Highway kernel for attend() and attend_group(), dispatched once per (token, key/value head).
#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/attention.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

// Highway's math functions, after highway.h (per target, like this file).
// clang-format off
#include <hwy/contrib/math/math-inl.h>
// clang-format on

HWY_BEFORE_NAMESPACE();
namespace bitdelta::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;

// The heads of one group (the query heads that share a key/value head) are computed together,
// so that each key and value row is read once for all of them; every head's numbers are exactly
// what it would get alone (the same instructions in the same order per output).

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
// The lanes of 16 vectors summed at once, each in SumOfLanes' tree on this target (lane i plus
// lane i + 8, then i + 4, i + 2, i + 1), by transposing as it goes: 15 adds and 30 shuffles
// instead of 16 × 4 of each. out[j] = Σ lanes of v[j], bitwise what SumOfLanes(v[j]) gives
// (tested: Attention.BlockAndTailScoresAgree).
HWY_INLINE void SumLanes16(const hn::Vec<DF> (&v)[16], float* out) {
  const DF df;
  __m512 u[8], w[4], x[2];
  for (int j = 0; j < 8; ++j) {  // [v 0..7 | v' 0..7] + [v 8..15 | v' 8..15]
    const __m512 a = v[2 * j].raw, b = v[2 * j + 1].raw;
    u[j] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  for (int j = 0; j < 4; ++j) {  // per vector, its lanes 0..3 + 4..7: four vectors of 4 lanes
    const __m512 a = u[2 * j], b = u[2 * j + 1];
    w[j] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
  }
  // Block c of w[j] holds vector 4j + c's four sums. Lanes 0, 1 + 2, 3 of two vectors per block:
  for (int j = 0; j < 2; ++j) {
    const __m512 a = w[2 * j], b = w[2 * j + 1];
    x[j] = _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // Block c of x[j]: vectors 8j + c and 8j + 4 + c, two sums each. Lane 0 + 1 of each:
  const __m512 y = _mm512_add_ps(_mm512_shuffle_ps(x[0], x[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(x[0], x[1], _MM_SHUFFLE(3, 1, 3, 1)));
  // Lane 4c + m of y is vector 4m + c's sum: back into order.
  const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
  hn::StoreU(hn::Vec<DF>{_mm512_permutexvar_ps(order, y)}, df, out);
}
constexpr bool kSumLanes16 = true;
#else
HWY_INLINE void SumLanes16(const hn::Vec<DF> (&)[16], float*) {}
constexpr bool kSumLanes16 = false;
#endif

// The scores when the head is NV whole vectors (NV even; e.g. head_dim 128 on AVX-512): per
// position the key's vectors are loaded once into registers and dotted with every head's query.
// Each dot is summed exactly as ScoresAny sums it (even vectors into a0, odd into a1, then
// a0 + a1 across lanes; on AVX-512 across the lanes of 16 positions at once).
template <int NV>
HWY_INLINE void ScoresWhole(const float* q, int64_t heads, const float* keys, int64_t stride,
                            int64_t len, float scale, float* scores) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const int64_t D = NV * lanes;
  const auto dot = [&](const hn::Vec<DF>* kv, const float* qg) {
    auto a0 = hn::Zero(df), a1 = hn::Zero(df);
    for (int i = 0; i < NV; i += 2) {
      a0 = hn::MulAdd(hn::LoadU(df, qg + i * lanes), kv[i], a0);
      a1 = hn::MulAdd(hn::LoadU(df, qg + (i + 1) * lanes), kv[i + 1], a1);
    }
    return hn::Add(a0, a1);
  };
  int64_t p = 0;
  if constexpr (kSumLanes16) {
    constexpr int kMaxHeads = 8;
    hn::Vec<DF> sums[kMaxHeads][16];
    const auto vscale = hn::Set(df, scale);
    for (int64_t g0 = 0; g0 < heads; g0 += kMaxHeads) {
      const int64_t gn = std::min<int64_t>(kMaxHeads, heads - g0);
      for (p = 0; p + 16 <= len; p += 16) {
        for (int j = 0; j < 16; ++j) {
          const float* k = keys + (p + j) * stride;
          hn::Vec<DF> kv[NV];
          for (int i = 0; i < NV; ++i) kv[i] = hn::LoadU(df, k + i * lanes);
          for (int64_t g = 0; g < gn; ++g) sums[g][j] = dot(kv, q + (g0 + g) * D);
        }
        for (int64_t g = 0; g < gn; ++g) {
          float* out = scores + (g0 + g) * len + p;
          SumLanes16(sums[g], out);
          hn::StoreU(hn::Mul(hn::LoadU(df, out), vscale), df, out);
        }
      }
    }
  }
  for (; p < len; ++p) {
    const float* k = keys + p * stride;
    hn::Vec<DF> kv[NV];
    for (int i = 0; i < NV; ++i) kv[i] = hn::LoadU(df, k + i * lanes);
    for (int64_t g = 0; g < heads; ++g) {
      scores[g * len + p] = hn::GetLane(hn::SumOfLanes(df, dot(kv, q + g * D))) * scale;
    }
  }
}

// The scores of any head size: per position, even vectors into a0, odd into a1, the last
// column-ends in order.
HWY_INLINE void ScoresAny(const float* q, int64_t heads, const float* keys, int64_t stride,
                          int64_t len, int64_t D, float scale, float* scores) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  for (int64_t p = 0; p < len; ++p) {
    const float* k = keys + p * stride;
    for (int64_t g = 0; g < heads; ++g) {
      const float* qg = q + g * D;
      auto a0 = hn::Zero(df), a1 = hn::Zero(df);
      int64_t d = 0;
      for (; d + 2 * lanes <= D; d += 2 * lanes) {
        a0 = hn::MulAdd(hn::LoadU(df, qg + d), hn::LoadU(df, k + d), a0);
        a1 = hn::MulAdd(hn::LoadU(df, qg + d + lanes), hn::LoadU(df, k + d + lanes), a1);
      }
      for (; d + lanes <= D; d += lanes)
        a0 = hn::MulAdd(hn::LoadU(df, qg + d), hn::LoadU(df, k + d), a0);
      float dot = hn::GetLane(hn::SumOfLanes(df, hn::Add(a0, a1)));
      for (; d < D; ++d) dot += qg[d] * k[d];
      scores[g * len + p] = dot * scale;
    }
  }
}

// s[p] = exp(s[p] − max) / Σ_p exp(s[p] − max) over p < len, in vectors (Highway's Exp, within
// 1 ULP of std::exp; the sum in 16 float lanes then across them): the same instructions for
// every query, whatever batch it is in.
HWY_INLINE void Softmax(float* s, int64_t len) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  auto vmax = hn::Set(df, -std::numeric_limits<float>::infinity());
  int64_t p = 0;
  for (; p + lanes <= len; p += lanes) vmax = hn::Max(vmax, hn::LoadU(df, s + p));
  float max = hn::GetLane(hn::MaxOfLanes(df, vmax));
  for (; p < len; ++p) max = std::max(max, s[p]);
  const auto vm = hn::Set(df, max);
  auto sum = hn::Zero(df);
  p = 0;
  for (; p + lanes <= len; p += lanes) {
    const auto e = hn::Exp(df, hn::Sub(hn::LoadU(df, s + p), vm));
    hn::StoreU(e, df, s + p);
    sum = hn::Add(sum, e);
  }
  // The last len % lanes go through one whole vector from a padded copy (lanes past len are
  // zeroed after the Exp, so they add nothing).
  HWY_ALIGN float last[hn::MaxLanes(df)] = {};
  const int64_t rest = len - p;
  const auto tail = hn::FirstN(df, static_cast<size_t>(rest));
  if (rest > 0) {
    std::copy(s + p, s + len, last);
    const auto e = hn::IfThenElseZero(tail, hn::Exp(df, hn::Sub(hn::Load(df, last), vm)));
    hn::Store(e, df, last);
    std::copy(last, last + rest, s + p);
    sum = hn::Add(sum, e);
  }
  const float inv = 1.0f / hn::GetLane(hn::SumOfLanes(df, sum));
  const auto vinv = hn::Set(df, inv);
  int64_t i = 0;
  for (; i + lanes <= len; i += lanes) hn::StoreU(hn::Mul(hn::LoadU(df, s + i), vinv), df, s + i);
  for (; i < len; ++i) s[i] *= inv;
}

// out_g[d] = Σ_p scores_g[p] · v[p, d], p ascending, one multiply-add chain per element, for
// G = 1 or 2 heads at once. The positions are the outer loop, so each value row is read once, in
// order, into up to eight vector accumulators per head (independent chains) per block of the
// head.
template <int G>
HWY_INLINE void WeightedValues(const float* scores, int64_t len, const float* values,
                               int64_t stride, int64_t D, float* out) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  constexpr int64_t kBlock = 8;
  int64_t d = 0;
  for (; d + lanes <= D; d += kBlock * lanes) {
    const int64_t vectors = std::min<int64_t>(kBlock, (D - d) / lanes);
    hn::Vec<DF> acc[G][kBlock];
    for (int g = 0; g < G; ++g) {
      for (int64_t i = 0; i < kBlock; ++i) acc[g][i] = hn::Zero(df);
    }
    if (vectors == kBlock) {
      for (int64_t p = 0; p < len; ++p) {
        const float* v = values + p * stride + d;
        hn::Vec<DF> vv[kBlock];
        for (int64_t i = 0; i < kBlock; ++i) vv[i] = hn::LoadU(df, v + i * lanes);
        for (int g = 0; g < G; ++g) {
          const auto s = hn::Set(df, scores[g * len + p]);
          for (int64_t i = 0; i < kBlock; ++i) acc[g][i] = hn::MulAdd(s, vv[i], acc[g][i]);
        }
      }
    } else {
      for (int64_t p = 0; p < len; ++p) {
        const float* v = values + p * stride + d;
        for (int g = 0; g < G; ++g) {
          const auto s = hn::Set(df, scores[g * len + p]);
          for (int64_t i = 0; i < vectors; ++i)
            acc[g][i] = hn::MulAdd(s, hn::LoadU(df, v + i * lanes), acc[g][i]);
        }
      }
    }
    for (int g = 0; g < G; ++g) {
      for (int64_t i = 0; i < vectors; ++i) hn::StoreU(acc[g][i], df, out + g * D + d + i * lanes);
    }
    if (vectors < kBlock) {
      d += vectors * lanes;
      break;
    }
  }
  for (; d < D; ++d) {
    for (int g = 0; g < G; ++g) {
      float acc = 0;
      for (int64_t p = 0; p < len; ++p) acc += scores[g * len + p] * values[p * stride + d];
      out[g * D + d] = acc;
    }
  }
}

void AttendGroup(const float* q, int64_t heads, const float* keys, const float* values,
                 int64_t stride, int64_t len, int64_t D, float scale, float* scores, float* out) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const int64_t whole_vectors = D % lanes == 0 ? D / lanes : 0;
  switch (whole_vectors) {
    case 8:
      ScoresWhole<8>(q, heads, keys, stride, len, scale, scores);
      break;
    case 4:
      ScoresWhole<4>(q, heads, keys, stride, len, scale, scores);
      break;
    case 2:
      ScoresWhole<2>(q, heads, keys, stride, len, scale, scores);
      break;
    default:
      ScoresAny(q, heads, keys, stride, len, D, scale, scores);
      break;
  }
  for (int64_t g = 0; g < heads; ++g) Softmax(scores + g * len, len);
  int64_t g = 0;
  for (; g + 2 <= heads; g += 2) {
    WeightedValues<2>(scores + g * len, len, values, stride, D, out + g * D);
  }
  if (g < heads) WeightedValues<1>(scores + g * len, len, values, stride, D, out + g * D);
}

}  // namespace bitdelta::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bitdelta {

HWY_EXPORT(AttendGroup);

void attend(const float* q, const float* keys, const float* values, int64_t stride, int64_t len,
            int64_t head_dim, float scale, float* scores, float* out) {
  HWY_DYNAMIC_DISPATCH(AttendGroup)(q, 1, keys, values, stride, len, head_dim, scale, scores, out);
}

void attend_group(const float* q, int64_t heads, const float* keys, const float* values,
                  int64_t stride, int64_t len, int64_t head_dim, float scale, float* scores,
                  float* out) {
  HWY_DYNAMIC_DISPATCH(AttendGroup)
  (q, heads, keys, values, stride, len, head_dim, scale, scores, out);
}

void attend_reference(const float* q, const float* keys, const float* values, int64_t stride,
                      int64_t len, int64_t head_dim, float scale, float* out) {
  std::vector<double> w(static_cast<size_t>(len));
  double max = -INFINITY;
  for (int64_t p = 0; p < len; ++p) {
    double dot = 0;
    for (int64_t d = 0; d < head_dim; ++d) dot += double(q[d]) * keys[p * stride + d];
    w[p] = dot * scale;
    max = std::max(max, w[p]);
  }
  double total = 0;
  for (auto& v : w) total += v = std::exp(v - max);
  for (int64_t d = 0; d < head_dim; ++d) {
    double acc = 0;
    for (int64_t p = 0; p < len; ++p) acc += w[p] / total * values[p * stride + d];
    out[d] = static_cast<float>(acc);
  }
}

}  // namespace bitdelta
#endif  // HWY_ONCE
