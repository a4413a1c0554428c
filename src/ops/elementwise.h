// The small per-token operations of a transformer block, in F32.
//   T tokens, C channels, H heads, D head_dim
#pragma once

#include <cstdint>
#include <span>

#include "util/thread_pool.h"

namespace bitdelta {

// out[t, :] = x[t, :] / sqrt(mean(x[t, :]²) + eps) · weight   (x, out: [T, C]; may alias)
void rms_norm(const float* x, const float* weight, int64_t tokens, int64_t channels, double eps,
              float* out);

// Rotary embedding, Hugging Face rotate-half layout, in place on x: [T, H, D]. For pair
// (i, i + D/2) of token t: angle = positions[t] · inv_freq[i].
void rope_rotate_half(float* x, int64_t tokens, int64_t heads, int64_t head_dim,
                      std::span<const int64_t> positions, std::span<const double> inv_freq);

// gate[i] = silu(gate[i]) · up[i], with Highway's vector exp (every element, the last few too,
// goes through the same vector code, so a value's result never depends on where it sits).
void silu_mul(float* gate, const float* up, int64_t n);

// Per-token operations split across a pool's threads (in chunks of whole tokens, so each result
// is the same as the single-threaded call's) when there are enough tokens to pay for waking them.
void rms_norm(const float* x, const float* weight, int64_t tokens, int64_t channels, double eps,
              float* out, ThreadPool& pool);
void rope_rotate_half(float* x, int64_t tokens, int64_t heads, int64_t head_dim,
                      std::span<const int64_t> positions, std::span<const double> inv_freq,
                      ThreadPool& pool);
void silu_mul(float* gate, const float* up, int64_t tokens, int64_t width, ThreadPool& pool);
void add_into(float* dst, const float* src, int64_t tokens, int64_t width, ThreadPool& pool);

// In-place softmax over n values.
void softmax(float* x, int64_t n);

// dst[i] += src[i]
void add_into(float* dst, const float* src, int64_t n);

}  // namespace bitdelta
