// Scale distillation (the BitDelta paper's calibration): only the adapter's scales are trained,
// signs frozen, so that base + α⊙S reproduces the fine-tuned model's logits on calibration text.
// A scale's gradient is Σ_t ⟨∂L/∂y, S·x⟩ from the backward pass's linear hook; no dense weight
// gradient is formed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "train/data.h"
#include "train/loss.h"
#include "util/thread_pool.h"

namespace bitdelta {

enum class ScaleInit {
  kFile,             // the scales as compressed (mean |Δ|)
  kActivationAware,  // α = ⟨Δ·C, S⟩ / ⟨S·C, S⟩ with C the calibration inputs' covariance
};

// "compressed" | "activation-aware"; Error otherwise.
ScaleInit parse_scale_init(std::string_view name);

struct CalibrateOptions {
  std::filesystem::path base, finetuned, adapter, data, out;
  DataOptions data_options;
  int64_t steps = 200, batch = 4, seq_len = 128;
  double lr = 1e-4, min_lr_ratio = 0.0;
  int64_t warmup = 0;
  double beta1 = 0.9, beta2 = 0.999;
  DistillLoss loss = DistillLoss::kMse;
  ScaleInit init = ScaleInit::kFile;
  uint64_t seed = 1;
  int64_t eval_batches = 4;  // fixed held-out batches for the loss before and after
  int64_t init_batches = 8;  // batches whose inputs estimate C for activation-aware init
};

struct CalibrateStep {
  int64_t step = 0, steps = 0;
  double loss = 0, lr = 0, seconds = 0;
};

struct CalibrationResult {
  double loss_before = 0, loss_after = 0;  // on the held-out calibration batches
  double loss_after_init = 0;              // after the initialisation, before any step
  int64_t scales = 0;                      // trainable scale values
  double seconds = 0;
};

// Reads the adapter (validated against the base), trains its scales and writes the new adapter
// atomically to options.out with a "calibration" metadata record (data hash, settings, losses).
CalibrationResult calibrate_adapter(const CalibrateOptions& options,
                                    const std::function<void(const CalibrateStep&)>& on_step,
                                    ThreadPool& pool);

}  // namespace bitdelta
