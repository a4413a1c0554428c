// Highway kernel for attend(), dispatched once per (token, head).
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

// The scores when the head is NV whole vectors (NV even; e.g. head_dim 128 on AVX-512): q stays
// in registers and four positions' dot products interleave. Each dot is summed exactly as the
// general loop below sums it (even vectors into a0, odd into a1, then a0 + a1 across lanes).
template <int NV>
HWY_INLINE void ScoresWhole(const float* q, const float* keys, int64_t stride, int64_t len,
                            float scale, float* scores) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  hn::Vec<DF> qv[NV];
  for (int i = 0; i < NV; ++i) qv[i] = hn::LoadU(df, q + i * lanes);
  const auto dot = [&](const float* k) {
    auto a0 = hn::Zero(df), a1 = hn::Zero(df);
    for (int i = 0; i < NV; i += 2) {
      a0 = hn::MulAdd(qv[i], hn::LoadU(df, k + i * lanes), a0);
      a1 = hn::MulAdd(qv[i + 1], hn::LoadU(df, k + (i + 1) * lanes), a1);
    }
    return hn::GetLane(hn::SumOfLanes(df, hn::Add(a0, a1))) * scale;
  };
  int64_t p = 0;
  for (; p + 4 <= len; p += 4) {
    const float* k = keys + p * stride;
    const float s0 = dot(k), s1 = dot(k + stride), s2 = dot(k + 2 * stride),
                s3 = dot(k + 3 * stride);
    scores[p] = s0;
    scores[p + 1] = s1;
    scores[p + 2] = s2;
    scores[p + 3] = s3;
  }
  for (; p < len; ++p) scores[p] = dot(keys + p * stride);
}

// The scores of any head size: per position, even vectors into a0, odd into a1, the last
// column-ends in order.
HWY_INLINE void ScoresAny(const float* q, const float* keys, int64_t stride, int64_t len, int64_t D,
                          float scale, float* scores) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  for (int64_t p = 0; p < len; ++p) {
    const float* k = keys + p * stride;
    auto a0 = hn::Zero(df), a1 = hn::Zero(df);
    int64_t d = 0;
    for (; d + 2 * lanes <= D; d += 2 * lanes) {
      a0 = hn::MulAdd(hn::LoadU(df, q + d), hn::LoadU(df, k + d), a0);
      a1 = hn::MulAdd(hn::LoadU(df, q + d + lanes), hn::LoadU(df, k + d + lanes), a1);
    }
    for (; d + lanes <= D; d += lanes)
      a0 = hn::MulAdd(hn::LoadU(df, q + d), hn::LoadU(df, k + d), a0);
    float dot = hn::GetLane(hn::SumOfLanes(df, hn::Add(a0, a1)));
    for (; d < D; ++d) dot += q[d] * k[d];
    scores[p] = dot * scale;
  }
}

void Attend(const float* q, const float* keys, const float* values, int64_t stride, int64_t len,
            int64_t D, float scale, float* scores, float* out) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const int64_t whole_vectors = D % lanes == 0 ? D / lanes : 0;
  switch (whole_vectors) {
    case 8:
      ScoresWhole<8>(q, keys, stride, len, scale, scores);
      break;
    case 4:
      ScoresWhole<4>(q, keys, stride, len, scale, scores);
      break;
    case 2:
      ScoresWhole<2>(q, keys, stride, len, scale, scores);
      break;
    default:
      ScoresAny(q, keys, stride, len, D, scale, scores);
      break;
  }
  softmax(scores, len);
  // out[d] = Σ_p scores[p] · v[p, d], p ascending, one multiply-add chain per element. The
  // positions are the outer loop, so each value row is read once, in order, into up to eight
  // vector accumulators (independent chains) per block of the head.
  constexpr int64_t kBlock = 8;
  int64_t d = 0;
  for (; d + lanes <= D; d += kBlock * lanes) {
    const int64_t vectors = std::min<int64_t>(kBlock, (D - d) / lanes);
    hn::Vec<DF> acc[kBlock];
    for (int64_t i = 0; i < kBlock; ++i) acc[i] = hn::Zero(df);
    if (vectors == kBlock) {
      for (int64_t p = 0; p < len; ++p) {
        const auto s = hn::Set(df, scores[p]);
        const float* v = values + p * stride + d;
        for (int64_t i = 0; i < kBlock; ++i)
          acc[i] = hn::MulAdd(s, hn::LoadU(df, v + i * lanes), acc[i]);
      }
    } else {
      for (int64_t p = 0; p < len; ++p) {
        const auto s = hn::Set(df, scores[p]);
        const float* v = values + p * stride + d;
        for (int64_t i = 0; i < vectors; ++i)
          acc[i] = hn::MulAdd(s, hn::LoadU(df, v + i * lanes), acc[i]);
      }
    }
    for (int64_t i = 0; i < vectors; ++i) hn::StoreU(acc[i], df, out + d + i * lanes);
    if (vectors < kBlock) {
      d += vectors * lanes;
      break;
    }
  }
  for (; d < D; ++d) {
    float acc = 0;
    for (int64_t p = 0; p < len; ++p) acc += scores[p] * values[p * stride + d];
    out[d] = acc;
  }
}

}  // namespace bitdelta::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bitdelta {

HWY_EXPORT(Attend);

void attend(const float* q, const float* keys, const float* values, int64_t stride, int64_t len,
            int64_t head_dim, float scale, float* scores, float* out) {
  HWY_DYNAMIC_DISPATCH(Attend)(q, keys, values, stride, len, head_dim, scale, scores, out);
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
