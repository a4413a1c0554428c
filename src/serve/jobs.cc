#include "serve/jobs.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <random>

#include "domain/domain.h"
#include "domain/examples.h"
#include "domain/personalize.h"
#include "domain/records.h"
#include "util/error.h"
#include "util/files.h"
#include "util/log.h"

namespace bitdelta {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr size_t kKeptEvents = 512;
constexpr const char* kRecordsFile = "interactions.jsonl";
// Job threads run at this nice level, so serving wins the cores whenever both want them.
constexpr int kJobNice = 10;

std::string new_job_id() {
  std::random_device rd;
  return fmt::format("job-{:08x}{:08x}{:08x}", rd(), rd(), rd());
}

bool terminal(const std::string& state) {
  return state == "succeeded" || state == "failed" || state == "cancelled";
}

void lower_priority() {
  setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), kJobNice);
}

// The request's options as PersonalizeOptions (the same defaults as `bitdelta personalize`);
// Error naming an unknown or bad option.
PersonalizeOptions options_from(const json& request, const std::string& default_chat_format) {
  PersonalizeOptions p;
  p.finetune.steps = 100;
  p.finetune.batch = 8;
  p.finetune.seq_len = 0;
  p.finetune.lr = 0;  // personalize() picks: 3e-4, or 1e-3 under DP-SGD
  p.chat_format = default_chat_format;
  const json options = request.value("options", json::object());
  if (!options.is_object()) fail("'options' must be an object");
  for (const auto& [key, v] : options.items()) {
    auto number = [&](double lo, double hi) {
      if (!v.is_number() || v.get<double>() < lo || v.get<double>() > hi) {
        fail("options.{} must be a number in [{}, {}]", key, lo, hi);
      }
      return v.get<double>();
    };
    auto integer = [&](int64_t lo, int64_t hi) {
      if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi) {
        fail("options.{} must be an integer in [{}, {}]", key, lo, hi);
      }
      return v.get<int64_t>();
    };
    if (key == "steps")
      p.finetune.steps = integer(1, 100000);
    else if (key == "lr")
      p.finetune.lr = number(1e-8, 1);
    else if (key == "batch")
      p.finetune.batch = integer(1, 1024);
    else if (key == "seq_len")
      p.finetune.seq_len = integer(1, 1 << 20);
    else if (key == "seed")
      p.finetune.seed = static_cast<uint64_t>(integer(0, INT64_MAX));
    else if (key == "dp_epsilon")
      p.finetune.dp_epsilon = number(1e-3, 100);
    else if (key == "dp_delta")
      p.finetune.dp_delta = number(1e-12, 0.5);
    else if (key == "dp_clip")
      p.finetune.dp_clip = number(1e-6, 1e6);
    else if (key == "calibrate_steps")
      p.calibrate_steps = integer(1, 100000);
    else if (key == "calibrate_lr")
      p.calibrate_lr = number(1e-8, 1);
    else if (key == "heldout_share")
      p.heldout_share = number(0.01, 0.5);
    else if (key == "objective_evals")
      p.objective.max_evaluations = static_cast<int>(integer(1, 100));
    else if (key == "granularity") {
      if (v != "tensor" && v != "row") fail("options.granularity must be \"tensor\" or \"row\"");
      p.granularity = v == "row" ? ScaleGranularity::kRow : ScaleGranularity::kTensor;
    } else if (key == "chat_format") {
      if (!v.is_string()) fail("options.chat_format must be a string");
      p.chat_format = v.get<std::string>();
    } else if (key == "scale_bounds") {
      if (!v.is_array() || v.size() != 2 || !v[0].is_number() || !v[1].is_number() ||
          !(v[0].get<double>() >= 0 && v[0].get<double>() < v[1].get<double>())) {
        fail("options.scale_bounds must be [lo, hi] with 0 ≤ lo < hi");
      }
      p.objective.lo = v[0].get<double>();
      p.objective.hi = v[1].get<double>();
    } else if (key == "scorer_cmd") {
      fail(
          "options.scorer_cmd runs a shell command, so only the CLI takes it (bitdelta "
          "personalize --scorer-cmd)");
    } else {
      fail(
          "unknown option '{}': steps, lr, batch, seq_len, seed, calibrate_steps, calibrate_lr, "
          "heldout_share, objective_evals, granularity, chat_format, scale_bounds, dp_epsilon, "
          "dp_delta, dp_clip",
          key);
    }
  }
  if (p.finetune.dp_epsilon > 0 && p.finetune.seq_len <= 0) {
    fail(
        "options.dp_epsilon needs options.seq_len: the automatic choice (the longest example) "
        "would depend on the records outside the privacy guarantee");
  }
  return p;
}

}  // namespace

