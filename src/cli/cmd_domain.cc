// bitdelta analyze / import-assistments: a domain's interaction records and the analytics a
// personal adapter is conditioned on.
#include <fmt/format.h>

#include <type_traits>
#include <variant>

#include "cli/commands.h"
#include "domain/domain.h"
#include "domain/examples.h"
#include "domain/knowledge_tracing.h"
#include "domain/records.h"
#include "util/error.h"

namespace bitdelta::cli {

namespace {

// --domain and --data: which domain's interaction records, and where.
void add_records_options(CLI::App* cmd, std::string& domain, std::string& data) {
  cmd->add_option("--domain", domain, "Domain of the records")
      ->required()
      ->check(CLI::IsMember({"education", "gaming", "defi", "general"}));
  cmd->add_option("--data", data, "Interaction records, one JSON object per line")
      ->required()
      ->check(CLI::ExistingFile);
}

void print_education(const EducationAnalytics& a) {
  fmt::print("learner {}: {} attempts over {} skills\n\n", a.learner, a.attempts, a.mastery.size());
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
}

void print_gaming(const GamingAnalytics& g) {
  fmt::print("NPC {}: {} interactions; traits: {}\n", g.npc, g.interactions,
             fmt::join(g.trait_labels, ", "));
  fmt::print(
      "personality: warmth {:+.2f}, talkativeness {:.2f}, curiosity {:.2f}, assertiveness "
      "{:.2f}, volatility {:.2f}\n",
      g.personality.at("warmth"), g.personality.at("talkativeness"), g.personality.at("curiosity"),
      g.personality.at("assertiveness"), g.personality.at("volatility"));
  fmt::print("\n{:<24} {:>12} {:>9} {:>9}\n", "player", "interactions", "strength", "affinity");
  for (const auto& r : g.relationships) {
    fmt::print("{:<24} {:>12} {:>9.3f} {:>+9.3f}\n", r.player, r.interactions, r.strength,
               r.affinity);
  }
  fmt::print("\nmost important memories:\n");
  for (const auto& m : g.memory_importance) {
    fmt::print("  {:.3f}  {}: \"{}\"\n", m.importance, m.player, m.utterance);
  }
}

void print_defi(const DefiAnalytics& d) {
  fmt::print("wallet {}: {} transactions, average position ${:.2f}\n", d.address, d.transactions,
             d.avg_position_size);
  fmt::print("risk tolerance: {:.2f} ({})", d.risk_tolerance, d.risk_label);
  for (const auto& [name, v] : d.risk_components) fmt::print("; {} {:.2f}", name, v);
  fmt::print("\npreferred strategies:");
  for (const auto& [label, share] : d.preferred_strategies) {
    fmt::print(" {} ({:.0f}%)", label, 100 * share);
  }
  fmt::print("{}\nfavourite pools: {}\n", d.preferred_strategies.empty() ? " none" : "",
             d.favorite_pools.empty() ? std::string("none")
                                      : fmt::format("{}", fmt::join(d.favorite_pools, ", ")));
}

}  // namespace

CLI::App* register_analyze(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "analyze",
      "Validate a domain's interaction records (JSONL, docs/domains.md) and print one user's "
      "analytics, the metadata of their personal adapter. education: BKT mastery per skill "
      "(fitted by EM over every learner in the file), mastery levels, prerequisite gaps, learning "
      "style, scaffolding level; gaming (the user is the NPC): behavioural traits, relationships "
      "with players (time-decayed), memory importance, personality; defi (the user is the wallet "
      "address): risk tolerance, preferred strategies, average position size, favourite pools; "
      "general: the conversations");
  struct Options {
    std::string domain, data, user;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  add_records_options(cmd, o->domain, o->data);
  cmd->add_option("--user", o->user,
                  "Whose analytics: the learner, NPC, wallet address or user (default: the only "
                  "one in the file)");
  cmd->add_flag("--json", o->json, "Print the analytics as one JSON object (the adapter metadata)");
  runner = [=] {
    const DomainUser u = load_domain_user(o->domain, o->data, o->user);
    if (o->json) {
      fmt::print("{}\n", u.analytics_json().dump(2));
      return 0;
    }
    std::visit(
        [](const auto& a) {
          using A = std::decay_t<decltype(a)>;
          if constexpr (std::is_same_v<A, EducationAnalytics>) print_education(a);
          if constexpr (std::is_same_v<A, GamingAnalytics>) print_gaming(a);
          if constexpr (std::is_same_v<A, DefiAnalytics>) print_defi(a);
          if constexpr (std::is_same_v<A, GeneralAnalytics>) {
            fmt::print("user {}: {} conversations, {} user turns, {} assistant turns\n", a.user,
                       a.conversations, a.user_turns, a.assistant_turns);
          }
        },
        u.analytics);
    return 0;
  };
  return cmd;
}

CLI::App* register_examples(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "examples",
      "Build a user's personal training data from a domain's interaction records: their own "
      "conversations (gaming: each utterance and the NPC's reply), each after a system prompt "
      "stating their analytics, oldest first; the most recent share is held out for evaluation. "
      "Writes finetune/eval JSONL ({\"messages\": [...]} per line)");
  struct Options {
    std::string domain, data, user, train, heldout;
    double share = 0.1;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  add_records_options(cmd, o->domain, o->data);
  cmd->add_option("--user", o->user, "Whose data: the learner, NPC, wallet address or user")
      ->required();
  cmd->add_option("--train", o->train, "Output: the training conversations (JSONL, atomic)")
      ->required();
  cmd->add_option("--heldout", o->heldout, "Output: the held-out conversations (JSONL, atomic)")
      ->required();
  cmd->add_option("--heldout-share", o->share,
                  "Share of the most recent conversations held out (at least one)")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 0.5));
  cmd->add_flag("--json", o->json, "Print the summary (counts, system prompt, analytics) as JSON");
  runner = [=] {
    const PersonalExamples e = build_personal_examples(o->domain, o->data, o->user, o->share);
    write_conversations_jsonl(e.train, o->train);
    write_conversations_jsonl(e.heldout, o->heldout);
    if (o->json) {
      fmt::print("{}\n", nlohmann::json{{"domain", e.domain},
                                        {"user", e.user},
                                        {"interactions", e.interactions},
                                        {"conversations", e.conversations},
                                        {"train", e.train.size()},
                                        {"heldout", e.heldout.size()},
                                        {"system_prompt", e.system_prompt},
                                        {"analytics", e.analytics}}
                             .dump(2));
      return 0;
    }
    fmt::print("{} {}: {} interactions, {} conversations: {} to train on ({}), {} held out ({})\n",
               e.domain, e.user, e.interactions, e.conversations, e.train.size(), o->train,
               e.heldout.size(), o->heldout);
    fmt::print("system prompt: {}\n", e.system_prompt);
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
    const auto learners = read_assistments_csv(o->in);
    validate_user_id(o->prefix + std::to_string(learners.size() - 1));  // the longest id written
    const int64_t n = write_assistments_as_records(learners, o->prefix, o->out);
    fmt::print("wrote {} records of {} learners to {}\n", n, learners.size(), o->out);
    return 0;
  };
  return cmd;
}

}  // namespace bitdelta::cli
