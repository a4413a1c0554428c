// The general domain: a user's chat history, nothing else. Its analytics are the counts of what
// there is to learn from.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace bitdelta {

// One line of a general JSONL file (docs/schemas/general.schema.json): a conversation of a user.
struct GeneralRecord {
  std::string user;
  double time = 0;
  std::vector<ChatMessage> messages;  // required, with at least one assistant reply
  int64_t line = 0;
};

std::vector<GeneralRecord> read_general_records(const std::filesystem::path& path);

struct GeneralAnalytics {
  std::string user;
  int64_t conversations = 0, user_turns = 0, assistant_turns = 0;
  nlohmann::json to_json() const;
};

// Error when the user has no records.
GeneralAnalytics analyze_general(const std::vector<GeneralRecord>& records,
                                 const std::string& user);

}  // namespace bitdelta
