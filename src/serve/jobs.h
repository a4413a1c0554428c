// Personalization jobs beside serving (docs/jobs.md): submitted over HTTP, persisted in the
// store's registry, run one at a time on their own bounded thread pool, followed by polling or
// server-sent events, cancellable, and resumed from their last checkpoint after a restart (even
// kill -9). An adapter enters the store only when its job succeeded.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "safety/safety_gate.h"
#include "safety/screening.h"
#include "store/adapter_store.h"
#include "store/audit_log.h"
#include "util/keys.h"
#include "util/thread_pool.h"

namespace bitdelta {

struct JobRunnerOptions {
  // The base each domain personalizes ("" key: the default for every domain).
  std::map<std::string, std::filesystem::path> bases;
  int threads = 1;                   // the jobs' thread budget (serving keeps the rest)
  std::string chat_format = "auto";  // default --chat-format of jobs
  int64_t max_records_bytes = 64 << 20;
  const SigningKey* signing_key = nullptr;  // signs every adapter a job registers
  AuditLog* audit = nullptr;                // submissions, creations, signatures, ends
  // Every job screens its records and runs the safety gate (docs/safety.md); null probes: the
  // built-in set.
  const ScreenPatterns* screen_patterns = nullptr;
  const ProbeSet* safety_probes = nullptr;
  bool require_consent = false;  // docs/consent.md
  SafetyPolicy safety_policy;    // the gate's limits (serve --max-kl ...)
};

class JobRunner {
 public:
  // Re-queues jobs a previous process left queued or running (those resume from their
  // checkpoint) and starts the worker thread.
  JobRunner(AdapterStore& store, JobRunnerOptions options);
  ~JobRunner();  // stops the worker: a running job stops at its next step and resumes next time

  // Validates the request ({"domain", "user", "options"}) and the records (JSONL text) as the
  // pipeline will (Error with the reason: bad records with their line and field, too few
  // conversations, unknown options), saves the records in the job's folder and queues it.
  JobRecord submit(const nlohmann::json& request, const std::string& records_jsonl,
                   const std::string& owner);
  std::optional<JobRecord> find(const std::string& id) const;
  // Cancels a queued or running job; false when it had already finished.
  bool cancel(const std::string& id);

  // The job as the API shows it.
  static nlohmann::json to_json(const JobRecord& job);

  // Progress events of a job after `after` (its sequence numbers start at 1), waiting up to
  // `wait_ms` for one; `finished` tells whether the job has ended (no more events will come).
  struct Event {
    int64_t seq = 0;
    std::string data;  // JSON
  };
  std::vector<Event> events(const std::string& id, int64_t after, int wait_ms, bool* finished);

  bool idle() const;  // nothing queued or running

 private:
  void work();
  void run(JobRecord job);
  void publish(const std::string& id, std::string data, bool final);

  AdapterStore& store_;
  JobRunnerOptions o_;
  ThreadPool pool_;
  mutable std::mutex mutex_;
  std::condition_variable wake_, progress_;
  std::deque<std::string> queue_;
  std::string running_;
  std::atomic<bool> cancel_running_{false}, stopping_{false};
  struct Stream {
    std::vector<Event> events;  // the latest few hundred
    int64_t next = 1;
    bool finished = false;
  };
  std::map<std::string, Stream> streams_;
  std::thread worker_;
};

}  // namespace bitdelta
