// Each subcommand registers its options on the CLI11 app and returns the function that runs it.
#pragma once

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

#include "model/quantized_base.h"
#include "ops/matmul.h"
#include "train/data.h"

namespace bitdelta {
struct SafetyPolicy;
}

namespace bitdelta::cli {

using Runner = std::function<int()>;

// "532 B", "52.50 MiB": byte counts as the commands print them.
inline std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {}", v, units[u]);
}

// "42s", "3m05s", "1h02m": an ETA or elapsed time for progress lines.
inline std::string format_duration(double seconds) {
  const int64_t s = std::llround(seconds);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, s % 3600 / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

// Every register_* adds one subcommand to `app`, stores the function that runs it in `runner`,
// and returns the subcommand.
// --token-range A:B and --max-chars N (which part of a text file to use) and --chat-format (how
// JSONL conversations are rendered), shared by the commands that read training or evaluation
// data, and the DataOptions they select.
struct DataArgs {
  std::string range;
  int64_t max_chars = 0;
  std::string chat_format = "auto";
  DataOptions options() const;
};
void add_data_options(CLI::App* cmd, DataArgs& args);
// --chat-format alone (also used by personalize).
void add_chat_format_option(CLI::App* cmd, std::string& chat_format);

// Numeric option checks whose messages print the bound as written (CLI11's NonNegativeNumber
// prints the largest double, 309 digits): `v` must parse as a number and be ≥ min (inclusive)
// or > min (exclusive).
inline CLI::Validator number_at_least(double min, bool inclusive = true) {
  const std::string bound = fmt::format("{} {}", inclusive ? "≥" : ">", min);
  return CLI::Validator(
      [=](std::string& v) -> std::string {
        double x = 0;
        try {
          size_t used = 0;
          x = std::stod(v, &used);
          if (used != v.size()) throw std::invalid_argument(v);
        } catch (const std::exception&) {
          return fmt::format("'{}' is not a number", v);
        }
        if (inclusive ? x >= min : x > min) return std::string();
        return fmt::format("must be {}, got {}", bound, v);
      },
      "NUMBER " + bound);
}
inline CLI::Validator non_negative() { return number_at_least(0, true); }
inline CLI::Validator positive() { return number_at_least(0, false); }

// The precision switches of the commands that run a model:
//  --exact-deltas: the adapters' 1-bit pass in float instead of through int8 lookup tables
//    (see set_exact_sign_pass);
//  --f32-activations: products with BF16 weights on F32 activations instead of BF16 dot products
//    (see set_f32_activations; takes effect as the command line is parsed);
//  --no-amx: no AMX tiles: BF16 dot products on VDPBF16PS, prompts' sign sums from the lookup
//    tables (see set_amx_tiles).
inline void add_precision_flags(CLI::App* cmd, bool& exact) {
  cmd->add_flag("--exact-deltas", exact,
                "Apply adapters' sign bits in exact float arithmetic (matches the merged model "
                "within float tolerance, ~3x slower 1-bit pass) instead of the default lookup "
                "tables over int8-quantized activations (~0.6% error on the delta term)");
  cmd->add_flag_callback(
      "--f32-activations", [] { set_f32_activations(true); },
      "Multiply BF16 weights with F32 activations (~2x slower prefill) instead of rounding the "
      "activations to BF16 for the CPU's BF16 dot-product instructions (the default where the "
      "CPU has AVX512_BF16, as llama.cpp does; each product carries the activation's rounding, "
      "at most 2^-9 relative)");
  cmd->add_flag_callback(
      "--no-amx", [] { set_amx_tiles(false); },
      "Use no AMX tiles (the default where the CPU has AMX, 3-4x faster prefill): run the BF16 "
      "dot products on AVX512_BF16 vectors (VDPBF16PS) instead of TDPBF16PS, which sums in a "
      "different order, so results differ by float rounding (each alone is batch-invariant); "
      "and take prompts' adapter sign sums from the int8 lookup tables instead of TDPBSSD "
      "(bitwise the same result, slower)");
}

// --quantize / --quant-cache / --no-quant-cache: run the base on a Q8_0 or Q4_0 copy of its
// matrices (model/quantized_base.h), for the commands that run a model.
struct QuantFlags {
  std::string quant = "none";
  std::string cache_dir;
  bool no_cache = false;
};
inline void add_quant_flags(CLI::App* cmd, QuantFlags& f) {
  cmd->add_option("--quantize", f.quant,
                  "Run the base on a quantized copy of its matrices: q8_0 (8.5 bits per weight) "
                  "or q4_0 (4.5; the LM head stays q8_0), llama.cpp's block formats, made once "
                  "and cached beside the model (docs/quantized-bases.md). Adapters still apply "
                  "and still match the original base")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "q8_0", "q4_0"}, CLI::ignore_case));
  cmd->add_option("--quant-cache", f.cache_dir,
                  "Folder of the quantized copy (default: MODEL/.bitdelta-cache); when it cannot "
                  "be written the copy is kept in memory");
  cmd->add_flag("--no-quant-cache", f.no_cache,
                "Quantize in memory at every start instead of caching the copy on disk");
}
// The loader's options for the flags; quantizing reports progress on stderr.
inline QuantOptions quant_options(const QuantFlags& f) {
  QuantOptions o;
  o.quant = parse_quant(f.quant).value_or(Quant::kNone);
  o.cache_dir = f.cache_dir;
  o.use_cache = !f.no_cache;
  o.progress = [q = f.quant](int64_t done, int64_t total) {
    if (done == 1 || done == total || done * 4 / total != (done - 1) * 4 / total) {
      fmt::print(stderr, "quantizing the base to {}: {}/{} matrices\n", q, done, total);
    }
  };
  return o;
}

