#include "train/privacy.h"

#include <sodium.h>

#include <cmath>
#include <limits>

#include "delta/adapter.h"
#include "io/safetensors.h"
#include "io/weight_files.h"
#include "util/error.h"

namespace bitdelta {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

double log_add(double a, double b) {
  if (a == -kInf) return b;
  if (b == -kInf) return a;
  const double m = std::max(a, b);
  return m + std::log1p(std::exp(-std::abs(a - b)));
}

// log(exp(a) − exp(b)) for a ≥ b.
double log_sub(double a, double b) {
  if (b == -kInf) return a;
  if (a <= b) return -kInf;
  return a + std::log1p(-std::exp(b - a));
}

// log(erfc(x)), also where erfc underflows (the asymptotic series for large x).
double log_erfc(double x) {
  const double r = std::erfc(x);
  if (r > 0) return std::log(r);
  const double x2 = x * x;
  return -x2 - std::log(x) - 0.5 * std::log(M_PI) +
         std::log1p(-1 / (2 * x2) + 3 / (4 * x2 * x2) - 15 / (8 * x2 * x2 * x2));
}

// log A_α for integer α: Σ_i C(α, i) q^i (1−q)^(α−i) exp((i² − i) / 2σ²).
double log_a_int(double q, double sigma, int64_t alpha) {
  double log_a = -kInf;
  const auto a = static_cast<double>(alpha);
  for (int64_t i = 0; i <= alpha; ++i) {
    const auto d = static_cast<double>(i);
    const double log_coef = std::lgamma(a + 1) - std::lgamma(d + 1) - std::lgamma(a - d + 1) +
                            d * std::log(q) + (a - d) * std::log1p(-q);
    log_a = log_add(log_a, log_coef + (d * d - d) / (2 * sigma * sigma));
  }
  return log_a;
}

// log A_α for fractional α: the two-sided series of Mironov, Talwar & Zhang (2019), Sec. 3.3,
// summed until its terms fall below e^−30.
double log_a_frac(double q, double sigma, double alpha) {
  double log_a0 = -kInf, log_a1 = -kInf;
  const double z0 = sigma * sigma * std::log(1 / q - 1) + 0.5;
  double log_coef = 0;  // log |C(α, i)|
  int sign = 1;         // sign of C(α, i)
  for (int64_t k = 0;; ++k) {
    const auto i = static_cast<double>(k);
    const double j = alpha - i;
    const double log_t0 = log_coef + i * std::log(q) + j * std::log1p(-q);
    const double log_t1 = log_coef + j * std::log(q) + i * std::log1p(-q);
    const double log_e0 = std::log(0.5) + log_erfc((i - z0) / (std::sqrt(2.0) * sigma));
    const double log_e1 = std::log(0.5) + log_erfc((z0 - j) / (std::sqrt(2.0) * sigma));
    const double log_s0 = log_t0 + (i * i - i) / (2 * sigma * sigma) + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / (2 * sigma * sigma) + log_e1;
    if (sign > 0) {
      log_a0 = log_add(log_a0, log_s0);
      log_a1 = log_add(log_a1, log_s1);
    } else {
      log_a0 = log_sub(log_a0, log_s0);
      log_a1 = log_sub(log_a1, log_s1);
    }
    if (std::max(log_s0, log_s1) < -30) break;
    if (k > 100000) fail("the RDP series did not converge (q {}, σ {}, order {})", q, sigma, alpha);
    const double f = (alpha - i) / (i + 1);
    if (f == 0) break;
    if (f < 0) sign = -sign;
    log_coef += std::log(std::abs(f));
  }
  return log_add(log_a0, log_a1);
}

}  // namespace

std::vector<double> default_rdp_orders() {
  std::vector<double> orders = {1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5};
  for (int a = 5; a < 64; ++a) orders.push_back(a);
  for (double a : {128, 256, 512}) orders.push_back(a);
  return orders;
}

