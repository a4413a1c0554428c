// bitdelta personalize: a user's interaction records in, a registered 1-bit adapter out.
#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "cli/commands.h"
#include "domain/personalize.h"
#include "store/adapter_store.h"
#include "store/audit_log.h"
#include "util/error.h"

namespace bitdelta::cli {

namespace {

// "auto" or a positive version number.
int64_t parse_version(const std::string& text) {
  if (text == "auto") return 0;
  try {
    size_t used = 0;
    const long long v = std::stoll(text.starts_with('v') ? text.substr(1) : text, &used);
    if (used == text.size() - (text.starts_with('v') ? 1 : 0) && v >= 1) return v;
  } catch (const std::exception&) {
  }
  fail("--id-version must be 'auto' (the next version) or a version number ≥ 1, got '{}'", text);
}

// "LO:HI" with 0 ≤ LO < HI.
std::pair<double, double> parse_bounds(const std::string& text) {
  const size_t colon = text.find(':');
  try {
    if (colon != std::string::npos) {
      const double lo = std::stod(text.substr(0, colon)), hi = std::stod(text.substr(colon + 1));
      if (lo >= 0 && lo < hi && std::isfinite(hi)) return {lo, hi};
    }
  } catch (const std::exception&) {
  }
  fail("--scale-bounds must be LO:HI with 0 ≤ LO < HI (e.g. 0.25:2), got '{}'", text);
}

}  // namespace

CLI::App* register_personalize(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "personalize",
      "Personalize a base model for one user from their interaction records, end to end: "
      "validate the records, compute the user's analytics, build training examples (their own "
      "conversations after a system prompt stating the analytics; the most recent held out), "
      "fine-tune, compress to 1 bit, calibrate the scales (distillation, then the domain "
      "objective's multiplier by Brent's method), evaluate on the held-out conversations, and "
      "register the adapter as domain/user/vN (latest moves). docs/personalization.md");
  struct Options {
    std::string base, domain, user, data, store, out, work_dir, signing_key, screen_patterns,
        probes, version = "auto", chat_format = "auto", granularity = "tensor", bounds = "0.25:2";
    bool json = false, quiet = false, no_screen = false, no_safety_gate = false;
    int threads = 0;
    PersonalizeOptions p;
  };
  auto o = std::make_shared<Options>();
  o->p.finetune.steps = 100;
  o->p.finetune.batch = 8;
  o->p.finetune.seq_len = 0;
  o->p.finetune.lr = 0;  // personalize() picks: 3e-4, or 1e-3 under DP-SGD
  cmd->add_option("--base", o->base, "The domain's base model folder")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--domain", o->domain, "Domain of the records")
      ->required()
      ->check(CLI::IsMember({"education", "gaming", "defi", "general"}));
  cmd->add_option("--user", o->user,
                  "Whose adapter: the learner, NPC, wallet address (or did:lux:<chain>:0x...) or "
                  "user id")
      ->required();
  cmd->add_option("--data", o->data, "Interaction records (JSONL, docs/domains.md)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--store", o->store, "Register the adapter in this store (created if missing)");
  cmd->add_option("--id-version", o->version,
                  "Version to register: auto (the user's next) or a number")
      ->capture_default_str();
  cmd->add_option("--out", o->out, "Also write the adapter to this file (atomically)");
  cmd->add_option("--work-dir", o->work_dir,
                  "Working folder for examples, the fine-tune and its checkpoints (default: a new "
                  "folder under $TMPDIR, removed after success); --resume continues there");
  cmd->add_flag("--resume", o->p.resume,
                "Continue an interrupted run from --work-dir's checkpoint");
  cmd->add_flag("--keep-work", o->p.keep_work, "Keep the fine-tune and intermediate adapters");
  add_chat_format_option(cmd, o->chat_format);
  cmd->add_option("--heldout-share", o->p.heldout_share,
                  "Share of the most recent conversations held out for evaluation (at least one)")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 0.5));
  cmd->add_option("--steps", o->p.finetune.steps, "Fine-tuning steps")
      ->capture_default_str()
      ->check(positive());
  cmd->add_option("--lr", o->p.finetune.lr,
                  "Fine-tuning peak learning rate (default 3e-4; 1e-3 under --dp-epsilon)")
      ->check(number_at_least(0, false));
  cmd->add_option("--batch", o->p.finetune.batch, "Conversations per step")
      ->capture_default_str()
      ->check(positive());
  cmd->add_option("--seq-len", o->p.finetune.seq_len,
                  "Tokens per example (longer ones are cut; default: the longest example, within "
                  "the base's context)")
      ->check(positive());
  cmd->add_option("--seed", o->p.finetune.seed, "Seed of the batch sampling")
      ->capture_default_str();
  cmd->add_option("--dp-epsilon", o->p.finetune.dp_epsilon,
                  "Fine-tune with DP-SGD to this ε (docs/privacy.md); recorded in the adapter")
      ->check(number_at_least(0, false));
  cmd->add_option("--dp-delta", o->p.finetune.dp_delta, "DP-SGD's δ (below 1/examples)")
      ->capture_default_str();
  cmd->add_option("--dp-clip", o->p.finetune.dp_clip, "DP-SGD's per-example gradient norm bound")
      ->capture_default_str();
  cmd->add_option("--dp-scales", o->p.dp_scales.epsilon,
                  "Add Gaussian noise to the final scales for (ε, --dp-scales-delta)-DP of THE "
                  "SCALES ONLY: the sign bits are not private (docs/privacy.md; for a guarantee "
                  "on the whole adapter use --dp-epsilon)")
      ->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--dp-scales-delta", o->p.dp_scales.delta, "δ of --dp-scales")
      ->check(CLI::Range(1e-12, 0.5))
      ->capture_default_str();
  cmd->add_option("--dp-scales-bound", o->p.dp_scales.bound_ratio,
                  "--dp-scales clips every scale to this multiple of its base matrix's RMS")
      ->check(number_at_least(0, false))
      ->capture_default_str();
  cmd->add_option("--granularity", o->granularity, "Scales per matrix or per output row")
      ->capture_default_str()
      ->check(CLI::IsMember({"tensor", "row"}));
  cmd->add_option("--calibration-data", o->p.calibration_data,
                  "Public text for scale distillation (text or JSONL) instead of the user's "
                  "conversations (under --dp-epsilon: instead of text sampled from the DP "
                  "fine-tune)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--calibrate-steps", o->p.calibrate_steps, "Scale-distillation steps")
      ->capture_default_str()
      ->check(positive());
  cmd->add_option("--calibrate-lr", o->p.calibrate_lr, "Scale-distillation learning rate")
      ->capture_default_str();
  cmd->add_option("--scale-bounds", o->bounds,
                  "Bounds LO:HI of the multiplier the domain objective searches (1 = the "
                  "calibrated scales)")
      ->capture_default_str();
  cmd->add_option("--objective-evals", o->p.objective.max_evaluations,
                  "Most objective evaluations in the search")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  cmd->add_option("--scorer-cmd", o->p.objective.scorer_cmd,
                  "Your own evaluator instead of the domain's score: run with /bin/sh -c, it reads "
                  "JSON lines {\"messages\", \"response\", \"reference\"} (greedy replies to "
                  "held-out conversations) on stdin and prints one number, higher is better");
  cmd->add_option("--scorer-timeout", o->p.objective.scorer_timeout_s,
                  "Seconds the scorer may take per call")
      ->capture_default_str()
      ->check(number_at_least(0, false));
  cmd->add_option("--signing-key", o->signing_key,
                  "Sign the adapter with this key (bitdelta keys generate): the registry keeps "
                  "the signature, and --out gets OUT.sig.json beside it");
  cmd->add_option("--screen-patterns", o->screen_patterns,
                  "Screen the records with this list of jailbreak / prompt-injection patterns "
                  "instead of the built-in one; flagged records are reported and left out "
                  "(docs/safety.md)")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--no-screen", o->no_screen, "Do not screen the records");
  cmd->add_flag("--require-consent", o->p.require_consent,
                "With --store: personalize only a user whose consent is recorded there (bitdelta "
                "consent set); a withdrawn consent always refuses (docs/consent.md)");
  cmd->add_option("--probes", o->probes,
                  "The safety gate's probe set (JSONL; default: the built-in set)")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--no-safety-gate", o->no_safety_gate,
                "Register the adapter without running the safety gate (the metadata then has "
                "no safety_score)");
  add_safety_policy_options(cmd, o->p.safety_policy);
  cmd->add_flag("--json", o->json,
                "Print the result as one JSON object (progress stays on stderr)");
  cmd->add_flag("--quiet", o->quiet, "No progress lines");
  cmd->add_option("--threads", o->threads, "Worker threads (default: all cores)");
  runner = [=] {
    if (o->threads > 0) set_default_threads(o->threads);
    PersonalizeOptions p = o->p;
    p.base = o->base;
    p.domain = o->domain;
    p.user = o->user;
    p.data = o->data;
    p.chat_format = o->chat_format;
    p.version = parse_version(o->version);
    p.granularity = o->granularity == "row" ? ScaleGranularity::kRow : ScaleGranularity::kTensor;
    std::tie(p.objective.lo, p.objective.hi) = parse_bounds(o->bounds);
    if (o->store.empty() && o->out.empty()) {
      fail("nowhere to put the adapter: give --store DIR (to register it) and/or --out FILE");
    }
    if (!o->out.empty()) p.out = o->out;
    if (p.require_consent && o->store.empty()) {
      fail("--require-consent needs --store DIR: consent records live in the store");
    }
    std::optional<SigningKey> signer;
    if (!o->signing_key.empty()) {
      signer.emplace(SigningKey::load(o->signing_key));
      p.signing_key = &*signer;
    }
    std::optional<AdapterStore> store;
    std::optional<AuditLog> audit;
    if (!o->store.empty()) {
      store.emplace(AdapterStore::open(o->store));
      p.store = &*store;
      audit.emplace(store->dir() / "audit.jsonl", p.signing_key);
      p.audit = &*audit;
    }
    std::optional<ScreenPatterns> screen;
    if (!o->no_screen) {
      screen.emplace(o->screen_patterns.empty() ? ScreenPatterns::builtin()
                                                : ScreenPatterns::load(o->screen_patterns));
      p.screen_patterns = &*screen;
    }
    std::optional<ProbeSet> probes;
    if (!o->probes.empty()) {
      probes.emplace(ProbeSet::load(o->probes));
      p.safety_probes = &*probes;
    }
    p.safety_gate = !o->no_safety_gate;
    bool temporary = false;
    if (o->work_dir.empty()) {
      if (p.resume) fail("--resume needs the --work-dir of the interrupted run");
      const char* tmp = std::getenv("TMPDIR");
      p.work_dir =
          std::filesystem::path(tmp && *tmp ? tmp : "/tmp") /
          fmt::format("bitdelta-personalize-{:016x}",
                      std::random_device{}() * 0x9e3779b97f4a7c15ull ^ std::random_device{}());
      temporary = true;
    } else {
      p.work_dir = o->work_dir;
    }
    const bool show = !o->quiet;
    auto last = std::chrono::steady_clock::now() - std::chrono::seconds(10);
    PersonalizeResult r;
    try {
      r = personalize(
          p,
          [&](const PersonalizeEvent& e) {
            if (!show) return;
            const auto now = std::chrono::steady_clock::now();
            // Step lines at most twice a second (and every stage's first and last).
            if (e.steps > 0 && e.step != 1 && e.step != e.steps &&
                now - last < std::chrono::milliseconds(500))
              return;
            last = now;
            fmt::print(stderr, "[{}/{}] {:<9} {}{}\n", e.stage_index, e.stages, e.stage, e.message,
                       e.eta_s > 0 ? fmt::format("  ETA {}", format_duration(e.eta_s)) : "");
          },
          nullptr, default_thread_pool());
    } catch (const SafetyGateFailed& e) {
      if (temporary) std::filesystem::remove_all(p.work_dir);
      if (o->json) fmt::print("{}\n", e.report.dump(2));
      fmt::print(stderr, "error: {}\n{}\n", e.what(),
                 temporary ? "(the working folder was temporary and is gone: give --work-dir to "
                             "keep the refused adapter for inspection)"
                           : fmt::format("(the refused adapter is {})", e.adapter.string()));
      return 3;
    } catch (...) {
      if (temporary) std::filesystem::remove_all(p.work_dir);
      throw;
    }
    if (temporary) std::filesystem::remove_all(p.work_dir);
    if (o->json) {
      fmt::print("{}\n", r.to_json().dump(2));
      return 0;
    }
    fmt::print("adapter {} ({})\n", r.id.to_string(), r.adapter_file.string());
    fmt::print("  size {} = 1/{:.1f} of the fine-tuned model in BF16 ({})\n",
               human_bytes(r.adapter_bytes), r.compression_ratio,
               human_bytes(r.finetuned_bf16_bytes));
    fmt::print(
        "  held-out NLL: base {:.4f}, fine-tune {:.4f}, adapter {:.4f} nats/token; quality "
        "retained {}\n",
        r.nll_base, r.nll_finetuned, r.nll_adapter,
        r.quality_retained ? fmt::format("{:.1f}%", 100 * *r.quality_retained)
                           : std::string("n/a (the fine-tune gained nothing)"));
    fmt::print("  scale multiplier {:.4f} ({} objective {:.5g}; calibrated {:.5g}, base {:.5g})\n",
               r.objective.multiplier, r.objective.objective, r.objective.score,
               r.objective.score_calibrated, r.objective.score_base);
    if (!r.dp_scales.is_null()) {
      fmt::print(
          "  --dp-scales: (ε = {}, δ = {}) on the scales only (σ = {:.4g}); the sign bits "
          "are not private\n",
          r.dp_scales["epsilon"].get<double>(), r.dp_scales["delta"].get<double>(),
          r.dp_scales["sigma"].get<double>());
    }
    if (!r.screening.is_null()) {
      fmt::print("  screening: {} of {} records flagged and left out\n",
                 r.screening["flagged"].get<int64_t>(), r.screening["records"].get<int64_t>());
    }
    if (!r.safety.is_null()) {
      fmt::print("  safety gate passed: safety score {:.3f} (base {:.3f}), mean KL {:.4f} nats\n",
                 r.safety["safety_score"].get<double>(), r.safety["base_score"].get<double>(),
                 r.safety["mean_kl"].get<double>());
    }
    if (!r.signed_by.empty()) fmt::print("  signed by key {}\n", r.signed_by);
    if (!r.dp.is_null()) {
      fmt::print("  DP-SGD: (ε = {:.3f}, δ = {:g}), noise multiplier {:.4g}, clip {}\n",
                 r.dp["epsilon"].get<double>(), r.dp["delta"].get<double>(),
                 r.dp["noise_multiplier"].get<double>(), r.dp["clip"].get<double>());
    }
    fmt::print("  {} interactions, {} conversations: {} trained on, {} held out; {:.1f} s\n",
               r.interactions, r.conversations, r.train_conversations, r.heldout_conversations,
               r.seconds);
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli
