// The server's internals, shared by the files that implement it: server.cc (start-up, the
// OpenAI-compatible generation routes, adapters), server_trust.cc (consent, audit, the upload
// safety gate, stored-adapter checks, adapter records) and server_jobs.cc (personalization jobs).
// Not part of the API: only src/serve/ includes it.
#pragma once

#include <fmt/format.h>
#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>

#include "delta/adapter.h"
#include "delta/adapter_id.h"
#include "delta/signature.h"
#include "domain/domain.h"
#include "domain/records.h"
#include "safety/safety_gate.h"
#include "safety/screening.h"
#include "serve/adapter_cache.h"
#include "serve/auth.h"
#include "serve/http_error.h"
#include "serve/jobs.h"
#include "serve/metrics.h"
#include "serve/scheduler.h"
#include "serve/server.h"
#include "serve/structured.h"
#include "store/adapter_store.h"
#include "store/audit_log.h"
#include "tokenizer/chat_template.h"
#include "util/error.h"
#include "util/files.h"
#include "util/log.h"
#include "util/sha256.h"

namespace bitdelta {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

inline std::string random_id(const char* prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}-{:016x}", prefix, rng());
}

inline int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One base model and what serves it: its tokenizer and chat template, its adapters' cache and
// its own scheduler (engine thread). Every base's scheduler runs its parallel loops on the one
// shared pool of model threads, where loops take turns: two busy bases split the cores about
// evenly, and an idle base costs nothing.
struct Base {
  std::string name;
  std::filesystem::path dir;
  std::unique_ptr<Transformer> model;
  std::optional<Tokenizer> tokenizer;
  std::optional<ChatTemplate> chat;
  std::vector<int32_t> stop_ids;
  std::optional<GrammarCache> grammars;  // response_format and tool-call grammars
  std::optional<AdapterCache> cache;
  std::optional<Scheduler> scheduler;
  PrefixCacheStats prefix_reported;  // what /metrics has counted so far (under its lock)
};

struct Server::Impl {
  ServeOptions o;
  std::vector<std::unique_ptr<Base>> bases;  // the first is the default
  std::map<std::string, Base*> domain_base;  // --domain-base
  std::optional<AdapterStore> store;
  std::optional<ApiKeys> keys;
  MetricsRegistry metrics;
  ThreadPool& pool = default_thread_pool();
  std::optional<SigningKey> signer;    // --signing-key: signs the adapters jobs create
  std::optional<TrustedKeys> trusted;  // --trusted-keys
  std::mutex verified_mutex;
  std::mutex metrics_mutex;                 // the prefix-cache counters' deltas at /metrics
  std::set<std::string> verified;           // blobs checked since start (verify_stored)
  std::optional<AuditLog> audit;            // the store's audit.jsonl
  std::optional<ProbeSet> probes;           // the safety gate's
  std::optional<ScreenPatterns> screening;  // jobs' training-data screening
  std::mutex gate_mutex;                    // one upload gate at a time, on its own thread
  std::optional<JobRunner> jobs;            // after store: destroyed (stopped) before it
  httplib::Server http;
  int port = 0;
  std::atomic<bool> stopping{false};
  std::atomic<int64_t> in_flight{0};

  CounterFamily requests =
      metrics.counter_family("bitdelta_http_requests_total", "HTTP requests by endpoint and status",
                             {"endpoint", "status"});
  Counter prompt_tokens =
      metrics.counter("bitdelta_prompt_tokens_total", "Prompt tokens processed");
  Counter completion_tokens =
      metrics.counter("bitdelta_completion_tokens_total", "Tokens generated");
  Counter cancelled_by_client = metrics.counter("bitdelta_requests_cancelled_total",
                                                "Requests cancelled because the client went away");

  // A write to the client failed (it went away): cancel its request, which frees its sequence,
  // and end the content provider (false).
  bool client_left(RequestChannel& channel) {
    cancelled_by_client.inc();
    channel.cancel();
    return false;
  }
  Gauge queue_gauge = metrics.gauge("bitdelta_queue_length", "Requests waiting for a batch slot");
  Gauge active_gauge = metrics.gauge("bitdelta_active_sequences", "Sequences in the running batch");
  Histogram batch_size = metrics.histogram("bitdelta_batch_sequences", "Sequences per forward pass",
                                           {1, 2, 4, 8, 16, 32, 64});
  HistogramFamily base_batch_size = metrics.histogram_family("bitdelta_base_batch_sequences",
                                                             "Sequences per forward pass, by base",
                                                             {"base"}, {1, 2, 4, 8, 16, 32, 64});
  GaugeFamily base_queue = metrics.gauge_family(
      "bitdelta_base_queue_length", "Requests waiting for a batch slot, by base", {"base"});
  GaugeFamily base_active = metrics.gauge_family(
      "bitdelta_base_active_sequences", "Sequences in the running batch, by base", {"base"});
  // The prefix cache, by base (docs/prefix-cache.md).
  CounterFamily prefix_lookups = metrics.counter_family(
      "bitdelta_prefix_cache_lookups_total", "Requests looked up in the prefix cache", {"base"});
  CounterFamily prefix_lookup_tokens = metrics.counter_family(
      "bitdelta_prefix_cache_lookup_tokens_total",
      "Prompt tokens in whole blocks that the prefix cache could have served", {"base"});
  CounterFamily prefix_hit_tokens = metrics.counter_family(
      "bitdelta_prefix_cache_hit_tokens_total",
      "Prompt tokens restored from the prefix cache instead of prefilled", {"base"});
  CounterFamily prefix_evictions = metrics.counter_family(
      "bitdelta_prefix_cache_evicted_blocks_total", "Prefix-cache blocks evicted (LRU)", {"base"});
  GaugeFamily prefix_hit_ratio = metrics.gauge_family(
      "bitdelta_prefix_cache_hit_ratio",
      "Hit tokens / lookup tokens since start (0 before any lookup)", {"base"});
  GaugeFamily prefix_bytes = metrics.gauge_family("bitdelta_prefix_cache_bytes",
                                                  "Bytes held by the prefix cache", {"base"});
  GaugeFamily prefix_blocks = metrics.gauge_family("bitdelta_prefix_cache_blocks",
                                                   "Blocks held by the prefix cache", {"base"});
  Histogram ttft =
      metrics.histogram("bitdelta_time_to_first_token_seconds",
                        "From request to its first generated text", default_latency_buckets());
  Histogram itl = metrics.histogram("bitdelta_inter_token_latency_seconds",
                                    "Between consecutive streamed pieces of a request",
                                    exponential_buckets(0.001, 2, 14));

