// bitdelta synth: a random-weight model shaped exactly like a real checkpoint.
#include <fmt/format.h>

#include "cli/commands.h"
#include "model/synth.h"
#include "util/error.h"

namespace bitdelta::cli {

CLI::App* register_synth(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "synth",
      "Write a random-weight model with exactly the shape, tensor names and dtypes of a real "
      "checkpoint (tied embeddings where the real one ties), plus a working tokenizer");
  struct Options {
    std::string like, out, dtype = "bf16", tokenizer;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--like", o->like, "Shape to copy")
      ->required()
      ->check(CLI::IsMember(synth_shapes()));
  cmd->add_option("--out", o->out, "Output folder (created if missing)")->required();
  cmd->add_option("--dtype", o->dtype, "Weight dtype")
      ->capture_default_str()
      ->check(CLI::IsMember({"bf16", "f16", "f32"}));
  cmd->add_option("--seed", o->seed, "Random seed (same seed, same weights)")->capture_default_str();
  cmd->add_option("--tokenizer", o->tokenizer,
                  "Copy tokenizer.json/tokenizer_config.json from this folder (default: the real "
                  "Qwen3 tokenizer from ../shared/assets for Qwen3 shapes, else a generated "
                  "byte-level tokenizer)")
      ->check(CLI::ExistingDirectory);
  runner = [=] {
    SynthOptions options;
    options.like = o->like;
    options.dtype = o->dtype == "bf16" ? DType::kBF16 : o->dtype == "f16" ? DType::kF16 : DType::kF32;
    options.seed = o->seed;
    if (!o->tokenizer.empty()) options.tokenizer_dir = o->tokenizer;
    SynthResult r = synth_model(options, o->out);
    fmt::print("wrote {} ({} parameters, {:.1f} MiB of {} weights; tokenizer: {}) to {}\n",
               o->like, r.parameters, r.bytes / 1048576.0, o->dtype, r.tokenizer_source, o->out);
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli
