// Ed25519 keys and detached adapter signatures: keys on disk (private mode 0600, ids that are
// the public key's), every verification outcome, and the CLI's keys/sign/verify.
#include "delta/signature.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "support/test_support.h"
#include "util/error.h"
#include "util/files.h"
#include "util/sha256.h"

namespace bitdelta {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

TEST(Keys, GenerateWritesAPrivateFileOnlyItsOwnerReadsAndLoadsBack) {
  testing::ScratchDir dir;
  const PublicKey pub = SigningKey::generate(dir / "k");
  struct stat st {};
  ASSERT_EQ(::stat((dir / "k" / "signing_key.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(pub.key_id, key_id_of(pub.bytes));
  EXPECT_EQ(pub.key_id.size(), 32u);
  const SigningKey key = SigningKey::load(dir / "k");
  EXPECT_EQ(key.public_key().key_id, pub.key_id);
  const auto sig = key.sign("hello");
  EXPECT_TRUE(verify_signature(pub, "hello", sig));
  EXPECT_FALSE(verify_signature(pub, "hellp", sig));
  // Never overwritten.
  EXPECT_NE(
      testing::error_message([&] { SigningKey::generate(dir / "k"); }).find("already holds a key"),
      std::string::npos);
}

TEST(Keys, BadKeyFilesAreRefusedSayingWhy) {
  testing::ScratchDir dir;
  SigningKey::generate(dir / "k");
  const fs::path secret = dir / "k" / "signing_key.json";
  ::chmod(secret.c_str(), 0644);
  EXPECT_NE(testing::error_message([&] { SigningKey::load(dir / "k"); }).find("chmod 600"),
            std::string::npos);
  ::chmod(secret.c_str(), 0600);
  json j = json::parse(testing::read_text(secret));
  j["algorithm"] = "rsa";
  testing::write_text(secret, j.dump());
  ::chmod(secret.c_str(), 0600);
  EXPECT_NE(testing::error_message([&] { SigningKey::load(dir / "k"); }).find("not supported"),
            std::string::npos);
  j["algorithm"] = "ed25519";
  j["secret_key"] = std::string(64, 'a');  // another key's secret
  testing::write_text(secret, j.dump());
  EXPECT_NE(testing::error_message([&] { SigningKey::load(dir / "k"); }).find("does not belong"),
            std::string::npos);
  testing::write_text(secret, "{not json");
  EXPECT_NE(testing::error_message([&] { SigningKey::load(dir / "k"); }).find("not a JSON object"),
            std::string::npos);
  EXPECT_NE(testing::error_message([&] { SigningKey::load(dir / "none"); }).find("keys generate"),
            std::string::npos);

  // Trusted folders: public keys only, ids checked.
  SigningKey::generate(dir / "k2");
  fs::create_directories(dir / "trusted");
  fs::copy_file(dir / "k2" / "public_key.json", dir / "trusted" / "k2.json");
  EXPECT_EQ(TrustedKeys::load(dir / "trusted").size(), 1u);
  fs::copy_file(dir / "k2" / "signing_key.json", dir / "trusted" / "oops.json");
  EXPECT_NE(testing::error_message([&] { TrustedKeys::load(dir / "trusted"); }).find("private key"),
            std::string::npos);
  fs::remove(dir / "trusted" / "oops.json");
  json pub = json::parse(testing::read_text(dir / "trusted" / "k2.json"));
  pub["key_id"] = std::string(32, '0');
  testing::write_text(dir / "trusted" / "k2.json", pub.dump());
  EXPECT_NE(
      testing::error_message([&] { TrustedKeys::load(dir / "trusted"); }).find("does not belong"),
      std::string::npos);
}

class Signatures : public ::testing::Test {
 protected:
  void SetUp() override {
    SigningKey::generate(dir_ / "alice");
    SigningKey::generate(dir_ / "mallory");
    fs::create_directories(dir_ / "trusted");
    fs::copy_file(dir_ / "alice" / "public_key.json", dir_ / "trusted" / "alice.json");
    testing::write_text(dir_ / "a.bdelta", "adapter bytes");
    trusted_.emplace(TrustedKeys::load(dir_ / "trusted"));
  }
  SignatureCheck check(const std::optional<std::string>& sig) {
    return check_adapter_signature(sha256_file(dir_ / "a.bdelta"), fs::file_size(dir_ / "a.bdelta"),
                                   sig, &*trusted_);
  }
  testing::ScratchDir dir_;
  std::optional<TrustedKeys> trusted_;
};

TEST_F(Signatures, EveryOutcomeIsTold) {
  const SigningKey alice = SigningKey::load(dir_ / "alice");
  const AdapterSignature s = sign_adapter(dir_ / "a.bdelta", alice);
  EXPECT_EQ(check(s.to_json().dump()).status, SignatureStatus::kValid);
  EXPECT_TRUE(check(s.to_json().dump()).trusted);
  EXPECT_EQ(check(std::nullopt).status, SignatureStatus::kUnsigned);
  // Another key: valid on its own, but not trusted here.
  const AdapterSignature m = sign_adapter(dir_ / "a.bdelta", SigningKey::load(dir_ / "mallory"));
  EXPECT_EQ(check(m.to_json().dump()).status, SignatureStatus::kUnknownKey);
  EXPECT_EQ(
      check_adapter_signature(m.file_sha256, m.file_bytes, m.to_json().dump(), nullptr).status,
      SignatureStatus::kValid);
  // Any signed field edited: bad signature.
  for (const char* field : {"signed_at", "file_bytes"}) {
    json j = s.to_json();
    if (j[field].is_string())
      j[field] = "2020-01-01T00:00:00Z";
    else
      j[field] = 12345;
    EXPECT_EQ(check(j.dump()).status, SignatureStatus::kBadSignature) << field;
  }
  json forged = s.to_json();
  forged["file_sha256"] = std::string(64, 'b');
  EXPECT_EQ(check(forged.dump()).status, SignatureStatus::kBadSignature);
  // The file changed after signing.
  testing::write_text(dir_ / "a.bdelta", "adapter bytes, edited");
  const SignatureCheck changed = check(s.to_json().dump());
  EXPECT_EQ(changed.status, SignatureStatus::kFileChanged);
  EXPECT_NE(changed.message.find("file changed after signing"), std::string::npos);
  // Malformed: extra or missing fields, bad hex, a key id that is not its key's.
  json extra = s.to_json();
  extra["note"] = "x";
  EXPECT_EQ(check(extra.dump()).status, SignatureStatus::kMalformed);
  json missing = s.to_json();
  missing.erase("signed_at");
  EXPECT_EQ(check(missing.dump()).status, SignatureStatus::kMalformed);
  json badhex = s.to_json();
  badhex["signature"] = std::string(128, 'z');
  EXPECT_EQ(check(badhex.dump()).status, SignatureStatus::kMalformed);
  json swapped = s.to_json();
  swapped["key_id"] = m.key_id;
  EXPECT_EQ(check(swapped.dump()).status, SignatureStatus::kMalformed);
  EXPECT_EQ(check("not json").status, SignatureStatus::kMalformed);
}

TEST_F(Signatures, CliSignsAndVerifies) {
  const std::string file = (dir_ / "a.bdelta").string();
  auto gen = testing::run_cli("keys generate --out " + (dir_ / "cli").string());
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  auto sign = testing::run_cli("sign " + file + " --key " + (dir_ / "alice").string());
  ASSERT_EQ(sign.exit_code, 0) << sign.err;
  ASSERT_TRUE(fs::exists(file + ".sig.json"));
  auto ok = testing::run_cli("verify " + file + " --trusted-keys " + (dir_ / "trusted").string());
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  EXPECT_NE(ok.out.find("valid"), std::string::npos);
  // Signed by a key the folder does not trust.
  auto other = testing::run_cli("sign " + file + " --key " + (dir_ / "mallory").string() +
                                " --out " + (dir_ / "m.sig.json").string());
  ASSERT_EQ(other.exit_code, 0);
  auto unknown =
      testing::run_cli("verify " + file + " --signature " + (dir_ / "m.sig.json").string() +
                       " --trusted-keys " + (dir_ / "trusted").string() + " --json");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_EQ(json::parse(unknown.out)["status"], "unknown key");
  // The file edited after signing.
  testing::write_text(file, "changed");
  auto changed =
      testing::run_cli("verify " + file + " --trusted-keys " + (dir_ / "trusted").string());
  EXPECT_EQ(changed.exit_code, 1);
  EXPECT_NE(changed.out.find("file changed after signing"), std::string::npos) << changed.out;
  // No signature.
  fs::remove(file + ".sig.json");
  auto none = testing::run_cli("verify " + file);
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.out.find("no signature"), std::string::npos);
}

}  // namespace
}  // namespace bitdelta
