#include "train/loss.h"

#include <algorithm>
#include <cmath>

#include "ops/backward.h"
#include "util/error.h"

namespace bitdelta {

namespace {

// log Σ exp(row), in double.
double log_sum_exp(const float* row, int64_t n) {
  double max = row[0];
  for (int64_t v = 1; v < n; ++v) max = std::max<double>(max, row[v]);
  double sum = 0;
  for (int64_t v = 0; v < n; ++v) sum += std::exp(double(row[v]) - max);
  return max + std::log(sum);
}

// Sums per-token values computed in parallel, in a fixed order (deterministic).
template <typename Fn>
double sum_over_tokens(int64_t tokens, ThreadPool& pool, Fn fn) {
  std::vector<double> per_token(static_cast<size_t>(tokens), 0.0);
  pool.parallel_for(tokens, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) per_token[t] = fn(t);
  }, 1);
  double total = 0;
  for (double v : per_token) total += v;
  return total;
}

}  // namespace

double cross_entropy(std::span<const float> logits, std::span<const int32_t> targets,
                     int64_t vocab, double normalizer, std::span<float> dlogits,
                     ThreadPool& pool) {
  const int64_t T = static_cast<int64_t>(targets.size());
  BD_CHECK(static_cast<int64_t>(logits.size()) == T * vocab && dlogits.size() == logits.size());
  const double inv = normalizer > 0 ? 1.0 / normalizer : 0.0;
  return sum_over_tokens(T, pool, [&](int64_t t) {
    // One token through the op's VJP (ops/backward.h), its gradient then rescaled to the step's
    // normaliser.
    BD_CHECK(targets[t] < vocab);
    float* d = dlogits.data() + t * vocab;
    const double nll = cross_entropy_forward_backward(logits.data() + t * vocab,
                                                      targets.subspan(t, 1), vocab, d);
    for (int64_t v = 0; v < vocab; ++v) d[v] = static_cast<float>(d[v] * inv);
    return nll;
  });
}

DistillLoss parse_distill_loss(std::string_view name) {
  if (name == "mse") return DistillLoss::kMse;
  if (name == "kl") return DistillLoss::kKl;
  fail("unknown calibration loss '{}': use mse (the paper's) or kl", name);
}

double distill_loss(std::span<const float> student, std::span<const float> teacher,
                    int64_t vocab, DistillLoss kind, double grad_scale,
                    std::span<float> dlogits, ThreadPool& pool) {
  BD_CHECK(student.size() == teacher.size() && dlogits.size() == student.size());
  const int64_t T = static_cast<int64_t>(student.size()) / vocab;
  if (kind == DistillLoss::kMse) {
    const double n = static_cast<double>(T * vocab);
    const double sum = sum_over_tokens(T, pool, [&](int64_t t) {
      double s = 0;
      for (int64_t v = t * vocab; v < (t + 1) * vocab; ++v) {
        const double diff = double(student[v]) - teacher[v];
        s += diff * diff;
        dlogits[v] = static_cast<float>(2.0 * diff / n * grad_scale);
      }
      return s;
    });
    return sum / n;
  }
  // KL(p ‖ q) = Σ p (log p − log q); ∂/∂student = (q − p) / T.
  const double sum = sum_over_tokens(T, pool, [&](int64_t t) {
    const float* s = student.data() + t * vocab;
    const float* r = teacher.data() + t * vocab;
    const double lz_s = log_sum_exp(s, vocab), lz_r = log_sum_exp(r, vocab);
    double kl = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      const double log_p = double(r[v]) - lz_r, log_q = double(s[v]) - lz_s;
      const double p = std::exp(log_p), q = std::exp(log_q);
      kl += p * (log_p - log_q);
      dlogits[t * vocab + v] = static_cast<float>((q - p) / double(T) * grad_scale);
    }
    return kl;
  });
  return sum / double(T);
}

}  // namespace bitdelta
