#include "domain/examples.h"

#include <algorithm>
#include <cmath>

#include "domain/defi.h"
#include "domain/education.h"
#include "domain/gaming.h"
#include "domain/general.h"
#include "domain/records.h"
#include "util/error.h"
#include "util/files.h"

namespace bitdelta {

using nlohmann::json;

namespace {

// A user's conversation with its time, before the split.
struct Timed {
  double time;
  std::vector<ChatMessage> messages;
};

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

PersonalExamples build_personal_examples(const std::string& domain,
                                         const std::filesystem::path& data,
                                         const std::string& user_id, double heldout_fraction) {
  if (!(heldout_fraction > 0 && heldout_fraction < 1)) {
    fail("the held-out share must be between 0 and 1 (exclusive), got {}", heldout_fraction);
  }
  PersonalExamples out;
  out.domain = domain;
  out.user = canonical_user_id(user_id);
  std::vector<Timed> timed;
  // One of the user's records: an interaction, and a conversation to learn from if it has one.
  const auto take = [&](double time, std::vector<ChatMessage> messages) {
    ++out.interactions;
    if (!messages.empty()) timed.push_back({time, std::move(messages)});
  };
  if (domain == "education") {
    const auto records = read_education_records(data);
    out.analytics = EducationModel::fit(records).analyze(records, out.user).to_json();
    for (const auto& r : records) {
      if (r.learner == out.user) take(r.time, r.messages);
    }
  } else if (domain == "gaming") {
    const auto records = read_gaming_records(data);
    out.analytics = analyze_gaming(records, out.user).to_json();
    for (const auto& r : records) {
      if (r.npc != out.user) continue;
      take(r.time, !r.messages.empty() ? r.messages
                                       : std::vector<ChatMessage>{{"user", r.utterance, ""},
                                                                  {"assistant", r.reply, ""}});
    }
  } else if (domain == "defi") {
    const auto records = read_defi_records(data);
    const DefiAnalytics d = analyze_defi(records, out.user);
    out.analytics = d.to_json();
    for (const auto& r : records) {
      if (same_evm_address(r.address, d.address)) take(r.time, r.messages);
    }
  } else if (domain == "general") {
    const auto records = read_general_records(data);
    out.analytics = analyze_general(records, out.user).to_json();
    for (const auto& r : records) {
      if (r.user == out.user) take(r.time, r.messages);
    }
  } else {
    fail("unknown domain '{}': education, gaming, defi or general", domain);
  }
  out.conversations = static_cast<int64_t>(timed.size());
  if (out.conversations < kMinConversations) {
    fail(
        "user '{}' has {} conversation(s) in {} ({} interaction(s) in all); personalization needs "
        "at least {}: {} to train on and the most recent to hold out for evaluation",
        out.user, out.conversations, data.string(), out.interactions, kMinConversations,
        kMinConversations - 1);
  }
  std::stable_sort(timed.begin(), timed.end(),
                   [](const Timed& a, const Timed& b) { return a.time < b.time; });
  out.system_prompt = analytics_system_prompt(domain, out.analytics);
  const auto n = static_cast<int64_t>(timed.size());
  const int64_t held = std::clamp<int64_t>(std::llround(heldout_fraction * static_cast<double>(n)),
                                           1, n - (kMinConversations - 1));
  for (int64_t i = 0; i < n; ++i) {
    (i < n - held ? out.train : out.heldout)
        .push_back(
            with_system(out.system_prompt, std::move(timed[static_cast<size_t>(i)].messages)));
  }
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
