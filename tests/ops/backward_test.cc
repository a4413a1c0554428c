// Every VJP against central finite differences of its forward, in double precision.
#include "ops/backward.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

namespace bitdelta {
namespace {

using Vec = std::vector<double>;

Vec random_vec(size_t n, std::mt19937& rng, double scale = 1.0) {
  std::normal_distribution<double> dist(0.0, scale);
  Vec v(n);
  for (auto& e : v) e = dist(rng);
  return v;
}

// d/dθ of loss(θ) for every element of θ, by central differences.
Vec numeric_grad(Vec& theta, const std::function<double()>& loss, double h = 1e-6) {
  Vec g(theta.size());
  for (size_t i = 0; i < theta.size(); ++i) {
    const double keep = theta[i];
    theta[i] = keep + h;
    const double up = loss();
    theta[i] = keep - h;
    const double down = loss();
    theta[i] = keep;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

void expect_grad_near(const Vec& analytic, const Vec& numeric, const char* what) {
  ASSERT_EQ(analytic.size(), numeric.size());
  for (size_t i = 0; i < analytic.size(); ++i) {
    ASSERT_NEAR(analytic[i], numeric[i], 1e-6 * (1 + std::fabs(numeric[i]))) << what << " " << i;
  }
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

TEST(Backward, RmsNorm) {
  std::mt19937 rng(1);
  const int64_t T = 3, C = 7;
  const double eps = 1e-5;
  Vec x = random_vec(T * C, rng), w = random_vec(C, rng), g = random_vec(T * C, rng);
  auto loss = [&] {
    Vec out(T * C);
    for (int64_t t = 0; t < T; ++t) {
      double ss = 0;
      for (int64_t c = 0; c < C; ++c) ss += x[t * C + c] * x[t * C + c];
      const double r = 1 / std::sqrt(ss / C + eps);
      for (int64_t c = 0; c < C; ++c) out[t * C + c] = x[t * C + c] * r * w[c];
    }
    return dot(out, g);
  };
  Vec dx(T * C, 0), dw(C, 0);
  rms_norm_backward(x.data(), w.data(), g.data(), T, C, eps, dx.data(), dw.data());
  expect_grad_near(dx, numeric_grad(x, loss), "dx");
  expect_grad_near(dw, numeric_grad(w, loss), "dw");
}

TEST(Backward, SiluMul) {
  std::mt19937 rng(2);
  const int64_t n = 11;
  Vec gate = random_vec(n, rng, 2.0), up = random_vec(n, rng), g = random_vec(n, rng);
  auto loss = [&] {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += g[i] * gate[i] / (1 + std::exp(-gate[i])) * up[i];
    return s;
  };
  Vec dgate(n, 0), dup(n, 0);
  silu_mul_backward(gate.data(), up.data(), g.data(), n, dgate.data(), dup.data());
  expect_grad_near(dgate, numeric_grad(gate, loss), "dgate");
  expect_grad_near(dup, numeric_grad(up, loss), "dup");
}

TEST(Backward, CrossEntropyWithMaskedTokens) {
  std::mt19937 rng(3);
  const int64_t T = 4, V = 9;
  Vec logits = random_vec(T * V, rng, 3.0);
  const std::vector<int32_t> targets = {2, -1, 8, 0};  // the second token is masked
  Vec d(T * V);
  auto loss = [&] {
    Vec scratch(T * V);
    return cross_entropy_forward_backward(logits.data(), targets, V, scratch.data());
  };
  const double l = cross_entropy_forward_backward(logits.data(), targets, V, d.data());
  EXPECT_GT(l, 0);
  expect_grad_near(d, numeric_grad(logits, loss), "dlogits");
  for (int64_t v = 0; v < V; ++v) EXPECT_EQ(d[V + v], 0.0);
}

TEST(Backward, RopeIsItsInverseRotation) {
  std::mt19937 rng(4);
  const int64_t T = 3, H = 2, D = 6;
  const std::vector<int64_t> positions = {0, 5, 17};
  const std::vector<double> inv_freq = {1.0, 0.1, 0.01};
  Vec x = random_vec(T * H * D, rng), g = random_vec(T * H * D, rng);
  auto loss = [&] {
    Vec out = x;
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        double* v = out.data() + (t * H + h) * D;
        for (int64_t i = 0; i < D / 2; ++i) {
          const float angle = static_cast<float>(positions[t]) * static_cast<float>(inv_freq[i]);
          const double a = v[i], b = v[i + D / 2], c = std::cos(angle), s = std::sin(angle);
          v[i] = a * c - b * s;
          v[i + D / 2] = b * c + a * s;
        }
      }
    }
    return dot(out, g);
  };
  Vec dx = g;
  rope_rotate_half_backward(dx.data(), T, H, D, positions, inv_freq);
  expect_grad_near(dx, numeric_grad(x, loss), "dx");
}

TEST(Backward, Linear) {
  std::mt19937 rng(5);
  const int64_t T = 3, N = 5, K = 4;
  Vec x = random_vec(T * K, rng), w = random_vec(N * K, rng), b = random_vec(N, rng),
      g = random_vec(T * N, rng);
  auto loss = [&] {
    double s = 0;
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t n = 0; n < N; ++n) {
        double y = b[n];
        for (int64_t k = 0; k < K; ++k) y += x[t * K + k] * w[n * K + k];
        s += g[t * N + n] * y;
      }
    }
    return s;
  };
  Vec dx(T * K, 0), dw(N * K, 0), db(N, 0);
  linear_backward(x.data(), w.data(), g.data(), T, N, K, dx.data(), dw.data(), db.data());
  expect_grad_near(dx, numeric_grad(x, loss), "dx");
  expect_grad_near(dw, numeric_grad(w, loss), "dw");
  expect_grad_near(db, numeric_grad(b, loss), "dbias");
}

// ∂L/∂α of y = α ⊙ (S·x) for L = ⟨dy, y⟩, per matrix and per row, against finite differences
// of a dense double evaluation.
TEST(Backward, SignLinearScale) {
  std::mt19937 rng(6);
  ThreadPool pool(2);
  const int64_t T = 3, N = 9, K = 21, row_bytes = (K + 7) / 8;
  std::vector<uint8_t> bits(N * row_bytes, 0);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) {
      if (rng() & 1) bits[n * row_bytes + k / 8] |= static_cast<uint8_t>(1u << (k % 8));
    }
  }
  Vec xd = random_vec(T * K, rng), gd = random_vec(T * N, rng);
  std::vector<float> x(xd.begin(), xd.end()), dy(gd.begin(), gd.end());
  for (bool per_row : {false, true}) {
    Vec alpha = random_vec(per_row ? N : 1, rng, 0.1);
    auto loss = [&] {
      double s = 0;
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t n = 0; n < N; ++n) {
          double sx = 0;
          for (int64_t k = 0; k < K; ++k) {
            const bool plus = (bits[n * row_bytes + k / 8] >> (k % 8)) & 1;
            sx += (plus ? 1.0 : -1.0) * double(x[t * K + k]);
          }
          s += double(dy[t * N + n]) * alpha[per_row ? n : 0] * sx;
        }
      }
      return s;
    };
    std::vector<float> unused(alpha.size(), 0.0f);
    SignMatrix s{bits.data(), N, K, unused.data(), per_row};
    Vec dalpha(alpha.size(), 0.0);
    sign_linear_scale_backward(x.data(), dy.data(), T, s, dalpha.data(), pool);
    Vec numeric = numeric_grad(alpha, loss);
    for (size_t i = 0; i < dalpha.size(); ++i) {
      EXPECT_NEAR(dalpha[i], numeric[i], 1e-4 * (1 + std::fabs(numeric[i]))) << per_row << " " << i;
    }
  }
}

}  // namespace
}  // namespace bitdelta
