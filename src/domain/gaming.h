// The gaming domain: an NPC's interactions with players, and the analytics an NPC's personal
// adapter is conditioned on — behavioural traits, per-player relationships with time decay, a
// ranking of memories, and a behavioural personality vector. Formulas in docs/domains.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace bitdelta {

// One line of a gaming JSONL file (docs/schemas/gaming.schema.json): a player says something
// to an NPC, the NPC replies (and maybe acts), and the player's standing with the NPC changes.
struct GamingRecord {
  std::string npc, player;
  double time = 0;  // seconds since 1970
  std::string utterance, reply;
  std::string action;          // optional: what the NPC did ("trade", "attack", "give_quest"...)
  double affinity_change = 0;  // in [-1, 1]: how the exchange changed the NPC's regard
  std::vector<ChatMessage> messages;
  int64_t line = 0;
};

std::vector<GamingRecord> read_gaming_records(const std::filesystem::path& path);

// Relationships and memories decay with a half-life of a week of game time.
inline constexpr double kGamingHalfLifeSeconds = 7 * 24 * 3600.0;

struct Relationship {
  std::string player;
  int64_t interactions = 0;
  double strength = 0;  // Σ decay · (1 + |affinity change|): how present the player is
  double affinity = 0;  // Σ decay · affinity change: how the NPC feels about them
  double last_seen = 0;
};

struct Memory {
  double time = 0;
  std::string player, utterance, reply, action;
  double importance = 0;  // recency × intensity × frequency
};

struct GamingAnalytics {
  std::string npc;
  int64_t interactions = 0;
  std::map<std::string, double> behavioral_traits;  // action → share of interactions
  std::vector<std::string> trait_labels;            // documented rules over the numbers
  std::vector<Relationship> relationships;          // strongest first
  std::vector<Memory> memory_importance;            // most important first, at most 10
  // Behavioural dimensions in [0, 1] (or [-1, 1] for warmth): warmth, talkativeness, curiosity,
  // assertiveness, volatility.
  std::map<std::string, double> personality;
  nlohmann::json to_json() const;
};

// Error when the NPC has no records.
GamingAnalytics analyze_gaming(const std::vector<GamingRecord>& records, const std::string& npc);

}  // namespace bitdelta
