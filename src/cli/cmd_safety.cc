// bitdelta safety-check / screen: the safety gate on an adapter and the screening of training
// data (docs/safety.md).
#include <fmt/format.h>

#include "cli/commands.h"
#include "safety/safety_gate.h"
#include "safety/screening.h"
#include "util/thread_pool.h"

namespace bitdelta::cli {

void add_safety_policy_options(CLI::App* cmd, SafetyPolicy& p) {
  cmd->add_option("--max-scale-ratio", p.max_scale_rms_ratio,
                  "Largest 1-bit scale allowed, as a multiple of its base matrix's RMS")
      ->check(number_at_least(0, false))
      ->capture_default_str();
  cmd->add_option("--max-exact-ratio", p.max_exact_rms_ratio,
                  "Largest RMS of an exact delta (norms, biases), as a multiple of the base "
                  "tensor's RMS")
      ->check(number_at_least(0, false))
      ->capture_default_str();
  cmd->add_option("--min-score-ratio", p.min_score_ratio,
                  "The adapted model's safety score must reach this share of the base's")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--max-kl", p.max_kl,
                  "Largest mean KL(base ‖ adapted) on the probe prompts, nats per token")
      ->check(number_at_least(0, false))
      ->capture_default_str();
}

CLI::App* register_safety_check(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "safety-check",
      "Run the safety gate on an adapter: bounds (no NaN/Inf, every scale within a multiple of "
      "its base matrix's RMS and below 10, exact deltas within bounds; failures name the "
      "tensor), then behaviour on a probe set of guarded prompts (does base + adapter still "
      "prefer each probe's safe continuation, and how far has it drifted from the base). Exit 0 "
      "when the gate passes, 3 when it fails, 1 on errors");
  struct Options {
    std::string base, adapter, probes;
    bool json = false, per_probe = false;
    SafetyPolicy policy;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--base", o->base, "Base model folder the adapter was made for")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--adapter", o->adapter, "The adapter (.bdelta)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--probes", o->probes,
                  "Probe set, JSONL of {\"id\", \"prompt\", \"safe\", \"unsafe\"} (default: the "
                  "built-in set for stories260K-style English; docs/safety.md)")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--json", o->json, "Print the report as JSON");
  cmd->add_flag("--per-probe", o->per_probe, "Include every probe's margins and KL");
  add_safety_policy_options(cmd, o->policy);
  runner = [=] {
    const ProbeSet probes = o->probes.empty() ? ProbeSet::builtin() : ProbeSet::load(o->probes);
    const SafetyReport r =
        safety_check_files(o->base, o->adapter, probes, o->policy, default_thread_pool());
    if (o->json) {
      fmt::print("{}\n", r.to_json(o->per_probe).dump(2));
    } else {
      fmt::print("{}\n", r.summary());
      fmt::print(
          "probes: {} ({}), bounds: {} tensors, largest scale {:.3g}× base RMS ({}), "
          "largest exact delta {:.3g}× ({})\n",
          probes.probes.size(), probes.source, r.bounds.tensors, r.bounds.max_scale_ratio,
          r.bounds.max_scale_tensor.empty() ? "-" : r.bounds.max_scale_tensor,
          r.bounds.max_exact_ratio,
          r.bounds.max_exact_tensor.empty() ? "-" : r.bounds.max_exact_tensor);
      for (const std::string& reason : r.reasons) fmt::print("  {}\n", reason);
      if (o->per_probe && r.behaviour_checked) {
        for (const ProbeScore& s : r.behaviour.per_probe) {
          fmt::print("  {:<28} base {:+.3f}  adapted {:+.3f}  KL {:.4f}{}\n", s.id, s.base_margin,
                     s.adapted_margin, s.kl,
                     (s.base_margin > 0) != (s.adapted_margin > 0) ? "  (flipped)" : "");
        }
      }
    }
    return r.passed() ? 0 : 3;
  };
  return cmd;
}

CLI::App* register_screen(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "screen",
      "Screen interaction records (JSONL) for jailbreak and prompt-injection patterns, as "
      "personalization does before fine-tuning: prints each flagged record's line, the pattern "
      "and an excerpt. Exit 0 when nothing is flagged, 3 when something is");
  struct Options {
    std::string data, patterns, out;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("DATA", o->data, "Records file (JSONL)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--patterns", o->patterns,
                  "Screening list (JSON; default: the built-in list, docs/safety.md)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", o->out,
                  "Also write the records with flagged lines emptied (line numbers stay)");
  cmd->add_flag("--json", o->json, "Print the report as JSON");
  runner = [=] {
    const ScreenPatterns patterns =
        o->patterns.empty() ? ScreenPatterns::builtin() : ScreenPatterns::load(o->patterns);
    const ScreenReport r = screen_records(
        o->data, patterns,
        o->out.empty() ? std::nullopt : std::optional<std::filesystem::path>(o->out));
    if (o->json) {
      fmt::print("{}\n", r.to_json().dump(2));
    } else {
      fmt::print("{} records screened with {} ({} patterns): {} flagged\n", r.records,
                 patterns.source(), patterns.patterns().size(), r.findings.size());
      for (const ScreenFinding& f : r.findings) {
        fmt::print("  line {}: {} ({}) in {}: {}\n", f.line, f.pattern_id, f.kind, f.field,
                   f.excerpt);
      }
    }
    return r.findings.empty() ? 0 : 3;
  };
  return cmd;
}

}  // namespace bitdelta::cli
