// bitdelta store add / list / rm: the embedded adapter store (a folder with content-addressed
// blobs and an SQLite registry) from the command line.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "delta/adapter.h"
#include "delta/fingerprint.h"
#include "io/weight_files.h"
#include "store/adapter_store.h"
#include "store/audit_log.h"
#include "util/error.h"

namespace bitdelta::cli {

namespace {

nlohmann::ordered_json record_json(const AdapterStore& store, const AdapterRecord& r) {
  nlohmann::ordered_json metadata = nlohmann::ordered_json::parse(r.metadata_json, nullptr, false);
  if (metadata.is_discarded()) metadata = r.metadata_json;
  return {{"id", r.id.to_string()},
          {"domain", r.id.domain},
          {"user", r.id.user},
          {"version", r.id.version},
          {"latest", r.latest},
          {"sha256", r.sha256},
          {"file_bytes", r.file_bytes},
          {"base_model", r.base_model},
          {"base_fingerprint", r.base_fingerprint},
          {"created_at", r.created_at},
          {"blob", store.blob_path(r).string()},
          {"metadata", metadata}};
}

// The fingerprint `file` must carry to match the base in `model_dir`, checked the way serving
// checks it (Adapter::check_base), so a mismatch is reported here with the same message.
std::string base_fingerprint_for(const std::string& file, const std::string& model_dir) {
  WeightFiles base = WeightFiles::open(model_dir);
  BaseFingerprints fingerprints(base);
  std::shared_ptr<Adapter> adapter = Adapter::open(file, &default_thread_pool());
  adapter->check_base(base, fingerprints, default_thread_pool());
  return adapter->base_fingerprint();
}

}  // namespace

CLI::App* register_store(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "store",
      "Manage a local adapter store: a folder that keeps each .bdelta once, named by its "
      "SHA-256 (blobs/sha256/), and an SQLite registry (registry.db) of adapter ids "
      "domain/user/vN. Subcommands: add, list, rm");
  cmd->require_subcommand(1);

  struct Options {
    std::string store, file, id, model, domain, user;
    bool json = false;
  };
  auto o = std::make_shared<Options>();

  auto* add = cmd->add_subcommand(
      "add",
      "Validate a .bdelta adapter (format, metadata, finite scales; with --model, that it was "
      "made for that base) and register it in the store. Versions are immutable: an id already "
      "in the store is refused");
  add->add_option("--store", o->store, "Store folder (created if missing)")->required();
  add->add_option("FILE", o->file, "Adapter file (.bdelta)")->required()->check(CLI::ExistingFile);
  add->add_option("--id", o->id,
                  "Register under this id, domain/user/vN (default: the adapter_id in the file)");
  add->add_option("--model", o->model,
                  "Base model folder: refuse the adapter unless it was made for this base")
      ->check(CLI::ExistingDirectory);
  add->add_flag("--json", o->json, "Print the new record as JSON");

  auto* list = cmd->add_subcommand(
      "list", "List the adapters in the store, ordered by domain, user and version");
  list->add_option("--store", o->store, "Store folder")->required()->check(CLI::ExistingDirectory);
  list->add_option("--domain", o->domain, "Only this domain (exact match)");
  list->add_option("--user", o->user, "Only this user (exact match)");
  list->add_flag("--json", o->json, "Print a JSON array of records");

  auto* rm = cmd->add_subcommand(
      "rm",
      "Remove one adapter version from the store; its blob goes too once no other id uses the "
      "same bytes");
  rm->add_option("--store", o->store, "Store folder")->required()->check(CLI::ExistingDirectory);
  rm->add_option("ID", o->id, "Adapter id, domain/user/vN (the exact version)")->required();

  runner = [=] {
    if (add->parsed()) {
      std::optional<AdapterId> id;
      if (!o->id.empty()) id = AdapterId::parse(o->id);
      std::optional<std::string> expected;
      if (!o->model.empty()) expected = base_fingerprint_for(o->file, o->model);
      AdapterStore store = AdapterStore::open(o->store);
      const AdapterRecord r = store.add(o->file, id, expected);
      AuditLog(store.dir() / "audit.jsonl")
          .append({"upload",
                   "cli",
                   r.id.to_string(),
                   r.sha256,
                   {{"bytes", r.file_bytes}, {"file", o->file}}});
      if (o->json) {
        fmt::print("{}\n", record_json(store, r).dump(2));
      } else {
        fmt::print("added {}{} to {}: {}, sha256 {}, base '{}'\n", r.id.to_string(),
                   r.latest ? " (latest)" : "", store.dir().string(), human_bytes(r.file_bytes),
                   r.sha256, r.base_model);
      }
      return 0;
    }
    if (list->parsed()) {
      AdapterStore store = AdapterStore::open(o->store);
      auto filter = [](const std::string& s) {
        return s.empty() ? std::nullopt : std::optional<std::string>(s);
      };
      const std::vector<AdapterRecord> records = store.list(filter(o->domain), filter(o->user));
      if (o->json) {
        nlohmann::ordered_json out = nlohmann::ordered_json::array();
        for (const auto& r : records) out.push_back(record_json(store, r));
        fmt::print("{}\n", out.dump(2));
        return 0;
      }
      if (records.empty()) {
        fmt::print("no adapters in {}{}\n", store.dir().string(),
                   o->domain.empty() && o->user.empty() ? "" : " matching the filter");
        return 0;
      }
      fmt::print("{:<48} {:>6} {:>10}  {:<12}  {:<20}  {}\n", "ID", "LATEST", "SIZE", "SHA256",
                 "CREATED", "BASE");
      for (const auto& r : records) {
        fmt::print("{:<48} {:>6} {:>10}  {:<12}  {:<20}  {}\n", r.id.to_string(),
                   r.latest ? "yes" : "", human_bytes(r.file_bytes), r.sha256.substr(0, 12),
                   r.created_at, r.base_model);
      }
      return 0;
    }
    BD_CHECK(rm->parsed());
    const AdapterId id = AdapterId::parse(o->id);
    AdapterStore store = AdapterStore::open(o->store);
    const std::optional<AdapterRecord> removed = store.find(id);
    if (!store.remove(id)) {
      fail("there is no adapter {} in the store {}; `bitdelta store list --store {}` shows what "
           "is there",
           id.to_string(), store.dir().string(), o->store);
    }
    AuditLog(store.dir() / "audit.jsonl")
        .append({"delete", "cli", id.to_string(), removed ? removed->sha256 : "",
                 nlohmann::json::object()});
    fmt::print("removed {} from {}\n", id.to_string(), store.dir().string());
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli
