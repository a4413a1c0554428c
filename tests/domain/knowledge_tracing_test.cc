// Knowledge tracing: BKT by hand, EM recovering known parameters from simulated learners, the
// mastery estimate tracking their hidden state, and next-attempt prediction on real learners
// (ASSISTments 2015, fit on train, scored on test).
#include "domain/knowledge_tracing.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "support/test_support.h"
#include "util/error.h"

namespace bitdelta {
namespace {

// One attempt by hand: prior 0.4, learn 0.2, guess 0.25, slip 0.1.
//   P(correct) = 0.4 · 0.9 + 0.6 · 0.25 = 0.51
//   correct: posterior = 0.36 / 0.51 = 0.705882…, then m = 0.705882 + 0.294118 · 0.2 = 0.764706
//   next P(correct) = 0.764706 · 0.9 + 0.235294 · 0.25 = 0.747059
//   wrong: posterior = 0.764706 · 0.1 / (1 − 0.747059) = 0.302326, m = 0.302326 + 0.697674 · 0.2
//        = 0.441860
TEST(Bkt, TraceMatchesHandComputation) {
  BktParams p{0.4, 0.2, 0.0, 0.25, 0.1};
  const std::vector<uint8_t> outcomes = {1, 0};
  BktTrace t = trace_bkt(p, outcomes);
  ASSERT_EQ(t.p_correct.size(), 2u);
  EXPECT_NEAR(t.p_correct[0], 0.51, 1e-12);
  EXPECT_NEAR(t.mastery_after[0], 0.7647058823529411, 1e-12);
  EXPECT_NEAR(t.p_correct[1], 0.7470588235294118, 1e-12);
  EXPECT_NEAR(t.mastery_after[1], 0.4418604651162791, 1e-12);
}

TEST(Bkt, RocAucCountsPairsAndTies) {
  // Positives 0.9, 0.4; negatives 0.5, 0.4: pairs (0.9>0.5) (0.9>0.4) (0.4<0.5) (0.4=0.4 → ½).
  const std::vector<double> scores = {0.9, 0.4, 0.5, 0.4};
  const std::vector<uint8_t> labels = {1, 1, 0, 0};
  EXPECT_DOUBLE_EQ(roc_auc(scores, labels), 2.5 / 4.0);
  EXPECT_DOUBLE_EQ(roc_auc(scores, std::vector<uint8_t>{1, 1, 1, 1}), 0.5);
}

// Learners simulated from known parameters: EM recovers them, and the filtered mastery tracks the
// hidden state the simulator drew.
TEST(Bkt, EmRecoversSimulatedParametersAndMasteryTracksTheHiddenState) {
  const BktParams truth{0.25, 0.15, 0.0, 0.2, 0.1};
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<std::vector<uint8_t>> sequences;
  std::vector<std::vector<uint8_t>> hidden;  // mastered before each attempt
  for (int learner = 0; learner < 800; ++learner) {
    bool mastered = u(rng) < truth.prior;
    std::vector<uint8_t> seq, state;
    for (int t = 0; t < 12; ++t) {
      state.push_back(mastered);
      const double pc = mastered ? 1.0 - truth.slip : truth.guess;
      seq.push_back(u(rng) < pc);
      if (!mastered && u(rng) < truth.learn) mastered = true;
    }
    sequences.push_back(seq);
    hidden.push_back(state);
  }
  BktFit fit = fit_bkt(sequences);
  ASSERT_TRUE(fit.fitted);
  EXPECT_NEAR(fit.params.prior, truth.prior, 0.05);
  EXPECT_NEAR(fit.params.learn, truth.learn, 0.04);
  EXPECT_NEAR(fit.params.guess, truth.guess, 0.04);
  EXPECT_NEAR(fit.params.slip, truth.slip, 0.04);
  // P(mastered) before each attempt (the prior, then each mastery_after) against the truth.
  std::vector<double> estimate;
  std::vector<uint8_t> actual;
  double brier = 0;
  for (size_t i = 0; i < sequences.size(); ++i) {
    BktTrace t = trace_bkt(fit.params, sequences[i]);
    for (size_t k = 0; k < sequences[i].size(); ++k) {
      const double m = k == 0 ? fit.params.prior : t.mastery_after[k - 1];
      estimate.push_back(m);
      actual.push_back(hidden[i][k]);
      brier += (m - hidden[i][k]) * (m - hidden[i][k]);
    }
  }
  EXPECT_GT(roc_auc(estimate, actual), 0.9);
  // And much closer than the best guess that ignores the answers, the share of learners who have
  // mastered the skill by that attempt (measured: 0.55 of its squared error; one noisy answer
  // with guess 0.2 and slip 0.1 cannot say much more).
  double blind = 0;
  for (size_t k = 0; k < 12; ++k) {
    double share = 0;
    for (const auto& h : hidden) share += h[k];
    share /= static_cast<double>(hidden.size());
    for (const auto& h : hidden) blind += (share - h[k]) * (share - h[k]);
  }
  EXPECT_LT(brier, 0.65 * blind) << brier / estimate.size() << " vs " << blind / estimate.size();
}

TEST(Bkt, TooFewAttemptsKeepTheDefaults) {
  const std::vector<std::vector<uint8_t>> sequences = {{1, 0, 1}};
  BktFit fit = fit_bkt(sequences);
  EXPECT_FALSE(fit.fitted);
  EXPECT_EQ(fit.params.learn, kDefaultBkt.learn);
}

TEST(KnowledgeTracing, ReadsTheAssistmentsFormatAndNamesBadLines) {
  testing::ScratchDir dir;
  testing::write_text(dir / "ok.csv", "3\n1,1,2\n0,1,1\n2\r\n5,5\r\n1,0\r\n");
  auto learners = read_assistments_csv(dir / "ok.csv");
  ASSERT_EQ(learners.size(), 2u);
  EXPECT_EQ(learners[0][2].skill, 2);
  EXPECT_EQ(learners[1][1].correct, 0);
  const std::pair<const char*, const char*> bad[] = {
      {"3\n1,1,2\n0,1\n", ":1: the learner has 3 attempts but 3 skills and 2 outcomes"},
      {"2\n1,x\n0,1\n", ":2: 'x' is not an integer"},
      {"2\n1,1\n0,2\n", ":3: outcome 2 is not 0 or 1"},
      {"2\n1,1\n", ":1: a learner needs three lines"},
      {"", "no learners"}};
  for (const auto& [text, message] : bad) {
    testing::write_text(dir / "bad.csv", text);
    try {
      read_assistments_csv(dir / "bad.csv");
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  }
}

// Real learners: fit on the ASSISTments 2015 training split, predict each test attempt from the
// attempts before it. Plain per-skill BKT lands near the published 0.705; the predictor that adds
// the learner's track record reaches the bar of 0.72 (deep knowledge tracing: ~0.73).
TEST(KnowledgeTracing, PredictsNextAttemptsOfRealLearners) {
  const auto train = read_assistments_csv(testing::shared_asset("education/assist2015/assist2015_train.csv"));
  const auto test = read_assistments_csv(testing::shared_asset("education/assist2015/assist2015_test.csv"));
  KnowledgeTracer kt = KnowledgeTracer::fit(train);
  std::vector<double> scores, bkt_scores;
  std::vector<uint8_t> labels;
  for (const auto& learner : test) {
    for (double p : kt.predict(learner)) scores.push_back(p);
    for (double p : kt.predict_bkt(learner)) bkt_scores.push_back(p);
    for (const Attempt& a : learner) labels.push_back(a.correct);
  }
  EXPECT_EQ(labels.size(), 199761u);
  // Classic BKT (no forgetting), the published baseline's model.
  BktFitOptions classic;
  classic.fit_forget = false;
  KnowledgeTracer plain = KnowledgeTracer::fit(train, classic);
  std::vector<double> plain_scores;
  for (const auto& learner : test) {
    for (double p : plain.predict_bkt(learner)) plain_scores.push_back(p);
  }
  const double auc = roc_auc(scores, labels), bkt_auc = roc_auc(bkt_scores, labels);
  const double plain_auc = roc_auc(plain_scores, labels);
  std::printf("ASSISTments 2015 test AUC: BKT %.4f, BKT with forgetting %.4f, knowledge tracer "
              "%.4f\n",
              plain_auc, bkt_auc, auc);
  EXPECT_NEAR(plain_auc, 0.705, 0.01);
  EXPECT_GT(bkt_auc, plain_auc);
  EXPECT_GE(auc, 0.72);
}

}  // namespace
}  // namespace bitdelta
