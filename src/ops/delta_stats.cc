// Highway kernel for delta_signs_row(): 8 elements per step, float accumulators in vectors (the
// scalar loop's dependent double adds were the compressor's bottleneck).
#include "ops/delta_stats.h"

#include <cmath>
#include <cstring>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/delta_stats.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "ops/widen-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bitdelta::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using D8 = hn::CappedTag<float, 8>;

template <typename TB, typename TF>
RowDeltaStats kernel(const TB* base, const TF* ft, int64_t n, uint8_t* bits) {
  const D8 d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  auto abs_acc = hn::Zero(d), sq_acc = hn::Zero(d);
  int64_t plus = 0;
  const auto zero = hn::Zero(d);
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    unsigned byte = 0;
    for (int64_t sub = 0; sub < 8; sub += lanes) {
      const auto delta = hn::Sub(load_widened(d, ft + k + sub), load_widened(d, base + k + sub));
      abs_acc = hn::Add(abs_acc, hn::Abs(delta));
      sq_acc = hn::MulAdd(delta, delta, sq_acc);
      uint8_t mask_bits[8] = {0};
      hn::StoreMaskBits(d, hn::Gt(delta, zero), mask_bits);
      byte |= static_cast<unsigned>(mask_bits[0]) << sub;
    }
    bits[k / 8] = static_cast<uint8_t>(byte);
    plus += __builtin_popcount(byte);
  }
  RowDeltaStats s;
  s.abs_sum = hn::GetLane(hn::SumOfLanes(d, abs_acc));
  s.sq_sum = hn::GetLane(hn::SumOfLanes(d, sq_acc));
  if (k < n) {
    uint8_t last = 0;
    for (int64_t j = k; j < n; ++j) {
      const float delta = widen_scalar(ft + j) - widen_scalar(base + j);
      s.abs_sum += std::fabs(delta);
      s.sq_sum += double(delta) * delta;
      if (delta > 0) {
        last |= static_cast<uint8_t>(1u << (j - k));
        ++plus;
      }
    }
    bits[k / 8] = last;
  }
  s.plus = plus;
  return s;
}

template <typename TB>
RowDeltaStats with_base(const TB* base, const void* ft, DType ft_dtype, int64_t n, uint8_t* bits) {
  switch (ft_dtype) {
    case DType::kBF16:
      return kernel(base, static_cast<const hwy::bfloat16_t*>(ft), n, bits);
    case DType::kF16:
      return kernel(base, static_cast<const hwy::float16_t*>(ft), n, bits);
    default:
      return kernel(base, static_cast<const float*>(ft), n, bits);
  }
}

RowDeltaStats DeltaSignsRow(const void* base, DType base_dtype, const void* ft, DType ft_dtype,
                            int64_t n, uint8_t* bits) {
  switch (base_dtype) {
    case DType::kBF16:
      return with_base(static_cast<const hwy::bfloat16_t*>(base), ft, ft_dtype, n, bits);
    case DType::kF16:
      return with_base(static_cast<const hwy::float16_t*>(base), ft, ft_dtype, n, bits);
    default:
      return with_base(static_cast<const float*>(base), ft, ft_dtype, n, bits);
  }
}

}  // namespace bitdelta::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bitdelta {

HWY_EXPORT(DeltaSignsRow);

RowDeltaStats delta_signs_row(const void* base, DType base_dtype, const void* finetuned,
                              DType finetuned_dtype, int64_t n, uint8_t* bits) {
  return HWY_DYNAMIC_DISPATCH(DeltaSignsRow)(base, base_dtype, finetuned, finetuned_dtype, n,
                                             bits);
}

RowDeltaStats delta_signs_row_reference(const void* base, DType base_dtype, const void* finetuned,
                                        DType finetuned_dtype, int64_t n, uint8_t* bits) {
  std::vector<float> b(static_cast<size_t>(n)), f(static_cast<size_t>(n));
  convert_to_f32(base_dtype, base, b.data(), b.size());
  convert_to_f32(finetuned_dtype, finetuned, f.data(), f.size());
  std::memset(bits, 0, static_cast<size_t>((n + 7) / 8));
  RowDeltaStats s;
  for (int64_t k = 0; k < n; ++k) {
    const float d = f[k] - b[k];
    if (d > 0) {
      bits[k / 8] |= static_cast<uint8_t>(1u << (k % 8));
      ++s.plus;
    }
    s.abs_sum += std::fabs(d);
    s.sq_sum += double(d) * d;
  }
  return s;
}

}  // namespace bitdelta
#endif  // HWY_ONCE