double rdp_sampled_gaussian(double q, double sigma, double order) {
  if (!(q >= 0 && q <= 1)) fail("the sampling rate must be in [0, 1], got {}", q);
  if (!(sigma > 0)) fail("the noise multiplier must be positive, got {}", sigma);
  if (!(order > 1)) fail("RDP orders must be above 1, got {}", order);
  if (q == 0) return 0;
  if (q == 1) return order / (2 * sigma * sigma);
  if (std::isinf(order)) return kInf;
  const double log_a = order == std::floor(order) ? log_a_int(q, sigma, static_cast<int64_t>(order))
                                                  : log_a_frac(q, sigma, order);
  return log_a / (order - 1);
}

PrivacySpent dp_sgd_epsilon(double q, double sigma, int64_t steps, double delta,
                            const std::vector<double>& orders) {
  if (steps < 0) fail("the number of steps must be ≥ 0, got {}", steps);
  if (!(delta > 0 && delta < 1)) fail("δ must be in (0, 1), got {}", delta);
  PrivacySpent best{kInf, 0};
  for (double a : orders) {
    const double rdp = rdp_sampled_gaussian(q, sigma, a) * static_cast<double>(steps);
    double eps;
    if (delta * delta + std::expm1(-rdp) >= 0) {
      eps = 0;  // the RDP bound already gives δ at ε = 0
    } else if (a > 1.01) {
      // Balle et al. 2020, Prop. 12: ε = rdp + log((α−1)/α) − (log δ + log α)/(α−1).
      eps = rdp + std::log1p(-1 / a) - std::log(delta * a) / (a - 1);
    } else {
      eps = kInf;  // the conversion is unstable this close to 1
    }
    if (eps < best.epsilon) best = {eps, a};
  }
  return best;
}

double dp_sgd_noise_for_epsilon(double q, int64_t steps, double delta, double target) {
  if (!(target > 0)) fail("the ε target must be positive, got {}", target);
  double hi = 1;
  while (dp_sgd_epsilon(q, hi, steps, delta).epsilon > target) {
    hi *= 2;
    if (hi > 1000) {
      fail(
          "ε = {} cannot be met in {} steps at sampling rate {} with δ = {}: even noise "
          "multiplier 1000 spends more; take fewer steps, a smaller batch or a larger ε",
          target, steps, q, delta);
    }
  }
  double lo = hi / 2;
  if (dp_sgd_epsilon(q, lo, steps, delta).epsilon <= target) lo = 1e-3;
  while (hi - lo > 1e-3 * hi) {
    const double mid = 0.5 * (lo + hi);
    (dp_sgd_epsilon(q, mid, steps, delta).epsilon > target ? lo : hi) = mid;
  }
  return hi;
}

double secure_standard_normal() {
  static const bool ready = sodium_init() >= 0;
  if (!ready) fail("libsodium failed to initialize");
  uint64_t bits[2];
  randombytes_buf(bits, sizeof bits);
  const double u1 = (static_cast<double>(bits[0] >> 11) + 1) / 9007199254740993.0;
  const double u2 = static_cast<double>(bits[1] >> 11) / 9007199254740992.0;
  return std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
}

namespace {
double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }
}  // namespace

double analytic_gaussian_delta(double epsilon, double sigma, double sensitivity) {
  const double a = sensitivity / (2 * sigma), b = epsilon * sigma / sensitivity;
  return normal_cdf(a - b) - std::exp(epsilon) * normal_cdf(-a - b);
}

double analytic_gaussian_sigma(double epsilon, double delta, double sensitivity) {
  if (!(epsilon > 0 && epsilon <= 100)) fail("ε must be in (0, 100], not {}", epsilon);
  if (!(delta > 0 && delta < 1)) fail("δ must be in (0, 1), not {}", delta);
  if (!(sensitivity > 0)) fail("the sensitivity must be > 0, not {}", sensitivity);
  // δ(σ) falls as σ grows: bisect on log σ.
  double lo = sensitivity * 1e-6, hi = sensitivity * 1e6;
  if (analytic_gaussian_delta(epsilon, hi, sensitivity) > delta) {
    fail("no noise level up to 10⁶ × the sensitivity reaches (ε = {}, δ = {})", epsilon, delta);
  }
  while (hi / lo > 1.0001) {
    const double mid = std::sqrt(lo * hi);
    (analytic_gaussian_delta(epsilon, mid, sensitivity) > delta ? lo : hi) = mid;
  }
  return hi;
}

