// bitdelta consent set / show: users' consent to personalization in a store (docs/consent.md).
#include <fmt/format.h>

#include "cli/commands.h"
#include "domain/domain.h"
#include "domain/records.h"
#include "store/adapter_store.h"
#include "store/audit_log.h"
#include "util/error.h"

namespace bitdelta::cli {

CLI::App* register_consent(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "consent",
      "Users' consent to personalization, kept in the store: a user who withdrew it is not "
      "personalized (CLI or server); servers with --require-consent personalize only users who "
      "gave it. Subcommands: set, show");
  cmd->require_subcommand(1);
  struct Options {
    std::string store, user, domain = "*", personalization, note;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  auto* set = cmd->add_subcommand(
      "set",
      "Record that a user gives (yes) or withdraws (no) consent to personalization, in one "
      "domain or all (*); appended to the store's audit log");
  set->add_option("--store", o->store, "Adapter store folder (created if missing)")->required();
  set->add_option("--user", o->user, "The user (as their records name them)")->required();
  set->add_option("--domain", o->domain, "education, gaming, defi, general, or * for all")
      ->capture_default_str();
  set->add_option("--personalization", o->personalization, "yes (given) or no (withdrawn)")
      ->required()
      ->check(CLI::IsMember({"yes", "no"}));
  set->add_option("--note", o->note, "Why, for the record");
  auto* show = cmd->add_subcommand("show", "A user's consent records and what they decide");
  show->add_option("--store", o->store, "Adapter store folder")->required();
  show->add_option("--user", o->user, "The user")->required();
  show->add_flag("--json", o->json, "Print JSON");
  runner = [=] {
    if (show->parsed() && !std::filesystem::is_directory(o->store)) {
      fail("store '{}' not found", o->store);
    }
    AdapterStore store = AdapterStore::open(o->store);
    validate_user_id(o->user);
    const std::string user = canonical_user_id(o->user);
    if (set->parsed()) {
      if (o->domain != "*" && !is_domain(o->domain)) {
        fail("unknown domain '{}': {} or *", o->domain, kDomainNames);
      }
      const bool given = o->personalization == "yes";
      const std::optional<ConsentRecord> previous =
          store.put_consent({user, o->domain, given, o->note, "", "cli"});
      AuditLog audit(store.dir() / "audit.jsonl");
      for (const char* d : {"education", "gaming", "defi", "general"}) {
        if (o->domain != "*" && o->domain != d) continue;
        audit.append(
            {"consent",
             "cli",
             std::string(d) + "/" + user,
             "",
             {{"scope", o->domain},
              {"personalization", given},
              {"previous", previous ? nlohmann::json(previous->personalization) : nlohmann::json()},
              {"note", o->note}}});
      }
      fmt::print("{}: personalization {} in {}\n", user, given ? "allowed" : "withdrawn",
                 o->domain == "*" ? "every domain" : o->domain);
      return 0;
    }
    nlohmann::json records = nlohmann::json::array(), effective = nlohmann::json::object();
    for (const ConsentRecord& c : store.list_consent(user)) {
      records.push_back({{"domain", c.domain},
                         {"personalization", c.personalization},
                         {"note", c.note},
                         {"updated_at", c.updated_at},
                         {"updated_by", c.updated_by}});
    }
    for (const char* d : {"education", "gaming", "defi", "general"}) {
      const std::optional<ConsentRecord> c = store.consent_for(user, d);
      effective[d] = c ? nlohmann::json(c->personalization) : nlohmann::json();
    }
    if (o->json) {
      fmt::print(
          "{}\n",
          nlohmann::json{{"user", user}, {"records", records}, {"effective", effective}}.dump(2));
      return 0;
    }
    fmt::print("{}\n", user);
    for (const char* d : {"education", "gaming", "defi", "general"}) {
      fmt::print("  {:<10} {}\n", d,
                 effective[d].is_null()     ? "no record (the operator's default)"
                 : effective[d].get<bool>() ? "given"
                                            : "withdrawn");
    }
    for (const nlohmann::json& r : records) {
      fmt::print(
          "  record {}: {} on {} by {}{}\n", r["domain"].get<std::string>(),
          r["personalization"].get<bool>() ? "given" : "withdrawn",
          r["updated_at"].get<std::string>(), r["updated_by"].get<std::string>(),
          r["note"].get<std::string>().empty() ? "" : " (" + r["note"].get<std::string>() + ")");
    }
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli
