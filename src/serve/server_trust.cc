// The server's trust routes: consent (docs/consent.md), the audit log (docs/audit.md), the upload
// safety gate (docs/safety.md), stored-adapter checks and the adapter records it answers with.
#include "serve/server_impl.h"

namespace bitdelta {

// PUT/GET /v1/consent/{user}: users' consent to personalization (docs/consent.md). A key may
// read and set the consent of the users and domains it may personalize.
void Server::Impl::consent_routes() {
  auto user_of = [](const std::string& raw) {
    try {
      validate_user_id(raw);
      return canonical_user_id(raw);
    } catch (const Error& e) {
      http_fail(400, e.what());
    }
  };
  auto record_json = [](const ConsentRecord& c) {
    return json{{"domain", c.domain},
                {"personalization", c.personalization},
                {"note", c.note},
                {"updated_at", c.updated_at},
                {"updated_by", c.updated_by}};
  };
  handle(
      "PUT", R"(/v1/consent/([^/]+))", "consent",
      [this, user_of, record_json](const httplib::Request& req, httplib::Response& res) {
        const Principal who = authenticate(req);
        const std::string user = user_of(req.matches[1]);
        const json body = parse_body(req);
        for (const auto& [key, value] : body.items()) {
          if (key != "domain" && key != "personalization" && key != "note") {
            http_fail(400, fmt::format("unknown field '{}': a consent record has domain, "
                                       "personalization and note",
                                       key));
          }
        }
        if (!body.contains("domain") || !body["domain"].is_string()) {
          http_fail(400, fmt::format("'domain' is required: {} or \"*\" for all", kDomainNames));
        }
        if (!body.contains("personalization") || !body["personalization"].is_boolean()) {
          http_fail(400, "'personalization' is required: true (given) or false (withdrawn)");
        }
        if (body.contains("note") && !body["note"].is_string()) {
          http_fail(400, "'note' must be a string");
        }
        const std::string domain = body["domain"];
        if (domain != "*" && !is_domain(domain)) {
          http_fail(400, fmt::format("unknown domain '{}': {} or \"*\"", domain, kDomainNames));
        }
        for (const char* d : {"education", "gaming", "defi", "general"}) {
          if ((domain == "*" || domain == d) && !may_modify(who, AdapterId{d, user, 1})) {
            http_fail(403, "this key may not set that user's consent in that domain",
                      "permission_error");
          }
        }
        ConsentRecord c{
            user, domain,    body["personalization"].get<bool>(), body.value("note", std::string()),
            "",   who.key_id};
        const std::optional<ConsentRecord> previous = store->put_consent(c);
        const std::optional<ConsentRecord> now = store->consent_for(user, domain);
        // One entry per domain it covers, so each domain's tenants see it in /v1/audit.
        for (const char* d : {"education", "gaming", "defi", "general"}) {
          if (domain != "*" && domain != d) continue;
          audit->append({"consent",
                         who.key_id,
                         std::string(d) + "/" + user,
                         "",
                         {{"scope", domain},
                          {"personalization", c.personalization},
                          {"previous", previous ? json(previous->personalization) : json()},
                          {"note", c.note}}});
        }
        res.set_content(
            json{{"object", "consent"}, {"user", user}, {"record", record_json(*now)}}.dump(),
            "application/json");
      });
  handle("GET", R"(/v1/consent/([^/]+))", "consent",
         [this, user_of, record_json](const httplib::Request& req, httplib::Response& res) {
           const Principal who = authenticate(req);
           const std::string user = user_of(req.matches[1]);
           json records = json::array(), effective = json::object();
           bool any = false;
           for (const char* d : {"education", "gaming", "defi", "general"}) {
             if (!may_list(who, AdapterId{d, user, 1})) continue;
             any = true;
             const std::optional<ConsentRecord> c = store->consent_for(user, d);
             effective[d] = c ? json(c->personalization) : json();
           }
           if (!any) {
             http_fail(404, fmt::format("user '{}' not found", user), "invalid_request_error",
                       "not_found");
           }
           for (const ConsentRecord& c : store->list_consent(user)) {
             if (c.domain == "*" || effective.contains(c.domain)) {
               records.push_back(record_json(c));
             }
           }
           res.set_content(json{{"object", "consent"},
                                {"user", user},
                                {"records", records},
                                {"effective", effective},
                                {"required", o.require_consent}}
                               .dump(),
                           "application/json");
         });
}

// Before a stored adapter is first loaded: its blob still has the bytes the registry named it
// by, and (with --require-signatures) a valid signature by a trusted key. Checked once per blob.
void Server::Impl::verify_stored(const AdapterRecord& r, const std::string& name) {
  {
    std::lock_guard lock(verified_mutex);
    if (verified.count(r.sha256)) return;
  }
  const std::string actual = sha256_file(store->blob_path(r));
  sha256_thread_done();
  if (actual != r.sha256) {
    http_fail(500,
              fmt::format("adapter '{}': its stored file changed on disk (SHA-256 {} where "
                          "the registry has {}); re-upload it",
                          name, actual, r.sha256),
              "server_error");
  }
  if (o.require_signatures) {
    const SignatureCheck c = check_adapter_signature(
        r.sha256, r.file_bytes, store->find_signature(r.sha256), trusted ? &*trusted : nullptr);
    if (c.status != SignatureStatus::kValid) {
      http_fail(403, fmt::format("adapter '{}' failed its signature check: {}", name, c.message),
                "permission_error", std::string(status_name(c.status)));
    }
  }
  std::lock_guard lock(verified_mutex);
  verified.insert(r.sha256);
}

// GET /v1/audit: admins see every entry; a tenant sees the entries of the adapters and jobs it
// may list. Filters: domain, user, action, after (entry number), limit (default 100, at most
// 1000).
void Server::Impl::audit_route() {
  handle("GET", "/v1/audit", "audit", [this](const httplib::Request& req, httplib::Response& res) {
    const Principal who = authenticate(req);
    auto param = [&](const char* key) {
      return req.has_param(key) ? std::optional<std::string>(req.get_param_value(key))
                                : std::nullopt;
    };
    int64_t after = 0, limit = 100;
    try {
      if (auto v = param("after")) after = std::stoll(*v);
      if (auto v = param("limit")) limit = std::stoll(*v);
    } catch (const std::exception&) {
      http_fail(400, "'after' and 'limit' must be whole numbers");
    }
    if (limit < 1 || limit > 1000) http_fail(400, "'limit' must be between 1 and 1000");
    const auto domain = param("domain"), user = param("user"), action = param("action");
    json data = json::array();
    for (const json& e : audit->entries()) {
      if (e["seq"].get<int64_t>() <= after) continue;
      // domain/user/vN of an adapter, domain/user of a job, or nothing.
      AdapterId id;
      try {
        id = AdapterId::parse(e.value("adapter_id", ""), /*allow_latest=*/true);
      } catch (const Error&) {
      }
      const std::string& d = id.domain;
      const std::string& u = id.user;
      if (!who.is_admin() && (d.empty() || !may_list(who, id))) continue;
      if ((domain && *domain != d) || (user && *user != u) ||
          (action && *action != e.value("action", ""))) {
        continue;
      }
      data.push_back(e);
      if (static_cast<int64_t>(data.size()) >= limit) break;
    }
    res.set_content(json{{"object", "list"}, {"data", data}}.dump(), "application/json");
  });
}

// The safety gate on uploaded bytes, against the base the adapter was made for (its domain's
// first, then the others). The check loads its own view of that base (the weights are shared
// mappings) and runs on one thread of its own, so serving's forward passes are untouched.
SafetyReport Server::Impl::gate_upload(const std::string& bytes, const AdapterId& id) {
  // One gate at a time; a second upload meanwhile is asked to retry rather than hold one of the
  // HTTP threads that serving needs.
  std::unique_lock lock(gate_mutex, std::try_to_lock);
  if (!lock.owns_lock()) {
    http_fail(429, "another upload is in the safety gate; retry in a few seconds",
              "rate_limit_error", "safety_gate_busy");
  }
  const std::filesystem::path tmp =
      store->dir() / "tmp" /
      fmt::format("gate-{:016x}.bdelta", std::random_device{}() * 0x9e3779b97f4a7c15ull);
  std::filesystem::create_directories(tmp.parent_path());
  write_file_atomic(tmp, bytes);
  struct Remove {
    std::filesystem::path p;
    ~Remove() {
      std::error_code ec;
      std::filesystem::remove(p, ec);
    }
  } remove{tmp};
  std::vector<Base*> order;
  if (auto it = domain_base.find(id.domain); it != domain_base.end()) order.push_back(it->second);
  for (const auto& b : bases) order.push_back(b.get());
  std::string errors;
  ThreadPool one(1);
  for (Base* b : order) {
    std::unique_ptr<Transformer> model = Transformer::load(b->dir);
    std::shared_ptr<Adapter> adapter;
    try {
      adapter = open_adapter_for(tmp, *model, one);
    } catch (const Error& e) {
      errors += fmt::format("{}{}: {}", errors.empty() ? "" : "; ", b->name, e.what());
      continue;
    }
    return safety_check(*model, *b->tokenizer, *adapter, *probes, o.safety_policy, one);
  }
  http_fail(400, fmt::format("the adapter fits none of the served bases ({})", errors));
}

json Server::Impl::record_json(const AdapterRecord& r) const {
  json meta = json::parse(r.metadata_json, nullptr, false);
  const SignatureCheck c = check_adapter_signature(
      r.sha256, r.file_bytes, store->find_signature(r.sha256), trusted ? &*trusted : nullptr);
  json signature = {{"status", status_name(c.status)}, {"trusted", c.trusted}};
  if (c.signature) {
    signature["key_id"] = c.signature->key_id;
    signature["signed_at"] = c.signature->signed_at;
  }
  if (c.status != SignatureStatus::kValid && c.status != SignatureStatus::kUnsigned) {
    signature["message"] = c.message;
  }
  json safety;  // the gate's verdict, when it ran (personalization, or a gated upload)
  if (std::optional<std::string> report = store->find_attachment(r.id, "safety")) {
    const json j = json::parse(*report, nullptr, false);
    if (j.is_object()) {
      safety = {{"passed", j.value("passed", false)},
                {"safety_score", j.value("safety_score", json())},
                {"base_score", j.value("base_score", json())},
                {"mean_kl", j.value("mean_kl", json())},
                {"probes", j.value("probes", json())}};
    }
  }
  const bool has_receipt = store->find_attachment(r.id, "receipt").has_value();
  return json{
      {"signature", signature},
      {"safety", safety},
      {"receipt",
       has_receipt ? json(fmt::format("/v1/adapters/{}/receipt", r.id.to_string())) : json()},
      {"id", r.id.to_string()},
      {"object", "adapter"},
      {"domain", r.id.domain},
      {"user", r.id.user},
      {"version", r.id.version},
      {"latest", r.latest},
      {"sha256", r.sha256},
      {"bytes", r.file_bytes},
      {"base_model", r.base_model},
      {"base_fingerprint", r.base_fingerprint},
      {"created_at", r.created_at},
      {"metadata", meta.is_discarded() ? json() : meta}};
}

}  // namespace bitdelta
