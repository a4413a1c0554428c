// The OpenAI-compatible HTTP server: one process, one base model, every user's adapter. Requests
// name an adapter (or the base) as their `model`; the scheduler batches all users together.
// API contract: the HTTP section of ../shared/design/ARCHITECTURE.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/quantized_base.h"
#include "safety/safety_gate.h"

namespace bitdelta {

// The folder's name ("Qwen3-0.6B" for /models/Qwen3-0.6B/), the default name of a base.
std::string base_folder_name(const std::filesystem::path& dir);

struct ServeOptions {
  std::filesystem::path model, store;  // model: the one base, when `models` is empty
  // Several bases, each NAME=DIR; requests name a base, or an adapter, which runs on the base
  // whose fingerprint it carries. The first is the default base of personalization jobs.
  std::vector<std::pair<std::string, std::filesystem::path>> models;
  // Which base personalizes (and is tried first for) each domain: domain -> base name.
  std::map<std::string, std::string> domain_bases;
  // Every base served on a quantized copy of its matrices (model/quantized_base.h).
  QuantOptions quant;
  std::string host = "127.0.0.1";
  int port = 8080;                       // 0: any free port (see Server::port)
  std::filesystem::path api_keys;        // empty: no authentication (loopback hosts only)
  int64_t max_batch = 8;
  int64_t max_queue = 64;
  int64_t prefill_chunk = 128;
  int64_t prefill_budget = 128;   // prompt tokens per forward across sequences (scheduler.h)
  double batch_wait_ms = 10;      // an idle server's wait for a burst to gather (scheduler.h)
  int64_t prefix_cache_mb = 512;  // KV of prompt prefixes kept for reuse (0: none)
  int64_t prefix_block = 32;      // tokens per prefix-cache block
  int64_t adapter_cache_mb = 1024;
  int64_t max_body_bytes = 512 << 20;    // uploads included
  int64_t max_prompt_tokens = 0;         // 0: the model's context
  int64_t max_tokens_limit = 4096;       // the largest max_tokens a request may ask for
  int http_threads = 16;
  // Personalization jobs (POST /v1/personalize): threads of their own pool, at a lower priority
  // than serving; 0 turns jobs off.
  int job_threads = 1;
  std::string personalize_chat_format = "auto";  // jobs' default --chat-format
  // Signatures (docs/signatures.md): the key that signs the adapters jobs create; the public keys
  // whose signatures count; and whether uploads and stored adapters must carry a valid one.
  std::filesystem::path signing_key, trusted_keys;
  bool require_signatures = false;
  // Consent (docs/consent.md): personalization needs a recorded grant, not just no withdrawal.
  bool require_consent = false;
  // The safety gate (docs/safety.md) on uploads too (jobs always run it), with this probe set
  // (empty: the built-in one) and these limits. Jobs screen their records with screen_patterns
  // (empty: the built-in list).
  bool safety_gate = false;
  std::filesystem::path safety_probes, screen_patterns;
  SafetyPolicy safety_policy;
};

class Server {
 public:
  // Loads the model, opens the store and binds the socket; throws Error with the reason.
  explicit Server(const ServeOptions& options);
  ~Server();
  int port() const;  // the bound port
  std::vector<std::string> base_names() const;
  // Serves until stop(): then refuses new work (503), finishes every accepted request, returns.
  void run();
  void stop();  // safe from a signal-watching thread

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bitdelta
