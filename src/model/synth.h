// Random-weight models with exactly the shape, tensor names and dtypes of real checkpoints: the
// benchmark workhorse, since real multi-GB checkpoints cannot be downloaded here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "io/dtype.h"
#include "io/model_config.h"

namespace bitdelta {

// The shapes `synth` knows: "qwen3-0.6b", "qwen3-1.7b", "llama-3.2-1b", "tiny".
const std::vector<std::string>& synth_shapes();
// The published config of that checkpoint (tiny: a small Qwen3 with head_dim ≠ hidden/heads).
// Throws Error listing the known shapes.
ModelConfig synth_config(const std::string& like);

struct SynthOptions {
  std::string like = "tiny";
  DType dtype = DType::kBF16;
  uint64_t seed = 0;
  // Folder to copy tokenizer.json / tokenizer_config.json from. When unset, Qwen3 shapes use the
  // real Qwen3 tokenizer from the shared assets if present; otherwise (and for the other shapes)
  // a byte-level tokenizer is generated: every byte is a token, plus the family's special
  // tokens at their real ids, so any text round-trips and the chat template works.
  std::optional<std::filesystem::path> tokenizer_dir;
  // Widths replacing those of `like` when > 0 (tests that need other matrix shapes).
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
};

struct SynthResult {
  ModelConfig config;
  int64_t parameters = 0;
  uint64_t bytes = 0;
  std::string tokenizer_source;
};

// Writes config.json, generation_config.json, model.safetensors, tokenizer.json and
// tokenizer_config.json into `out_dir`. Deterministic in (like, dtype, seed).
SynthResult synth_model(const SynthOptions& options, const std::filesystem::path& out_dir);

}  // namespace bitdelta
