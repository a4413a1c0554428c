// Personalization: a user's interaction records in, a served 1-bit adapter out. One pipeline for
// every domain: validate the records → the user's analytics → training examples (the most recent
// conversations held out) → fine-tune → 1-bit compress → calibrate the scales (distillation,
// then the domain objective's multiplier) → evaluate on the held-out conversations → register as
// {domain}/{user}/v{N}. The CLI (`bitdelta personalize`) and the server's jobs run it.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "delta/adapter_id.h"
#include "delta/compress.h"
#include "domain/objective.h"
#include "safety/safety_gate.h"
#include "safety/screening.h"
#include "train/finetune.h"
#include "train/privacy.h"
#include "util/error.h"
#include "util/keys.h"
#include "util/thread_pool.h"

namespace bitdelta {

class AdapterStore;
class AuditLog;

// Thrown out of personalize() when its cancel flag is set (between steps).
struct Cancelled : Error {
  Cancelled() : Error("cancelled") {}
};

// Thrown out of personalize() when the finished adapter fails the safety gate; the report says
// why. Nothing is registered; the adapter stays in the working folder for inspection.
struct SafetyGateFailed : Error {
  SafetyGateFailed(const std::string& message, nlohmann::json gate_report,
                   std::filesystem::path adapter_file)
      : Error(message), report(std::move(gate_report)), adapter(std::move(adapter_file)) {}
  nlohmann::json report;          // SafetyReport::to_json
  std::filesystem::path adapter;  // the refused adapter, in the working folder
};

struct PersonalizeOptions {
  std::filesystem::path base;  // the domain's base model folder
  std::string domain, user;
  std::filesystem::path data;  // the domain's interaction records (JSONL)
  // Working folder (examples, the fine-tune and its checkpoints, intermediate adapters). Kept
  // for resume; personalize() removes the big parts after success unless keep_work.
  std::filesystem::path work_dir;
  bool keep_work = false;
  bool resume = false;            // continue an interrupted run from work_dir's checkpoint
  AdapterStore* store = nullptr;  // register here (optional)
  std::optional<std::filesystem::path> out;  // and/or write the adapter here
  int64_t version = 0;                       // 0: the next version of domain/user in the store
  std::string chat_format = "auto";          // ChatTemplate::select, requiring a template for auto
  std::string job_id;                        // recorded in the adapter's metadata when set
  // Signs the adapter (the registry copy, and --out's as OUT.sig.json) and its LP-105 compute
  // receipt (kept in the registry, and beside --out as OUT.receipt.json) when set.
  const SigningKey* signing_key = nullptr;
  // Registration and signing are appended here when set (docs/audit.md), as `actor`.
  AuditLog* audit = nullptr;
  std::string actor = "cli";
  // Consent (docs/consent.md), checked in the store when there is one: a user who withdrew it is
  // refused (ConsentRefused); with require_consent, so is one who never gave it.
  bool require_consent = false;
  double heldout_share = 0.1;
  // Training-data screening (docs/safety.md): records matching these patterns are reported and
  // left out before anything else reads them. Null: no screening.
  const ScreenPatterns* screen_patterns = nullptr;
  // The safety gate on the finished adapter (docs/safety.md): a failing adapter is not
  // registered or written (personalize() throws SafetyGateFailed). Null probes: the built-in set.
  bool safety_gate = true;
  const ProbeSet* safety_probes = nullptr;
  SafetyPolicy safety_policy;
  // Fine-tune (steps, lr, batch, seq_len, ...); model/data/out are filled in. seq_len ≤ 0: the
  // longest training example, within the base's context.
  FinetuneOptions finetune;
  ScaleGranularity granularity = ScaleGranularity::kTensor;
  // --dp-scales (train/privacy.h): Gaussian noise on the final scales, ε > 0 turns it on. It
  // protects the scales only, never the sign bits: see docs/privacy.md.
  ScaleNoiseOptions dp_scales;
  // Scale distillation's text. Empty: the user's training conversations — except under DP-SGD,
  // where reading them again would fall outside the guarantee, so the pipeline distils on text
  // sampled from the DP fine-tune instead (post-processing) and keeps the multiplier at 1
  // (docs/privacy.md). A public file given here is used either way.
  std::filesystem::path calibration_data;
  int64_t calibrate_steps = 100;
  double calibrate_lr = 1e-3;
  ObjectiveOptions objective;
};

// One progress event. Stages: validate, screen, analytics, examples, finetune, compress,
// calibrate, objective, evaluate, safety, register (stage_index 1..stages).
struct PersonalizeEvent {
  std::string stage;
  int stage_index = 0, stages = 0;
  int64_t step = 0, steps = 0;  // within the stage, when it has steps
  double loss = 0;              // fine-tune / calibration loss at this step
  double eta_s = 0;             // of the stage
  std::string message;          // a line for people
};

struct PersonalizeResult {
  AdapterId id;
  std::filesystem::path adapter_file;  // the blob in the store, or `out`
  uint64_t adapter_bytes = 0;
  uint64_t finetuned_bf16_bytes = 0;  // the fine-tuned model's weights as BF16
  double compression_ratio = 0;       // finetuned_bf16_bytes / adapter_bytes
  double nll_base = 0, nll_finetuned = 0, nll_adapter = 0;  // held-out, nats per reply token
  std::optional<double> quality_retained;                   // of the fine-tune's held-out NLL gain
  ObjectiveResult objective;
  nlohmann::json analytics;
  std::string signed_by;  // the key id, when signed
  nlohmann::json dp;      // with DP-SGD: ε spent, δ, clip, noise multiplier, sampling rate
  nlohmann::json dp_scales;  // with --dp-scales: privatize_scales' report
  nlohmann::json screening;  // ScreenReport::to_json, or null when not screened
  nlohmann::json safety;     // SafetyReport::to_json, or null when the gate did not run
  nlohmann::json receipt;    // the signed LP-105 receipt (with a signing key), or null
  int64_t interactions = 0, conversations = 0, train_conversations = 0, heldout_conversations = 0;
  int64_t train_tokens = 0;  // tokens the fine-tune processed (steps × batch × tokens)
  int64_t seq_len = 0;       // tokens per training example (the longest, within the context)
  double seconds = 0;
  nlohmann::json stage_seconds = nlohmann::json::object();
  int64_t peak_rss_bytes = 0;
  nlohmann::json to_json() const;
};

// The version a new adapter of domain/user takes: one past the latest in the store (1 if none).
int64_t next_adapter_version(const AdapterStore& store, const std::string& domain,
                             const std::string& user);

// Runs the pipeline. `on_event` (optional) sees progress; when `cancel` becomes true the run
// stops at the next step with Cancelled (work_dir keeps the last checkpoint). Nothing is
// registered or written to `out` unless every stage succeeded. Errors say what is wrong with the
// data, the user or the options.
PersonalizeResult personalize(const PersonalizeOptions& options,
                              const std::function<void(const PersonalizeEvent&)>& on_event,
                              const std::atomic<bool>* cancel, ThreadPool& pool);

}  // namespace bitdelta
