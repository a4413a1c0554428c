// The server's personalization-job routes (docs/jobs.md).
#include "serve/server_impl.h"

namespace bitdelta {

// POST /v1/personalize, /v1/jobs...: personalization jobs (docs/jobs.md).
void Server::Impl::job_routes() {
  handle(
      "POST", "/v1/personalize", "personalize",
      [this](const httplib::Request& req, httplib::Response& res) {
        const Principal who = authenticate(req);
        if (!jobs)
          http_fail(503, "personalization is off on this server (--job-threads 0)", "server_error");
        json request;
        std::string records;
        if (req.is_multipart_form_data()) {
          // An uploaded file: fields domain, user, options (JSON text), file (JSONL).
          if (!req.has_file("file")) {
            http_fail(
                400, "a multipart upload needs a 'file' part with the interaction records (JSONL)");
          }
          records = req.get_file_value("file").content;
          for (const char* key : {"domain", "user"}) {
            if (req.has_file(key)) request[key] = req.get_file_value(key).content;
          }
          if (req.has_file("options")) {
            request["options"] = json::parse(req.get_file_value("options").content, nullptr, false);
            if (request["options"].is_discarded()) http_fail(400, "the 'options' part is not JSON");
          }
        } else {
          request = parse_body(req);
          auto it = request.find("interactions");
          if (it == request.end() || !it->is_array() || it->empty()) {
            http_fail(400,
                      "'interactions' must be a non-empty list of the domain's records "
                      "(docs/domains.md), or upload them as multipart 'file'");
          }
          for (const json& r : *it) records += r.dump() + "\n";
          request.erase("interactions");
        }
        // The same scopes as uploads: a tenant personalizes only its own users or domains.
        if (request.contains("user") && request["user"].is_string() && request.contains("domain") &&
            request["domain"].is_string()) {
          AdapterId id;
          try {
            id = AdapterId{request["domain"], canonical_user_id(request["user"].get<std::string>()),
                           1};
          } catch (const Error& e) {
            http_fail(400, e.what());
          }
          if (!may_modify(who, id)) {
            http_fail(403, "this key may not personalize for that user or domain",
                      "permission_error");
          }
          try {
            store->check_consent(id.user, id.domain, o.require_consent);
          } catch (const ConsentRefused& e) {
            http_fail(403, e.what(), "permission_error", "consent_required");
          }
        }
        JobRecord job;
        try {
          job = jobs->submit(request, records, who.key_id);
        } catch (const Error& e) {
          http_fail(400, e.what());
        }
        res.status = 202;
        res.set_header("Location", "/v1/jobs/" + job.id);
        res.set_content(JobRunner::to_json(job).dump(), "application/json");
      });
  handle("GET", "/v1/jobs", "jobs", [this](const httplib::Request& req, httplib::Response& res) {
    const Principal who = authenticate(req);
    json data = json::array();
    if (jobs) {
      for (const JobRecord& j : store->list_jobs()) {
        if (may_list(who, AdapterId{j.domain, j.user, 1})) data.push_back(JobRunner::to_json(j));
      }
    }
    res.set_content(json{{"object", "list"}, {"data", data}}.dump(), "application/json");
  });
  handle("GET", R"(/v1/jobs/([^/]+))", "jobs",
         [this](const httplib::Request& req, httplib::Response& res) {
           const Principal who = authenticate(req);
           res.set_content(JobRunner::to_json(visible_job(who, req.matches[1])).dump(),
                           "application/json");
         });
  handle("DELETE", R"(/v1/jobs/([^/]+))", "jobs",
         [this](const httplib::Request& req, httplib::Response& res) {
           const Principal who = authenticate(req);
           const JobRecord job = visible_job(who, req.matches[1]);
           if (!may_modify(who, AdapterId{job.domain, job.user, 1})) {
             http_fail(403, "this key may not cancel jobs for that user or domain",
                       "permission_error");
           }
           if (!jobs->cancel(job.id)) {
             http_fail(409, fmt::format("job {} already {}", job.id, job.state),
                       "invalid_request_error");
           }
           res.set_content(JobRunner::to_json(*jobs->find(job.id)).dump(), "application/json");
         });
  handle("GET", R"(/v1/jobs/([^/]+)/events)", "jobs",
         [this](const httplib::Request& req, httplib::Response& res) {
           const Principal who = authenticate(req);
           const std::string id = visible_job(who, req.matches[1]).id;
           res.set_header("Cache-Control", "no-cache");
           auto after = std::make_shared<int64_t>(0);
           res.set_chunked_content_provider(
               "text/event-stream", [this, id, after](size_t, httplib::DataSink& sink) {
                 for (;;) {
                   bool finished = false;
                   const auto events = jobs->events(id, *after, 1000, &finished);
                   for (const auto& e : events) {
                     const std::string line = "data: " + e.data + "\n\n";
                     if (!sink.write(line.data(), line.size())) return false;
                     *after = e.seq;
                   }
                   if (finished || stopping) {
                     // The job as it ended (or stands, on shutdown), then the end marker.
                     if (std::optional<JobRecord> job = jobs->find(id)) {
                       const std::string last =
                           "data: " + JobRunner::to_json(*job).dump() + "\n\ndata: [DONE]\n\n";
                       sink.write(last.data(), last.size());
                     }
                     sink.done();
                     return true;
                   }
                   if (events.empty()) {
                     static constexpr std::string_view kHeartbeat = ": waiting\n\n";
                     if (!sink.write(kHeartbeat.data(), kHeartbeat.size())) return false;
                   }
                 }
               });
         });
}

}  // namespace bitdelta
