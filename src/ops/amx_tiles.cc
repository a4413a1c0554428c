#include "ops/amx_tiles.h"

#include <asm/prctl.h>
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace bitdelta::amx {

namespace {
// Linux's number for the tile data state component (XFEATURE_XTILEDATA).
constexpr int kXfeatureTileData = 18;
}  // namespace

bool cpu_supported() {
  static const bool supported = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
    const bool bf16 = (edx >> 22) & 1u, tile = (edx >> 24) & 1u, int8 = (edx >> 25) & 1u;
    if (!bf16 || !tile || !int8) return false;
    // The tile data state is off for a process until it asks (and the kernel may refuse).
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, kXfeatureTileData) == 0;
  }();
  return supported;
}

void transpose_blocks(const uint32_t* src, int64_t row_stride, int64_t T, int64_t steps,
                      uint32_t* out) {
  constexpr int64_t kTokens = 16, kBlock = 256;
  const int64_t blocks = (T + kTokens - 1) / kTokens;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t tokens = std::min(kTokens, T - b * kTokens);
    for (int64_t s = 0; s < steps; ++s) {
      uint32_t* o = out + (b * steps + s) * kBlock;
      if (tokens < kTokens) std::memset(o, 0, kBlock * 4);
      for (int64_t t = 0; t < tokens; ++t) {
        const uint32_t* in = src + (b * kTokens + t) * row_stride + s * 16;
        for (int64_t p = 0; p < 16; ++p) o[p * kTokens + t] = in[p];
      }
    }
  }
}

}  // namespace bitdelta::amx
