#include "domain/education.h"

#include <algorithm>
#include <set>

#include "domain/records.h"
#include "util/error.h"

namespace bitdelta {

namespace {

// Skills whose recent attempts set the scaffolding level: the distinct skills of the learner's
// last kRecentAttempts attempts.
constexpr size_t kRecentAttempts = 10;

// Learning-style rules (first match wins).
constexpr double kHintSeekingRate = 0.3;
constexpr double kTrialAndErrorRetryRate = 0.3;
constexpr double kQuickResponseSeconds = 20;
constexpr double kReflectiveResponseSeconds = 60;

}  // namespace

std::vector<EducationRecord> read_education_records(const std::filesystem::path& path) {
  std::vector<EducationRecord> out;
  for (const RecordLine& line : read_jsonl_records(path)) {
    RecordFields f(line);
    EducationRecord r;
    r.learner = f.user("learner");
    r.time = f.time("time");
    r.skill = f.string("skill");
    r.prerequisites = f.optional_strings("prerequisites");
    r.question = f.optional_string("question").value_or("");
    r.answer = f.optional_string("answer").value_or("");
    r.correct = f.boolean("correct");
    r.hint_used = f.optional_boolean("hint_used", false);
    r.response_time_s = f.optional_number("response_time_s", 0, 86400);
    r.messages = f.messages();
    r.line = line.line;
    for (const std::string& p : r.prerequisites) {
      if (p == r.skill) f.fail_field("prerequisites", "lists the record's own skill");
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::string mastery_level(double m) {
  if (m < kDevelopingThreshold) return "novice";
  if (m < kProficientThreshold) return "developing";
  if (m < kMasteredThreshold) return "proficient";
  return "mastered";
}

namespace {

// A learner's records in time order (the file order breaks ties).
std::vector<const EducationRecord*> history_of(const std::vector<EducationRecord>& records,
                                               const std::string& learner) {
  std::vector<const EducationRecord*> h;
  for (const auto& r : records) {
    if (r.learner == learner) h.push_back(&r);
  }
  std::stable_sort(h.begin(), h.end(), [](const EducationRecord* a, const EducationRecord* b) {
    return a->time < b->time;
  });
  return h;
}

}  // namespace

EducationModel EducationModel::fit(const std::vector<EducationRecord>& records,
                                   const BktFitOptions& options) {
  EducationModel m;
  std::map<std::string, std::vector<const EducationRecord*>> by_learner;
  for (const auto& r : records) by_learner[r.learner].push_back(&r);
  std::map<std::string, std::vector<std::vector<uint8_t>>> by_skill;
  for (auto& [learner, rs] : by_learner) {
    std::stable_sort(rs.begin(), rs.end(), [](const EducationRecord* a, const EducationRecord* b) {
      return a->time < b->time;
    });
    std::map<std::string, std::vector<uint8_t>> mine;
    for (const EducationRecord* r : rs) mine[r->skill].push_back(r->correct);
    for (auto& [skill, seq] : mine) by_skill[skill].push_back(std::move(seq));
  }
  // Prerequisites named but never attempted still get (default) parameters.
  for (const auto& r : records) {
    for (const auto& p : r.prerequisites) by_skill[p];
  }
  for (const auto& [skill, seqs] : by_skill) m.skills_[skill] = fit_bkt(seqs, options);
  return m;
}

const BktParams& EducationModel::params(const std::string& skill) const {
  auto it = skills_.find(skill);
  return it == skills_.end() ? kDefaultBkt : it->second.params;
}

EducationAnalytics EducationModel::analyze(const std::vector<EducationRecord>& records,
                                           const std::string& learner) const {
  const auto history = history_of(records, learner);
  if (history.empty()) fail("learner '{}' has no records", learner);
  EducationAnalytics a;
  a.learner = learner;
  a.attempts = static_cast<int64_t>(history.size());

  // Mastery: BKT filtered over the learner's attempts at each skill, in time order.
  std::map<std::string, std::vector<uint8_t>> outcomes;
  for (const EducationRecord* r : history) outcomes[r->skill].push_back(r->correct);
  for (const auto& [skill, seq] : outcomes) {
    a.mastery[skill] = trace_bkt(params(skill), seq).mastery_after.back();
    a.mastery_levels[skill] = mastery_level(a.mastery[skill]);
  }

  // Prerequisite gaps: a skill below mastery (its prior when never attempted) that some skill
  // the learner attempted and failed builds on (prerequisites as declared anywhere in the data).
  std::map<std::string, std::set<std::string>> prerequisites;
  for (const auto& r : records)
    prerequisites[r.skill].insert(r.prerequisites.begin(), r.prerequisites.end());
  std::map<std::string, std::set<std::string>> gaps;
  for (const EducationRecord* r : history) {
    if (r->correct) continue;
    for (const std::string& p : prerequisites[r->skill]) {
      auto it = a.mastery.find(p);
      const double m = it != a.mastery.end() ? it->second : params(p).prior;
      if (m < kMasteredThreshold) gaps[p].insert(r->skill);
    }
  }
  for (const auto& [skill, dependents] : gaps) {
    auto it = a.mastery.find(skill);
    a.prerequisite_gaps.push_back({skill, it != a.mastery.end() ? it->second : params(skill).prior,
                                   std::vector<std::string>(dependents.begin(), dependents.end())});
  }
  std::stable_sort(
      a.prerequisite_gaps.begin(), a.prerequisite_gaps.end(),
      [](const PrerequisiteGap& x, const PrerequisiteGap& y) { return x.mastery < y.mastery; });

  // Learning style from behaviour.
  double hints = 0, retries = 0;
  std::vector<double> times;
  for (size_t i = 0; i < history.size(); ++i) {
    const EducationRecord* r = history[i];
    hints += r->hint_used;
    if (i > 0 && !r->question.empty() && history[i - 1]->skill == r->skill &&
        history[i - 1]->question == r->question) {
      retries += 1;
    }
    if (r->response_time_s) times.push_back(*r->response_time_s);
  }
  LearningStyle& s = a.learning_style;
  s.hint_rate = hints / static_cast<double>(history.size());
  s.retry_rate = retries / static_cast<double>(history.size());
  if (!times.empty()) {
    std::sort(times.begin(), times.end());
    const size_t n = times.size();
    s.median_response_time_s = n % 2 ? times[n / 2] : (times[n / 2 - 1] + times[n / 2]) / 2;
  }
  if (s.hint_rate >= kHintSeekingRate) {
    s.label = "hint-seeking";
  } else if (s.retry_rate >= kTrialAndErrorRetryRate &&
             (!s.median_response_time_s || *s.median_response_time_s < kQuickResponseSeconds)) {
    s.label = "trial-and-error";
  } else if (s.median_response_time_s && *s.median_response_time_s >= kReflectiveResponseSeconds) {
    s.label = "reflective";
  } else {
    s.label = "independent";
  }

  // Scaffolding from the mastery of what the learner is working on now.
  std::set<std::string> recent;
  for (size_t i = history.size() > kRecentAttempts ? history.size() - kRecentAttempts : 0;
       i < history.size(); ++i) {
    recent.insert(history[i]->skill);
  }
  double sum = 0;
  for (const std::string& skill : recent) sum += a.mastery[skill];
  a.recent_mastery = sum / static_cast<double>(recent.size());
  a.scaffolding_level = a.recent_mastery < kDevelopingThreshold   ? "high"
                        : a.recent_mastery < kProficientThreshold ? "medium"
                                                                  : "low";
  return a;
}

nlohmann::json EducationAnalytics::to_json() const {
  using nlohmann::json;
  json gaps = json::array();
  for (const auto& g : prerequisite_gaps) {
    gaps.push_back(
        {{"skill", g.skill}, {"mastery", g.mastery}, {"failed_dependents", g.failed_dependents}});
  }
  json style = {{"label", learning_style.label},
                {"hint_rate", learning_style.hint_rate},
                {"retry_rate", learning_style.retry_rate},
                {"median_response_time_s", learning_style.median_response_time_s
                                               ? json(*learning_style.median_response_time_s)
                                               : json(nullptr)}};
  return {{"domain", "education"},
          {"learner", learner},
          {"attempts", attempts},
          {"mastery", mastery},
          {"mastery_levels", mastery_levels},
          {"prerequisite_gaps", gaps},
          {"learning_style", style},
          {"scaffolding_level", scaffolding_level},
          {"recent_mastery", recent_mastery}};
}

}  // namespace bitdelta
