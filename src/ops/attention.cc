// Highway kernel for attend() and attend_group(), dispatched once per (token, key/value head).
#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/elementwise.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/attention.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace bitdelta::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;

// The heads of one group (the query heads that share a key/value head) are computed together,
// so that each key and value row is read once for all of them; every head's numbers are exactly
// what it would get alone (the same instructions in the same order per output).

// The scores when the head is NV whole vectors (NV even; e.g. head_dim 128 on AVX-512): per
// position the key's vectors are loaded once into registers and dotted with every head's query.
// Each dot is summed exactly as ScoresAny sums it (even vectors into a0, odd into a1, then
// a0 + a1 across lanes).
template <int NV>
HWY_INLINE void ScoresWhole(const float* q, int64_t heads, const float* keys, int64_t stride,
                            int64_t len, float scale, float* scores) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const int64_t D = NV * lanes;
  for (int64_t p = 0; p < len; ++p) {
    const float* k = keys + p * stride;
    hn::Vec<DF> kv[NV];
    for (int i = 0; i < NV; ++i) kv[i] = hn::LoadU(df, k + i * lanes);
    for (int64_t g = 0; g < heads; ++g) {
      const float* qg = q + g * D;
      auto a0 = hn::Zero(df), a1 = hn::Zero(df);
      for (int i = 0; i < NV; i += 2) {
        a0 = hn::MulAdd(hn::LoadU(df, qg + i * lanes), kv[i], a0);
        a1 = hn::MulAdd(hn::LoadU(df, qg + (i + 1) * lanes), kv[i + 1], a1);
      }
      scores[g * len + p] = hn::GetLane(hn::SumOfLanes(df, hn::Add(a0, a1))) * scale;
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
  for (int64_t g = 0; g < heads; ++g) softmax(scores + g * len, len);
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
