#include "domain/gaming.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "domain/records.h"
#include "util/error.h"

namespace bitdelta {

std::vector<GamingRecord> read_gaming_records(const std::filesystem::path& path) {
  std::vector<GamingRecord> out;
  for (const RecordLine& line : read_jsonl_records(path)) {
    RecordFields f(line);
    GamingRecord r;
    r.npc = f.user("npc");
    r.player = f.user("player");
    r.time = f.time("time");
    r.utterance = f.string("utterance");
    r.reply = f.string("reply");
    r.action = f.optional_string("action").value_or("");
    r.affinity_change = f.optional_number("affinity_change", -1, 1).value_or(0);
    r.messages = f.messages();
    r.line = line.line;
    out.push_back(std::move(r));
  }
  return out;
}

namespace {

// Documented thresholds of the trait labels.
constexpr double kFriendlyAffinity = 0.2;
constexpr double kTalkativeWords = 20;  // talkativeness = w / (w + 20): 0.5 at 20 words
constexpr double kTerseWords = 5;
constexpr double kInquisitive = 0.3;
constexpr double kActionOriented = 0.5;
constexpr size_t kMemories = 10;

int64_t word_count(const std::string& text) {
  std::istringstream in(text);
  int64_t n = 0;
  for (std::string w; in >> w;) ++n;
  return n;
}

}  // namespace

GamingAnalytics analyze_gaming(const std::vector<GamingRecord>& records, const std::string& npc) {
  std::vector<const GamingRecord*> mine;
  for (const auto& r : records) {
    if (r.npc == npc) mine.push_back(&r);
  }
  if (mine.empty()) fail("NPC '{}' has no records", npc);
  std::stable_sort(mine.begin(), mine.end(),
                   [](const GamingRecord* a, const GamingRecord* b) { return a->time < b->time; });
  GamingAnalytics g;
  g.npc = npc;
  g.interactions = static_cast<int64_t>(mine.size());
  const double now = mine.back()->time;
  auto decay = [&](double t) { return std::exp2(-(now - t) / kGamingHalfLifeSeconds); };

  std::map<std::string, Relationship> rel;
  std::map<std::string, int64_t> actions;
  double affinity_sum = 0, affinity_sq = 0, words = 0, questions = 0, acted = 0;
  for (const GamingRecord* r : mine) {
    Relationship& p = rel[r->player];
    p.player = r->player;
    p.interactions += 1;
    p.strength += decay(r->time) * (1.0 + std::fabs(r->affinity_change));
    p.affinity += decay(r->time) * r->affinity_change;
    p.last_seen = std::max(p.last_seen, r->time);
    if (!r->action.empty()) {
      actions[r->action] += 1;
      acted += 1;
    }
    affinity_sum += r->affinity_change;
    affinity_sq += r->affinity_change * r->affinity_change;
    words += static_cast<double>(word_count(r->reply));
    questions += r->reply.find('?') != std::string::npos;
  }
  const double n = static_cast<double>(mine.size());
  for (auto& [player, p] : rel) g.relationships.push_back(p);
  std::stable_sort(
      g.relationships.begin(), g.relationships.end(),
      [](const Relationship& a, const Relationship& b) { return a.strength > b.strength; });

  for (const GamingRecord* r : mine) {
    const double intensity = 1.0 + std::fabs(r->affinity_change) + (r->action.empty() ? 0.0 : 0.5);
    const double frequency = std::log1p(static_cast<double>(rel[r->player].interactions));
    g.memory_importance.push_back({r->time, r->player, r->utterance, r->reply, r->action,
                                   decay(r->time) * intensity * frequency});
  }
  std::stable_sort(
      g.memory_importance.begin(), g.memory_importance.end(), [](const Memory& a, const Memory& b) {
        return a.importance != b.importance ? a.importance > b.importance : a.time > b.time;
      });
  if (g.memory_importance.size() > kMemories) g.memory_importance.resize(kMemories);

  for (const auto& [action, count] : actions) g.behavioral_traits[action] = count / n;
  const double mean_affinity = affinity_sum / n;
  const double mean_words = words / n;
  g.personality = {
      {"warmth", mean_affinity},
      {"talkativeness", mean_words / (mean_words + kTalkativeWords)},
      {"curiosity", questions / n},
      {"assertiveness", acted / n},
      {"volatility", std::sqrt(std::max(0.0, affinity_sq / n - mean_affinity * mean_affinity))}};
  g.trait_labels.push_back(mean_affinity >= kFriendlyAffinity    ? "friendly"
                           : mean_affinity <= -kFriendlyAffinity ? "hostile"
                                                                 : "neutral");
  if (mean_words >= kTalkativeWords) g.trait_labels.push_back("talkative");
  if (mean_words < kTerseWords) g.trait_labels.push_back("terse");
  if (questions / n >= kInquisitive) g.trait_labels.push_back("inquisitive");
  if (acted / n >= kActionOriented) g.trait_labels.push_back("action-oriented");
  return g;
}

nlohmann::json GamingAnalytics::to_json() const {
  using nlohmann::json;
  json rels = json::array();
  for (const auto& r : relationships) {
    rels.push_back({{"player", r.player},
                    {"interactions", r.interactions},
                    {"strength", r.strength},
                    {"affinity", r.affinity},
                    {"last_seen", r.last_seen}});
  }
  json memories = json::array();
  for (const auto& m : memory_importance) {
    memories.push_back({{"time", m.time},
                        {"player", m.player},
                        {"utterance", m.utterance},
                        {"reply", m.reply},
                        {"action", m.action},
                        {"importance", m.importance}});
  }
  return {{"domain", "gaming"},
          {"npc", npc},
          {"interactions", interactions},
          {"behavioral_traits", {{"actions", behavioral_traits}, {"labels", trait_labels}}},
          {"relationships", rels},
          {"memory_importance", memories},
          {"personality", personality}};
}

}  // namespace bitdelta
