// A grow-only buffer of 64-byte-aligned scratch (internal to ops): the kernels keep one per
// calling thread for activations they lay out again, and reuse it from call to call.
#pragma once

#include <hwy/aligned_allocator.h>

#include <cstddef>
#include <cstdint>

#include "util/error.h"

namespace bitdelta {

template <typename T>
class AlignedBuffer {
 public:
  // At least n elements, 64-byte aligned; earlier contents are not kept when it grows.
  T* reserve(int64_t n) {
    const auto need = static_cast<size_t>(n > 0 ? n : 1);
    if (need > capacity_) {
      data_ = hwy::AllocateAligned<T>(need);
      BD_CHECK(data_ != nullptr, "out of memory for {} bytes of kernel scratch", need * sizeof(T));
      capacity_ = need;
    }
    return data_.get();
  }

 private:
  hwy::AlignedFreeUniquePtr<T[]> data_;
  size_t capacity_ = 0;
};

}  // namespace bitdelta
