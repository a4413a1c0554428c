// bitdelta serve: the OpenAI-compatible multi-tenant server.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <thread>

#include "cli/commands.h"
#include "ops/sign_matmul.h"
#include "serve/server.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace bitdelta::cli {

CLI::App* register_serve(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "serve",
      "Serve one base model and every user's adapter through an OpenAI-compatible HTTP API: "
      "/v1/chat/completions and /v1/completions (model = an adapter id domain/user/vN, "
      "domain/user for its latest version, or the base model's folder name; stream: true for "
      "server-sent events), /v1/models, /v1/adapters (upload, list, inspect, delete), /health, "
      "/metrics, and personalization jobs: POST /v1/personalize, GET/DELETE /v1/jobs/{id}, GET "
      "/v1/jobs/{id}/events (docs/jobs.md). Requests of different users decode together in one "
      "batch. SIGTERM or Ctrl-C "
      "finishes the requests in flight, then exits");
  auto o = std::make_shared<ServeOptions>();
  auto threads = std::make_shared<int>(0);
  auto models = std::make_shared<std::vector<std::string>>();
  auto domain_bases = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--model", *models,
                  "Base model folder (Hugging Face layout), or NAME=DIR; repeat for several "
                  "bases. Requests name a base (default name: the folder's), or an adapter, "
                  "which runs on the base whose fingerprint it carries")
      ->required();
  cmd->add_option("--domain-base", *domain_bases,
                  "DOMAIN=NAME: the base that personalizes DOMAIN (education, gaming, defi, "
                  "general); repeatable. Unmapped domains use the first --model");
  cmd->add_option("--store", o->store, "Adapter store folder (created if missing)")->required();
  cmd->add_option("--host", o->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port,
                  "TCP port, 1-65535 (0: any free port; the real one is printed at start). A port "
                  "already in use is an error")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--api-keys", o->api_keys,
                  "JSON file of API keys and their scopes (admin, or a tenant limited to users/"
                  "domains). Without it there is no authentication and only loopback hosts are "
                  "allowed")
      ->check(CLI::ExistingFile);
  cmd->add_option("--max-batch", o->max_batch, "Sequences decoded together")->capture_default_str();
  cmd->add_option("--max-queue", o->max_queue,
                  "Requests that may wait beyond the batch; more get 429 with Retry-After")
      ->capture_default_str();
  cmd->add_option("--prefill-chunk", o->prefill_chunk,
                  "Prompt tokens per sequence per step, so long prompts do not stall others")
      ->capture_default_str();
  cmd->add_option(
         "--prefill-budget", o->prefill_budget,
         "Prompt tokens per forward pass across all requests: running streams keep "
         "decoding while new prompts prefill in slices of this size, oldest first "
         "(smaller: steadier inter-token latency, later first tokens); a forward with no stream "
         "decoding takes the waiting prompts whole")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--batch-wait-ms", o->batch_wait_ms,
                  "When the server is idle, how long the first request to arrive waits for more "
                  "(or until --max-batch are in), so users arriving together prefill in one "
                  "forward and start streaming together (0: start at once)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1000.0));
  cmd->add_option("--prefix-cache-mb", o->prefix_cache_mb,
                  "Memory per base for the keys and values of prompt prefixes already seen, "
                  "reused by requests of the same base or adapter that start the same way "
                  "(least recently used go first; 0: off; docs/prefix-cache.md)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--prefix-block", o->prefix_block,
                  "Tokens per prefix-cache block: prefixes are matched in whole blocks")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--adapter-cache-mb", o->adapter_cache_mb,
                  "Memory for loaded adapters (least recently used go first; adapters in use stay)")
      ->capture_default_str();
  cmd->add_option("--max-body-mb", o->max_body_bytes, "Largest request body (uploads included), MiB")
      ->capture_default_str()
      ->transform([](std::string v) { return std::to_string(std::stoll(v) << 20); });
  cmd->add_option("--max-prompt-tokens", o->max_prompt_tokens,
                  "Longest prompt accepted (0: the model's context)")
      ->capture_default_str();
  cmd->add_option("--max-tokens-limit", o->max_tokens_limit, "Largest max_tokens a request may ask")
      ->capture_default_str();
  cmd->add_option("--threads", *threads, "Worker threads for the model (default: all cores)");
  cmd->add_option("--job-threads", o->job_threads,
                  "Threads for personalization jobs (one job at a time, at a lower priority than "
                  "serving); 0 turns POST /v1/personalize off")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  cmd->add_option("--signing-key", o->signing_key,
                  "Key folder (bitdelta keys generate): signs every adapter the server creates "
                  "(personalization jobs); the registry keeps the signatures");
  cmd->add_option("--trusted-keys", o->trusted_keys,
                  "Folder of trusted public keys (*.json): signatures by these keys count as "
                  "trusted (GET /v1/adapters/{id} shows each adapter's signer and status)");
  cmd->add_flag("--require-signatures", o->require_signatures,
                "Uploads must carry a valid signature by a trusted key (multipart part "
                "'signature' or the X-BitDelta-Signature header), else 403 naming the check that "
                "failed; stored adapters are re-verified before they are first loaded");
  cmd->add_flag("--require-consent", o->require_consent,
                "Personalize only users whose consent is recorded (PUT /v1/consent/{user}); "
                "without it, only a withdrawn consent refuses (docs/consent.md)");
  cmd->add_flag("--safety-gate", o->safety_gate,
                "Run the safety gate (docs/safety.md) on uploads too: an adapter that fails is "
                "refused with 422 and the reasons (personalization jobs always run it)");
  cmd->add_option("--safety-probes", o->safety_probes,
                  "The gate's probe set (JSONL; default: the built-in set)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--screen-patterns", o->screen_patterns,
                  "The list jobs screen interaction records with (JSON; default: the built-in "
                  "jailbreak / prompt-injection list)")
      ->check(CLI::ExistingFile);
  add_safety_policy_options(cmd, o->safety_policy);
  cmd->add_option("--chat-format", o->personalize_chat_format,
                  "Default chat format of personalization jobs: auto (the base's own template) or "
                  "plain/qwen3/chatml/llama3/llama2/mistral (a job's options.chat_format wins)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "plain", "qwen3", "chatml", "llama3", "llama2", "mistral"}));
  auto exact = std::make_shared<bool>(false);
  add_precision_flags(cmd, *exact);
  auto quant = std::make_shared<QuantFlags>();
  add_quant_flags(cmd, *quant);
  runner = [=] {
    if (*threads > 0) set_default_threads(*threads);
    for (const std::string& m : *models) {
      const size_t eq = m.find('=');
      std::string name;
      std::filesystem::path dir = m;
      if (eq != std::string::npos && !std::filesystem::is_directory(m)) {
        name = m.substr(0, eq);
        dir = m.substr(eq + 1);
      }
      if (!std::filesystem::is_directory(dir)) {
        fail("--model {}: '{}' is not a folder (give DIR or NAME=DIR)", m, dir.string());
      }
      o->models.emplace_back(name.empty() ? base_folder_name(dir) : name, dir);
    }
    o->model = o->models.front().second;
    for (const std::string& d : *domain_bases) {
      const size_t eq = d.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == d.size()) {
        fail("--domain-base {}: give DOMAIN=NAME, e.g. education=tutor", d);
      }
      o->domain_bases[d.substr(0, eq)] = d.substr(eq + 1);
    }
    set_exact_sign_pass(*exact);
    o->quant = quant_options(*quant);
    // SIGTERM/SIGINT only raise a flag (any thread may receive them: libraries start threads
    // of their own); a watcher thread sees it and stops the server gracefully.
    static std::atomic<bool> signalled{false};
    struct sigaction action {};
    action.sa_handler = [](int) { signalled = true; };
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, nullptr);
    sigaction(SIGINT, &action, nullptr);
    Server server(*o);
    fmt::print("serving {} on http://{}:{}\n", fmt::join(server.base_names(), ", "), o->host,
               server.port());
    std::fflush(stdout);
    std::atomic<bool> ended{false};
    std::thread watcher([&] {
      while (!signalled && !ended) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (!signalled) return;
      fmt::print(stderr, "draining: finishing requests in flight, then exiting\n");
      server.stop();
    });
    server.run();
    ended = true;
    watcher.join();
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli
