#include "domain/personalize.h"

#include <sys/resource.h>

#include <chrono>
#include <cmath>

#include "delta/adapter.h"
#include "delta/signature.h"
#include "domain/domain.h"
#include "domain/examples.h"
#include "io/model_config.h"
#include "io/safetensors.h"
#include "io/weight_files.h"
#include "model/generate.h"
#include "safety/receipt.h"
#include "store/adapter_store.h"
#include "store/audit_log.h"
#include "train/calibrate.h"
#include "train/eval.h"
#include "util/files.h"
#include "util/sha256.h"

namespace bitdelta {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kStages[] = {"validate", "screen",   "analytics", "examples",
                                   "finetune", "compress", "calibrate", "objective",
                                   "evaluate", "safety",   "register"};
constexpr int kStageCount = 11;
constexpr const char* kFinetuneDone = "finetune.done";

int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

// The weights of `dir` as BF16: 2 bytes a parameter.
uint64_t bf16_bytes(const fs::path& dir) {
  const WeightFiles files = WeightFiles::open(dir);
  uint64_t n = 0;
  for (const std::string& name : files.names()) {
    uint64_t count = 1;
    for (int64_t d : files.view(name).shape()) count *= static_cast<uint64_t>(d);
    n += 2 * count;
  }
  return n;
}

// The adapter `in` with every 1-bit scale multiplied by m and `metadata` added, to `out`.
void write_rescaled(const fs::path& in, const fs::path& out, float m,
                    const std::map<std::string, std::string>& metadata) {
  const std::shared_ptr<Adapter> a = Adapter::open(in);
  const SafetensorsFile& file = a->file();
  SafetensorsWriter w;
  w.set_checksums(true);
  for (const TensorInfo& info : file.tensors()) {
    if (info.name.ends_with(".scale")) {
      std::vector<float> s = file.view(info).to_f32();
      for (float& v : s) v *= m;
      w.add_f32(info.name, info.shape, s);
    } else {
      w.add(info.name, info.dtype, info.shape, file.view(info).bytes());
    }
  }
  for (const auto& [key, value] : file.metadata()) w.set_metadata(key, value);
  for (const auto& [key, value] : metadata) w.set_metadata(key, value);
  w.write(out);
}

// Text sampled from `model_dir` (temperature 1, from BOS): what scale distillation reads when
// the user's own records must not be read again (DP-SGD). `samples` texts of up to `tokens`
// tokens each, as a text file (samples separated by blank lines).
void write_sampled_text(const fs::path& model_dir, const Tokenizer& tokenizer, int64_t samples,
                        int64_t tokens, const fs::path& out, ThreadPool& pool) {
  std::unique_ptr<Transformer> model = Transformer::load(model_dir);
  std::vector<int32_t> prompt;
  if (tokenizer.bos_id()) prompt.push_back(*tokenizer.bos_id());
  if (prompt.empty()) prompt = tokenizer.encode("\n", /*parse_special=*/false);
  std::string text;
  for (int64_t i = 0; i < samples; ++i) {
    GenerateOptions g;
    g.max_tokens = tokens;
    g.sampling.temperature = 1.0f;
    g.sampling.seed = static_cast<uint64_t>(i) + 1;
    if (tokenizer.eos_id()) g.stop_ids.push_back(*tokenizer.eos_id());
    const GenerateResult r = generate(*model, &tokenizer, prompt, g, nullptr, pool);
    if (!r.text.empty()) text += r.text + "\n\n";
  }
  if (text.empty()) fail("the fine-tune produced no text to calibrate on");
  write_file_atomic(out, text);
}

}  // namespace

int64_t next_adapter_version(const AdapterStore& store, const std::string& domain,
                             const std::string& user) {
  const std::optional<AdapterRecord> latest = store.find(AdapterId{domain, user, 0});
  return latest ? latest->id.version + 1 : 1;
}

