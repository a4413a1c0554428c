// bitdelta finetune / calibrate: making a user's fine-tune, and scale distillation of its adapter.
#include <fmt/format.h>

#include <chrono>
#include <cmath>

#include "cli/commands.h"
#include "train/calibrate.h"
#include "train/finetune.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace bitdelta::cli {

namespace {

// Prints a progress line at most every `every` steps (and the first and last), on stderr.
struct ProgressPrinter {
  int64_t every;
  bool quiet = false;
  void add_options(CLI::App* cmd) {
    cmd->add_option("--log-every", every, "Progress line every N steps")
        ->capture_default_str()
        ->check(positive());
    cmd->add_flag("--quiet", quiet, "No progress lines");
  }
  template <typename Line>
  void operator()(int64_t step, int64_t steps, Line line) const {
    if (quiet || (step % every != 0 && step != steps && step != 1)) return;
    fmt::print(stderr, "{}\n", line());
  }
};

}  // namespace

void add_chat_format_option(CLI::App* cmd, std::string& chat_format) {
  cmd->add_option("--chat-format", chat_format,
                  "How JSONL conversations are rendered: auto (the tokenizer's own chat template), "
                  "plain (\"User: …\" / \"Assistant: …\" lines, for bases without one; "
                  "docs/personalization.md), or a template: qwen3, chatml, llama3, llama2, mistral")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "plain", "qwen3", "chatml", "llama3", "llama2", "mistral"}));
}

void add_data_options(CLI::App* cmd, DataArgs& args) {
  cmd->add_option("--token-range", args.range,
                  "Use only this part of a text file's tokens, as fractions A:B (e.g. 0:0.9)");
  cmd->add_option("--max-chars", args.max_chars,
                  "Use only the first N characters (bytes) of a text file")
      ->check(positive());
  add_chat_format_option(cmd, args.chat_format);
}

DataOptions DataArgs::options() const {
  DataOptions d;
  if (!range.empty()) parse_token_range(range, &d);
  if (max_chars > 0) d.max_chars = max_chars;
  d.chat_format = chat_format;
  return d;
}

