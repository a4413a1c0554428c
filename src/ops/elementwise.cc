// The small per-token operations. SiLU's exp is Highway's (contrib/math), compiled per SIMD
// target and dispatched at run time; the rest is scalar and memory-bound.
#include "ops/elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/elementwise.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

// (After highway.h: per-target code, included once per target.)
#include <hwy/contrib/math/math-inl.h>

HWY_BEFORE_NAMESPACE();
namespace bitdelta::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void SiluMul(float* gate, const float* up, int64_t n) {
  const hn::ScalableTag<float> df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const auto one = hn::Set(df, 1.0f);
  const auto silu_mul = [&](hn::Vec<decltype(df)> g, hn::Vec<decltype(df)> u) {
    return hn::Mul(hn::Div(g, hn::Add(one, hn::Exp(df, hn::Neg(g)))), u);
  };
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    hn::StoreU(silu_mul(hn::LoadU(df, gate + i), hn::LoadU(df, up + i)), df, gate + i);
  }
  if (i < n) {
    // The last few through the same vector code, padded with zeros.
    HWY_ALIGN float g[hn::MaxLanes(df)] = {};
    HWY_ALIGN float u[hn::MaxLanes(df)] = {};
    const size_t rest = static_cast<size_t>(n - i);
    std::memcpy(g, gate + i, rest * 4);
    std::memcpy(u, up + i, rest * 4);
    hn::Store(silu_mul(hn::Load(df, g), hn::Load(df, u)), df, g);
    std::memcpy(gate + i, g, rest * 4);
  }
}

}  // namespace bitdelta::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bitdelta {

HWY_EXPORT(SiluMul);

namespace {

// Splits [0, tokens) into chunks of whole tokens across the pool when each thread gets at least
// ~32k values (below that, waking a thread costs more than it saves).
template <typename F>
void per_tokens(ThreadPool& pool, int64_t tokens, int64_t width, F&& f) {
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, width));
  if (tokens < 2 * grain || pool.size() < 2) {
    f(0, tokens);
    return;
  }
  pool.parallel_for(tokens, f, grain);
}

}  // namespace

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
  HWY_DYNAMIC_DISPATCH(SiluMul)(gate, up, n);
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

void rms_norm(const float* x, const float* weight, int64_t tokens, int64_t channels, double eps,
              float* out, ThreadPool& pool) {
  per_tokens(pool, tokens, channels, [&](int64_t b, int64_t e) {
    rms_norm(x + b * channels, weight, e - b, channels, eps, out + b * channels);
  });
}

void rope_rotate_half(float* x, int64_t tokens, int64_t heads, int64_t head_dim,
                      std::span<const int64_t> positions, std::span<const double> inv_freq,
                      ThreadPool& pool) {
  per_tokens(pool, tokens, heads * head_dim, [&](int64_t b, int64_t e) {
    rope_rotate_half(x + b * heads * head_dim, e - b, heads, head_dim, positions.subspan(b, e - b),
                     inv_freq);
  });
}

void silu_mul(float* gate, const float* up, int64_t tokens, int64_t width, ThreadPool& pool) {
  per_tokens(pool, tokens, width, [&](int64_t b, int64_t e) {
    silu_mul(gate + b * width, up + b * width, (e - b) * width);
  });
}

void add_into(float* dst, const float* src, int64_t tokens, int64_t width, ThreadPool& pool) {
  per_tokens(pool, tokens, width, [&](int64_t b, int64_t e) {
    add_into(dst + b * width, src + b * width, (e - b) * width);
  });
}

}  // namespace bitdelta
#endif  // HWY_ONCE
