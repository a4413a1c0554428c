#include "serve/server_impl.h"

namespace bitdelta {

std::string base_folder_name(const std::filesystem::path& dir) {
  std::string name = dir.filename().string();
  if (name.empty()) name = dir.parent_path().filename().string();
  return name;
}

Server::Impl::Impl(const ServeOptions& options) : o(options) {
  const bool loopback = o.host == "127.0.0.1" || o.host == "localhost" || o.host == "::1";
  if (o.api_keys.empty()) {
    if (!loopback) {
      fail(
          "refusing to serve on {} without --api-keys: anyone could use and change every "
          "adapter; give --api-keys FILE or bind to 127.0.0.1",
          o.host);
    }
    keys.emplace(ApiKeys::none());
    spdlog::warn("no --api-keys: authentication is off; listening on loopback only ({})", o.host);
  } else {
    keys.emplace(ApiKeys::load(o.api_keys));
  }
  std::vector<std::pair<std::string, std::filesystem::path>> models = o.models;
  if (models.empty()) models.emplace_back(base_folder_name(o.model), o.model);
  for (const auto& [name, dir] : models) {
    if (name.empty() || name.find('/') != std::string::npos) {
      fail("base name '{}' must be non-empty and without '/' (adapter ids use it)", name);
    }
    for (const auto& b : bases) {
      if (b->name == name) fail("two bases are named '{}'; name them apart with NAME=DIR", name);
    }
    auto b = std::make_unique<Base>();
    b->name = name;
    b->dir = dir;
    b->model = Transformer::load(dir, o.quant);
    b->tokenizer.emplace(Tokenizer::from_folder(dir));
    try {
      b->chat.emplace(ChatTemplate::detect(*b->tokenizer, b->model->config().model_type));
    } catch (const Error&) {
      // No supported template: /v1/chat/completions answers 400, completions still work.
    }
    if (b->tokenizer->eos_id()) b->stop_ids.push_back(*b->tokenizer->eos_id());
    for (const char* end : {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>"}) {
      if (auto id = b->tokenizer->token_id(end)) b->stop_ids.push_back(*id);
    }
    b->grammars.emplace(*b->tokenizer, b->stop_ids);
    b->cache.emplace(*b->model, static_cast<uint64_t>(o.adapter_cache_mb) << 20, metrics, pool,
                     name);
    b->scheduler.emplace(
        *b->model, *b->tokenizer,
        SchedulerOptions{o.max_batch, o.max_queue, o.prefill_chunk, o.prefill_budget,
                         static_cast<uint64_t>(o.prefix_cache_mb) << 20, o.prefix_block,
                         o.batch_wait_ms},
        pool);
    b->scheduler->on_batch = [this, child = base_batch_size.labels({name})](
                                 int64_t sequences, int64_t, double) mutable {
      batch_size.observe(static_cast<double>(sequences));
      child.observe(static_cast<double>(sequences));
    };
    bases.push_back(std::move(b));
  }
  for (const auto& [domain, name] : o.domain_bases) {
    if (!is_domain(domain))
      fail("--domain-base {}={}: unknown domain; {}", domain, name, kDomainNames);
    Base* found = find_base(name);
    if (found == nullptr) {
      fail("--domain-base {}={}: no base is named '{}' (bases: {})", domain, name, name,
           base_names());
    }
    domain_base[domain] = found;
  }
  store.emplace(AdapterStore::open(o.store));
  if (!o.signing_key.empty()) signer.emplace(SigningKey::load(o.signing_key));
  if (!o.trusted_keys.empty()) trusted.emplace(TrustedKeys::load(o.trusted_keys));
  if (o.require_signatures && !trusted) {
    fail("--require-signatures needs --trusted-keys DIR: the keys whose signatures count");
  }
  audit.emplace(store->dir() / "audit.jsonl", signer ? &*signer : nullptr);
  probes.emplace(o.safety_probes.empty() ? ProbeSet::builtin() : ProbeSet::load(o.safety_probes));
  for (const auto& b : bases) {  // a probe set that cannot run is an error now, not per upload
    try {
      check_probes_fit(*b->tokenizer, *probes, b->model->config().max_position_embeddings);
    } catch (const Error& e) {
      fail("the safety gate's probe set does not fit base '{}': {}", b->name, e.what());
    }
  }
  screening.emplace(o.screen_patterns.empty() ? ScreenPatterns::builtin()
                                              : ScreenPatterns::load(o.screen_patterns));
  if (o.job_threads > 0) {
    JobRunnerOptions jo;
    jo.bases[""] = bases.front()->dir;
    for (const auto& [domain, b] : domain_base) jo.bases[domain] = b->dir;
    jo.threads = o.job_threads;
    jo.chat_format = o.personalize_chat_format;
    jo.signing_key = signer ? &*signer : nullptr;
    jo.audit = &*audit;
    jo.screen_patterns = &*screening;
    jo.safety_probes = &*probes;
    jo.require_consent = o.require_consent;
    jo.safety_policy = o.safety_policy;
    jobs.emplace(*store, jo);
  }
  routes();
  http.set_payload_max_length(static_cast<size_t>(o.max_body_bytes));
  http.new_task_queue = [n = o.http_threads] { return new httplib::ThreadPool(n); };
  // httplib listens with a backlog of 5: a burst of new connections would see SYNs dropped
  // and retried a second later. Keep the listening socket and widen its backlog after bind.
  int listen_fd = -1;
  http.set_socket_options([&listen_fd](socket_t sock) {
    // Not httplib's default SO_REUSEPORT: with it a second server binds the same port and the
    // kernel splits connections between the two. SO_REUSEADDR only lets a restarted server
    // bind past connections left in TIME_WAIT; Linux still refuses a port that is listening.
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_fd = sock;
  });
  if (o.port < 0 || o.port > 65535) {
    fail("--port {} is not a TCP port: give 1-65535, or 0 for any free port", o.port);
  }
  if (o.port == 0) {
    port = http.bind_to_any_port(o.host);
  } else if (http.bind_to_port(o.host, o.port)) {
    port = o.port;
  } else {
    port = -1;
  }
  if (port < 0) {
    fail(
        "cannot listen on {}:{}: the port is in use (another server?) or the host is not an "
        "address of this machine; pick another --port, or 0 for any free port",
        o.host, o.port);
  }
  if (listen_fd >= 0) ::listen(listen_fd, 1024);
}

Base* Server::Impl::find_base(const std::string& name) const {
  for (const auto& b : bases) {
    if (b->name == name) return b.get();
  }
  return nullptr;
}

std::string Server::Impl::base_names() const {
  std::string out;
  for (const auto& b : bases) out += (out.empty() ? "" : ", ") + b->name;
  return out;
}

// The base an adapter runs on: the one whose fingerprint it carries (the domain's base first).
Base* Server::Impl::base_of(const AdapterRecord& r) const {
  if (auto it = domain_base.find(r.id.domain);
      it != domain_base.end() && it->second->cache->compatible(r.sha256, store->blob_path(r))) {
    return it->second;
  }
  for (const auto& b : bases) {
    if (b->cache->compatible(r.sha256, store->blob_path(r))) return b.get();
  }
  return nullptr;
}

// Who is calling: 401 without a valid key (when keys are configured).
Principal Server::Impl::authenticate(const httplib::Request& req) const {
  if (!keys->enabled()) return *keys->authenticate("");
  const std::string header = req.get_header_value("Authorization");
  auto token = parse_bearer(header);
  std::optional<Principal> p = token ? keys->authenticate(*token) : std::nullopt;
  sha256_thread_done();
  if (!p) {
    http_fail(401, "missing or invalid API key: send 'Authorization: Bearer <key>'",
              "authentication_error", "invalid_api_key");
  }
  return *p;
}

// A stored adapter the principal may use, or 404 — the same answer whether it does not exist
// or belongs to someone else, so existence is never revealed.
AdapterRecord Server::Impl::resolve(const Principal& who, const std::string& name) {
  const std::string not_found =
      fmt::format("The model '{}' does not exist or you do not have access to it.", name);
  AdapterId id;
  try {
    id = AdapterId::parse(name, /*allow_latest=*/true);
  } catch (const Error&) {
    http_fail(404, not_found, "invalid_request_error", "model_not_found");
  }
  if (!may_use(who, id)) http_fail(404, not_found, "invalid_request_error", "model_not_found");
  std::optional<AdapterRecord> r = store->find(id);
  if (!r) http_fail(404, not_found, "invalid_request_error", "model_not_found");
  return *r;
}

json Server::Impl::parse_body(const httplib::Request& req) {
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    http_fail(400, "the request body is not a JSON object");
  }
  return body;
}

void Server::Impl::routes() {
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(json{{"status", stopping ? "draining" : "ok"}}.dump(), "application/json");
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    int64_t queued = 0, active = 0;
    for (const auto& b : bases) {
      const SchedulerStats s = b->scheduler->stats();
      base_queue.labels({b->name}).set(static_cast<double>(s.queued));
      base_active.labels({b->name}).set(static_cast<double>(s.active));
      if (const PrefixCache* pc = b->scheduler->prefix_cache()) {
        std::lock_guard lock(metrics_mutex);
        const PrefixCacheStats p = pc->stats();
        PrefixCacheStats& r = b->prefix_reported;
        prefix_lookups.labels({b->name}).inc(static_cast<double>(p.lookups - r.lookups));
        prefix_lookup_tokens.labels({b->name}).inc(
            static_cast<double>(p.lookup_tokens - r.lookup_tokens));
        prefix_hit_tokens.labels({b->name}).inc(static_cast<double>(p.hit_tokens - r.hit_tokens));
        prefix_evictions.labels({b->name}).inc(
            static_cast<double>(p.evicted_blocks - r.evicted_blocks));
        r = p;
        prefix_hit_ratio.labels({b->name}).set(
            p.lookup_tokens > 0 ? static_cast<double>(p.hit_tokens) / p.lookup_tokens : 0.0);
        prefix_bytes.labels({b->name}).set(static_cast<double>(p.bytes));
        prefix_blocks.labels({b->name}).set(static_cast<double>(p.blocks));
      }
      queued += s.queued;
      active += s.active;
    }
    queue_gauge.set(static_cast<double>(queued));
    active_gauge.set(static_cast<double>(active));
    res.set_content(metrics.render(), std::string(kPrometheusContentType));
  });
  handle("GET", "/v1/models", "models",
         [this](const httplib::Request& req, httplib::Response& res) {
           const Principal who = authenticate(req);
           json data = json::array();
           for (const auto& b : bases) {
             json domains = json::array();
             for (const auto& [domain, db] : domain_base) {
               if (db == b.get()) domains.push_back(domain);
             }
             data.push_back({{"id", b->name},
                             {"object", "model"},
                             {"created", 0},
                             {"owned_by", "base"},
                             {"context_length", b->model->config().max_position_embeddings},
                             {"domains", domains}});
           }
           for (const AdapterRecord& r : store->list()) {
             if (!may_list(who, r.id)) continue;
             const Base* b = base_of(r);
             if (b == nullptr) continue;
             data.push_back({{"id", r.id.to_string()},
                             {"object", "model"},
                             {"created", 0},
                             {"owned_by", r.id.domain},
                             {"base", b->name},
                             {"context_length", b->model->config().max_position_embeddings}});
           }
           res.set_content(json{{"object", "list"}, {"data", data}}.dump(), "application/json");
         });
  handle(
      "POST", "/v1/completions", "completions",
      [this](const httplib::Request& req, httplib::Response& res) { generate(req, res, false); });
  handle("POST", "/v1/chat/completions", "chat",
         [this](const httplib::Request& req, httplib::Response& res) { generate(req, res, true); });
  handle(
      "POST", "/v1/adapters", "adapters",
      [this](const httplib::Request& req, httplib::Response& res) {
        const Principal who = authenticate(req);
        if (!req.has_param("id"))
          http_fail(400, "give the adapter id: POST /v1/adapters?id=domain/user/vN");
        AdapterId id;
        try {
          id = AdapterId::parse(req.get_param_value("id"));
        } catch (const Error& e) {
          http_fail(400, e.what());
        }
        if (!may_modify(who, id)) {
          http_fail(403, "this key may not upload adapters for that user or domain",
                    "permission_error");
        }
        // The adapter's bytes: the body, or the multipart part "file" (with its signature in the
        // part "signature"); a signature may also come in the X-BitDelta-Signature header.
        const std::string* bytes = &req.body;
        std::string file_part;
        std::optional<std::string> signature;
        if (req.is_multipart_form_data()) {
          if (!req.has_file("file"))
            http_fail(400, "a multipart upload needs a 'file' part (the .bdelta)");
          file_part = req.get_file_value("file").content;
          bytes = &file_part;
          if (req.has_file("signature")) signature = req.get_file_value("signature").content;
        }
        if (req.has_header("X-BitDelta-Signature"))
          signature = req.get_header_value("X-BitDelta-Signature");
        std::optional<SignatureCheck> check;
        if (signature || o.require_signatures) {
          check = check_adapter_signature(
              sha256_hex({reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()}),
              bytes->size(), signature, trusted ? &*trusted : nullptr);
          sha256_thread_done();
          // A signature that fails is refused even when none is required: it is never stored.
          if (check->status != SignatureStatus::kValid) {
            http_fail(403, fmt::format("signature check failed: {}", check->message),
                      "permission_error", std::string(status_name(check->status)));
          }
        }
        std::optional<SafetyReport> safety;
        if (o.safety_gate) {
          // The cheap refusal first: a taken id is a 409 before the gate's forward passes.
          if (store->find(id)) {
            http_fail(409, fmt::format("{} already exists; versions are immutable: upload as the "
                                       "next version",
                                       id.to_string()));
          }
          safety = gate_upload(*bytes, id);
          if (!safety->passed()) {
            audit->append(
                {"reject",
                 who.key_id,
                 id.to_string(),
                 sha256_hex({reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()}),
                 {{"reason", "safety gate"}, {"reasons", safety->reasons}}});
            sha256_thread_done();
            std::string reasons;
            for (const std::string& r : safety->reasons) reasons += "; " + r;
            http_fail(422, fmt::format("the adapter failed the safety gate{}", reasons),
                      "invalid_request_error", "safety_gate_failed");
          }
        }
        AdapterRecord r;
        try {
          r = store->add_bytes(*bytes, id, std::nullopt, [this](const Adapter& a) {
            // Accepted when it fits one of the bases (the domain's first).
            std::vector<Base*> order;
            if (auto it = domain_base.find(a.id().domain); it != domain_base.end()) {
              order.push_back(it->second);
            }
            for (const auto& b : bases) order.push_back(b.get());
            std::string first_error;
            for (Base* b : order) {
              try {
                b->cache->check(a);
                return;
              } catch (const Error& e) {
                if (first_error.empty()) first_error = e.what();
              }
            }
            fail("{}", first_error);
          });
        } catch (const Error& e) {
          const bool exists = std::string_view(e.what()).find("already") != std::string_view::npos;
          http_fail(exists ? 409 : 400, e.what());
        }
        if (check) store->put_signature(r.sha256, check->signature->to_json().dump());
        if (safety) store->put_attachment(r.id, "safety", safety->to_json().dump());
        audit->append({"upload",
                       who.key_id,
                       r.id.to_string(),
                       r.sha256,
                       {{"bytes", r.file_bytes},
                        {"signed_by", check ? json(check->signature->key_id) : json()}}});
        res.status = 201;
        res.set_content(record_json(r).dump(), "application/json");
      });
  handle("GET", "/v1/adapters", "adapters",
         [this](const httplib::Request& req, httplib::Response& res) {
           const Principal who = authenticate(req);
           std::optional<std::string> domain, user;
           if (req.has_param("domain")) domain = req.get_param_value("domain");
           if (req.has_param("user")) user = req.get_param_value("user");
           json data = json::array();
           for (const AdapterRecord& r : store->list(domain, user)) {
             if (may_list(who, r.id)) data.push_back(record_json(r));
           }
           res.set_content(json{{"object", "list"}, {"data", data}}.dump(), "application/json");
         });
  // domain/user or domain/user/vN, then /receipt (so a user named "receipt" stays reachable).
  handle("GET", R"(/v1/adapters/([^/]+/[^/]+(?:/[^/]+)?)/receipt)", "adapters",
         [this](const httplib::Request& req, httplib::Response& res) {
           const Principal who = authenticate(req);
           const AdapterRecord r = resolve_any_base(who, req.matches[1]);
           std::optional<std::string> receipt = store->find_attachment(r.id, "receipt");
           if (!receipt) {
             http_fail(404,
                       fmt::format("{} has no compute receipt: receipts are made when a "
                                   "server or CLI with a signing key creates an adapter, not "
                                   "for uploads",
                                   r.id.to_string()),
                       "invalid_request_error", "not_found");
           }
           res.set_content(*receipt, "application/json");
         });
  handle("GET", R"(/v1/adapters/(.+))", "adapters",
         [this](const httplib::Request& req, httplib::Response& res) {
           const Principal who = authenticate(req);
           res.set_content(record_json(resolve_any_base(who, req.matches[1])).dump(),
                           "application/json");
         });
  handle("DELETE", R"(/v1/adapters/(.+))", "adapters",
         [this](const httplib::Request& req, httplib::Response& res) {
           const Principal who = authenticate(req);
           const AdapterRecord r = resolve_any_base(who, req.matches[1]);
           if (!may_modify(who, r.id)) {
             http_fail(404, fmt::format("adapter '{}' not found", std::string(req.matches[1])),
                       "invalid_request_error", "not_found");
           }
           store->remove(r.id);
           for (const auto& b : bases) b->cache->forget(r.sha256);
           audit->append({"delete", who.key_id, r.id.to_string(), r.sha256, json::object()});
           res.set_content(
               json{{"id", r.id.to_string()}, {"object", "adapter"}, {"deleted", true}}.dump(),
               "application/json");
         });
  token_routes();
  job_routes();
  audit_route();
  consent_routes();
}