CLI::App* register_finetune(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "finetune",
      "Full fine-tuning of a model on a user's data with AdamW (FP32 master weights, cosine "
      "schedule with warmup, gradient clipping and accumulation, deterministic in --seed). Data: a "
      "text file (packed into windows), or JSONL of {\"messages\": [...]} conversations or "
      "{\"prompt\", \"response\"} pairs, where the loss covers only the replies. Writes a Hugging "
      "Face folder in the base's dtype; with --save-every, checkpoints go to OUT/checkpoint "
      "(atomically) and --resume continues from there");
  struct Options {
    std::string model, data, out;
    DataArgs data_args;
    int threads = 0;
    ProgressPrinter progress{10};
    FinetuneOptions f;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "Base model folder (Hugging Face layout)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--data", o->data, "Training data: text file or .jsonl")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", o->out, "Output folder for the fine-tuned model")->required();
  add_data_options(cmd, o->data_args);
  cmd->add_option("--steps", o->f.steps, "Optimizer steps")->capture_default_str();
  cmd->add_option("--batch", o->f.batch, "Sequences per micro-batch")->capture_default_str();
  cmd->add_option("--seq-len", o->f.seq_len, "Tokens per sequence")->capture_default_str();
  cmd->add_option("--grad-accum", o->f.grad_accum,
                  "Micro-batches per step (effective batch = batch × grad-accum)")
      ->capture_default_str();
  cmd->add_option("--lr", o->f.lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr-ratio", o->f.min_lr_ratio, "The cosine decays to lr × this")
      ->capture_default_str();
  cmd->add_option("--warmup", o->f.warmup, "Linear warmup steps (default: 5% of --steps)");
  cmd->add_option("--weight-decay", o->f.weight_decay,
                  "Decoupled weight decay (matrices only, not norms or biases)")
      ->capture_default_str();
  cmd->add_option("--beta1", o->f.beta1, "AdamW β1")->capture_default_str();
  cmd->add_option("--beta2", o->f.beta2, "AdamW β2")->capture_default_str();
  cmd->add_option("--clip", o->f.max_grad_norm, "Clip the global gradient norm (0: off)")
      ->capture_default_str();
  cmd->add_option("--seed", o->f.seed, "Seed of the batch sampling")->capture_default_str();
  cmd->add_option("--save-every", o->f.save_every,
                  "Write a checkpoint every N steps to OUT/checkpoint (0: none)")
      ->capture_default_str();
  cmd->add_flag("--resume", o->f.resume,
                "Continue from OUT/checkpoint (same data and settings; --steps may grow)");
  cmd->add_option("--dp-epsilon", o->f.dp_epsilon,
                  "Train with DP-SGD to this ε (JSONL data; one example = one training sequence; "
                  "docs/privacy.md): Poisson sampling at rate batch·grad-accum/examples, "
                  "per-example clipping to --dp-clip, Gaussian noise set for the whole run")
      ->check(number_at_least(0, false));
  cmd->add_option("--dp-delta", o->f.dp_delta, "DP-SGD's δ (below 1/examples)")
      ->capture_default_str();
  cmd->add_option("--dp-clip", o->f.dp_clip, "DP-SGD's per-example gradient norm bound")
      ->capture_default_str();
  cmd->add_option("--stop-after", o->f.stop_after,
                  "Stop after this step, leaving OUT/checkpoint to continue with --resume")
      ->check(positive());
  o->progress.add_options(cmd);
  cmd->add_option("--threads", o->threads, "Worker threads (default: all cores)");
  runner = [=] {
    if (o->threads > 0) set_default_threads(o->threads);
    FinetuneOptions f = o->f;
    f.model = o->model;
    f.data = o->data;
    f.out = o->out;
    f.data_options = o->data_args.options();
    const ProgressPrinter& progress = o->progress;
    FinetuneResult r = finetune(
        f,
        [&](const FinetuneStep& s) {
          progress(s.step, s.steps, [&] {
            return fmt::format(
                "step {:>5}/{}  loss {:.4f}  lr {:.2e}  grad norm {:.3f}  "
                "{:.0f} tok/s  ETA {}{}",
                s.step, s.steps, s.loss, s.lr, s.grad_norm, s.tokens_per_s,
                format_duration(s.eta_s),
                s.epsilon >= 0 ? fmt::format("  ε {:.3f}", s.epsilon) : "");
          });
        },
        default_thread_pool());
    if (r.stopped) {
      fmt::print("stopped after step {} ({} steps run, loss {:.4f}); continue with --resume\n",
                 f.stop_after, r.steps_run, r.last_loss);
      return 0;
    }
    if (f.dp_epsilon > 0) {
      fmt::print(
          "DP-SGD: noise multiplier {:.4g}, sampling rate {:.4g}, clip {}: (ε = {:.3f}, δ = "
          "{:g}) spent\n",
          r.dp_noise_multiplier, r.dp_sample_rate, f.dp_clip, r.dp_epsilon_spent, f.dp_delta);
    }
    fmt::print("wrote {}: {} steps{}, loss {:.4f} -> {:.4f}, {:.0f} tokens/s\n", o->out,
               r.steps_run,
               r.resumed_from > 0 ? fmt::format(" (resumed at step {})", r.resumed_from) : "",
               r.first_loss, r.last_loss, r.tokens_per_s);
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli

namespace bitdelta::cli {

namespace {

void add_calibration_options(CLI::App* cmd, CalibrateOptions& c, std::string& loss,
                             std::string& init) {
  cmd->add_option("--steps", c.steps, "Calibration steps")->capture_default_str();
  cmd->add_option("--batch", c.batch, "Sequences per step")->capture_default_str();
  cmd->add_option("--seq-len", c.seq_len, "Tokens per sequence")->capture_default_str();
  cmd->add_option("--lr", c.lr, "AdamW learning rate (cosine schedule)")->capture_default_str();
  cmd->add_option("--loss", loss, "Match the fine-tune's logits by MSE (the paper) or KL")
      ->capture_default_str()
      ->check(CLI::IsMember({"mse", "kl"}));
  cmd->add_option("--init", init,
                  "Starting scales: as compressed (mean |delta|), or activation-aware "
                  "<Δ·C, S>/<S·C, S> with C the calibration inputs' covariance")
      ->capture_default_str()
      ->check(CLI::IsMember({"compressed", "activation-aware"}));
  cmd->add_option("--seed", c.seed, "Seed of the batch sampling")->capture_default_str();
  cmd->add_option("--eval-batches", c.eval_batches,
                  "Held-out calibration batches for the loss before/after")
      ->capture_default_str();
}

}  // namespace

CLI::App* register_calibrate(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "calibrate",
      "Scale distillation: train only the scales of a .bdelta adapter (signs frozen) so that "
      "base + adapter reproduces the fine-tuned model's logits on calibration text (the BitDelta "
      "paper's recipe: MSE on logits, AdamW lr 1e-4, cosine, 200 steps of 4 × 128 tokens). "
      "Writes a new adapter that records the calibration in its metadata");
  struct Options {
    std::string loss = "mse", init = "compressed";
    DataArgs data_args;
    int threads = 0;
    ProgressPrinter progress{20};
    CalibrateOptions c;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--base", o->c.base, "Base model folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--finetuned", o->c.finetuned, "The fine-tuned model the adapter compresses")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--adapter", o->c.adapter, "Input adapter (.bdelta)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--data", o->c.data, "Calibration data: text file or .jsonl")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", o->c.out, "Output adapter (written atomically; may equal --adapter)")
      ->required();
  add_data_options(cmd, o->data_args);
  add_calibration_options(cmd, o->c, o->loss, o->init);
  o->progress.add_options(cmd);
  cmd->add_option("--threads", o->threads, "Worker threads (default: all cores)");
  runner = [=] {
    if (o->threads > 0) set_default_threads(o->threads);
    CalibrateOptions c = o->c;
    c.data_options = o->data_args.options();
    c.loss = parse_distill_loss(o->loss);
    c.init = parse_scale_init(o->init);
    const ProgressPrinter& progress = o->progress;
    CalibrationResult r = calibrate_adapter(
        c,
        [&](const CalibrateStep& s) {
          progress(s.step, s.steps, [&] {
            return fmt::format("step {:>4}/{}  loss {:.6g}  lr {:.2e}  {}", s.step, s.steps,
                               s.loss, s.lr, format_duration(s.seconds));
          });
        },
        default_thread_pool());
    fmt::print("wrote {}: {} scales calibrated in {:.1f} s; held-out {} loss {:.6g} -> {:.6g}\n",
               c.out.string(), r.scales, r.seconds, o->loss, r.loss_before, r.loss_after);
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli
