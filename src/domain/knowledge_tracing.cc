#include "domain/knowledge_tracing.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "util/error.h"
#include "util/files.h"

namespace bitdelta {

namespace {

constexpr double kMinProb = 1e-4;

double clamp_prob(double p, double hi = 1.0 - kMinProb) { return std::clamp(p, kMinProb, hi); }

double logit(double p) {
  p = std::clamp(p, 1e-6, 1.0 - 1e-6);
  return std::log(p / (1.0 - p));
}

double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// Emission probability of outcome o in state s (0: not mastered, 1: mastered).
double emit(const BktParams& p, int s, uint8_t o) {
  const double correct = s == 1 ? 1.0 - p.slip : p.guess;
  return o ? correct : 1.0 - correct;
}

double transition(const BktParams& p, int from, int to) {
  if (from == 0) return to == 1 ? p.learn : 1.0 - p.learn;
  return to == 0 ? p.forget : 1.0 - p.forget;
}

// Expected counts of one E-step, summed over sequences.
struct Counts {
  double first_mastered = 0, sequences = 0;
  double from[2] = {0, 0};          // Σ_{t<T} γ_t(s)
  double moves[2][2] = {{0, 0}, {0, 0}};  // Σ ξ_t(r, s)
  double in_state[2] = {0, 0};      // Σ_t γ_t(s)
  double correct_in[2] = {0, 0};    // Σ_t γ_t(s) o_t
  double log_likelihood = 0;
};

// Forward-backward with scaling over one sequence, adding its expected counts.
void expect(const BktParams& p, std::span<const uint8_t> o, Counts& c, std::vector<double>& alpha,
            std::vector<double>& scale) {
  const size_t T = o.size();
  if (T == 0) return;
  alpha.assign(2 * T, 0.0);
  scale.assign(T, 0.0);
  for (int s = 0; s < 2; ++s) alpha[s] = (s == 1 ? p.prior : 1.0 - p.prior) * emit(p, s, o[0]);
  for (size_t t = 0;; ++t) {
    scale[t] = alpha[2 * t] + alpha[2 * t + 1];
    alpha[2 * t] /= scale[t];
    alpha[2 * t + 1] /= scale[t];
    c.log_likelihood += std::log(scale[t]);
    if (t + 1 == T) break;
    for (int s = 0; s < 2; ++s) {
      double sum = 0;
      for (int r = 0; r < 2; ++r) sum += alpha[2 * t + r] * transition(p, r, s);
      alpha[2 * (t + 1) + s] = sum * emit(p, s, o[t + 1]);
    }
  }
  // Backward pass, accumulating as it goes: beta holds β_{t+1}, scaled like alpha.
  double beta[2] = {1.0, 1.0};
  for (size_t t = T; t-- > 0;) {
    const double g0 = alpha[2 * t] * beta[0], g1 = alpha[2 * t + 1] * beta[1];
    const double norm = g0 + g1;
    const double gamma[2] = {g0 / norm, g1 / norm};
    for (int s = 0; s < 2; ++s) {
      c.in_state[s] += gamma[s];
      c.correct_in[s] += gamma[s] * o[t];
    }
    if (t == 0) {
      c.first_mastered += gamma[1];
      break;
    }
    // ξ_{t-1}(r, s) = α_{t-1}(r) A(r, s) B(s, o_t) β_t(s) / c_t
    double next_beta[2] = {0, 0};
    for (int r = 0; r < 2; ++r) {
      for (int s = 0; s < 2; ++s) {
        const double m = transition(p, r, s) * emit(p, s, o[t]) * beta[s] / scale[t];
        c.moves[r][s] += alpha[2 * (t - 1) + r] * m;
        c.from[r] += alpha[2 * (t - 1) + r] * m;
        next_beta[r] += m;
      }
    }
    beta[0] = next_beta[0];
    beta[1] = next_beta[1];
  }
  c.sequences += 1;
}

}  // namespace

BktFit fit_bkt(std::span<const std::vector<uint8_t>> sequences, const BktFitOptions& options) {
  BktFit fit;
  for (const auto& s : sequences) fit.attempts += static_cast<int64_t>(s.size());
  BD_CHECK(options.max_guess >= kMinProb && options.max_slip >= kMinProb);
  fit.params = kDefaultBkt;
  if (fit.attempts < options.min_attempts) return fit;
  // EM cannot move a probability off exactly 0, and from the 1e-4 floor only slowly: start
  // forgetting where it can be fitted.
  if (options.fit_forget) fit.params.forget = 0.05;
  std::vector<double> alpha, scale;
  double previous = -INFINITY;
  for (int it = 0; it < options.max_iterations; ++it) {
    Counts c;
    for (const auto& s : sequences) expect(fit.params, s, c, alpha, scale);
    fit.log_likelihood = c.log_likelihood;
    fit.iterations = it + 1;
    BktParams& p = fit.params;
    p.prior = clamp_prob(c.first_mastered / std::max(1.0, c.sequences));
    if (c.from[0] > 0) p.learn = clamp_prob(c.moves[0][1] / c.from[0]);
    if (options.fit_forget && c.from[1] > 0) p.forget = clamp_prob(c.moves[1][0] / c.from[1], 0.5);
    if (c.in_state[0] > 0) p.guess = clamp_prob(c.correct_in[0] / c.in_state[0], options.max_guess);
    if (c.in_state[1] > 0) {
      p.slip = clamp_prob((c.in_state[1] - c.correct_in[1]) / c.in_state[1], options.max_slip);
    }
    const double gain = (c.log_likelihood - previous) / static_cast<double>(fit.attempts);
    previous = c.log_likelihood;
    if (gain >= 0 && gain < options.tolerance) break;
  }
  fit.fitted = true;
  return fit;
}

BktTrace trace_bkt(const BktParams& p, std::span<const uint8_t> outcomes) {
  BktTrace trace;
  double m = p.prior;
  for (uint8_t o : outcomes) {
    const double pc = m * (1.0 - p.slip) + (1.0 - m) * p.guess;
    trace.p_correct.push_back(pc);
    const double posterior = o ? m * (1.0 - p.slip) / pc : m * p.slip / (1.0 - pc);
    m = posterior * (1.0 - p.forget) + (1.0 - posterior) * p.learn;
    trace.mastery_after.push_back(m);
  }
  return trace;
}

double roc_auc(std::span<const double> scores, std::span<const uint8_t> labels) {
  BD_CHECK(scores.size() == labels.size());
  for (double s : scores) BD_CHECK(std::isfinite(s), "roc_auc: a score is not finite");
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  double positive_rank_sum = 0;
  double positives = 0;
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j < order.size() && scores[order[j]] == scores[order[i]]) ++j;
    const double rank = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2.0;  // 1-based
    for (size_t k = i; k < j; ++k) {
      if (labels[order[k]]) {
        positive_rank_sum += rank;
        positives += 1;
      }
    }
    i = j;
  }
  const double negatives = static_cast<double>(scores.size()) - positives;
  if (positives == 0 || negatives == 0) return 0.5;
  return (positive_rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives);
}

