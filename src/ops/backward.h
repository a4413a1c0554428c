// Vector-Jacobian products of the forward ops, for fine-tuning and scale distillation (llm.c
// style: each op_backward mirrors its forward's arguments and accumulates gradients with +=).
// Templated on the element type: the engine runs them in float; the gradient checks run them in
// double against finite differences.
//   T tokens, C channels, N out features, K in features, H heads, D head_dim, V vocab
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "ops/sign_matmul.h"

namespace bitdelta {

// Forward: out[t] = x[t] · r[t] · w, r[t] = 1/sqrt(mean(x[t]²) + eps).
// dx[t] += r·(w ⊙ dout) − x · r³/C · Σ_c (w ⊙ dout ⊙ x);  dw += Σ_t dout ⊙ x · r.
template <typename F>
void rms_norm_backward(const F* x, const F* w, const F* dout, int64_t tokens, int64_t channels,
                       double eps, F* dx, F* dw) {
  for (int64_t t = 0; t < tokens; ++t) {
    const F* xt = x + t * channels;
    const F* gt = dout + t * channels;
    double sum_sq = 0, dot = 0;
    for (int64_t c = 0; c < channels; ++c) {
      sum_sq += double(xt[c]) * xt[c];
      dot += double(gt[c]) * w[c] * xt[c];
    }
    const double r = 1.0 / std::sqrt(sum_sq / channels + eps);
    const double k = r * r * r / channels * dot;
    for (int64_t c = 0; c < channels; ++c) {
      if (dx != nullptr) dx[t * channels + c] += static_cast<F>(r * gt[c] * w[c] - k * xt[c]);
      if (dw != nullptr) dw[c] += static_cast<F>(gt[c] * xt[c] * r);
    }
  }
}

// Forward: out = silu(gate) ⊙ up.
template <typename F>
void silu_mul_backward(const F* gate, const F* up, const F* dout, int64_t n, F* dgate, F* dup) {
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    const double s = 1.0 / (1.0 + std::exp(-g));
    dgate[i] += static_cast<F>(dout[i] * up[i] * (s * (1.0 + g * (1.0 - s))));
    dup[i] += static_cast<F>(dout[i] * g * s);
  }
}

// Mean cross-entropy over the tokens whose target ≥ 0 (others are masked out, e.g. prompt
// tokens). Writes dlogits (overwrites) and returns the loss.
template <typename F>
double cross_entropy_forward_backward(const F* logits, std::span<const int32_t> targets,
                                      int64_t vocab, F* dlogits) {
  int64_t counted = 0;
  for (int32_t t : targets) counted += t >= 0;
  double loss = 0;
  for (size_t t = 0; t < targets.size(); ++t) {
    const F* l = logits + static_cast<int64_t>(t) * vocab;
    F* d = dlogits + static_cast<int64_t>(t) * vocab;
    if (targets[t] < 0) {
      for (int64_t v = 0; v < vocab; ++v) d[v] = 0;
      continue;
    }
    double max = l[0];
    for (int64_t v = 1; v < vocab; ++v) max = std::max<double>(max, l[v]);
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(l[v]) - max);
    const double log_z = max + std::log(sum);
    loss += log_z - l[targets[t]];
    for (int64_t v = 0; v < vocab; ++v) {
      const double p = std::exp(double(l[v]) - log_z);
      d[v] = static_cast<F>((p - (v == targets[t] ? 1.0 : 0.0)) / double(counted));
    }
  }
  return counted > 0 ? loss / double(counted) : 0.0;
}

// Forward (rotate-half RoPE) is a rotation by +angle per pair; its VJP is the rotation by
// −angle, in place on the gradient [T, H, D].
template <typename F>
void rope_rotate_half_backward(F* grad, int64_t tokens, int64_t heads, int64_t head_dim,
                               std::span<const int64_t> positions,
                               std::span<const double> inv_freq) {
  const int64_t half = head_dim / 2;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[t]) * static_cast<float>(inv_freq[i]);
      const double c = std::cos(double(angle)), s = std::sin(double(angle));
      for (int64_t h = 0; h < heads; ++h) {
        F* v = grad + (t * heads + h) * head_dim;
        const double a = v[i], b = v[i + half];
        v[i] = static_cast<F>(a * c + b * s);
        v[i + half] = static_cast<F>(b * c - a * s);
      }
    }
  }
}

// Forward: y[t, n] = Σ_k x[t, k] · w[n, k] + bias[n] (dense, row-major [N, K]).
// dx += dy · w;  dw += dyᵀ · x;  dbias += Σ_t dy. Any of the outputs may be null.
template <typename F>
void linear_backward(const F* x, const F* w, const F* dy, int64_t tokens, int64_t n_out,
                     int64_t k_in, F* dx, F* dw, F* dbias) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t n = 0; n < n_out; ++n) {
      const double g = dy[t * n_out + n];
      if (g == 0) continue;
      if (dbias != nullptr) dbias[n] += static_cast<F>(g);
      for (int64_t k = 0; k < k_in; ++k) {
        if (dx != nullptr) dx[t * k_in + k] += static_cast<F>(g * w[n * k_in + k]);
        if (dw != nullptr) dw[n * k_in + k] += static_cast<F>(g * x[t * k_in + k]);
      }
    }
  }
}

// The scale gradient of a 1-bit linear y += α ⊙ (S·x) (scale distillation trains only α):
//   per matrix: dα += Σ_t ⟨dy[t], S·x[t]⟩;  per row: dα[n] += Σ_t dy[t, n] · (S·x[t])[n].
// No dense weight gradient is formed: S·x is the same product the fused kernel computes.
// `dscale` has s.per_row ? rows : 1 entries. The sign matrix's own scales are not used.
void sign_linear_scale_backward(const float* x, const float* dy, int64_t tokens,
                                const SignMatrix& s, double* dscale, ThreadPool& pool);

}  // namespace bitdelta
