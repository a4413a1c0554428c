#include "ops/elementwise.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace bitdelta {

void rms_norm(const float* x, const float* weight, int64_t tokens, int64_t channels, double eps,
              float* out) {
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * channels;
    float* dst = out + t * channels;
    double sum_sq = 0;
    for (int64_t c = 0; c < channels; ++c) sum_sq += static_cast<double>(row[c]) * row[c];
    const float scale = static_cast<float>(1.0 / std::sqrt(sum_sq / channels + eps));
    for (int64_t c = 0; c < channels; ++c) dst[c] = row[c] * scale * weight[c];
  }
}

void rope_rotate_half(float* x, int64_t tokens, int64_t heads, int64_t head_dim,
                      std::span<const int64_t> positions, std::span<const double> inv_freq) {
  const int64_t half = head_dim / 2;
  std::vector<float> cos_t(static_cast<size_t>(half)), sin_t(static_cast<size_t>(half));
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      // Like transformers: angle computed in float32 from float32 inv_freq and position.
      const float angle = static_cast<float>(positions[t]) * static_cast<float>(inv_freq[i]);
      cos_t[i] = std::cos(angle);
      sin_t[i] = std::sin(angle);
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cos_t[i] - b * sin_t[i];
        v[i + half] = b * cos_t[i] + a * sin_t[i];
      }
    }
  }
}

void silu_mul(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  const float max = *std::max_element(x, x + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void add_into(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace bitdelta
