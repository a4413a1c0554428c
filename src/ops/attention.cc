// Highway kernel for attend(), dispatched once per (token, head).
#include "ops/attention.h"

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

void Attend(const float* q, const float* keys, const float* values, int64_t stride, int64_t len,
            int64_t D, float scale, float* scores, float* out) {
  const hn::ScalableTag<float> df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  for (int64_t p = 0; p < len; ++p) {
    const float* k = keys + p * stride;
    auto a0 = hn::Zero(df), a1 = hn::Zero(df);
    int64_t d = 0;
    for (; d + 2 * lanes <= D; d += 2 * lanes) {
      a0 = hn::MulAdd(hn::LoadU(df, q + d), hn::LoadU(df, k + d), a0);
      a1 = hn::MulAdd(hn::LoadU(df, q + d + lanes), hn::LoadU(df, k + d + lanes), a1);
    }
    for (; d + lanes <= D; d += lanes) a0 = hn::MulAdd(hn::LoadU(df, q + d), hn::LoadU(df, k + d), a0);
    float dot = hn::GetLane(hn::SumOfLanes(df, hn::Add(a0, a1)));
    for (; d < D; ++d) dot += q[d] * k[d];
    scores[p] = dot * scale;
  }
  softmax(scores, len);
  int64_t d = 0;
  for (; d + lanes <= D; d += lanes) {
    auto acc = hn::Zero(df);
    for (int64_t p = 0; p < len; ++p) {
      acc = hn::MulAdd(hn::Set(df, scores[p]), hn::LoadU(df, values + p * stride + d), acc);
    }
    hn::StoreU(acc, df, out + d);
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