JobRunner::JobRunner(AdapterStore& store, JobRunnerOptions options)
    : store_(store), o_(std::move(options)), pool_(std::max(1, o_.threads)) {
  pool_.parallel_for(pool_.size(), [](int64_t, int64_t) { lower_priority(); });
  for (JobRecord& job : store_.list_jobs()) {
    if (terminal(job.state)) continue;
    if (job.state == "running") {
      // The previous process died mid-run: resume from the checkpoint in the job's folder.
      job.state = "queued";
      job.progress_json = json{{"message", "resuming after a server restart"}}.dump();
      store_.put_job(job);
    }
    queue_.push_back(job.id);
  }
  worker_ = std::thread([this] { work(); });
}

JobRunner::~JobRunner() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    cancel_running_ = true;
  }
  wake_.notify_all();
  progress_.notify_all();
  if (worker_.joinable()) worker_.join();
}

json JobRunner::to_json(const JobRecord& job) {
  json out = {{"id", job.id},
              {"object", "personalization.job"},
              {"state", job.state},
              {"domain", job.domain},
              {"user", job.user},
              {"created_at", job.created_at},
              {"updated_at", job.updated_at}};
  if (!job.adapter_id.empty()) out["adapter_id"] = job.adapter_id;
  auto parsed = [](const std::string& text) {
    json j = json::parse(text, nullptr, false);
    return j.is_discarded() ? json() : j;
  };
  if (!job.progress_json.empty()) out["progress"] = parsed(job.progress_json);
  if (!job.result_json.empty()) out["result"] = parsed(job.result_json);
  if (!job.error.empty()) out["error"] = job.error;
  out["options"] = parsed(job.request_json).value("options", json::object());
  return out;
}

JobRecord JobRunner::submit(const json& request, const std::string& records,
                            const std::string& owner) {
  if (!request.contains("domain") || !request["domain"].is_string()) {
    fail("'domain' is required: {}", kDomainNames);
  }
  const std::string domain = request["domain"];
  if (!is_domain(domain)) fail("unknown domain '{}': {}", domain, kDomainNames);
  if (!request.contains("user") || !request["user"].is_string()) fail("'user' is required");
  validate_user_id(request["user"].get<std::string>());
  const std::string user = canonical_user_id(request["user"].get<std::string>());
  PersonalizeOptions p = options_from(request, o_.chat_format);
  if (records.empty()) fail("no interactions: send them inline ('interactions') or as a file");
  if (static_cast<int64_t>(records.size()) > o_.max_records_bytes) {
    fail("the interactions take {} bytes; at most {} are accepted", records.size(),
         o_.max_records_bytes);
  }
  JobRecord job;
  job.id = new_job_id();
  job.state = "queued";
  job.domain = domain;
  job.user = user;
  job.owner = owner;
  job.request_json =
      json{
          {"domain", domain}, {"user", user}, {"options", request.value("options", json::object())}}
          .dump();
  job.progress_json = json{{"message", "queued"}}.dump();
  const fs::path dir = store_.job_dir(job.id);
  fs::create_directories(dir);
  const fs::path file = dir / kRecordsFile;
  try {
    write_file_atomic(file, records);
    // Everything the pipeline checks before training, now, so bad input is a 400 and not a
    // failed job: the records, the user, enough conversations.
    DomainUser u = load_domain_user(domain, file, user);
    // ...and what is left once screening drops flagged records (as the job will).
    fs::path screened = file;
    int64_t flagged = 0;
    if (o_.screen_patterns != nullptr) {
      screened = dir / "screened.jsonl";
      flagged =
          static_cast<int64_t>(screen_records(file, *o_.screen_patterns, screened).findings.size());
    }
    try {
      if (screened != file) u = load_domain_user(domain, screened, user);
      build_personal_examples(u, screened, p.heldout_share);
    } catch (const Error& e) {
      if (flagged == 0) throw;
      fail(
          "{} (after screening left out {} flagged record{}: see bitdelta screen, "
          "docs/safety.md)",
          e.what(), flagged, flagged == 1 ? "" : "s");
    }
    if (screened != file) fs::remove(screened);
  } catch (const Error& e) {
    fs::remove_all(dir);
    std::string message = e.what();
    for (const fs::path& f : {file, dir / "screened.jsonl"}) {
      for (size_t at; (at = message.find(f.string())) != std::string::npos;) {
        message.replace(at, f.string().size(), "interactions");
      }
    }
    fail("{}", message);
  }
  store_.put_job(job);
  if (o_.audit != nullptr) {
    o_.audit->append({"personalize",
                      owner,
                      domain + "/" + user,
                      "",
                      {{"job_id", job.id}, {"records_bytes", records.size()}}});
  }
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(job.id);
  }
  wake_.notify_all();
  return *store_.find_job(job.id);
}

