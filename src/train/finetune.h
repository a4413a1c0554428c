// Full fine-tuning: AdamW on FP32 master weights, cosine schedule with warmup, gradient clipping
// and accumulation, deterministic in the seed; checkpoints are Hugging Face folders written
// atomically, and a stopped run resumes from its latest checkpoint.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "io/dtype.h"
#include "train/data.h"
#include "train/train_model.h"
#include "util/thread_pool.h"

namespace bitdelta {

struct FinetuneOptions {
  std::filesystem::path model, data, out;
  DataOptions data_options;
  int64_t steps = 300;
  int64_t batch = 16;       // sequences per micro-batch
  int64_t seq_len = 128;
  int64_t grad_accum = 1;   // micro-batches per optimizer step
  int64_t warmup = -1;      // steps; -1: 5% of the steps
  double lr = 2e-4;
  double min_lr_ratio = 0.1;  // the cosine ends at lr · min_lr_ratio
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999;
  double max_grad_norm = 1.0;  // 0 disables clipping
  uint64_t seed = 1;
  int64_t save_every = 0;   // checkpoint every N steps (0: only at the end)
  bool resume = false;
  int64_t stop_after = 0;   // stop after this step with a checkpoint (0: run to the end)
  bool progress = true;     // one line per log interval on stderr
  // DP-SGD (docs/privacy.md) when dp_epsilon > 0: each JSONL example is in a step's batch with
  // probability q = batch·grad_accum / examples (Poisson sampling), its gradient is clipped to
  // dp_clip, Gaussian noise of std σ·dp_clip (σ found for dp_epsilon over all the steps) is added
  // to the sum, which is divided by q·examples. ε is accounted by RDP (train/privacy.h).
  double dp_epsilon = 0, dp_delta = 1e-5, dp_clip = 1.0;
};

struct FinetuneStep {
  int64_t step = 0, steps = 0;
  double loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, eta_s = 0;
  double epsilon = -1;  // with DP-SGD: ε spent so far (δ as given)
};

struct FinetuneResult {
  int64_t steps_run = 0, resumed_from = 0;
  bool stopped = false;  // stopped early by stop_after; OUT/checkpoint holds the state
  double first_loss = 0, last_loss = 0;
  double tokens_per_s = 0;
  int64_t parameter_count = 0;
  int64_t peak_activation_bytes = 0;
  // With DP-SGD: the noise multiplier, sampling rate and the ε spent over the whole run.
  double dp_noise_multiplier = 0, dp_sample_rate = 0, dp_epsilon_spent = 0;
};

// Runs the fine-tune; `on_step` (optional) sees every step. The result is a Hugging Face folder
// at options.out in the base's dtype (config.json, model.safetensors, tokenizer files).
FinetuneResult finetune(const FinetuneOptions& options,
                        const std::function<void(const FinetuneStep&)>& on_step, ThreadPool& pool);

// Writes `model`'s parameters as a Hugging Face folder: the base folder's config.json and
// tokenizer files, and model.safetensors in `dtype`. Every file is written atomically.
void save_hf_folder(const TrainModel<float>& model, const std::filesystem::path& base_dir,
                    DType dtype, const std::filesystem::path& out);

}  // namespace bitdelta
