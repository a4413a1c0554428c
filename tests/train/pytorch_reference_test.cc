// Loss, gradients, AdamW steps and scale-distillation gradients against an independent PyTorch
// run (fixtures from tools/gen_train_fixtures.py, in float64).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "io/safetensors.h"
#include "ops/backward.h"
#include "support/test_support.h"
#include "train/optimizer.h"
#include "train/train_model.h"

namespace bitdelta {
namespace {

std::vector<double> f64(const SafetensorsFile& f, const std::string& name) {
  TensorView v = f.view(name);
  EXPECT_EQ(v.dtype(), DType::kF64) << name;
  std::vector<double> out(static_cast<size_t>(v.numel()));
  std::memcpy(out.data(), v.data, out.size() * sizeof(double));
  return out;
}

template <typename T>
std::vector<T> ints(const SafetensorsFile& f, const std::string& name) {
  TensorView v = f.view(name);
  std::vector<T> out(static_cast<size_t>(v.numel()));
  std::memcpy(out.data(), v.data, out.size() * sizeof(T));
  return out;
}

void expect_close(std::span<const double> actual, std::span<const double> expected, double tol,
                  const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double scale = 0;
  for (double e : expected) scale = std::max(scale, std::fabs(e));
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_NEAR(actual[i], expected[i], tol * std::max(1e-3, scale)) << what << "[" << i << "]";
  }
}

double ce_loss(TrainModel<double>& m, const std::vector<int32_t>& tokens,
               const std::vector<int32_t>& targets, bool backward) {
  auto logits = m.forward(tokens, 2, 7);
  std::vector<double> d(logits.size());
  const double loss = cross_entropy_forward_backward(
      logits.data(), std::span<const int32_t>(targets), m.config().vocab_size, d.data());
  if (backward) m.backward(d, {});
  return loss;
}

class PytorchReference : public ::testing::TestWithParam<const char*> {};

TEST_P(PytorchReference, LossGradientsAndAdamWSteps) {
  const std::string name = GetParam();
  SafetensorsFile fx = SafetensorsFile::open(testing::test_data("train/" + name + ".safetensors"));
  const auto dir = testing::test_data("model/" + name);
  WeightFiles files = WeightFiles::open(dir);
  TrainModel<double> m(load_model_config(dir / "config.json"), files);
  const auto tokens = ints<int32_t>(fx, "tokens");
  const auto targets = ints<int32_t>(fx, "targets");

  m.zero_grads();
  const double loss = ce_loss(m, tokens, targets, true);
  EXPECT_NEAR(loss, f64(fx, "loss")[0], 1e-10 * std::fabs(loss));
  for (const ParamInfo& p : m.params()) {
    std::span<const double> g(m.grads().data() + p.offset, static_cast<size_t>(p.size));
    expect_close(g, f64(fx, "grad." + p.name), 1e-10, "grad." + p.name);
  }

  const auto lrs = f64(fx, "adam.lrs");
  const auto losses = f64(fx, "adam.losses");
  const auto norms = f64(fx, "adam.grad_norms");
  AdamW<double> adam(m.params(), {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1});
  for (size_t step = 0; step < lrs.size(); ++step) {
    m.zero_grads();
    EXPECT_NEAR(ce_loss(m, tokens, targets, true), losses[step], 1e-9 * losses[step])
        << "step " << step;
    EXPECT_NEAR(clip_grad_norm(m.grads(), 1.0), norms[step], 1e-9 * norms[step]);
    adam.step(m.values(), m.grads(), lrs[step]);
  }
  for (const ParamInfo& p : m.params()) {
    std::span<const double> w(m.values().data() + p.offset, static_cast<size_t>(p.size));
    expect_close(w, f64(fx, "final." + p.name), 1e-9, "final." + p.name);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, PytorchReference,
                         ::testing::Values("qwen3_gqa2_tied", "llama_gqa4_untied",
                                           "qwen2_mha_bias"));

// Per-row scale gradients of a student W + α⊙S against teacher logits, through the backward
// pass's linear hook: dα[n] = Σ_t dy[t, n] · (S·x[t])[n], with no weight gradients formed.
TEST(PytorchReference, ScaleDistillationGradients) {
  SafetensorsFile fx = SafetensorsFile::open(testing::test_data("train/scale_grad_qwen3.safetensors"));
  const auto dir = testing::test_data("model/qwen3_gqa2_tied");
  WeightFiles files = WeightFiles::open(dir);
  TrainModel<double> m(load_model_config(dir / "config.json"), files);
  const int64_t V = m.config().vocab_size;
  struct Signed {
    std::vector<int8_t> signs;
    std::vector<double> scales, grad;
  };
  std::map<int, Signed> signed_params;
  for (const ParamInfo& p : m.params()) {
    if (!fx.find("sign." + p.name)) continue;
    Signed s{ints<int8_t>(fx, "sign." + p.name), f64(fx, "scale." + p.name), {}};
    double* w = m.value(m.find(p.name));
    for (int64_t i = 0; i < p.size; ++i) w[i] += s.scales[i / p.shape[1]] * s.signs[i];
    s.grad.assign(s.scales.size(), 0.0);
    signed_params[m.find(p.name)] = std::move(s);
  }
  ASSERT_EQ(signed_params.size(), 14u);
  const auto tokens = ints<int32_t>(fx, "tokens");
  const auto teacher = f64(fx, "teacher");

  for (const std::string loss_name : {"mse", "kl"}) {
    for (auto& [_, s] : signed_params) std::fill(s.grad.begin(), s.grad.end(), 0.0);
    auto logits = m.forward(tokens, 2, 7);
    std::vector<double> d(logits.size());
    double loss = 0;
    const int64_t T = 14;
    for (int64_t t = 0; t < T; ++t) {
      const double* s = logits.data() + t * V;
      const double* r = teacher.data() + t * V;
      if (loss_name == "mse") {
        for (int64_t v = 0; v < V; ++v) {
          loss += (s[v] - r[v]) * (s[v] - r[v]) / double(T * V);
          d[t * V + v] = 2 * (s[v] - r[v]) / double(T * V);
        }
      } else {
        double ms = s[0], mr = r[0];
        for (int64_t v = 1; v < V; ++v) ms = std::max(ms, s[v]), mr = std::max(mr, r[v]);
        double zs = 0, zr = 0;
        for (int64_t v = 0; v < V; ++v) zs += std::exp(s[v] - ms), zr += std::exp(r[v] - mr);
        for (int64_t v = 0; v < V; ++v) {
          const double lp = r[v] - mr - std::log(zr), lq = s[v] - ms - std::log(zs);
          loss += std::exp(lp) * (lp - lq) / double(T);
          d[t * V + v] = (std::exp(lq) - std::exp(lp)) / double(T);
        }
      }
    }
    EXPECT_NEAR(loss, f64(fx, loss_name + "_loss")[0], 1e-10);
    BackwardHooks<double> hooks;
    hooks.param_grads = false;
    hooks.on_linear = [&](int param, const double* x, const double* dy, int64_t tokens_n) {
      auto it = signed_params.find(param);
      if (it == signed_params.end()) return;
      const ParamInfo& p = m.params()[param];
      const int64_t N = p.shape[0], K = p.shape[1];
      for (int64_t t = 0; t < tokens_n; ++t) {
        for (int64_t n = 0; n < N; ++n) {
          double sx = 0;
          for (int64_t k = 0; k < K; ++k) sx += it->second.signs[n * K + k] * x[t * K + k];
          it->second.grad[n] += dy[t * N + n] * sx;
        }
      }
    };
    m.zero_grads();
    m.backward(d, hooks);
    for (double g : m.grads()) ASSERT_EQ(g, 0.0);  // no weight gradients were formed
    const std::string prefix = loss_name == "mse" ? "scale_grad." : "kl_scale_grad.";
    for (auto& [param, s] : signed_params) {
      expect_close(s.grad, f64(fx, prefix + m.params()[param].name), 1e-10,
                   prefix + m.params()[param].name);
    }
  }
}

}  // namespace
}  // namespace bitdelta
