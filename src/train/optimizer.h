// AdamW with decoupled weight decay (PyTorch's update, bias-corrected), global gradient-norm
// clipping, and the cosine learning-rate schedule with linear warmup.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "train/train_model.h"

namespace bitdelta {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.0;  // applied to matrices only (ParamInfo::matrix), never norms/biases
};

// Moments are kept in F32 whatever the parameter type (double only in tests).
template <typename F>
class AdamW {
 public:
  using Moment = std::conditional_t<std::is_same_v<F, double>, double, float>;

  AdamW(const std::vector<ParamInfo>& params, AdamWOptions options)
      : params_(params), options_(options) {
    int64_t n = 0;
    for (const ParamInfo& p : params) n = std::max(n, p.offset + p.size);
    m_.assign(static_cast<size_t>(n), 0.0);
    v_.assign(static_cast<size_t>(n), 0.0);
  }

  // One update of `values` from `grads` at learning rate `lr`:
  //   p ← p·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;
  //   p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)
  void step(std::span<F> values, std::span<const F> grads, double lr) {
    ++t_;
    const double c1 = 1.0 - std::pow(options_.beta1, static_cast<double>(t_));
    const double c2 = std::sqrt(1.0 - std::pow(options_.beta2, static_cast<double>(t_)));
    const double b1 = options_.beta1, b2 = options_.beta2, eps = options_.eps;
    for (const ParamInfo& p : params_) {
      const double decay = p.matrix ? 1.0 - lr * options_.weight_decay : 1.0;
      for (int64_t i = p.offset; i < p.offset + p.size; ++i) {
        const double g = grads[i];
        const double m = b1 * m_[i] + (1 - b1) * g;
        const double v = b2 * v_[i] + (1 - b2) * g * g;
        m_[i] = static_cast<Moment>(m);
        v_[i] = static_cast<Moment>(v);
        values[i] = static_cast<F>(values[i] * decay - lr / c1 * m / (std::sqrt(v) / c2 + eps));
      }
    }
  }

  int64_t steps() const { return t_; }
  void set_steps(int64_t t) { t_ = t; }
  // The moments, for checkpoints.
  std::vector<Moment>& first_moment() { return m_; }
  std::vector<Moment>& second_moment() { return v_; }

 private:
  std::vector<ParamInfo> params_;
  AdamWOptions options_;
  int64_t t_ = 0;
  std::vector<Moment> m_, v_;
};

// Global L2 norm of the gradients; when above max_norm, scales them by
// max_norm / (norm + 1e-6) (as torch.nn.utils.clip_grad_norm_). Returns the norm before clipping.
template <typename F>
double clip_grad_norm(std::span<F> grads, double max_norm) {
  double sum = 0;
  for (F g : grads) sum += double(g) * g;
  const double norm = std::sqrt(sum);
  const double coef = max_norm / (norm + 1e-6);
  if (max_norm > 0 && coef < 1) {
    for (F& g : grads) g = static_cast<F>(g * coef);
  }
  return norm;
}

// Linear warmup from lr/warmup to lr over `warmup` steps, then cosine decay to lr·min_ratio at
// the last step. `step` counts from 0.
inline double cosine_lr(int64_t step, int64_t total_steps, int64_t warmup, double lr,
                        double min_ratio = 0.1) {
  if (step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup);
  const double progress =
      std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(decay_steps));
  const double min_lr = lr * min_ratio;
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace bitdelta
