// Training examples for a personal adapter: the user's own conversations, each conditioned on a
// system prompt that states the user's analytics, split in time so the most recent interactions
// are held out for evaluation. Nothing invented is trained as fact: records without a
// conversation inform the analytics only (gaming records are one: the player's utterance and the
// NPC's reply).
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "domain/domain.h"
#include "tokenizer/tokenizer.h"

namespace bitdelta {

// A classification item: which of `options` the user's next reply is, given `context`.
struct ChoiceItem {
  std::vector<ChatMessage> context;  // ends with a user message
  std::vector<std::string> options;
  size_t answer = 0;
};

// What a domain's objective scores on the held-out interactions (docs/domains.md, "Domain
// objectives"): the likelihood of the assistant replies of `scored`, or the accuracy of `choices`.
struct DomainObjectiveData {
  std::string name;         // "education", "gaming", "defi" or "general"
  std::string description;  // what is scored, in words
  std::vector<std::vector<ChatMessage>> scored;
  std::vector<ChoiceItem> choices;
};

struct PersonalExamples {
  std::string domain, user;
  std::string system_prompt;
  nlohmann::json analytics;  // what the system prompt states (the adapter's metadata)
  // Conversations (system prompt first), oldest first.
  std::vector<std::vector<ChatMessage>> train, heldout;
  int64_t interactions = 0;   // the user's records
  int64_t conversations = 0;  // of them, with a conversation
  int64_t heldout_interactions = 0;  // records from the first held-out conversation on
  DomainObjectiveData objective;
};

// The DeFi action classes the objective tells apart (label_strategies' labels).
inline constexpr const char* kActionClasses[] = {
    "LP provision", "lending", "leveraged trading", "stablecoin parking", "swing trading", "other"};

// The fewest conversations a user needs: enough that the held-out share keeps at least one and
// training at least four.
inline constexpr int64_t kMinConversations = 5;

// Reads `data` as records of `domain` (education, gaming, defi, general), computes the user's
// analytics, and builds the examples: the most recent `heldout_fraction` of the user's
// conversations (at least one) are held out. Error for an unknown domain, a user without records,
// or fewer than kMinConversations conversations (saying how many there are and are needed).
PersonalExamples build_personal_examples(const std::string& domain,
                                         const std::filesystem::path& data, const std::string& user,
                                         double heldout_fraction = 0.1);
// The same from a user already loaded from `data` (named in messages).
PersonalExamples build_personal_examples(const DomainUser& user, const std::filesystem::path& data,
                                         double heldout_fraction = 0.1);

// The system prompt of a domain's analytics (deterministic; docs/domains.md shows examples).
std::string analytics_system_prompt(const std::string& domain, const nlohmann::json& analytics);

// Writes conversations as finetune/eval JSONL ({"messages": [...]} per line), atomically.
void write_conversations_jsonl(const std::vector<std::vector<ChatMessage>>& conversations,
                               const std::filesystem::path& out);

}  // namespace bitdelta