std::optional<JobRecord> JobRunner::find(const std::string& id) const {
  return store_.find_job(id);
}

bool JobRunner::cancel(const std::string& id) {
  std::unique_lock lock(mutex_);
  std::optional<JobRecord> job = store_.find_job(id);
  if (!job || terminal(job->state)) return false;
  if (running_ == id) {
    cancel_running_ = true;  // the worker records the state once the pipeline stops
    return true;
  }
  std::erase(queue_, id);
  job->state = "cancelled";
  job->progress_json = json{{"message", "cancelled before it started"}}.dump();
  store_.put_job(*job);
  if (o_.audit != nullptr) {
    o_.audit->append({"cancel", job->owner, job->domain + "/" + job->user, "", {{"job_id", id}}});
  }
  fs::remove_all(store_.job_dir(id));
  lock.unlock();
  publish(id, to_json(*job).dump(), true);
  return true;
}

bool JobRunner::idle() const {
  std::lock_guard lock(mutex_);
  return queue_.empty() && running_.empty();
}

void JobRunner::publish(const std::string& id, std::string data, bool final) {
  {
    std::lock_guard lock(mutex_);
    Stream& s = streams_[id];
    s.events.push_back({s.next++, std::move(data)});
    if (s.events.size() > kKeptEvents) s.events.erase(s.events.begin());
    s.finished = s.finished || final;
  }
  progress_.notify_all();
}

std::vector<JobRunner::Event> JobRunner::events(const std::string& id, int64_t after, int wait_ms,
                                                bool* finished) {
  std::unique_lock lock(mutex_);
  auto ready = [&] {
    auto it = streams_.find(id);
    return stopping_ || (it != streams_.end() &&
                         (it->second.finished ||
                          (!it->second.events.empty() && it->second.events.back().seq > after)));
  };
  progress_.wait_for(lock, std::chrono::milliseconds(wait_ms), ready);
  std::vector<Event> out;
  auto it = streams_.find(id);
  if (it != streams_.end()) {
    for (const Event& e : it->second.events) {
      if (e.seq > after) out.push_back(e);
    }
    *finished = it->second.finished;
  } else {
    lock.unlock();
    std::optional<JobRecord> job = store_.find_job(id);
    *finished = !job || terminal(job->state);
  }
  return out;
}

void JobRunner::work() {
  lower_priority();
  for (;;) {
    std::string id;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      id = queue_.front();
      queue_.pop_front();
      running_ = id;
      cancel_running_ = false;
    }
    std::optional<JobRecord> job = store_.find_job(id);
    if (job && !terminal(job->state)) run(*job);
    std::lock_guard lock(mutex_);
    running_.clear();
  }
}

