// The hash-chained audit log: every kind of tampering is found and named (an edited, removed or
// reordered entry, a cut-off tail, an edited last entry, an edited or untrusted signed head), two
// writers on one file keep one chain, and a damaged log is never appended to.
#include "store/audit_log.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "support/test_support.h"
#include "util/error.h"

namespace bitdelta {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> lines_of(const fs::path& p) {
  std::vector<std::string> out;
  std::istringstream in(testing::read_text(p));
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

void write_lines(const fs::path& p, const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  testing::write_text(p, text);
}

class AuditLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AuditLog log(path_);
    for (int i = 1; i <= 5; ++i) {
      log.append({"upload",
                  "key" + std::to_string(i),
                  "general/u/v" + std::to_string(i),
                  std::string(64, 'a'),
                  {{"n", i}}});
    }
    original_ = lines_of(path_);
    ASSERT_EQ(original_.size(), 5u);
  }
  std::string problem() {
    const AuditVerification v = verify_audit_log(path_);
    EXPECT_FALSE(v.ok);
    return v.problem;
  }
  testing::ScratchDir dir_;
  fs::path path_ = dir_ / "audit.jsonl";
  std::vector<std::string> original_;
};

TEST_F(AuditLogTest, AnIntactLogVerifies) {
  const AuditVerification v = verify_audit_log(path_);
  EXPECT_TRUE(v.ok) << v.problem;
  EXPECT_EQ(v.entries, 5);
  EXPECT_EQ(AuditLog(path_).entries().at(2)["actor"], "key3");
}

TEST_F(AuditLogTest, EveryTamperingIsFound) {
  auto edited = original_;
  edited[2].replace(edited[2].find("key3"), 4, "key9");
  write_lines(path_, edited);
  EXPECT_NE(problem().find("line 4: its prev hash"), std::string::npos);

  auto removed = original_;
  removed.erase(removed.begin() + 1);
  write_lines(path_, removed);
  EXPECT_NE(problem().find("line 2: entry number 3"), std::string::npos);

  auto reordered = original_;
  std::swap(reordered[1], reordered[2]);
  write_lines(path_, reordered);
  EXPECT_NE(problem().find("line 2"), std::string::npos);

  auto last_edited = original_;
  last_edited[4].replace(last_edited[4].find("key5"), 4, "key0");
  write_lines(path_, last_edited);
  EXPECT_NE(problem().find("the last entry is not the one the head names"), std::string::npos);

  auto cut = original_;
  cut.pop_back();
  write_lines(path_, cut);
  EXPECT_NE(problem().find("cut off the end"), std::string::npos);

  std::string text;
  for (const auto& l : original_) text += l + "\n";
  testing::write_text(path_, text.substr(0, text.size() - 10));
  EXPECT_NE(problem().find("cut off (no newline)"), std::string::npos);
  // Never appended to while damaged.
  EXPECT_NE(testing::error_message([&] { AuditLog log(path_); }).find("damaged"),
            std::string::npos);

  write_lines(path_, original_);
  EXPECT_TRUE(verify_audit_log(path_).ok);
  fs::remove(dir_ / "audit.jsonl.head");
  EXPECT_NE(problem().find("head file is missing"), std::string::npos);
}

TEST_F(AuditLogTest, TwoWritersOnOneFileKeepOneChain) {
  AuditLog a(path_), b(path_);
  for (int i = 0; i < 6; ++i) (i % 2 ? a : b).append({"delete", "x", "general/u/v1", "", {}});
  const AuditVerification v = verify_audit_log(path_);
  EXPECT_TRUE(v.ok) << v.problem;
  EXPECT_EQ(v.entries, 11);
}

TEST(AuditLogSigned, TheHeadIsSignedAndCheckedAgainstTrustedKeys) {
  testing::ScratchDir dir;
  SigningKey::generate(dir / "k");
  SigningKey::generate(dir / "other");
  const SigningKey key = SigningKey::load(dir / "k");
  AuditLog log(dir / "audit.jsonl", &key);
  log.append({"sign", key.public_key().key_id, "general/u/v1", std::string(64, 'b'), {}});
  fs::create_directories(dir / "trusted");
  fs::copy_file(dir / "k" / "public_key.json", dir / "trusted" / "k.json");
  fs::create_directories(dir / "others");
  fs::copy_file(dir / "other" / "public_key.json", dir / "others" / "o.json");
  const TrustedKeys trusted = TrustedKeys::load(dir / "trusted");
  const TrustedKeys others = TrustedKeys::load(dir / "others");
  AuditVerification v = verify_audit_log(dir / "audit.jsonl", &trusted);
  EXPECT_TRUE(v.ok) << v.problem;
  EXPECT_TRUE(v.head_signed);
  v = verify_audit_log(dir / "audit.jsonl", &others);
  EXPECT_FALSE(v.ok);
  EXPECT_NE(v.problem.find("not a trusted key"), std::string::npos);
  // The signature covers the entry number and hash (not the time); an edited signature fails.
  std::string head = testing::read_text(dir / "audit.jsonl.head");
  head.replace(head.find("\"time\""), 6, "\"tyme\"");  // harmless edit: still verifies
  testing::write_text(dir / "audit.jsonl.head", head);
  EXPECT_TRUE(verify_audit_log(dir / "audit.jsonl", &trusted).ok);
  head.replace(head.find("\"signature\":\"") + 13, 2, "00");
  testing::write_text(dir / "audit.jsonl.head", head);
  v = verify_audit_log(dir / "audit.jsonl", &trusted);
  EXPECT_FALSE(v.ok);
  EXPECT_NE(v.problem.find("signature does not verify"), std::string::npos) << v.problem;
}

TEST(AuditLogCli, VerifySaysWhatIsWrong) {
  testing::ScratchDir dir;
  {
    AuditLog log(dir / "audit.jsonl");
    log.append({"upload", "cli", "general/u/v1", "", {}});
    log.append({"delete", "cli", "general/u/v1", "", {}});
  }
  auto ok = testing::run_cli("audit verify " + (dir / "audit.jsonl").string());
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("2 entries, chain intact"), std::string::npos);
  auto lines = lines_of(dir / "audit.jsonl");
  write_lines(dir / "audit.jsonl", {lines[1], lines[0]});
  auto bad = testing::run_cli("audit verify " + (dir / "audit.jsonl").string() + " --json");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.out.find("\"ok\": false"), std::string::npos) << bad.out;
}

}  // namespace
}  // namespace bitdelta
