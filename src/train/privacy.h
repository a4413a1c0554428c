// Rényi-DP accounting of DP-SGD (the sampled Gaussian mechanism): per-order RDP from the noise
// multiplier σ and the sampling rate q (Mironov, Talwar & Zhang 2019, "Rényi Differential Privacy
// of the Sampled Gaussian Mechanism"), composed over steps, and converted to (ε, δ) with the
// tighter conversion of Balle et al. 2020 (Prop. 12; Canonne, Kamath & Steinke 2020) — the one
// TensorFlow Privacy and Google's dp_accounting use. docs/privacy.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
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

// A standard normal drawn from the OS's cryptographic randomness (libsodium): DP noise must not
// be predictable from a seed.
double secure_standard_normal();

// The analytic Gaussian mechanism (Balle & Wang 2018, "Improving the Gaussian Mechanism for
// Differential Privacy", Theorem 8): adding N(0, σ²) to every coordinate of a function whose L2
// sensitivity is Δ is (ε, δ)-DP exactly when
//   δ ≥ Φ(Δ/(2σ) − εσ/Δ) − e^ε · Φ(−Δ/(2σ) − εσ/Δ).
double analytic_gaussian_delta(double epsilon, double sigma, double sensitivity);
// The smallest σ (to 0.01%) meeting (ε, δ) for sensitivity Δ. Error for ε outside (0, 100], δ
// outside (0, 1) or Δ ≤ 0.
double analytic_gaussian_sigma(double epsilon, double delta, double sensitivity);

// --dp-scales (docs/privacy.md): the seed's "noise on the scales". Every 1-bit scale (times
// `multiplier`) is clipped to [0, bound_ratio × RMS of its base matrix], a bound that does not
// depend on the data, so the vector of scales moves by at most Δ = ‖bounds‖₂ whatever the
// training data; Gaussian noise calibrated to (ε, δ) for that Δ is added and the result clamped
// at 0. This protects THE SCALES ONLY: the sign bits, exact deltas (norms, biases) and the
// metadata are computed from the data without noise and carry no guarantee.
struct ScaleNoiseOptions {
  double epsilon = 0, delta = 1e-5;
  double bound_ratio = 0.25;
};

// Writes `out`: the adapter `in` with its scales privatized as above, `metadata` added. Returns
// the report recorded in the adapter (mechanism, ε, δ, Δ, σ, scales, how many were clipped, and
// what is and is not protected).
nlohmann::json privatize_scales(const std::filesystem::path& in, const std::filesystem::path& out,
                                const std::filesystem::path& base_dir, double multiplier,
                                const ScaleNoiseOptions& options,
                                const std::map<std::string, std::string>& metadata);

}  // namespace bitdelta
