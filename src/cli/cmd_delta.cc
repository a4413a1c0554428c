// bitdelta compress / inspect / merge: making, reading and un-making .bdelta adapters.
#include <fmt/format.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "delta/adapter.h"
#include "delta/compress.h"
#include "delta/merge.h"
#include "train/calibrate.h"
#include "util/error.h"

namespace bitdelta::cli {

namespace {

double ratio(uint64_t a, uint64_t b) { return b == 0 ? 0 : static_cast<double>(a) / b; }

}  // namespace

CLI::App* register_compress(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "compress",
      "Compress a fine-tune against its base into a 1-bit BitDelta adapter (.bdelta): sign bits "
      "plus scales (mean |delta|) for every q/k/v/o and gate/up/down weight, exact deltas for "
      "norms and biases; unchanged tensors cost nothing");
  struct Options {
    std::string base, finetuned, out, granularity = "tensor", embeddings = "bit", adapter_id,
        base_name, metadata = "{}";
    bool json = false, quiet = false;
    std::string calibrate_data, calibrate_range, calibrate_loss = "mse", calibrate_init = "compressed";
    std::string chat_format = "auto";
    CalibrateOptions cal;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--base", o->base, "Base model folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--finetuned", o->finetuned, "Fine-tuned model folder (same architecture)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--out", o->out, "Output adapter file (written atomically)")->required();
  cmd->add_option("--granularity", o->granularity,
                  "Scales per matrix (the paper) or per output row")
      ->capture_default_str()
      ->check(CLI::IsMember({"tensor", "row"}));
  cmd->add_option("--embeddings", o->embeddings,
                  "Embeddings/LM head: 1-bit with per-row scales, an exact delta, or kept at the "
                  "base")
      ->capture_default_str()
      ->check(CLI::IsMember({"bit", "exact", "base"}));
  cmd->add_option("--adapter-id", o->adapter_id,
                  "domain/user/vN (default: general/<fine-tuned folder name>/v1)");
  cmd->add_option("--base-name", o->base_name, "Name recorded as base_model (default: the folder name)");
  cmd->add_option("--metadata", o->metadata, "Domain metadata as a JSON object")->capture_default_str();
  cmd->add_flag("--json", o->json, "Print the summary as JSON (no progress lines)");
  cmd->add_flag("--quiet", o->quiet, "No calibration progress lines");
  add_chat_format_option(cmd, o->chat_format);
  cmd->add_option("--calibrate-data", o->calibrate_data,
                  "Then calibrate the scales on this text/.jsonl (scale distillation, see "
                  "`bitdelta calibrate`) before writing the adapter")
      ->check(CLI::ExistingFile);
  cmd->add_option("--calibrate-token-range", o->calibrate_range,
                  "Calibrate on this part A:B of a text file's tokens (fractions)");
  cmd->add_option("--calibrate-steps", o->cal.steps, "Calibration steps")->capture_default_str();
  cmd->add_option("--calibrate-batch", o->cal.batch, "Calibration sequences per step")
      ->capture_default_str();
  cmd->add_option("--calibrate-seq-len", o->cal.seq_len, "Calibration tokens per sequence")
      ->capture_default_str();
  cmd->add_option("--calibrate-lr", o->cal.lr, "Calibration learning rate")->capture_default_str();
  cmd->add_option("--calibrate-loss", o->calibrate_loss, "Calibration loss: mse or kl")
      ->capture_default_str()
      ->check(CLI::IsMember({"mse", "kl"}));
  cmd->add_option("--calibrate-init", o->calibrate_init,
                  "Calibration start: compressed or activation-aware")
      ->capture_default_str()
      ->check(CLI::IsMember({"compressed", "activation-aware"}));
  runner = [=] {
    CompressOptions options;
    options.granularity = o->granularity == "row" ? ScaleGranularity::kRow : ScaleGranularity::kTensor;
    options.embeddings = o->embeddings == "exact"  ? EmbeddingMode::kExact
                         : o->embeddings == "base" ? EmbeddingMode::kBase
                                                   : EmbeddingMode::kBit;
    if (!o->adapter_id.empty()) options.adapter_id = AdapterId::parse(o->adapter_id);
    options.base_model = o->base_name;
    options.metadata_json = o->metadata;
    if (o->chat_format != "auto") options.chat_format = o->chat_format;
    auto start = std::chrono::steady_clock::now();
    // With calibration the compressed adapter goes to a temporary file beside --out first, so
    // --out only ever appears complete and calibrated.
    const std::filesystem::path out = o->out;
    const std::filesystem::path raw =
        o->calibrate_data.empty() ? out : out.parent_path() / ("." + out.filename().string() + ".raw");
    CompressResult r;
    double seconds = 0;  // compression alone
    try {
      r = compress_adapter(o->base, o->finetuned, raw, options, default_thread_pool());
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (!o->calibrate_data.empty()) {
        CalibrateOptions c = o->cal;
        c.base = o->base;
        c.finetuned = o->finetuned;
        c.adapter = raw;
        c.data = o->calibrate_data;
        if (!o->calibrate_range.empty()) parse_token_range(o->calibrate_range, &c.data_options);
        c.data_options.chat_format = o->chat_format;
        c.out = out;
        c.loss = parse_distill_loss(o->calibrate_loss);
        c.init = parse_scale_init(o->calibrate_init);
        const bool show = !o->json && !o->quiet;
        if (show) {
          fmt::print(stderr,
                     "compressed in {:.2f} s; calibrating the scales ({} steps of {} x {} "
                     "tokens, {} loss)\n",
                     seconds, c.steps, c.batch, c.seq_len, o->calibrate_loss);
        }
        CalibrationResult cr = calibrate_adapter(
            c,
            [&](const CalibrateStep& s) {
              if (show && (s.step == 1 || s.step == s.steps || s.step % 20 == 0)) {
                fmt::print(stderr, "  step {:>4}/{}  loss {:.6g}  lr {:.2e}  {:.0f} s\n", s.step,
                           s.steps, s.loss, s.lr, s.seconds);
              }
            },
            default_thread_pool());
        std::filesystem::remove(raw);
        r.file_bytes = std::filesystem::file_size(out);
        if (!o->json) {
          fmt::print(stderr, "calibrated {} scales in {:.1f} s: held-out {} loss {:.6g} -> {:.6g}\n",
                     cr.scales, cr.seconds, o->calibrate_loss, cr.loss_before, cr.loss_after);
        }
      }
    } catch (...) {
      if (raw != out) std::filesystem::remove(raw);
      throw;
    }
    size_t one_bit = 0, exact = 0;
    for (const auto& t : r.tensors) (t.kind == "1bit" ? one_bit : exact)++;
    if (o->json) {
      fmt::print("{}\n", nlohmann::json{{"adapter_id", r.adapter_id.to_string()},
                                        {"file", o->out},
                                        {"file_bytes", r.file_bytes},
                                        {"finetuned_bytes", r.finetuned_bytes},
                                        {"bf16_delta_bytes", r.bf16_delta_bytes},
                                        {"one_bit_tensors", one_bit},
                                        {"exact_tensors", exact},
                                        {"unchanged_tensors", r.unchanged},
                                        {"seconds", seconds},
                                        {"base_fingerprint", r.base_fingerprint}}
                             .dump(2));
    } else {
      fmt::print("wrote {} ({}): {} tensors 1-bit, {} exact, {} unchanged\n", o->out,
                 r.adapter_id.to_string(), one_bit, exact, r.unchanged);
      fmt::print("  {} = 1/{:.1f} of the fine-tuned weights ({}), 1/{:.1f} of a BF16 delta\n",
                 human_bytes(r.file_bytes), ratio(r.finetuned_bytes, r.file_bytes), human_bytes(r.finetuned_bytes),
                 ratio(r.bf16_delta_bytes, r.file_bytes));
      fmt::print(
          "  compression alone (without calibration): {:.2f} s, {:.2f} GB/s of fine-tuned "
          "weights\n",
          seconds, r.finetuned_bytes / seconds / 1e9);
    }
    return 0;
  };
  return cmd;
}

CLI::App* register_inspect(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "inspect",
      "Describe a .bdelta adapter: metadata, bytes, compression ratios, and per-matrix scale, "
      "share of +1 signs, |delta| and relative error |delta - scale*S| / |delta|");
  auto path = std::make_shared<std::string>();
  auto json_out = std::make_shared<bool>(false);
  cmd->add_option("FILE", *path, "Adapter file")->required()->check(CLI::ExistingFile);
  cmd->add_flag("--json", *json_out, "Print one JSON object");
  runner = [=] {
    auto adapter = Adapter::open(*path);
    using nlohmann::ordered_json;
    ordered_json quality = ordered_json::object();
    if (adapter->metadata().count("quality")) {
      quality = ordered_json::parse(adapter->metadata().at("quality"), nullptr, false);
      if (quality.is_discarded()) quality = ordered_json::object();
    }
    ordered_json tensors = ordered_json::array();
    for (const auto& e : adapter->entries()) {
      ordered_json t = {{"name", e.base_name}};
      if (e.signs != nullptr) {
        const TensorView bits = adapter->file().view(*e.signs);
        uint64_t ones = 0;
        for (uint8_t b : bits.bytes()) ones += static_cast<uint64_t>(__builtin_popcount(b));
        std::vector<float> scales = adapter->file().view(*e.scale).to_f32();
        double mean = 0;
        for (float s : scales) mean += s;
        mean /= static_cast<double>(scales.size());
        t["kind"] = "1bit";
        t["scales"] = scales.size() == 1 ? "tensor" : "row";
        t["scale"] = mean;
        // The number of columns is not in the file; quality records the exact share.
        t["plus_share"] = static_cast<double>(ones) / (8.0 * static_cast<double>(bits.nbytes()));
        t["bytes"] = e.signs->nbytes() + e.scale->nbytes();
      } else {
        t["kind"] = "exact";
        t["bytes"] = e.delta->nbytes();
      }
      if (quality.contains("tensors") && quality["tensors"].contains(e.base_name)) {
        const auto& q = quality["tensors"][e.base_name];
        if (q.contains("plus_share") && e.signs != nullptr) t["plus_share"] = q["plus_share"];
        t["delta_norm"] = q.value("delta_norm", 0.0);
        t["rel_error"] = q.value("rel_error", 0.0);
      }
      tensors.push_back(t);
    }
    ordered_json meta = ordered_json::object();
    for (const auto& [k, v] : adapter->metadata()) {
      if (k != "quality") meta[k] = v;
    }
    const uint64_t file_bytes = adapter->file_bytes();
    ordered_json out = {{"file", *path},
                        {"file_bytes", file_bytes},
                        {"metadata", meta},
                        {"checksums", adapter->checksums_verified() ? "verified" : "absent"}};
    if (quality.contains("finetuned_bytes")) {
      out["ratio_vs_finetuned"] = ratio(quality["finetuned_bytes"].get<uint64_t>(), file_bytes);
      out["ratio_vs_bf16_delta"] = ratio(quality["bf16_delta_bytes"].get<uint64_t>(), file_bytes);
      out["rel_error"] = quality.value("rel_error", 0.0);
    }
    out["tensors"] = tensors;
    if (*json_out) {
      fmt::print("{}\n", out.dump(2));
      return 0;
    }
    fmt::print("adapter {} — {}\n", adapter->id().to_string(), *path);
    for (const auto& [k, v] : meta.items()) {
      if (k == kChecksumsKey) continue;  // one line below instead of a screen of hex
      fmt::print("  {}: {}\n", k, v.get<std::string>());
    }
    fmt::print("checksums: {}\n",
               adapter->checksums_verified()
                   ? fmt::format("verified ({}, header and {} tensors)", kChecksumAlgorithm,
                                 adapter->file().tensors().size())
                   : "none (written before adapters carried checksums; damage cannot be detected)");
    fmt::print("size: {}", human_bytes(file_bytes));
    if (out.contains("ratio_vs_finetuned")) {
      fmt::print(" = 1/{:.1f} of the fine-tuned weights, 1/{:.1f} of a BF16 delta; overall "
                 "relative error {:.3f}",
                 out["ratio_vs_finetuned"].get<double>(), out["ratio_vs_bf16_delta"].get<double>(),
                 out["rel_error"].get<double>());
    }
    fmt::print("\n\n{:<50} {:>6} {:>10} {:>7} {:>10} {:>8}\n", "tensor", "kind", "scale", "+1",
               "|delta|", "rel.err");
    for (const auto& t : tensors) {
      fmt::print("{:<50} {:>6} {:>10} {:>7} {:>10} {:>8}\n", t["name"].get<std::string>(),
                 t["kind"].get<std::string>(),
                 t.contains("scale") ? fmt::format("{:.3e}", t["scale"].get<double>()) : "-",
                 t.contains("plus_share") ? fmt::format("{:.3f}", t["plus_share"].get<double>()) : "-",
                 t.contains("delta_norm") ? fmt::format("{:.3e}", t["delta_norm"].get<double>()) : "-",
                 t.contains("rel_error") ? fmt::format("{:.3f}", t["rel_error"].get<double>()) : "-");
    }
    return 0;
  };
  return cmd;
}

CLI::App* register_merge(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "merge",
      "Write a complete Hugging Face folder of base + decompressed adapter, for tools that need "
      "the merged model (serving never merges)");
  struct Options {
    std::string base, adapter, out;
    bool force = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--base", o->base, "Base model folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--adapter", o->adapter, "Adapter (.bdelta) made against that base")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", o->out,
                  "Output folder (created if missing; must be empty unless --force)")
      ->required();
  cmd->add_flag("--force", o->force, "Replace the model files in an existing --out folder");
  runner = [=] {
    MergeResult r = merge_adapter(o->base, o->adapter, o->out, default_thread_pool(), o->force);
    fmt::print("wrote {} ({} tensors changed, {})\n", o->out, r.changed_tensors, human_bytes(r.bytes));
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli
