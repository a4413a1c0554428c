// Rényi-DP accounting of DP-SGD (the sampled Gaussian mechanism): per-order RDP from the noise
// multiplier σ and the sampling rate q (Mironov, Talwar & Zhang 2019, "Rényi Differential Privacy
// of the Sampled Gaussian Mechanism"), composed over steps, and converted to (ε, δ) with the
// tighter conversion of Balle et al. 2020 (Prop. 12; Canonne, Kamath & Steinke 2020) — the one
// TensorFlow Privacy and Google's dp_accounting use. docs/privacy.md.
#pragma once

#include <cstdint>
#include <vector>

namespace bitdelta {

// The orders TensorFlow Privacy's DP-SGD analysis (compute_dp_sgd_privacy) uses: 1.25, 1.5,
// 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5, 5, 6, ..., 63, 128, 256, 512.
std::vector<double> default_rdp_orders();

// RDP of one step of the sampled Gaussian mechanism at `order` (> 1): ε(α) in nats. q in [0, 1],
// σ > 0. Integer orders by the binomial expansion, fractional ones by the series of Mironov et al.
double rdp_sampled_gaussian(double q, double sigma, double order);

struct PrivacySpent {
  double epsilon = 0;
  double order = 0;  // the order that gave the tightest ε
};

// ε after `steps` steps at rate q and noise σ, for δ in (0, 1). Error for a bad argument.
PrivacySpent dp_sgd_epsilon(double q, double sigma, int64_t steps, double delta,
                            const std::vector<double>& orders = default_rdp_orders());

// The smallest noise multiplier (to 0.1%) whose ε after `steps` steps stays ≤ target. Error when
// even σ = 1000 does not reach it, saying so.
double dp_sgd_noise_for_epsilon(double q, int64_t steps, double delta, double target_epsilon);

}  // namespace bitdelta
