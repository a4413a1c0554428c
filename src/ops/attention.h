// One attention head for one query token over a sequence's cached keys and values.
//   L cached positions, D head_dim
#pragma once

#include <cstdint>

namespace bitdelta {

// out[D] = Σ_p softmax_p(scale · q·k_p) · v_p for p < L, where k_p = keys + p·stride and
// v_p = values + p·stride. `scores` is scratch of at least L floats.
void attend(const float* q, const float* keys, const float* values, int64_t stride, int64_t len,
            int64_t head_dim, float scale, float* scores, float* out);

// Scalar reference of the same, for tests.
void attend_reference(const float* q, const float* keys, const float* values, int64_t stride,
                      int64_t len, int64_t head_dim, float scale, float* out);

}  // namespace bitdelta
