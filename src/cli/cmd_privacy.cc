// bitdelta privacy: the Rényi-DP accountant of DP-SGD from the command line (docs/privacy.md).
#include <fmt/format.h>

#include "cli/commands.h"
#include "train/privacy.h"
#include "util/error.h"

namespace bitdelta::cli {

CLI::App* register_privacy(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "privacy",
      "The Rényi-DP accountant of DP-SGD (docs/privacy.md): the ε spent after --steps at "
      "sampling rate --sample-rate (batch / examples) with noise multiplier --noise, or, with "
      "--epsilon, the smallest noise multiplier that stays within it");
  struct Options {
    double q = 0, noise = 0, delta = 1e-5, epsilon = 0;
    int64_t steps = 0;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--sample-rate", o->q,
                  "Probability that an example is in a batch (batch / examples)")
      ->required()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--steps", o->steps, "Optimizer steps")->required()->check(non_negative());
  cmd->add_option("--delta", o->delta, "δ (below 1 / examples)")->capture_default_str();
  auto* noise = cmd->add_option("--noise", o->noise, "Noise multiplier σ (noise std ÷ clip norm)")
                    ->check(number_at_least(0, false));
  auto* eps = cmd->add_option("--epsilon", o->epsilon, "Target ε: find the noise multiplier")
                  ->check(number_at_least(0, false));
  noise->excludes(eps);
  cmd->add_flag("--json", o->json, "Print JSON");
  runner = [=] {
    if (o->noise <= 0 && o->epsilon <= 0)
      fail("give --noise (to get ε) or --epsilon (to get the noise)");
    const double sigma =
        o->noise > 0 ? o->noise : dp_sgd_noise_for_epsilon(o->q, o->steps, o->delta, o->epsilon);
    const PrivacySpent s = dp_sgd_epsilon(o->q, sigma, o->steps, o->delta);
    if (o->json) {
      fmt::print("{}\n", nlohmann::json{{"sample_rate", o->q},
                                        {"steps", o->steps},
                                        {"delta", o->delta},
                                        {"noise_multiplier", sigma},
                                        {"epsilon", s.epsilon},
                                        {"order", s.order}}
                             .dump(2));
    } else {
      fmt::print(
          "noise multiplier {:.4g}, sampling rate {:.4g}, {} steps: (ε = {:.4g}, δ = {:g})-DP "
          "(RDP order {:g})\n",
          sigma, o->q, o->steps, s.epsilon, o->delta, s.order);
    }
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli
