#include "domain/general.h"

#include "domain/records.h"
#include "util/error.h"

namespace bitdelta {

std::vector<GeneralRecord> read_general_records(const std::filesystem::path& path) {
  std::vector<GeneralRecord> out;
  for (const RecordLine& line : read_jsonl_records(path)) {
    RecordFields f(line);
    GeneralRecord r;
    r.user = f.user("user");
    r.time = f.time("time");
    r.messages = f.messages();
    if (r.messages.empty()) f.fail_field("messages", "is missing (the conversation to learn from)");
    bool replied = false;
    for (const auto& m : r.messages) replied = replied || m.role == "assistant";
    if (!replied) f.fail_field("messages", "has no assistant message, so nothing to learn");
    r.line = line.line;
    out.push_back(std::move(r));
  }
  return out;
}

GeneralAnalytics analyze_general(const std::vector<GeneralRecord>& records,
                                 const std::string& user) {
  GeneralAnalytics g;
  g.user = user;
  for (const auto& r : records) {
    if (r.user != user) continue;
    g.conversations += 1;
    for (const auto& m : r.messages) {
      g.user_turns += m.role == "user";
      g.assistant_turns += m.role == "assistant";
    }
  }
  if (g.conversations == 0) fail("user '{}' has no records", user);
  return g;
}

nlohmann::json GeneralAnalytics::to_json() const {
  return {{"domain", "general"},
          {"user", user},
          {"conversations", conversations},
          {"user_turns", user_turns},
          {"assistant_turns", assistant_turns}};
}

}  // namespace bitdelta