json PersonalizeResult::to_json() const {
  json out = {{"adapter_id", id.to_string()},
              {"adapter_file", adapter_file.string()},
              {"adapter_bytes", adapter_bytes},
              {"finetuned_bf16_bytes", finetuned_bf16_bytes},
              {"compression_ratio", compression_ratio},
              {"heldout",
               {{"nll_base", nll_base},
                {"nll_finetuned", nll_finetuned},
                {"nll_adapter", nll_adapter},
                {"quality_retained", quality_retained ? json(*quality_retained) : json()}}},
              {"objective", objective.to_json()},
              {"interactions", interactions},
              {"conversations", conversations},
              {"train_conversations", train_conversations},
              {"heldout_conversations", heldout_conversations},
              {"train_tokens", train_tokens},
              {"seq_len", seq_len},
              {"dp", dp},
              {"dp_scales", dp_scales},
              {"screening", screening},
              {"safety", safety},
              {"receipt", receipt},
              {"signed_by", signed_by.empty() ? nlohmann::json() : nlohmann::json(signed_by)},
              {"seconds", seconds},
              {"stage_seconds", stage_seconds},
              {"peak_rss_bytes", peak_rss_bytes},
              {"analytics", analytics}};
  return out;
}

PersonalizeResult personalize(const PersonalizeOptions& o,
                              const std::function<void(const PersonalizeEvent&)>& on_event,
                              const std::atomic<bool>* cancel, ThreadPool& pool) {
  if (!is_domain(o.domain)) fail("unknown domain '{}': {}", o.domain, kDomainNames);
  if (o.user.empty()) fail("name the user to personalize for (--user)");
  if (o.store == nullptr && !o.out)
    fail("nowhere to put the adapter: give a store or an output file");
  if (!fs::is_directory(o.base)) fail("the base model folder '{}' does not exist", o.base.string());
  if (o.work_dir.empty()) fail("personalization needs a working folder");
  const auto start = std::chrono::steady_clock::now();
  auto stage_start = start;
  int stage = 0;
  PersonalizeResult result;
  auto check_cancel = [&] {
    if (cancel != nullptr && cancel->load()) throw Cancelled();
  };
  auto event = [&](PersonalizeEvent e) {
    e.stage = kStages[stage - 1];
    e.stage_index = stage;
    e.stages = kStageCount;
    if (on_event) on_event(e);
  };
  auto begin = [&](int index, std::string message) {
    check_cancel();
    const auto now = std::chrono::steady_clock::now();
    if (stage > 0) {
      result.stage_seconds[kStages[stage - 1]] =
          std::chrono::duration<double>(now - stage_start).count();
    }
    stage_start = now;
    stage = index;
    event({.message = std::move(message)});
  };

  fs::create_directories(o.work_dir);
  const fs::path train_file = o.work_dir / "train.jsonl",
                 heldout_file = o.work_dir / "heldout.jsonl";
  const fs::path finetuned = o.work_dir / "finetuned";

  // 1-3: the records, the user's analytics, the examples.
  begin(1, fmt::format("reading {} records from {}", o.domain, o.data.filename().string()));
  const ModelConfig config = load_model_config(o.base / "config.json");
  const Tokenizer tokenizer = Tokenizer::from_folder(o.base);
  const ChatTemplate chat =
      ChatTemplate::select(tokenizer, config.model_type, o.chat_format, /*require_own=*/true);
  DomainUser unscreened = load_domain_user(o.domain, o.data, o.user);  // every record valid
  if (o.store != nullptr) o.store->check_consent(unscreened.user, o.domain, o.require_consent);
  fs::path records = o.data;  // what the pipeline reads: the screened copy when screening
  if (o.screen_patterns != nullptr) {
    begin(2, fmt::format("screening the records ({} patterns from {})",
                         o.screen_patterns->patterns().size(), o.screen_patterns->source()));
    records = o.work_dir / "records.screened.jsonl";
    const ScreenReport screened = screen_records(o.data, *o.screen_patterns, records);
    result.screening = screened.to_json();
    for (const ScreenFinding& f : screened.findings) {
      event(
          {.message = fmt::format("{}:{}: left out: {} ({}) in {}: {}", o.data.filename().string(),
                                  f.line, f.pattern_id, f.kind, f.field, f.excerpt)});
    }
    event({.message = fmt::format("{} of {} records flagged and left out", screened.findings.size(),
                                  screened.records)});
  }
  // Errors about the screened copy name the records as given, and say screening was involved.
  auto about_records = [&](auto&& f) {
    try {
      return f();
    } catch (const Cancelled&) {
      throw;
    } catch (const Error& e) {
      if (records == o.data) throw;
      std::string message = e.what();
      for (size_t at; (at = message.find(records.string())) != std::string::npos;) {
        message.replace(at, records.string().size(), o.data.string());
      }
      fail("{} (after screening left out {} flagged record(s); docs/safety.md)", message,
           result.screening["flagged"].get<int64_t>());
    }
  };
  const DomainUser user = records == o.data ? std::move(unscreened) : about_records([&] {
    return load_domain_user(o.domain, records, o.user);
  });
  begin(3, fmt::format("{} interactions of {}", user.interactions.size(), user.user));
  result.analytics = user.analytics_json();
  begin(4, "building training examples");
  const PersonalExamples examples =
      about_records([&] { return build_personal_examples(user, records, o.heldout_share); });
  write_conversations_jsonl(examples.train, train_file);
  write_conversations_jsonl(examples.heldout, heldout_file);
  result.interactions = examples.interactions;
  result.conversations = examples.conversations;
  result.train_conversations = static_cast<int64_t>(examples.train.size());
  result.heldout_conversations = static_cast<int64_t>(examples.heldout.size());
  event({.message = fmt::format("{} conversations to train on, {} held out", examples.train.size(),
                                examples.heldout.size())});

  AdapterId id{o.domain, user.user,
               o.version > 0   ? o.version
               : o.store ? next_adapter_version(*o.store, o.domain, user.user)
                         : 1};
  if (o.store != nullptr && o.store->find(id)) {
    fail("{} is already in the store; versions are immutable: pick another version or 'auto'",
         id.to_string());
  }

  // 4: fine-tune, from the checkpoint when resuming.
  begin(5,
        fmt::format("fine-tuning {} for {} steps", o.base.filename().string(), o.finetune.steps));
  FinetuneOptions f = o.finetune;
  // lr ≤ 0: the default, 3e-4 (a small base forgets less; docs/safety.md), or 1e-3 under DP-SGD
  // (the noise dominates and the adapter stays close to the base; docs/privacy.md).
  if (f.lr <= 0) f.lr = f.dp_epsilon > 0 ? 1e-3 : 3e-4;
  if (f.dp_epsilon > 0 && f.seq_len <= 0) {
    fail(
        "under --dp-epsilon give --seq-len: the automatic choice (the longest training example) "
        "would depend on the user's records outside the privacy guarantee");
  }
  f.model = o.base;
  f.data = train_file;
  f.out = finetuned;
  f.data_options = DataOptions{};
  f.data_options.chat_format = std::string(chat.choice_name());
  if (f.save_every <= 0) f.save_every = std::max<int64_t>(1, f.steps / 10);
  if (f.seq_len <= 0) {  // auto: the longest training example, within the context
    const TrainingData train = TrainingData::load(train_file, tokenizer, &chat);
    size_t longest = 2;
    for (const Example& ex : train.examples()) longest = std::max(longest, ex.tokens.size());
    f.seq_len =
        std::min<int64_t>(static_cast<int64_t>(longest) - 1, config.max_position_embeddings);
  }
  const bool finished = o.resume && fs::exists(o.work_dir / kFinetuneDone) &&
                        fs::exists(finetuned / "model.safetensors");
  if (!finished) {
    fs::remove(o.work_dir / kFinetuneDone);
    f.resume = o.resume && fs::exists(finetuned / "checkpoint");
    const FinetuneResult fr = finetune(
        f,
        [&](const FinetuneStep& s) {
          event({.step = s.step,
                 .steps = s.steps,
                 .loss = s.loss,
                 .eta_s = s.eta_s,
                 .message = fmt::format(
                     "step {}/{} loss {:.4f}{}", s.step, s.steps, s.loss,
                     s.epsilon >= 0 ? fmt::format(" ε {:.3f}", s.epsilon) : std::string())});
          check_cancel();
        },
        pool);
    result.train_tokens = fr.steps_run * f.batch * f.grad_accum * f.seq_len;
    if (f.dp_epsilon > 0) {
      result.dp = {{"mechanism", "DP-SGD (Poisson sampling, per-example clipping, Gaussian noise)"},
                   {"unit", "one training example (an assistant turn with its context)"},
                   {"epsilon", fr.dp_epsilon_spent},
                   {"epsilon_target", f.dp_epsilon},
                   {"delta", f.dp_delta},
                   {"clip", f.dp_clip},
                   {"noise_multiplier", fr.dp_noise_multiplier},
                   {"sample_rate", fr.dp_sample_rate},
                   {"steps", f.steps},
                   {"accountant", "RDP (sampled Gaussian), Balle et al. 2020 conversion"}};
      write_file_atomic(o.work_dir / "dp.json", result.dp.dump());
    }
    write_file_atomic(o.work_dir / kFinetuneDone, "done\n");
  }
  if (finished && fs::exists(o.work_dir / "dp.json")) {
    result.dp = nlohmann::json::parse(read_file(o.work_dir / "dp.json"));
  }
  result.finetuned_bf16_bytes = bf16_bytes(finetuned);

  // 5: compress, with the analytics as the adapter's metadata.
  begin(6, "compressing the fine-tune to 1 bit");
  CompressOptions c;
  c.granularity = o.granularity;
  c.adapter_id = id;
  c.base_model = o.base.filename().string();
  c.metadata_json = result.analytics.dump();
  c.chat_format = std::string(chat.choice_name());
  const fs::path raw = o.work_dir / "compressed.bdelta",
                 calibrated = o.work_dir / "calibrated.bdelta",
                 final_file = o.work_dir / "adapter.bdelta";
  compress_adapter(o.base, finetuned, raw, c, pool);

  // 6: scale distillation on the training conversations.
  begin(7, fmt::format("calibrating the scales ({} steps)", o.calibrate_steps));
  CalibrateOptions cal;
  cal.base = o.base;
  cal.finetuned = finetuned;
  cal.adapter = raw;
  const bool dp_sgd = !result.dp.is_null();
  cal.data = train_file;
  cal.data_options.chat_format = std::string(chat.choice_name());
  if (!o.calibration_data.empty()) {
    cal.data = o.calibration_data;
  } else if (dp_sgd) {
    cal.data = o.work_dir / "dp_calibration.txt";
    event({.message = "DP-SGD: distilling on text sampled from the DP fine-tune, not on the "
                      "user's records"});
    write_sampled_text(finetuned, tokenizer, 32, f.seq_len, cal.data, pool);
  }
  cal.out = calibrated;
  cal.steps = o.calibrate_steps;
  cal.lr = o.calibrate_lr;
  cal.loss = DistillLoss::kKl;
  cal.seq_len = f.seq_len;
  result.seq_len = f.seq_len;
  calibrate_adapter(
      cal,
      [&](const CalibrateStep& s) {
        event({.step = s.step,
               .steps = s.steps,
               .loss = s.loss,
               .message = fmt::format("step {}/{} loss {:.5g}", s.step, s.steps, s.loss)});
        check_cancel();
      },
      pool);

  // 7: the domain objective's multiplier, on the held-out interactions.
  begin(8, fmt::format("choosing the scale multiplier in [{}, {}] ({})", o.objective.lo,
                       o.objective.hi, o.objective.scorer_cmd.empty() ? o.domain : "--scorer-cmd"));
  std::unique_ptr<Transformer> base = Transformer::load(o.base);
  std::shared_ptr<Adapter> adapter = open_adapter_for(calibrated, *base, pool);
  ObjectiveOptions objective_options = o.objective;
  objective_options.seq_len = std::min<int64_t>(std::max(objective_options.seq_len, f.seq_len),
                                                config.max_position_embeddings);
  DomainObjective objective(examples.objective, examples.heldout, *base, tokenizer, chat,
                            objective_options, o.work_dir, pool);
  int evaluation = 0;
  if (dp_sgd) {
    // Tuning the multiplier on held-out records would be a release of them outside ε.
    result.objective.objective = "none";
    result.objective.description =
        "not tuned: under DP-SGD the held-out records are not used to shape the adapter";
    result.objective.lo = result.objective.hi = result.objective.multiplier = 1;
  } else {
    result.objective = objective.search(adapter->weights(), [&](double m, double score) {
      ++evaluation;
      event({.step = evaluation,
             .steps = o.objective.max_evaluations + 1,
             .message = fmt::format("m = {:.4f}: score {:.5g}", m, score)});
      check_cancel();
    });
  }
  if (dp_sgd) {
    event({.message = "multiplier 1 (not tuned on held-out records under DP-SGD)"});
    result.dp["covers"] =
        "the adapter's tensors: the fine-tune ran DP-SGD, scale distillation read only text "
        "sampled from that fine-tune (or the public --calibration-data), and no held-out record "
        "shaped the adapter; all of it is post-processing of the DP fine-tune";
    result.dp["not_covered"] =
        "the metadata computed from the raw records without noise: analytics, system prompt, "
        "held-out NLLs and quality, the screening report, and the records' SHA-256";
  } else {
    event(
        {.message = fmt::format("multiplier {:.4f}: score {:.5g} (calibrated {:.5g}, base {:.5g})",
                                result.objective.multiplier, result.objective.score,
                                result.objective.score_calibrated, result.objective.score_base)});
  }

  // With --dp-scales the scales get their noise now (the multiplier folded in), so that the
  // evaluation, the gate and the registry all see the adapter that is released.
  fs::path source = calibrated;
  float multiplier = static_cast<float>(result.objective.multiplier);
  if (o.dp_scales.epsilon > 0) {
    const fs::path noised = o.work_dir / "dp_scales.bdelta";
    result.dp_scales = privatize_scales(calibrated, noised, o.base, multiplier, o.dp_scales, {});
    event({.message = fmt::format(
               "--dp-scales: Gaussian noise σ = {:.4g} on {} scales (sensitivity {:.4g}, "
               "ε = {}, δ = {}); protects the scales only",
               result.dp_scales["sigma"].get<double>(), result.dp_scales["scales"].get<int64_t>(),
               result.dp_scales["sensitivity"].get<double>(), o.dp_scales.epsilon,
               o.dp_scales.delta)});
    adapter = open_adapter_for(noised, *base, pool);
    source = noised;
    multiplier = 1.0f;
  }

  // 9: held-out NLL of base, fine-tune and base + the final adapter.
  begin(9, "evaluating on the held-out conversations");
  std::list<std::vector<float>> storage;
  const AdapterWeights final_weights =
      scaled_adapter_weights(adapter->weights(), multiplier, storage);
  std::unique_ptr<Transformer> ft = Transformer::load(finetuned);
  const TrainingData heldout = TrainingData::load(heldout_file, tokenizer, &chat);
  EvalOptions e;
  e.seq_len = objective_options.seq_len;
  e.max_windows = 0;
  const EvalReport report = evaluate({base.get(), ft.get(), &final_weights}, heldout, e, pool);
  result.nll_base = report.find("base")->nll;
  result.nll_finetuned = report.find("finetuned")->nll;
  result.nll_adapter = report.find("bitdelta")->nll;
  result.quality_retained = report.quality_retained;
  ft.reset();

  json calibration = json::parse(adapter->metadata().at("calibration"));
  calibration["objective"] = result.objective.to_json();
  json personalization = {
      {"domain", o.domain},
      {"user", user.user},
      {"interactions", result.interactions},
      {"conversations", result.conversations},
      {"train_conversations", result.train_conversations},
      {"heldout_conversations", result.heldout_conversations},
      {"system_prompt", examples.system_prompt},
      {"chat_format", chat.choice_name()},
      {"finetune", {{"steps", f.steps}, {"lr", f.lr}, {"batch", f.batch}, {"seq_len", f.seq_len}}},
      {"heldout",
       {{"nll_base", result.nll_base},
        {"nll_finetuned", result.nll_finetuned},
        {"nll_adapter", result.nll_adapter},
        {"quality_retained", result.quality_retained ? json(*result.quality_retained) : json()}}}};
  if (!o.job_id.empty()) personalization["job_id"] = o.job_id;
  if (!result.dp.is_null()) personalization["dp"] = result.dp;
  if (!result.dp_scales.is_null()) personalization["dp_scales"] = result.dp_scales;
  const std::string records_text = read_file(o.data);
  personalization["data_sha256"] =
      sha256_hex({reinterpret_cast<const uint8_t*>(records_text.data()), records_text.size()});
  if (!result.screening.is_null()) {
    // The adapter travels; the flagged text itself stays out of it (line, pattern, field only).
    json screening = result.screening;
    for (json& finding : screening["findings"]) finding.erase("excerpt");
    personalization["screening"] = std::move(screening);
  }
  adapter.reset();
  std::map<std::string, std::string> metadata = {{"calibration", calibration.dump()},
                                                 {"personalization", personalization.dump()},
                                                 {"created_by", "bitdelta 0.1.0 personalize"}};

  // 10: the safety gate on exactly the adapter that would be registered; its report goes into
  // the adapter's metadata (the tensors stay byte for byte what was checked).
  if (o.safety_gate) {
    begin(10, "safety gate: bounds and behaviour probes");
    const fs::path unchecked = o.work_dir / "unchecked.bdelta";
    write_rescaled(source, unchecked, multiplier, metadata);
    const ProbeSet builtin = o.safety_probes == nullptr ? ProbeSet::builtin() : ProbeSet{};
    const ProbeSet& probes = o.safety_probes == nullptr ? builtin : *o.safety_probes;
    std::shared_ptr<Adapter> checked = open_adapter_for(unchecked, *base, pool);
    const SafetyReport gate =
        safety_check(*base, tokenizer, *checked, probes, o.safety_policy, pool);
    checked.reset();
    result.safety = gate.to_json();
    event({.message = gate.summary()});
    if (!gate.passed()) {
      std::string reasons;
      for (const std::string& r : gate.reasons) reasons += "\n  " + r;
      throw SafetyGateFailed(fmt::format("{} failed the safety gate and was not registered:{}",
                                         id.to_string(), reasons),
                             result.safety, unchecked);
    }
    fs::remove(unchecked);
    metadata["safety"] = result.safety.dump();
    metadata["safety_score"] = fmt::format("{}", gate.behaviour.score);
  }
  write_rescaled(source, final_file, multiplier, metadata);
  result.adapter_bytes = fs::file_size(final_file);
  result.compression_ratio =
      static_cast<double>(result.finetuned_bf16_bytes) / static_cast<double>(result.adapter_bytes);

  // 11: register (whole or not at all, with its safety report and receipt) and/or write the file.
  begin(11, fmt::format("registering {}", id.to_string()));
  result.id = id;
  // Consent again: it may have been withdrawn while the run trained.
  if (o.store != nullptr) o.store->check_consent(user.user, o.domain, o.require_consent);
  std::optional<AdapterSignature> signature;
  std::optional<ComputeReceipt> receipt;
  if (o.signing_key != nullptr) {
    signature = sign_adapter(final_file, *o.signing_key);
    // The LP-105 receipt of this adaptation (docs/receipts.md), signed with the same key.
    ReceiptInputs in;
    describe_adapter(final_file, in);
    in.requester_lux_id = user.user;
    in.job_id = o.job_id;
    in.input_hash = personalization["data_sha256"].get<std::string>();
    in.compression_ratio = result.compression_ratio;
    in.quality_score = result.quality_retained;
    if (!result.safety.is_null()) in.safety_score = result.safety["safety_score"].get<double>();
    if (!result.dp.is_null()) {
      in.dp = ReceiptInputs::Privacy{result.dp["epsilon"].get<double>(),
                                     result.dp["delta"].get<double>()};
    }
    in.train_tokens = static_cast<uint64_t>(result.train_tokens);
    in.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    receipt = make_receipt(in, *o.signing_key);
    result.receipt = receipt->to_json();
  }
  if (o.store != nullptr) {
    Attachments attachments;
    if (!result.safety.is_null()) attachments["safety"] = result.safety.dump();
    if (receipt) attachments["receipt"] = receipt_text(*receipt);
    const AdapterRecord r = o.store->add(final_file, id, std::nullopt, {}, attachments);
    if (signature) o.store->put_signature(r.sha256, signature->to_json().dump());
    if (o.audit != nullptr) {
      nlohmann::json details = {{"bytes", r.file_bytes}, {"via", "personalize"}};
      if (!o.job_id.empty()) details["job_id"] = o.job_id;
      o.audit->append({"create", o.actor, id.to_string(), r.sha256, details});
      if (signature) {
        o.audit->append({"sign",
                         o.actor,
                         id.to_string(),
                         r.sha256,
                         {{"key_id", signature->key_id}, {"signed_at", signature->signed_at}}});
      }
      if (receipt) {
        o.audit->append({"receipt",
                         o.actor,
                         id.to_string(),
                         r.sha256,
                         {{"key_id", receipt->key_id}, {"timestamp", receipt->job.timestamp}}});
      }
    }
    result.adapter_file = o.store->blob_path(r);
  }
  if (o.out) {  // after the registration, so a refused one leaves no file behind either
    write_file_atomic(*o.out, read_file(final_file));
    if (signature) write_file_atomic(signature_path(*o.out), signature->to_json().dump(2) + "\n");
    if (receipt) write_file_atomic(receipt_path(*o.out), receipt_text(*receipt));
    if (o.store == nullptr) result.adapter_file = *o.out;
  }
  if (signature) result.signed_by = signature->key_id;
  result.stage_seconds[kStages[stage - 1]] =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stage_start).count();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.peak_rss_bytes = peak_rss_bytes();
  if (!o.keep_work) {
    fs::remove_all(finetuned);
    for (const fs::path& p : {raw, calibrated, final_file}) fs::remove(p);
  }
  event({.message = fmt::format("{}: {} bytes, 1/{:.1f} of the fine-tune in BF16", id.to_string(),
                                result.adapter_bytes, result.compression_ratio)});
  return result;
}

}  // namespace bitdelta