nlohmann::json privatize_scales(const std::filesystem::path& in, const std::filesystem::path& out,
                                const std::filesystem::path& base_dir, double multiplier,
                                const ScaleNoiseOptions& o,
                                const std::map<std::string, std::string>& metadata) {
  if (!(o.bound_ratio > 0)) fail("--dp-scales-bound must be > 0, not {}", o.bound_ratio);
  const std::shared_ptr<Adapter> a = Adapter::open(in);
  const WeightFiles base = WeightFiles::open(base_dir);
  const SafetensorsFile& file = a->file();
  // The data-independent bound of every scale: bound_ratio × RMS of its base matrix.
  std::map<std::string, double> bound;  // by scale tensor name
  double squared = 0;
  int64_t scales = 0;
  for (const Adapter::Entry& e : a->entries()) {
    if (e.scale == nullptr) continue;
    const std::vector<float> w = base.view(e.base_name).to_f32();
    double s = 0;
    for (float x : w) s += static_cast<double>(x) * x;
    const double b =
        o.bound_ratio * std::sqrt(s / static_cast<double>(std::max<size_t>(1, w.size())));
    bound[e.scale->name] = b;
    const int64_t n = e.scale->numel();
    squared += b * b * static_cast<double>(n);
    scales += n;
  }
  if (scales == 0) fail("{} has no 1-bit scales to privatize", in.string());
  const double sensitivity = std::sqrt(squared);
  const double sigma = analytic_gaussian_sigma(o.epsilon, o.delta, sensitivity);
  int64_t clipped = 0;
  double signal = 0, noise = 0;
  SafetensorsWriter w;
  w.set_checksums(true);
  for (const TensorInfo& info : file.tensors()) {
    auto it = bound.find(info.name);
    if (it == bound.end()) {
      w.add(info.name, info.dtype, info.shape, file.view(info).bytes());
      continue;
    }
    std::vector<float> s = file.view(info).to_f32();
    for (float& v : s) {
      double x = static_cast<double>(v) * multiplier;
      if (x > it->second) {
        x = it->second;
        ++clipped;
      }
      x = std::max(0.0, x);
      signal += x * x;
      const double z = sigma * secure_standard_normal();
      noise += z * z;
      v = static_cast<float>(std::max(0.0, x + z));
    }
    w.add_f32(info.name, info.shape, s);
  }
  nlohmann::json report = {
      {"mechanism", "Gaussian noise on the 1-bit scales (analytic Gaussian mechanism)"},
      {"protects",
       "the scales only: the sign bits, exact deltas (norms, biases) and metadata are computed "
       "from the data without noise and carry no privacy guarantee"},
      {"unit",
       "the whole training data set (any change to it moves the clipped scales by at most "
       "the sensitivity)"},
      {"epsilon", o.epsilon},
      {"delta", o.delta},
      {"bound_ratio", o.bound_ratio},
      {"sensitivity", sensitivity},
      {"sigma", sigma},
      {"scales", scales},
      {"clipped", clipped},
      {"signal_rms", std::sqrt(signal / static_cast<double>(scales))},
      {"noise_rms", std::sqrt(noise / static_cast<double>(scales))}};
  for (const auto& [key, value] : file.metadata()) w.set_metadata(key, value);
  for (const auto& [key, value] : metadata) w.set_metadata(key, value);
  w.set_metadata("dp_scales", report.dump());
  w.write(out);
  return report;
}

}  // namespace bitdelta