void JobRunner::run(JobRecord job) {
  const fs::path dir = store_.job_dir(job.id);
  const json request = json::parse(job.request_json);
  PersonalizeOptions p;
  try {
    p = options_from(request, o_.chat_format);
  } catch (const Error& e) {
    job.state = "failed";
    job.error = e.what();
    store_.put_job(job);
    publish(job.id, to_json(job).dump(), true);
    return;
  }
  auto base = o_.bases.find(job.domain);
  if (base == o_.bases.end()) base = o_.bases.find("");
  p.base = base->second;
  p.domain = job.domain;
  p.user = job.user;
  p.data = dir / kRecordsFile;
  p.work_dir = dir / "work";
  p.resume = fs::exists(p.work_dir);
  p.store = &store_;
  p.job_id = job.id;
  p.signing_key = o_.signing_key;
  p.audit = o_.audit;
  p.screen_patterns = o_.screen_patterns;
  p.safety_probes = o_.safety_probes;
  p.require_consent = o_.require_consent;
  p.safety_policy = o_.safety_policy;
  p.actor = job.owner;
  // The version is fixed when the job first runs; after a crash it may already be registered.
  if (!job.adapter_id.empty()) {
    const AdapterId id = AdapterId::parse(job.adapter_id);
    if (std::optional<AdapterRecord> r = store_.find(id)) {
      const json meta = json::parse(r->metadata_json, nullptr, false);
      const json pers =
          meta.is_object() && meta.contains("personalization")
              ? json::parse(meta["personalization"].get<std::string>(), nullptr, false)
              : json();
      if (pers.is_object() && pers.value("job_id", "") == job.id) {
        job.state = "succeeded";
        job.result_json = json{{"adapter_id", job.adapter_id}, {"recovered", true}}.dump();
        store_.put_job(job);
        fs::remove_all(dir);
        publish(job.id, to_json(job).dump(), true);
        return;
      }
      job.adapter_id.clear();  // taken by another upload meanwhile: take the next version
    }
  }
  if (job.adapter_id.empty()) {
    job.adapter_id =
        AdapterId{job.domain, job.user, next_adapter_version(store_, job.domain, job.user)}
            .to_string();
  }
  p.version = AdapterId::parse(job.adapter_id).version;
  job.state = "running";
  store_.put_job(job);
  publish(job.id, to_json(job).dump(), false);

  auto last_saved = std::chrono::steady_clock::now() - std::chrono::seconds(10);
  std::string last_stage;
  try {
    const PersonalizeResult r = personalize(
        p,
        [&](const PersonalizeEvent& e) {
          json progress = {{"stage", e.stage},
                           {"stage_index", e.stage_index},
                           {"stages", e.stages},
                           {"message", e.message}};
          if (e.steps > 0) {
            progress["step"] = e.step;
            progress["steps"] = e.steps;
          }
          if (e.loss != 0) progress["loss"] = e.loss;
          if (e.eta_s > 0) progress["eta_s"] = e.eta_s;
          job.progress_json = progress.dump();
          publish(
              job.id,
              json{{"object", "personalization.job.event"}, {"id", job.id}, {"progress", progress}}
                  .dump(),
              false);
          // The registry sees at most one update a second, and every stage change.
          const auto now = std::chrono::steady_clock::now();
          if (e.stage != last_stage || now - last_saved >= std::chrono::seconds(1)) {
            last_stage = e.stage;
            last_saved = now;
            store_.put_job(job);
          }
        },
        &cancel_running_, pool_);
    json result = r.to_json();
    result.erase("adapter_file");
    job.state = "succeeded";
    job.result_json = result.dump();
    fs::remove_all(dir);  // the user's records and the work files are not kept
  } catch (const Cancelled&) {
    if (stopping_) {
      // The server is shutting down: the job continues from its checkpoint next start.
      job.state = "queued";
      job.progress_json =
          json{{"message", "interrupted by a server shutdown; resumes on restart"}}.dump();
      store_.put_job(job);
      return;
    }
    job.state = "cancelled";
    job.progress_json = json{{"message", "cancelled"}}.dump();
    fs::remove_all(dir);
  } catch (const SafetyGateFailed& e) {
    job.state = "failed";
    job.error = e.what();
    job.result_json = json{{"safety", e.report}}.dump();  // the gate's whole report
    fs::remove_all(dir);
  } catch (const std::exception& e) {
    job.state = "failed";
    job.error = e.what();
    fs::remove_all(dir);  // the reason is kept; the user's records are not
  }
  store_.put_job(job);
  if (o_.audit != nullptr && job.state != "succeeded") {
    o_.audit->append({job.state == "cancelled" ? "cancel" : "fail",
                      job.owner,
                      job.domain + "/" + job.user,
                      "",
                      {{"job_id", job.id}, {"error", job.error}}});
  }
  publish(job.id, to_json(job).dump(), true);
}

}  // namespace bitdelta
