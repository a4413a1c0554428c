// The education domain: learning-interaction records and the learner analytics a tutor adapter
// is conditioned on — BKT mastery per skill, mastery levels, prerequisite gaps, a learning-style
// signal and a scaffolding level. Formulas and thresholds are documented in docs/domains.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "domain/knowledge_tracing.h"
#include "tokenizer/tokenizer.h"

namespace bitdelta {

// One line of an education JSONL file (docs/schemas/education.schema.json).
struct EducationRecord {
  std::string learner;
  double time = 0;  // seconds since 1970
  std::string skill;
  std::vector<std::string> prerequisites;  // skills this one builds on
  std::string question, answer;            // optional
  bool correct = false;
  bool hint_used = false;
  std::optional<double> response_time_s;
  std::vector<ChatMessage> messages;  // an optional tutoring conversation
  int64_t line = 0;                   // where it came from
};

// Reads and validates every record of `path` (Error "file:line: field ..." on the first bad one),
// in the file's order (the analytics take each learner's records by time, ties in file order).
std::vector<EducationRecord> read_education_records(const std::filesystem::path& path);

// Thresholds (documented): the classic BKT mastery threshold is 0.95 (Corbett & Anderson).
inline constexpr double kMasteredThreshold = 0.95;
inline constexpr double kProficientThreshold = 0.7;
inline constexpr double kDevelopingThreshold = 0.4;
// "novice" (< 0.4), "developing" (< 0.7), "proficient" (< 0.95), "mastered".
std::string mastery_level(double mastery);

struct PrerequisiteGap {
  std::string skill;  // not mastered
  double mastery = 0;
  std::vector<std::string> failed_dependents;  // skills that build on it, attempted and failed
};

struct LearningStyle {
  std::string label;      // hint-seeking, trial-and-error, reflective, or independent
  double hint_rate = 0;   // attempts with a hint ÷ attempts
  double retry_rate = 0;  // attempts repeating the learner's previous question ÷ attempts
  std::optional<double> median_response_time_s;
};

struct EducationAnalytics {
  std::string learner;
  int64_t attempts = 0;
  std::map<std::string, double> mastery;  // skill → P(mastered) after the learner's attempts
  std::map<std::string, std::string> mastery_levels;
  std::vector<PrerequisiteGap> prerequisite_gaps;  // lowest mastery first
  LearningStyle learning_style;
  std::string scaffolding_level;  // high, medium or low
  double recent_mastery = 0;      // what the scaffolding level is read from
  // The adapter's `metadata` fields: mastery_levels, learning_style, prerequisite_gaps,
  // scaffolding_level (plus the numbers behind them).
  nlohmann::json to_json() const;
};

// BKT per skill fitted by EM over every learner in `records` (skills with fewer than
// BktFitOptions::min_attempts attempts keep the documented defaults), then one learner's
// analytics. Deterministic.
class EducationModel {
 public:
  static EducationModel fit(const std::vector<EducationRecord>& records,
                            const BktFitOptions& options = {});
  // Error when the learner has no records.
  EducationAnalytics analyze(const std::vector<EducationRecord>& records,
                             const std::string& learner) const;
  const BktParams& params(const std::string& skill) const;
  const std::map<std::string, BktFit>& skills() const { return skills_; }

 private:
  std::map<std::string, BktFit> skills_;
};

}  // namespace bitdelta
