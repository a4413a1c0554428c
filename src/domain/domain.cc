#include "domain/domain.h"

#include <algorithm>
#include <set>

#include "domain/records.h"
#include "util/error.h"

namespace bitdelta {

namespace {

// `requested` in canonical form, or the only user of the file.
template <typename Record, typename Key>
std::string pick_user(const std::vector<Record>& records, Key key, const std::string& requested,
                      const std::filesystem::path& file) {
  if (!requested.empty()) return canonical_user_id(requested);
  std::set<std::string> users;
  for (const auto& r : records) users.insert(key(r));
  if (users.size() != 1)
    fail("{} holds {} users; name one with --user", file.string(), users.size());
  return *users.begin();
}

// "add_liquidity" → "add liquidity".
std::string spaced(std::string s) {
  std::replace(s.begin(), s.end(), '_', ' ');
  return s;
}

}  // namespace

bool is_domain(std::string_view name) {
  return name == "education" || name == "gaming" || name == "defi" || name == "general";
}

nlohmann::json DomainUser::analytics_json() const {
  return std::visit([](const auto& a) { return a.to_json(); }, analytics);
}

DomainUser load_domain_user(const std::string& domain, const std::filesystem::path& data,
                            const std::string& user) {
  DomainUser out;
  out.domain = domain;
  if (domain == "education") {
    const auto records = read_education_records(data);
    out.user = pick_user(
        records, [](const auto& r) { return r.learner; }, user, data);
    out.analytics = EducationModel::fit(records).analyze(records, out.user);
    for (const auto& r : records) {
      if (r.learner != out.user) continue;
      out.interactions.push_back({.time = r.time,
                                  .line = r.line,
                                  .messages = r.messages,
                                  .skill = r.skill,
                                  .question = r.question,
                                  .answer = r.answer,
                                  .correct = r.correct});
    }
  } else if (domain == "gaming") {
    const auto records = read_gaming_records(data);
    out.user = pick_user(
        records, [](const auto& r) { return r.npc; }, user, data);
    out.analytics = analyze_gaming(records, out.user);
    for (const auto& r : records) {
      if (r.npc != out.user) continue;
      out.interactions.push_back(
          {.time = r.time,
           .line = r.line,
           .messages = !r.messages.empty() ? r.messages
                                           : std::vector<ChatMessage>{{"user", r.utterance, ""},
                                                                      {"assistant", r.reply, ""}}});
    }
  } else if (domain == "defi") {
    const auto records = read_defi_records(data);
    out.user = pick_user(
        records, [](const auto& r) { return r.address; }, user, data);
    const DefiAnalytics d = analyze_defi(records, out.user);
    out.user = d.address;
    out.analytics = d;
    std::vector<const DefiRecord*> history;
    for (const auto& r : records) {
      if (same_evm_address(r.address, d.address)) history.push_back(&r);
    }
    std::stable_sort(history.begin(), history.end(),
                     [](const DefiRecord* a, const DefiRecord* b) { return a->time < b->time; });
    const std::vector<std::string> labels = label_strategies(history);
    for (size_t i = 0; i < history.size(); ++i) {
      const DefiRecord& r = *history[i];
      out.interactions.push_back(
          {.time = r.time,
           .line = r.line,
           .messages = r.messages,
           .action_class = labels[i],
           .summary = fmt::format("{} on {}", spaced(r.action), r.protocol)});
    }
  } else if (domain == "general") {
    const auto records = read_general_records(data);
    out.user = pick_user(
        records, [](const auto& r) { return r.user; }, user, data);
    out.analytics = analyze_general(records, out.user);
    for (const auto& r : records) {
      if (r.user == out.user)
        out.interactions.push_back({.time = r.time, .line = r.line, .messages = r.messages});
    }
  } else {
    fail("unknown domain '{}': {}", domain, kDomainNames);
  }
  std::stable_sort(out.interactions.begin(), out.interactions.end(),
                   [](const Interaction& a, const Interaction& b) { return a.time < b.time; });
  return out;
}

}  // namespace bitdelta
