// Attention heads for one query token over a sequence's cached keys and values.
//   L cached positions, D head_dim
#pragma once

#include <cstdint>

namespace bitdelta {

// out[D] = Σ_p softmax_p(scale · q·k_p) · v_p for p < L, where k_p = keys + p·stride and
// v_p = values + p·stride. `scores` is scratch of at least L floats; it ends holding the softmax
// weights.
void attend(const float* q, const float* keys, const float* values, int64_t stride, int64_t len,
            int64_t head_dim, float scale, float* scores, float* out);

// attend() for `heads` query heads that share these keys and values (a grouped-query attention
// group): q and out hold the heads one after another (head_dim floats each), `scores` is scratch
// of at least heads · L floats. Each head's output is bitwise what attend() gives it alone; the
// keys and values are read once for all of them.
void attend_group(const float* q, int64_t heads, const float* keys, const float* values,
                  int64_t stride, int64_t len, int64_t head_dim, float scale, float* scores,
                  float* out);

// Scalar reference of the same, for tests.
void attend_reference(const float* q, const float* keys, const float* values, int64_t stride,
                      int64_t len, int64_t head_dim, float scale, float* out);

}  // namespace bitdelta