KnowledgeTracer KnowledgeTracer::fit(std::span<const LearnerHistory> learners,
                                     const BktFitOptions& options) {
  KnowledgeTracer kt;
  std::map<int32_t, std::vector<std::vector<uint8_t>>> by_skill;
  double correct = 0, total = 0;
  for (const auto& learner : learners) {
    std::map<int32_t, std::vector<uint8_t>> mine;
    for (const Attempt& a : learner) {
      mine[a.skill].push_back(a.correct);
      correct += a.correct;
      total += 1;
    }
    for (auto& [skill, seq] : mine) by_skill[skill].push_back(std::move(seq));
  }
  if (total == 0) fail("knowledge tracing needs at least one attempt to fit");
  kt.success_rate_ = correct / total;
  {
    std::map<int32_t, std::pair<double, double>> per_skill;
    for (const auto& learner : learners) {
      for (const Attempt& a : learner) {
        per_skill[a.skill].first += a.correct;
        per_skill[a.skill].second += 1;
      }
    }
    for (const auto& [skill, c] : per_skill) {
      kt.skill_rate_[skill] = (c.first + 1.0) / (c.second + 2.0);
    }
  }
  for (const auto& [skill, seqs] : by_skill) kt.skills_[skill] = fit_bkt(seqs, options);

  // The logistic layer: Newton's method on the mean log-loss with a small L2 term.
  constexpr int D = kFeatures + 1;
  std::vector<double> x;
  std::vector<uint8_t> y;
  for (const auto& learner : learners) {
    std::vector<double> f = kt.features(learner);
    x.insert(x.end(), f.begin(), f.end());
    for (const Attempt& a : learner) y.push_back(a.correct);
  }
  const size_t n = y.size();
  std::vector<double> w(D, 0.0);
  w[0] = 1.0;  // start from BKT alone
  constexpr double kL2 = 1e-4;
  for (int it = 0; it < 25; ++it) {
    std::array<double, D> grad{};
    std::array<std::array<double, D>, D> hess{};
    for (size_t i = 0; i < n; ++i) {
      double row[D];
      for (int j = 0; j < kFeatures; ++j) row[j] = x[i * kFeatures + j];
      row[kFeatures] = 1.0;
      double z = 0;
      for (int j = 0; j < D; ++j) z += w[j] * row[j];
      const double p = sigmoid(z);
      const double r = p - y[i], h = p * (1.0 - p);
      for (int j = 0; j < D; ++j) {
        grad[j] += r * row[j];
        for (int k = 0; k <= j; ++k) hess[j][k] += h * row[j] * row[k];
      }
    }
    for (int j = 0; j < D; ++j) {
      grad[j] = grad[j] / static_cast<double>(n) + (j < kFeatures ? kL2 * w[j] : 0.0);
      for (int k = 0; k <= j; ++k) {
        hess[j][k] = hess[j][k] / static_cast<double>(n) + (j == k && j < kFeatures ? kL2 : 0.0);
        hess[k][j] = hess[j][k];
      }
    }
    // Solve hess · step = grad (Gaussian elimination with partial pivoting; D is small).
    std::array<double, D> step = grad;
    for (int col = 0; col < D; ++col) {
      int pivot = col;
      for (int r = col + 1; r < D; ++r) {
        if (std::fabs(hess[r][col]) > std::fabs(hess[pivot][col])) pivot = r;
      }
      std::swap(hess[col], hess[pivot]);
      std::swap(step[col], step[pivot]);
      if (std::fabs(hess[col][col]) < 1e-12) continue;
      for (int r = col + 1; r < D; ++r) {
        const double f = hess[r][col] / hess[col][col];
        for (int k = col; k < D; ++k) hess[r][k] -= f * hess[col][k];
        step[r] -= f * step[col];
      }
    }
    double change = 0;
    for (int col = D; col-- > 0;) {
      double v = step[col];
      for (int k = col + 1; k < D; ++k) v -= hess[col][k] * step[k];
      step[col] = std::fabs(hess[col][col]) < 1e-12 ? 0.0 : v / hess[col][col];
      w[col] -= step[col];
      change = std::max(change, std::fabs(step[col]));
    }
    if (change < 1e-8) break;
  }
  kt.weights_ = w;
  return kt;
}

const BktParams& KnowledgeTracer::skill_params(int32_t skill) const {
  auto it = skills_.find(skill);
  return it == skills_.end() ? kDefaultBkt : it->second.params;
}

std::vector<double> KnowledgeTracer::features(const LearnerHistory& learner) const {
  struct SkillState {
    double mastery = -1;  // < 0: no attempt yet (the skill's prior applies)
    double attempts = 0, successes = 0;
    double last = 0.5, streak = 0;
  };
  std::map<int32_t, SkillState> state;
  std::vector<double> out;
  out.reserve(learner.size() * kFeatures);
  double attempts = 0, successes = 0;
  double previous = 0;
  double recent = success_rate_;
  double theta = 0;  // Elo ability, against the skills' difficulties
  constexpr double kRecentDecay = 0.7;
  for (const Attempt& a : learner) {
    const BktParams& p = skill_params(a.skill);
    SkillState& s = state[a.skill];
    if (s.mastery < 0) s.mastery = p.prior;
    const double pc = s.mastery * (1.0 - p.slip) + (1.0 - s.mastery) * p.guess;
    out.push_back(logit(pc));
    out.push_back(logit((successes + 2.0 * success_rate_) / (attempts + 2.0)));
    out.push_back(logit((s.successes + 1.0) / (s.attempts + 2.0)));
    out.push_back(std::log1p(s.attempts));
    out.push_back(previous);
    out.push_back(s.last);
    out.push_back(std::log1p(s.streak));
    out.push_back(logit(recent));
    auto rate = skill_rate_.find(a.skill);
    out.push_back(logit(rate == skill_rate_.end() ? success_rate_ : rate->second));
    out.push_back(logit((successes + 2.0 * success_rate_) / (attempts + 2.0)) / (1.0 + s.attempts));
    const double difficulty = -logit(rate == skill_rate_.end() ? success_rate_ : rate->second);
    out.push_back(theta);
    const double p_elo = sigmoid(theta - difficulty);
    // Observe the attempt.
    const double posterior =
        a.correct ? s.mastery * (1.0 - p.slip) / pc : s.mastery * p.slip / (1.0 - pc);
    s.mastery = posterior * (1.0 - p.forget) + (1.0 - posterior) * p.learn;
    s.attempts += 1;
    s.successes += a.correct;
    s.last = a.correct;
    s.streak = a.correct ? s.streak + 1 : 0;
    recent = kRecentDecay * recent + (1.0 - kRecentDecay) * a.correct;
    attempts += 1;
    successes += a.correct;
    previous = a.correct;
    theta += 0.5 / (1.0 + 0.02 * (attempts - 1.0)) * (a.correct - p_elo);
  }
  return out;
}

std::vector<double> KnowledgeTracer::predict(const LearnerHistory& learner) const {
  const std::vector<double> f = features(learner);
  std::vector<double> out(learner.size());
  for (size_t i = 0; i < learner.size(); ++i) {
    double z = weights_[kFeatures];
    for (int j = 0; j < kFeatures; ++j) z += weights_[j] * f[i * kFeatures + j];
    out[i] = sigmoid(z);
  }
  return out;
}

std::vector<double> KnowledgeTracer::predict_bkt(const LearnerHistory& learner) const {
  const std::vector<double> f = features(learner);
  std::vector<double> out(learner.size());
  for (size_t i = 0; i < learner.size(); ++i) out[i] = sigmoid(f[i * kFeatures]);
  return out;
}

std::vector<LearnerHistory> read_assistments_csv(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) fail("cannot open '{}'", path.string());
  const std::string what = path.string();
  auto parse_list = [&](const std::string& line, int64_t line_no) {
    std::vector<int64_t> values;
    size_t i = 0;
    while (i <= line.size()) {
      size_t j = line.find(',', i);
      if (j == std::string::npos) j = line.size();
      int64_t v = 0;
      auto [end, ec] = std::from_chars(line.data() + i, line.data() + j, v);
      if (ec != std::errc() || end != line.data() + j) {
        fail("{}:{}: '{}' is not an integer (expected comma-separated integers)", what, line_no,
             line.substr(i, j - i));
      }
      values.push_back(v);
      i = j + 1;
    }
    return values;
  };
  std::vector<LearnerHistory> learners;
  std::string count_line, skills_line, outcomes_line;
  int64_t line_no = 0;
  while (std::getline(in, count_line)) {
    ++line_no;
    if (count_line.empty() || count_line == "\r") continue;
    if (count_line.back() == '\r') count_line.pop_back();
    const auto count = parse_list(count_line, line_no);
    if (count.size() != 1 || count[0] <= 0) {
      fail("{}:{}: expected the number of attempts of a learner, got '{}'", what, line_no,
           count_line);
    }
    if (!std::getline(in, skills_line) || !std::getline(in, outcomes_line)) {
      fail("{}:{}: a learner needs three lines (count, skills, outcomes); the file ends early",
           what, line_no);
    }
    for (std::string* l : {&skills_line, &outcomes_line}) {
      if (!l->empty() && l->back() == '\r') l->pop_back();
    }
    const auto skills = parse_list(skills_line, line_no + 1);
    const auto outcomes = parse_list(outcomes_line, line_no + 2);
    if (static_cast<int64_t>(skills.size()) != count[0] ||
        static_cast<int64_t>(outcomes.size()) != count[0]) {
      fail("{}:{}: the learner has {} attempts but {} skills and {} outcomes", what, line_no,
           count[0], skills.size(), outcomes.size());
    }
    LearnerHistory h;
    for (size_t i = 0; i < skills.size(); ++i) {
      if (outcomes[i] != 0 && outcomes[i] != 1) {
        fail("{}:{}: outcome {} is not 0 or 1", what, line_no + 2, outcomes[i]);
      }
      if (skills[i] < 0 || skills[i] > INT32_MAX) {
        fail("{}:{}: skill id {} is out of range", what, line_no + 1, skills[i]);
      }
      h.push_back({static_cast<int32_t>(skills[i]), static_cast<uint8_t>(outcomes[i])});
    }
    learners.push_back(std::move(h));
    line_no += 2;
  }
  if (learners.empty()) fail("{}: no learners in the file", what);
  return learners;
}

int64_t write_assistments_as_records(const std::vector<LearnerHistory>& learners,
                                     const std::string& learner_prefix,
                                     const std::filesystem::path& out) {
  std::string text;
  int64_t n = 0;
  for (size_t i = 0; i < learners.size(); ++i) {
    const std::string learner = learner_prefix + std::to_string(i);
    for (size_t k = 0; k < learners[i].size(); ++k) {
      const Attempt& a = learners[i][k];
      text += nlohmann::json{{"learner", learner},
                             {"time", static_cast<int64_t>(k)},
                             {"skill", std::to_string(a.skill)},
                             {"correct", a.correct == 1}}
                  .dump();
      text += '\n';
      ++n;
    }
  }
  write_file_atomic(out, text);
  return n;
}

}  // namespace bitdelta
