// bitdelta audit verify / show: the store's hash-chained audit log (docs/audit.md).
#include <fmt/format.h>

#include "cli/commands.h"
#include "store/audit_log.h"
#include "util/error.h"
#include "util/files.h"

namespace bitdelta::cli {

CLI::App* register_audit(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "audit", "The store's hash-chained audit log (docs/audit.md). Subcommands: verify, show");
  cmd->require_subcommand(1);
  struct Options {
    std::string log, trusted;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  auto* verify = cmd->add_subcommand(
      "verify",
      "Check the audit log's chain: every entry parses, numbers run 1, 2, 3..., each entry holds "
      "the SHA-256 of the one before, nothing is cut off, and the head file names the last entry "
      "(signed by a trusted key, with --trusted-keys). Finds an edited, removed or reordered "
      "entry and a truncated tail; exit status 1 naming the first problem");
  verify->add_option("LOG", o->log, "The log (STORE/audit.jsonl)")
      ->required()
      ->check(CLI::ExistingFile);
  verify->add_option("--trusted-keys", o->trusted, "The head must be signed by one of these keys");
  verify->add_flag("--json", o->json, "Print the result as JSON");
  auto* show = cmd->add_subcommand(
      "show",
      "Print the log's entries, one JSON object per line (a damaged log too, with a warning)");
  show->add_option("LOG", o->log, "The log (STORE/audit.jsonl)")
      ->required()
      ->check(CLI::ExistingFile);
  runner = [=] {
    if (show->parsed()) {
      // Shown as it is, damaged or not (verify says what is wrong).
      const std::string text = read_file(o->log);
      fmt::print("{}", text);
      if (!text.empty() && text.back() != '\n') fmt::print("\n");
      const AuditVerification v = verify_audit_log(o->log);
      if (!v.ok) fmt::print(stderr, "warning: {}\n", v.problem);
      return 0;
    }
    std::optional<TrustedKeys> trusted;
    if (!o->trusted.empty()) trusted.emplace(TrustedKeys::load(o->trusted));
    const AuditVerification v = verify_audit_log(o->log, trusted ? &*trusted : nullptr);
    if (o->json) {
      fmt::print("{}\n", nlohmann::json{{"log", o->log},
                                        {"ok", v.ok},
                                        {"entries", v.entries},
                                        {"head_signed", v.head_signed},
                                        {"problem", v.problem}}
                             .dump(2));
    } else if (v.ok) {
      fmt::print("{}: {} entries, chain intact{}\n", o->log, v.entries,
                 v.head_signed ? ", head signed" : "");
    } else {
      fmt::print("{}: {}\n", o->log, v.problem);
    }
    return v.ok ? 0 : 1;
  };
  return cmd;
}

}  // namespace bitdelta::cli
