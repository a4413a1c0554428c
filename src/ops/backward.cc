#include "ops/backward.h"

#include <algorithm>

namespace bitdelta {

void sign_linear_scale_backward(const float* x, const float* dy, int64_t tokens,
                                const SignMatrix& s, double* dscale, ThreadPool& pool) {
  // S·x for every token through the exact kernel with unit scales.
  std::vector<float> ones(static_cast<size_t>(s.per_row ? s.rows : 1), 1.0f);
  SignMatrix unit = s;
  unit.scales = ones.data();
  std::vector<float> sx(static_cast<size_t>(tokens * s.rows), 0.0f);
  sign_matmul_add_exact(x, tokens, unit, sx.data(), pool);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t n = 0; n < s.rows; ++n) {
      const double g = double(dy[t * s.rows + n]) * sx[t * s.rows + n];
      dscale[s.per_row ? n : 0] += g;
    }
  }
}

}  // namespace bitdelta