// A job the principal may see, or 404 (the same whether it does not exist or is someone
// else's).
JobRecord Server::Impl::visible_job(const Principal& who, const std::string& id) const {
  std::optional<JobRecord> job = jobs ? jobs->find(id) : std::nullopt;
  if (!job || !may_list(who, AdapterId{job->domain, job->user, 1})) {
    http_fail(404, fmt::format("job '{}' not found", id), "invalid_request_error", "not_found");
  }
  return *job;
}

AdapterRecord Server::Impl::resolve_any_base(const Principal& who, const std::string& name) const {
  const std::string not_found = fmt::format("adapter '{}' not found", name);
  AdapterId id;
  try {
    id = AdapterId::parse(name, true);
  } catch (const Error&) {
    http_fail(404, not_found, "invalid_request_error", "not_found");
  }
  std::optional<AdapterRecord> r;
  if (may_list(who, id)) r = store->find(id);
  if (!r) http_fail(404, not_found, "invalid_request_error", "not_found");
  return *r;
}

Server::Server(const ServeOptions& options) : impl_(std::make_unique<Impl>(options)) {}
Server::~Server() = default;
int Server::port() const { return impl_->port; }

std::vector<std::string> Server::base_names() const {
  std::vector<std::string> names;
  for (const auto& b : impl_->bases) names.push_back(b->name);
  return names;
}

void Server::run() {
  impl_->http.listen_after_bind();
  for (const auto& b : impl_->bases) b->scheduler->drain();
}

void Server::stop() {
  Impl& s = *impl_;
  if (s.stopping.exchange(true)) return;
  // Finish what was accepted, let the streams write their last events, then close.
  for (const auto& b : s.bases) b->scheduler->drain();
  while (s.in_flight > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  s.http.stop();
}

}  // namespace bitdelta
