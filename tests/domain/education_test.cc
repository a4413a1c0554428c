// Education records and learner analytics: validation naming file, line and field; user ids
// (Lux DIDs with EIP-55 addresses); times; and analytics computed by hand on a small case.
#include "domain/education.h"

#include <gtest/gtest.h>

#include <sstream>

#include "domain/records.h"
#include "support/test_support.h"
#include "util/error.h"

namespace bitdelta {
namespace {

std::string error_of(const std::function<void()>& f) { return testing::error_message(f); }

TEST(Records, UserIdsAndEvmAddresses) {
  // EIP-55's own examples are valid; the same digits with one letter's case flipped are not.
  for (const char* a :
       {"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb"}) {
    EXPECT_EQ(error_of([&] { validate_evm_address(a); }), "") << a;
    EXPECT_EQ(eip55_checksum(std::string(a)), a);
  }
  EXPECT_EQ(error_of([] { validate_evm_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"); }),
            "");
  EXPECT_NE(error_of([] {
              validate_evm_address("0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed");
            }).find("fails its EIP-55 checksum"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              validate_evm_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe");
            }).find("40 hex digits"),
            std::string::npos);
  EXPECT_EQ(
      error_of([] { validate_user_id("did:lux:122:0xabcdef0123456789abcdef0123456789abcdef01"); }),
      "");
  EXPECT_EQ(error_of([] { validate_user_id("learner-7"); }), "");
  EXPECT_NE(error_of([] {
              validate_user_id("did:lux:x:0xabcdef0123456789abcdef0123456789abcdef01");
            }).find("chain id"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              validate_user_id("did:eth:1:0xabcdef0123456789abcdef0123456789abcdef01");
            }).find("not a Lux DID"),
            std::string::npos);
  EXPECT_NE(error_of([] { validate_user_id("has space"); }).find("cannot be a user id"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              validate_evm_address("0X5aaeb6053f3e94c9b9a09f33669435e7ef1beaed");
            }).find("0x followed by 40 hex digits"),
            std::string::npos);
  // One wallet, one user: a DID's address is kept in lowercase.
  EXPECT_EQ(canonical_user_id("did:lux:122:0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            "did:lux:122:0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed");
  EXPECT_EQ(canonical_user_id("Ann.B"), "Ann.B");
}

TEST(Records, Rfc3339Times) {
  EXPECT_DOUBLE_EQ(parse_rfc3339("2026-11-30T12:00:00Z"), 1796040000.0);
  EXPECT_DOUBLE_EQ(parse_rfc3339("2026-11-30T12:00:00.5+02:00"), 1796032800.5);
  // A leap second counts as :59; the calendar is checked; signs never pass for digits.
  EXPECT_DOUBLE_EQ(parse_rfc3339("2016-12-31T23:59:60Z"), parse_rfc3339("2016-12-31T23:59:59Z"));
  EXPECT_DOUBLE_EQ(parse_rfc3339("2024-02-29T00:00:00Z") + 86400,
                   parse_rfc3339("2024-03-01T00:00:00Z"));
  EXPECT_NE(error_of([] { parse_rfc3339("1969-12-31T23:59:59Z"); }).find("before 1970"),
            std::string::npos);
  for (const char* bad :
       {"2026-11-30", "2026-13-01T00:00:00Z", "2026-11-30T12:00:00", "2026-11-30T12:00:00Zjunk",
        "2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-01-01T-1:00:00Z",
        "2026-01-01T00:00:00+-1:00", "2026-01-01T12:34:60Z"}) {
    EXPECT_NE(error_of([&] { parse_rfc3339(bad); }).find("not an RFC 3339"), std::string::npos)
        << bad;
  }
}

TEST(Education, BadRecordsNameFileLineAndField) {
  testing::ScratchDir dir;
  const std::string good = R"({"learner": "ann", "time": 1, "skill": "add", "correct": true})";
  const std::pair<std::string, std::string> bad[] = {
      {R"({"learner": "ann", "time": 2, "correct": true})", ":2: field \"skill\" is missing"},
      {R"({"learner": "ann", "time": "yesterday", "skill": "a", "correct": true})",
       ":2: field \"time\" 'yesterday' is not an RFC 3339"},
      {R"({"learner": "ann", "time": 2, "skill": "a", "correct": "yes"})",
       ":2: field \"correct\" must be true or false"},
      {R"({"learner": "a b", "time": 2, "skill": "a", "correct": true})",
       ":2: field \"learner\" 'a b' cannot be a user id"},
      {R"({"learner": "ann", "time": 2, "skill": "a", "correct": true, "response_time_s": -3})",
       ":2: field \"response_time_s\" is -3"},
      {R"({"learner": "ann", "time": 2, "skill": "a", "correct": true, "prerequisites": ["a"]})",
       ":2: field \"prerequisites\" lists the record's own skill"},
      {R"({"learner": "ann", "time": 2, "skill": "a", "correct": true, "messages": [{"role": "bot", "content": "x"}]})",
       ":2: message 0 has role \"bot\""},
      {R"({"learner": "ann", "time": 2, "skill": "a", "correct": true, "hint_used": null})",
       ":2: field \"hint_used\" is null; leave an optional field out instead"},
      {R"([1, 2])", ":2: expected a JSON object"},
      {R"({"learner": )", ":2: not valid JSON"}};
  for (const auto& [line, message] : bad) {
    testing::write_text(dir / "e.jsonl", good + "\n" + line + "\n");
    const std::string e = error_of([&] { read_education_records(dir / "e.jsonl"); });
    EXPECT_NE(e.find(message), std::string::npos) << "got: " << e;
    EXPECT_NE(e.find("e.jsonl"), std::string::npos) << e;
  }
  testing::write_text(dir / "empty.jsonl", "\n  \n");
  EXPECT_NE(error_of([&] { read_education_records(dir / "empty.jsonl"); }).find("no records"),
            std::string::npos);
}

// The JSON Schema shipped for operators (docs/schemas/education.schema.json, checked with Debian's
// python3-jsonschema) and this validator agree on records either can judge.
TEST(Education, SchemaFileAgreesWithTheValidator) {
  testing::ScratchDir dir;
  const std::vector<std::string> lines = {
      R"({"learner": "ann", "time": 1, "skill": "add", "correct": true})",
      R"({"learner": "did:lux:122:0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "time": "2026-11-30T12:00:00Z", "skill": "add", "prerequisites": ["count"], "question": "2+2", "answer": "4", "correct": true, "hint_used": false, "response_time_s": 3.5, "messages": [{"role": "user", "content": "4?"}, {"role": "assistant", "content": "Yes."}]})",
      R"({"learner": "ann", "time": 2, "correct": true})",
      R"({"learner": "ann", "time": "yesterday", "skill": "a", "correct": true})",
      R"({"learner": "ann", "time": 2, "skill": "a", "correct": "yes"})",
      R"({"learner": "a b", "time": 2, "skill": "a", "correct": true})",
      R"({"learner": "ann", "time": 2, "skill": "a", "correct": true, "response_time_s": -3})",
      R"({"learner": "ann", "time": 2, "skill": "", "correct": true})",
      R"({"learner": "ann", "time": 2, "skill": "a", "correct": true, "messages": [{"role": "bot", "content": "x"}]})",
      R"({"learner": "did:lux:abc:0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "time": 2, "skill": "a", "correct": true})"};
  std::string all;
  for (const auto& l : lines) all += l + "\n";
  testing::write_text(dir / "all.jsonl", all);
  auto verdicts = testing::run_command(
      "/usr/bin/python3 '" + testing::source_path("tools/validate_jsonl.py").string() + "' '" +
      testing::source_path("docs/schemas/education.schema.json").string() + "' '" +
      (dir / "all.jsonl").string() + "'");
  ASSERT_EQ(verdicts.exit_code, 0) << verdicts.err;
  std::istringstream in(verdicts.out);
  for (const auto& l : lines) {
    std::string verdict;
    ASSERT_TRUE(std::getline(in, verdict)) << verdicts.out;
    testing::write_text(dir / "one.jsonl", l + "\n");
    const std::string ours = error_of([&] { read_education_records(dir / "one.jsonl"); });
    EXPECT_EQ(verdict == "ok", ours.empty()) << l << "\nschema: " << verdict << "\nours: " << ours;
  }
}

// One learner, four attempts, too little data to fit: BKT keeps the documented defaults
// (prior 0.3, learn 0.1, guess 0.2, slip 0.1). By hand:
//   add  [correct, correct]: P(c) = 0.41, posterior 0.27/0.41 = 0.658537, m = 0.692683;
//        P(c) = 0.684878, posterior 0.910256, m = 0.919231 → proficient
//   fractions [wrong, wrong]: posterior 0.03/0.59 = 0.050847, m = 0.145763; P(c) = 0.302034,
//        posterior 0.0145763/0.697966 = 0.020884, m = 0.118795 → novice
//   fractions builds on add (0.919 < 0.95) and divide (never tried: its prior 0.3) and was
//        failed: both are gaps, divide first
//   hints on 2 of 4 attempts → hint-seeking; the 4th repeats the 3rd's question → retries 1/4;
//        response times 30 and 10 → median 20
//   scaffolding: mean mastery of {add, fractions} = 0.519013 → medium
TEST(Education, AnalyticsByHand) {
  testing::ScratchDir dir;
  testing::write_text(
      dir / "e.jsonl",
      R"({"learner": "ann", "time": 3, "skill": "fractions", "prerequisites": ["add", "divide"], "question": "1/2+1/3", "answer": "2/5", "correct": false, "hint_used": true, "response_time_s": 30}
{"learner": "bob", "time": 1, "skill": "add", "correct": false}
{"learner": "ann", "time": "1970-01-01T00:00:01Z", "skill": "add", "correct": true}
{"learner": "ann", "time": 2, "skill": "add", "correct": true}
{"learner": "ann", "time": 4, "skill": "fractions", "question": "1/2+1/3", "answer": "2/6", "correct": false, "hint_used": true, "response_time_s": 10, "messages": [{"role": "user", "content": "is it 2/6?"}, {"role": "assistant", "content": "Not quite: find a common denominator first."}]}
)");
  const auto records = read_education_records(dir / "e.jsonl");
  ASSERT_EQ(records.size(), 5u);
  EXPECT_EQ(records[4].messages.size(), 2u);
  const EducationModel model = EducationModel::fit(records);
  EXPECT_FALSE(model.skills().at("add").fitted);
  const EducationAnalytics a = model.analyze(records, "ann");
  EXPECT_EQ(a.attempts, 4);
  EXPECT_NEAR(a.mastery.at("add"), 0.919231, 1e-6);
  EXPECT_NEAR(a.mastery.at("fractions"), 0.118795, 1e-6);
  EXPECT_EQ(a.mastery_levels.at("add"), "proficient");
  EXPECT_EQ(a.mastery_levels.at("fractions"), "novice");
  ASSERT_EQ(a.prerequisite_gaps.size(), 2u);
  EXPECT_EQ(a.prerequisite_gaps[0].skill, "divide");
  EXPECT_NEAR(a.prerequisite_gaps[0].mastery, 0.3, 1e-12);
  EXPECT_EQ(a.prerequisite_gaps[1].skill, "add");
  EXPECT_EQ(a.prerequisite_gaps[1].failed_dependents, std::vector<std::string>{"fractions"});
  EXPECT_EQ(a.learning_style.label, "hint-seeking");
  EXPECT_DOUBLE_EQ(a.learning_style.hint_rate, 0.5);
  EXPECT_DOUBLE_EQ(a.learning_style.retry_rate, 0.25);
  EXPECT_DOUBLE_EQ(*a.learning_style.median_response_time_s, 20.0);
  EXPECT_NEAR(a.recent_mastery, 0.519013, 1e-6);
  EXPECT_EQ(a.scaffolding_level, "medium");
  const nlohmann::json j = a.to_json();
  for (const char* key :
       {"mastery_levels", "learning_style", "prerequisite_gaps", "scaffolding_level"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_NE(error_of([&] { model.analyze(records, "carol"); }).find("no records"),
            std::string::npos);
}

TEST(Education, LearningStyleRules) {
  testing::ScratchDir dir;
  auto style = [&](const std::string& lines) {
    testing::write_text(dir / "s.jsonl", lines);
    const auto records = read_education_records(dir / "s.jsonl");
    return EducationModel::fit(records).analyze(records, "x").learning_style.label;
  };
  // Same question twice, quickly, no hints: trial-and-error.
  EXPECT_EQ(
      style(
          R"({"learner": "x", "time": 1, "skill": "s", "question": "q", "correct": false, "response_time_s": 5}
{"learner": "x", "time": 2, "skill": "s", "question": "q", "correct": true, "response_time_s": 4})"),
      "trial-and-error");
  // Slow, no hints, no retries: reflective.
  EXPECT_EQ(
      style(R"({"learner": "x", "time": 1, "skill": "s", "correct": true, "response_time_s": 90})"),
      "reflective");
  EXPECT_EQ(style(R"({"learner": "x", "time": 1, "skill": "s", "correct": true})"), "independent");
}

// The importer's records are valid education records, and the CLI analyzes them.
TEST(Education, AssistmentsImportAndAnalyzeCli) {
  testing::ScratchDir dir;
  testing::write_text(dir / "a.csv", "3\n7,7,9\n0,1,1\n2\n7,9\n1,0\n");
  auto imported = testing::run_cli("import-assistments --in '" + (dir / "a.csv").string() +
                                   "' --out '" + (dir / "a.jsonl").string() + "'");
  ASSERT_EQ(imported.exit_code, 0) << imported.err;
  EXPECT_NE(imported.out.find("wrote 5 records of 2 learners"), std::string::npos) << imported.out;
  const auto records = read_education_records(dir / "a.jsonl");
  ASSERT_EQ(records.size(), 5u);
  EXPECT_EQ(records[0].learner, "assistments-0");
  EXPECT_EQ(records[2].skill, "9");
  auto analyzed = testing::run_cli("analyze --domain education --data '" +
                                   (dir / "a.jsonl").string() + "' --user assistments-1 --json");
  ASSERT_EQ(analyzed.exit_code, 0) << analyzed.err;
  const auto j = nlohmann::json::parse(analyzed.out);
  EXPECT_EQ(j["attempts"], 2);
  EXPECT_TRUE(j["mastery_levels"].contains("7"));
  auto table = testing::run_cli("analyze --domain education --data '" + (dir / "a.jsonl").string() +
                                "' --user assistments-0");
  EXPECT_NE(table.out.find("scaffolding:"), std::string::npos) << table.out;
  auto ambiguous =
      testing::run_cli("analyze --domain education --data '" + (dir / "a.jsonl").string() + "'");
  EXPECT_EQ(ambiguous.exit_code, 1);
  EXPECT_NE(ambiguous.err.find("holds 2 users; name one with --user"), std::string::npos)
      << ambiguous.err;
}

}  // namespace
}  // namespace bitdelta
