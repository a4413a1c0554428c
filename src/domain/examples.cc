#include "domain/examples.h"

#include <algorithm>
#include <cmath>

#include "domain/domain.h"
#include "domain/records.h"
#include "util/error.h"
#include "util/files.h"

namespace bitdelta {

using nlohmann::json;

namespace {

std::string fixed(double v, int digits) { return fmt::format("{:.{}f}", v, digits); }

std::string education_prompt(const json& a) {
  std::vector<std::pair<double, std::string>> skills;
  for (const auto& [skill, m] : a["mastery"].items()) {
    skills.emplace_back(m.get<double>(), skill);
  }
  std::stable_sort(skills.begin(), skills.end(),
                   [](const auto& x, const auto& y) { return x.first < y.first; });
  std::vector<std::string> parts;
  for (size_t i = 0; i < skills.size() && i < 8; ++i) {
    parts.push_back(fmt::format("{} {} ({})", skills[i].second,
                                a["mastery_levels"][skills[i].second].get<std::string>(),
                                fixed(skills[i].first, 2)));
  }
  std::vector<std::string> gaps;
  for (const auto& g : a["prerequisite_gaps"]) {
    gaps.push_back(fmt::format("{} ({})", g["skill"].get<std::string>(),
                               fixed(g["mastery"].get<double>(), 2)));
  }
  const std::string level = a["scaffolding_level"];
  const std::string how = level == "high"     ? "give worked examples and small steps"
                          : level == "medium" ? "give hints before answers"
                                              : "let the learner work independently";
  return fmt::format(
      "You are a patient tutor for this learner. Mastery by skill, weakest first: {}. "
      "Prerequisite gaps to revisit first: {}. Learning style: {}. Scaffolding: {} ({}).",
      fmt::join(parts, "; "),
      gaps.empty() ? std::string("none") : fmt::format("{}", fmt::join(gaps, ", ")),
      a["learning_style"]["label"].get<std::string>(), level, how);
}

std::string gaming_prompt(const json& g) {
  const json& p = g["personality"];
  std::vector<std::string> players;
  for (size_t i = 0; i < g["relationships"].size() && i < 5; ++i) {
    const json& r = g["relationships"][i];
    players.push_back(fmt::format("{} (affinity {:+.2f}, {} meetings)",
                                  r["player"].get<std::string>(), r["affinity"].get<double>(),
                                  r["interactions"].get<int64_t>()));
  }
  std::vector<std::string> memories;
  for (size_t i = 0; i < g["memory_importance"].size() && i < 3; ++i) {
    const json& m = g["memory_importance"][i];
    memories.push_back(fmt::format("{} said \"{}\"", m["player"].get<std::string>(),
                                   m["utterance"].get<std::string>()));
  }
  return fmt::format(
      "You are {}, a character in a game. Personality: warmth {:+.2f}, talkativeness {}, curiosity "
      "{}, assertiveness {}, volatility {}; traits: {}. Players you know: {}. What you remember "
      "most: {}.",
      g["npc"].get<std::string>(), p["warmth"].get<double>(), fixed(p["talkativeness"], 2),
      fixed(p["curiosity"], 2), fixed(p["assertiveness"], 2), fixed(p["volatility"], 2),
      fmt::join(g["behavioral_traits"]["labels"].get<std::vector<std::string>>(), ", "),
      fmt::join(players, "; "), fmt::join(memories, "; "));
}

std::string defi_prompt(const json& d) {
  std::vector<std::string> strategies;
  for (const auto& s : d["preferred_strategies"]) {
    strategies.push_back(fmt::format("{} ({:.0f}%)", s["strategy"].get<std::string>(),
                                     100 * s["share"].get<double>()));
  }
  const auto pools = d["favorite_pools"].get<std::vector<std::string>>();
  return fmt::format(
      "You are a DeFi advisor for wallet {}. Risk tolerance: {} ({}). Preferred strategies: {}. "
      "Average position: ${:.0f}. Favourite pools: {}.",
      d["address"].get<std::string>(), d["risk_tolerance"]["label"].get<std::string>(),
      fixed(d["risk_tolerance"]["score"], 2),
      strategies.empty() ? std::string("none yet") : fmt::format("{}", fmt::join(strategies, ", ")),
      d["avg_position_size"].get<double>(),
      pools.empty() ? std::string("none yet") : fmt::format("{}", fmt::join(pools, ", ")));
}

// The conversation with the system prompt first (merged into the record's own system message).
std::vector<ChatMessage> with_system(const std::string& prompt, std::vector<ChatMessage> messages) {
  if (!messages.empty() && messages.front().role == "system") {
    messages.front().content = prompt + "\n\n" + messages.front().content;
    return messages;
  }
  messages.insert(messages.begin(), ChatMessage{"system", prompt, ""});
  return messages;
}

}  // namespace

std::string analytics_system_prompt(const std::string& domain, const json& analytics) {
  if (domain == "education") return education_prompt(analytics);
  if (domain == "gaming") return gaming_prompt(analytics);
  if (domain == "defi") return defi_prompt(analytics);
  return "You are a helpful assistant for this user.";
}

namespace {

DomainObjectiveData objective_data(const PersonalExamples& e, const DomainUser& u, size_t split) {
  DomainObjectiveData o;
  o.name = u.domain;
  const auto& all = u.interactions;
  if (u.domain == "education") {
    for (size_t i = split; i < all.size(); ++i) {
      const Interaction& r = all[i];
      if (r.correct && !r.question.empty() && !r.answer.empty()) {
        o.scored.push_back({{"system", e.system_prompt, ""},
                            {"user", r.question, ""},
                            {"assistant", r.answer, ""}});
      }
      if (r.messages.empty()) continue;
      for (size_t j = i + 1; j < all.size(); ++j) {
        if (all[j].skill != r.skill) continue;
        if (all[j].correct) o.scored.push_back(with_system(e.system_prompt, r.messages));
        break;
      }
    }
    o.description =
        "likelihood of the held-out correct answers and of the tutor replies that preceded a "
        "correct next attempt at the same skill";
    if (o.scored.empty()) {
      o.scored = e.heldout;
      o.description = "likelihood of the held-out tutor replies (no held-out attempt was correct)";
    }
  } else if (u.domain == "defi") {
    for (size_t i = std::max<size_t>(split, 1); i < all.size(); ++i) {
      ChoiceItem item;
      item.context = {
          {"system", e.system_prompt, ""},
          {"user",
           fmt::format("My last move: {}. What kind of move do I make next?", all[i - 1].summary),
           ""}};
      for (const char* c : kActionClasses) item.options.push_back(fmt::format("Next: {}.", c));
      item.answer = static_cast<size_t>(
          std::find(std::begin(kActionClasses), std::end(kActionClasses), all[i].action_class) -
          std::begin(kActionClasses));
      if (item.answer < item.options.size()) o.choices.push_back(std::move(item));
    }
    o.description =
        "accuracy of predicting the class of each held-out transaction from the one before it "
        "(of the replies \"Next: <class>.\" for the six classes, the one the model finds "
        "likeliest), plus 0.001 x the mean log-probability of the right one among them as a "
        "tie-breaker";
  } else {
    o.scored = e.heldout;
    o.description = u.domain == "gaming" ? "likelihood of the NPC's held-out replies"
                                         : "likelihood of the held-out assistant replies";
  }
  return o;
}

}  // namespace

PersonalExamples build_personal_examples(const std::string& domain,
                                         const std::filesystem::path& data,
                                         const std::string& user_id, double heldout_fraction) {
  if (!(heldout_fraction > 0 && heldout_fraction < 1)) {
    fail("the held-out share must be between 0 and 1 (exclusive), got {}", heldout_fraction);
  }
  if (!is_domain(domain)) fail("unknown domain '{}': {}", domain, kDomainNames);
  if (user_id.empty()) fail("name the user whose examples to build");
  const DomainUser u = load_domain_user(domain, data, user_id);
  return build_personal_examples(u, data, heldout_fraction);
}

PersonalExamples build_personal_examples(const DomainUser& u, const std::filesystem::path& data,
                                         double heldout_fraction) {
  PersonalExamples out;
  out.domain = u.domain;
  out.user = u.user;
  out.analytics = u.analytics_json();
  out.interactions = static_cast<int64_t>(u.interactions.size());
  std::vector<size_t> with_conversation;
  for (size_t i = 0; i < u.interactions.size(); ++i) {
    if (!u.interactions[i].messages.empty()) with_conversation.push_back(i);
  }
  out.conversations = static_cast<int64_t>(with_conversation.size());
  if (out.conversations < kMinConversations) {
    fail(
        "user '{}' has {} conversation(s) in {} ({} interaction(s) in all); personalization needs "
        "at least {}: {} to train on and the most recent to hold out for evaluation",
        out.user, out.conversations, data.string(), out.interactions, kMinConversations,
        kMinConversations - 1);
  }
  out.system_prompt = analytics_system_prompt(u.domain, out.analytics);
  const int64_t n = out.conversations;
  const int64_t held = std::clamp<int64_t>(std::llround(heldout_fraction * static_cast<double>(n)),
                                           1, n - (kMinConversations - 1));
  for (int64_t i = 0; i < n; ++i) {
    (i < n - held ? out.train : out.heldout)
        .push_back(with_system(out.system_prompt,
                               u.interactions[with_conversation[static_cast<size_t>(i)]].messages));
  }
  const size_t split = with_conversation[static_cast<size_t>(n - held)];
  out.heldout_interactions = static_cast<int64_t>(u.interactions.size() - split);
  out.objective = objective_data(out, u, split);
  return out;
}

void write_conversations_jsonl(const std::vector<std::vector<ChatMessage>>& conversations,
                               const std::filesystem::path& out) {
  std::string text;
  for (const auto& c : conversations) {
    json messages = json::array();
    for (const auto& m : c) {
      json j = {{"role", m.role}, {"content", m.content}};
      if (!m.reasoning_content.empty()) j["reasoning_content"] = m.reasoning_content;
      messages.push_back(j);
    }
    text += json{{"messages", messages}}.dump() + "\n";
  }
  write_file_atomic(out, text);
}

}  // namespace bitdelta