  explicit Impl(const ServeOptions& options);

  Base* find_base(const std::string& name) const;
  std::string base_names() const;
  // The base an adapter runs on: the one whose fingerprint it carries (the domain's base first).
  Base* base_of(const AdapterRecord& r) const;

  // Who is calling: 401 without a valid key (when keys are configured).
  Principal authenticate(const httplib::Request& req) const;

  // A stored adapter the principal may use, or 404 — the same answer whether it does not exist
  // or belongs to someone else, so existence is never revealed.
  AdapterRecord resolve(const Principal& who, const std::string& name);

  static json parse_body(const httplib::Request& req);

  template <typename T>
  static std::optional<T> field(const json& body, const char* name, json::value_t type1,
                                json::value_t type2 = json::value_t::null) {
    auto it = body.find(name);
    if (it == body.end() || it->is_null()) return std::nullopt;
    const bool number = type1 == json::value_t::number_float;
    if (number ? !it->is_number() : (it->type() != type1 && it->type() != type2)) {
      http_fail(400, fmt::format("'{}' has the wrong type", name));
    }
    return it->get<T>();
  }

  void routes();

  // PUT/GET /v1/consent/{user}: users' consent to personalization (docs/consent.md). A key may
  // read and set the consent of the users and domains it may personalize.
  void consent_routes();

  // POST /v1/personalize, /v1/jobs...: personalization jobs (docs/jobs.md).
  void job_routes();

  // Before a stored adapter is first loaded: its blob still has the bytes the registry named it
  // by, and (with --require-signatures) a valid signature by a trusted key. Checked once per blob.
  void verify_stored(const AdapterRecord& r, const std::string& name);

  // GET /v1/audit: admins see every entry; a tenant sees the entries of the adapters and jobs it
  // may list. Filters: domain, user, action, after (entry number), limit (default 100, at most
  // 1000).
  void audit_route();

  // A job the principal may see, or 404 (the same whether it does not exist or is someone
  // else's).
  JobRecord visible_job(const Principal& who, const std::string& id) const;

  AdapterRecord resolve_any_base(const Principal& who, const std::string& name) const;

  // The safety gate on uploaded bytes, against the base the adapter was made for (its domain's
  // first, then the others). The check loads its own view of that base (the weights are shared
  // mappings) and runs on one thread of its own, so serving's forward passes are untouched.
  SafetyReport gate_upload(const std::string& bytes, const AdapterId& id);

  json record_json(const AdapterRecord& r) const;

  // Wraps a handler: counts it, turns HttpError/Error into OpenAI-shaped answers.
  template <typename Fn>
  void handle(const char* method, const char* pattern, const char* endpoint, Fn fn) {
    auto wrapped = [this, endpoint, fn](const httplib::Request& req, httplib::Response& res) {
      try {
        if (stopping) http_fail(503, "the server is shutting down", "server_error");
        fn(req, res);
      } catch (const HttpError& e) {
        write_error(res, e);
      } catch (const std::exception& e) {
        write_error(res, {500, e.what(), "server_error", ""});
      }
      if (res.status == -1) res.status = 200;  // httplib fills it in after the handler otherwise
      if (res.status == 429) res.set_header("Retry-After", "1");
      requests.labels({endpoint, std::to_string(res.status)}).inc();
    };
    if (std::string_view(method) == "GET")
      http.Get(pattern, wrapped);
    else if (std::string_view(method) == "POST")
      http.Post(pattern, wrapped);
    else if (std::string_view(method) == "PUT")
      http.Put(pattern, wrapped);
    else
      http.Delete(pattern, wrapped);
  }

  // POST /v1/completions and /v1/chat/completions (server_generate.cc).
  void generate(const httplib::Request& req, httplib::Response& res, bool chat_request);
  // POST /tokenize and /detokenize, as llama.cpp's server has them.
  void token_routes();
};

}  // namespace bitdelta
