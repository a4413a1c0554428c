// The four domains behind one dispatch: read a file of a domain's records, pick the user, compute
// their analytics and list their interactions in time order. `analyze`, the training examples,
// the domain objectives and `personalize` all start here.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "domain/defi.h"
#include "domain/education.h"
#include "domain/gaming.h"
#include "domain/general.h"
#include "tokenizer/tokenizer.h"

namespace bitdelta {

// The domains, for messages: "education, gaming, defi or general".
inline constexpr const char* kDomainNames = "education, gaming, defi or general";
bool is_domain(std::string_view name);

// One of the user's records, as the examples and objectives need it.
struct Interaction {
  double time = 0;
  int64_t line = 0;
  // The conversation to learn from (gaming: the player's utterance and the NPC's reply); empty
  // when the record has none.
  std::vector<ChatMessage> messages;
  // education: the attempt.
  std::string skill, question, answer;
  bool correct = false;
  // defi: the transaction's strategy class (label_strategies) and a one-line description.
  std::string action_class, summary;
};

struct DomainUser {
  std::string domain, user;  // the user as the records name them (canonical)
  std::variant<EducationAnalytics, GamingAnalytics, DefiAnalytics, GeneralAnalytics> analytics;
  std::vector<Interaction> interactions;  // the user's, oldest first (ties in file order)
  nlohmann::json analytics_json() const;
};

// Reads `data` as records of `domain` (validated; Error with file, line and field) and takes
// `user`'s (canonical_user_id; empty: the file's only user, else an Error asking for one).
// Error for an unknown domain or a user without records.
DomainUser load_domain_user(const std::string& domain, const std::filesystem::path& data,
                            const std::string& user);

}  // namespace bitdelta
