// The RDP accountant against an established one's own test values, and its own invariants.
#include "train/privacy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "support/test_support.h"

namespace bitdelta {
namespace {

// TensorFlow Privacy, tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_test.py,
// ComputeDpSgdPrivacyTest.test_compute_dp_sgd_privacy: (n, batch size, noise multiplier, epochs,
// δ) → (ε, order). Steps = ceil(epochs · n / batch), sampling rate = batch / n. The bar is 1%;
// ours agrees to ~1e-12.
struct TfCase {
  double n, batch, noise, epochs, delta, epsilon, order;
};
constexpr TfCase kTensorFlowPrivacy[] = {
    {60000, 150, 1.3, 15, 1e-5, 0.7242234026109595, 19.0},     // Test0
    {100000, 100, 1.0, 30, 1e-7, 1.4154988495444845, 13.0},    // Test1
    {100000000, 1024, 0.1, 10, 1e-7, 5907982.31138195, 1.25},  // Test2
};

TEST(RdpAccountant, MatchesTensorFlowPrivacysTests) {
  for (const TfCase& c : kTensorFlowPrivacy) {
    const double q = c.batch / c.n;
    const auto steps = static_cast<int64_t>(std::ceil(c.epochs * c.n / c.batch));
    const PrivacySpent s = dp_sgd_epsilon(q, c.noise, steps, c.delta);
    EXPECT_NEAR(s.epsilon, c.epsilon, 0.01 * c.epsilon) << c.n << " " << c.batch;
    EXPECT_NEAR(s.epsilon, c.epsilon, 1e-9 * c.epsilon);
    EXPECT_EQ(s.order, c.order);
  }
}

TEST(RdpAccountant, ClosedFormsAndInvariants) {
  // No subsampling: the Gaussian mechanism's α/(2σ²); no sampling: nothing spent.
  EXPECT_DOUBLE_EQ(rdp_sampled_gaussian(1.0, 2.0, 8), 8 / 8.0);
  EXPECT_EQ(rdp_sampled_gaussian(0.0, 2.0, 8), 0.0);
  // Fractional orders sit between their integer neighbours (RDP grows with the order).
  const double lo = rdp_sampled_gaussian(0.01, 1.1, 3), mid = rdp_sampled_gaussian(0.01, 1.1, 3.5),
               hi = rdp_sampled_gaussian(0.01, 1.1, 4);
  EXPECT_LT(lo, mid);
  EXPECT_LT(mid, hi);
  // More noise, fewer steps or a smaller rate spend less.
  EXPECT_LT(dp_sgd_epsilon(0.01, 2.0, 1000, 1e-5).epsilon,
            dp_sgd_epsilon(0.01, 1.0, 1000, 1e-5).epsilon);
  EXPECT_LT(dp_sgd_epsilon(0.01, 1.0, 100, 1e-5).epsilon,
            dp_sgd_epsilon(0.01, 1.0, 1000, 1e-5).epsilon);
  EXPECT_LT(dp_sgd_epsilon(0.001, 1.0, 1000, 1e-5).epsilon,
            dp_sgd_epsilon(0.01, 1.0, 1000, 1e-5).epsilon);
}

TEST(RdpAccountant, NoiseForATargetEpsilon) {
  for (double target : {1.0, 4.0, 8.0}) {
    const double sigma = dp_sgd_noise_for_epsilon(0.05, 500, 1e-5, target);
    EXPECT_LE(dp_sgd_epsilon(0.05, sigma, 500, 1e-5).epsilon, target);
    EXPECT_GT(dp_sgd_epsilon(0.05, sigma * 0.99, 500, 1e-5).epsilon, target * 0.999);
  }
  EXPECT_NE(testing::error_message([] {
              dp_sgd_noise_for_epsilon(1.0, 1000000, 1e-5, 1e-4);
            }).find("cannot be met"),
            std::string::npos);
  EXPECT_NE(testing::error_message([] { dp_sgd_epsilon(0.1, 1.0, 10, 2.0); }).find("δ must be"),
            std::string::npos);
  EXPECT_NE(testing::error_message([] { rdp_sampled_gaussian(1.5, 1.0, 2); }).find("sampling rate"),
            std::string::npos);
}

// The analytic Gaussian mechanism behind --dp-scales, checked against an independent derivation:
// the privacy loss of the Gaussian mechanism is L ~ N(μ, 2μ) with μ = Δ²/(2σ²), and
// δ(ε) = E[(1 − e^(ε − L))₊] (Balle & Wang 2018, Lemma 3 / the privacy-profile definition),
// integrated numerically here (Simpson's rule).
TEST(AnalyticGaussian, MatchesThePrivacyLossIntegral) {
  auto integral = [](double eps, double sigma, double sens) {
    const double mu = sens * sens / (2 * sigma * sigma), sd = std::sqrt(2 * mu);
    const double a = eps, b = std::max(eps, mu) + 40 * sd;
    const int n = 200000;
    const double h = (b - a) / n;
    double sum = 0;
    for (int i = 0; i <= n; ++i) {
      const double l = a + i * h;
      const double f = (1 - std::exp(eps - l)) * std::exp(-(l - mu) * (l - mu) / (2 * sd * sd)) /
                       (sd * std::sqrt(2 * M_PI));
      sum += f * (i == 0 || i == n ? 1 : (i % 2 ? 4 : 2));
    }
    return sum * h / 3;
  };
  for (const auto& [eps, sigma, sens] : std::vector<std::tuple<double, double, double>>{
           {1.0, 1.0, 1.0}, {0.5, 3.0, 1.0}, {4.0, 0.5, 1.0}, {8.0, 0.2, 0.7}, {1.0, 5.0, 2.0}}) {
    const double closed = analytic_gaussian_delta(eps, sigma, sens);
    EXPECT_NEAR(closed, integral(eps, sigma, sens), 1e-7 + 1e-4 * closed)
        << eps << " " << sigma << " " << sens;
  }
  // σ for a target meets it, and is below the classical bound Δ·√(2 ln(1.25/δ))/ε (ε < 1).
  const double sigma = analytic_gaussian_sigma(0.5, 1e-5, 2.0);
  EXPECT_LE(analytic_gaussian_delta(0.5, sigma, 2.0), 1e-5);
  EXPECT_GT(analytic_gaussian_delta(0.5, sigma * 0.999, 2.0), 1e-5);
  EXPECT_LT(sigma, 2.0 * std::sqrt(2 * std::log(1.25 / 1e-5)) / 0.5);
  EXPECT_NE(testing::error_message([] { analytic_gaussian_sigma(0, 1e-5, 1); }).find("ε must be"),
            std::string::npos);
  EXPECT_NE(testing::error_message([] { analytic_gaussian_sigma(1, 1, 1); }).find("δ must be"),
            std::string::npos);
}

}  // namespace
}  // namespace bitdelta
