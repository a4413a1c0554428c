// bitdelta analyze / import-assistments: a domain's interaction records and the analytics a
// personal adapter is conditioned on.
#include <fmt/format.h>

#include <set>

#include "cli/commands.h"
#include "domain/education.h"
#include "domain/knowledge_tracing.h"
#include "domain/records.h"
#include "util/error.h"

namespace bitdelta::cli {

CLI::App* register_analyze(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "analyze",
      "Validate a domain's interaction records (JSONL, docs/domains.md) and print one user's "
      "analytics. education: BKT mastery per skill (parameters fitted by EM over every learner in "
      "the file), mastery levels, prerequisite gaps, learning style, scaffolding level");
  struct Options {
    std::string domain, data, user;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--domain", o->domain, "Domain of the records (analytics exist for education)")
      ->required()
      ->check(CLI::IsMember({"education"}));
  cmd->add_option("--data", o->data, "Interaction records, one JSON object per line")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--user", o->user, "The learner to analyze (default: the only one in the file)");
  cmd->add_flag("--json", o->json, "Print the analytics as one JSON object (the adapter metadata)");
  runner = [=] {
    const auto records = read_education_records(o->data);
    std::string learner = o->user;
    if (learner.empty()) {
      std::set<std::string> learners;
      for (const auto& r : records) learners.insert(r.learner);
      if (learners.size() != 1) {
        fail("{} holds {} learners; name one with --user", o->data, learners.size());
      }
      learner = *learners.begin();
    }
    const EducationModel model = EducationModel::fit(records);
    const EducationAnalytics a = model.analyze(records, learner);
    if (o->json) {
      fmt::print("{}\n", a.to_json().dump(2));
      return 0;
    }
    fmt::print("learner {}: {} attempts over {} skills\n\n", a.learner, a.attempts,
               a.mastery.size());
    fmt::print("{:<32} {:>8}  {}\n", "skill", "mastery", "level");
    for (const auto& [skill, m] : a.mastery) {
      fmt::print("{:<32} {:>8.3f}  {}\n", skill, m, a.mastery_levels.at(skill));
    }
    fmt::print("\nprerequisite gaps: {}\n", a.prerequisite_gaps.empty() ? "none" : "");
    for (const auto& g : a.prerequisite_gaps) {
      fmt::print("  {} (mastery {:.3f}) under failed {}\n", g.skill, g.mastery,
                 fmt::join(g.failed_dependents, ", "));
    }
    const LearningStyle& s = a.learning_style;
    fmt::print(
        "learning style: {} (hints {:.0f}% of attempts, retries {:.0f}%, median response {})\n",
        s.label, 100 * s.hint_rate, 100 * s.retry_rate,
        s.median_response_time_s ? fmt::format("{:.1f} s", *s.median_response_time_s)
                                 : std::string("not recorded"));
    fmt::print("scaffolding: {} (mean mastery {:.3f} of the skills in the last attempts)\n",
               a.scaffolding_level, a.recent_mastery);
    return 0;
  };
  return cmd;
}

CLI::App* register_import_assistments(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "import-assistments",
      "Convert ASSISTments knowledge-tracing data (the DKT/DKVMN three-lines-per-learner CSV: "
      "attempt count, skill ids, 0/1 outcomes) into education interaction records (JSONL)");
  struct Options {
    std::string in, out, prefix = "assistments-";
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--in", o->in, "ASSISTments CSV (e.g. assist2015_train.csv)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", o->out, "Output JSONL (written atomically)")->required();
  cmd->add_option("--learner-prefix", o->prefix,
                  "Learner ids are this prefix + the learner's index")
      ->capture_default_str();
  runner = [=] {
    validate_user_id(o->prefix + "0");  // the ids the records will carry
    const auto learners = read_assistments_csv(o->in);
    const int64_t n = write_assistments_as_records(learners, o->prefix, o->out);
    fmt::print("wrote {} records of {} learners to {}\n", n, learners.size(), o->out);
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli
