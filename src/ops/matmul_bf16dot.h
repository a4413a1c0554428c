// matmul()'s BF16 dot-product path (internal to ops): for BF16 weights on CPUs with AVX512_BF16,
// the activations are rounded to BF16 once per call and every product runs on VDPBF16PS, which
// multiplies pairs of BF16 values and adds them into F32 lanes (twice the multiply-adds of an
// F32 FMA per instruction, and no widening of the weights). llama.cpp's CPU backend does the same
// for BF16 models. Hand-dispatched: Debian's Highway has no target with these instructions.
#pragma once

#include <cstdint>

namespace bitdelta::bf16dot {

// True when this CPU (and OS) runs AVX512F/BW/VL and AVX512_BF16.
bool cpu_supported();

// Row stride of the rounded activations: K rounded up to whole 64-byte lines.
inline int64_t padded(int64_t K) { return (K + 31) / 32 * 32; }

// out[t·padded(K) + k] = x[t·K + k] rounded to BF16 (to nearest even; denormals to zero, as the
// instruction does), the padding zeroed. `out` should be 64-byte aligned. Requires cpu_supported().
void round_activations(const float* x, int64_t T, int64_t K, uint16_t* out);

// y[t, n] = Σ_k xb[t, k] · w[n, k] for t < T, n in [n_begin, n_end) (xb: [T, padded(K)] BF16 from
// round_activations, w: [N, K] BF16, y: [T, N]). Every output is one 16-lane accumulator over k
// in steps of 32 (the last step masked), then the lanes summed in a fixed order: bitwise the same
// for any T, any place of a token among the T, and any row range. Requires cpu_supported().
void rows(const uint16_t* xb, int64_t T, const uint16_t* w, int64_t N, int64_t K, int64_t n_begin,
          int64_t n_end, float* y);

}  // namespace bitdelta::bf16dot
