// Per-target helpers shared by the kernels: F32, F16 and BF16 elements (any alignment) widened
// to F32, as vectors and as scalars. Included from inside each kernel file's foreach_target pass.
#if defined(BITDELTA_OPS_WIDEN_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BITDELTA_OPS_WIDEN_INL_H_
#undef BITDELTA_OPS_WIDEN_INL_H_
#else
#define BITDELTA_OPS_WIDEN_INL_H_
#endif

#include <cstring>
#include <type_traits>

#include <hwy/highway.h>

#include "io/dtype.h"

HWY_BEFORE_NAMESPACE();
namespace bitdelta::HWY_NAMESPACE {

// Lanes(d) elements at p, as F32.
template <class D, typename T>
HWY_INLINE hwy::HWY_NAMESPACE::Vec<D> load_widened(D d, const T* p) {
  namespace hn = hwy::HWY_NAMESPACE;
  if constexpr (std::is_same_v<T, float>) {
    return hn::LoadU(d, p);
  } else {
    const hn::Rebind<T, D> dw;
    return hn::PromoteTo(d, hn::LoadU(dw, p));
  }
}

template <typename T>
HWY_INLINE float widen_scalar(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    float v;
    std::memcpy(&v, p, 4);
    return v;
  } else {
    uint16_t bits;
    std::memcpy(&bits, p, 2);
    if constexpr (std::is_same_v<T, hwy::bfloat16_t>) {
      return bf16_to_f32(bits);
    } else {
      return f16_to_f32(bits);
    }
  }
}

}  // namespace bitdelta::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // BITDELTA_OPS_WIDEN_INL_H_