CLI::App* register_import_llama2c(CLI::App& app, Runner& runner);
CLI::App* register_info(CLI::App& app, Runner& runner);
CLI::App* register_tokenize(CLI::App& app, Runner& runner);
CLI::App* register_generate(CLI::App& app, Runner& runner);
CLI::App* register_logits(CLI::App& app, Runner& runner);
CLI::App* register_synth(CLI::App& app, Runner& runner);
CLI::App* register_compress(CLI::App& app, Runner& runner);
CLI::App* register_inspect(CLI::App& app, Runner& runner);
CLI::App* register_merge(CLI::App& app, Runner& runner);
CLI::App* register_eval(CLI::App& app, Runner& runner);
CLI::App* register_finetune(CLI::App& app, Runner& runner);
CLI::App* register_calibrate(CLI::App& app, Runner& runner);
CLI::App* register_store(CLI::App& app, Runner& runner);
CLI::App* register_serve(CLI::App& app, Runner& runner);
CLI::App* register_analyze(CLI::App& app, Runner& runner);
CLI::App* register_examples(CLI::App& app, Runner& runner);
CLI::App* register_import_assistments(CLI::App& app, Runner& runner);
CLI::App* register_personalize(CLI::App& app, Runner& runner);
CLI::App* register_keys(CLI::App& app, Runner& runner);
CLI::App* register_sign(CLI::App& app, Runner& runner);
CLI::App* register_verify(CLI::App& app, Runner& runner);
CLI::App* register_audit(CLI::App& app, Runner& runner);
CLI::App* register_privacy(CLI::App& app, Runner& runner);
CLI::App* register_safety_check(CLI::App& app, Runner& runner);
// The safety gate's limits as options (--max-scale-ratio, --max-kl, ...), shared by safety-check
// and personalize.
void add_safety_policy_options(CLI::App* cmd, SafetyPolicy& policy);
CLI::App* register_screen(CLI::App& app, Runner& runner);
CLI::App* register_receipt(CLI::App& app, Runner& runner);
CLI::App* register_consent(CLI::App& app, Runner& runner);
CLI::App* register_export_gguf(CLI::App& app, Runner& runner);

}  // namespace bitdelta::cli
