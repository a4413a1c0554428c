// LP-105 compute receipts: made and verified; every field covered by the signature (each leaf
// edited in turn fails); every field required and no other allowed, at every level; trusted
// and unknown signers; any JSON spelling of a signed receipt verifies; receipts checked
// against the adapter file they describe; and the CLI's receipt verify / show.
#include "safety/receipt.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "delta/compress.h"
#include "delta/delta_test_util.h"
#include "support/test_support.h"
#include "util/canonical_json.h"
#include "util/error.h"
#include "util/files.h"
#include "util/sha256.h"

namespace bitdelta {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// "/jobSpec/modelHash" → "jobSpec.modelHash": how errors name a field.
std::string field_path(const std::string& pointer) {
  std::string out = pointer.substr(1);
  std::replace(out.begin(), out.end(), '/', '.');
  return out;
}

// An edit of one leaf that keeps its type and, where the field allows it, its form (a hex digit
// for a hex digit, a digit for a digit), so that the signature is what catches it: integers + 1,
// other numbers × 1.5, strings with their last digit or hex letter changed, null → 0.
json tampered(const json& v) {
  switch (v.type()) {
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return v.get<int64_t>() + 1;
    case json::value_t::number_float:
      return v.get<double>() == 0 ? 1.0 : v.get<double>() * 1.5;
    case json::value_t::null:
      return 0;
    case json::value_t::string: {
      std::string s = v.get<std::string>();
      for (size_t i = s.size(); i-- > 0;) {
        char& c = s[i];
        if (c >= '0' && c <= '9') {
          c = c == '9' ? '0' : static_cast<char>(c + 1);
          return s;
        }
        if (c >= 'a' && c <= 'f') {
          c = c == 'f' ? 'a' : static_cast<char>(c + 1);
          return s;
        }
      }
      return s + "x";
    }
    default:
      ADD_FAILURE() << "no edit for " << v.dump();
      return v;
  }
}

class Receipts : public ::testing::Test {
 protected:
  // One base and two adapters of it, shared by the suite.
  static void SetUpTestSuite() {
    dir_ = new testing::ScratchDir();
    testing::make_base(*dir_ / "base");
    ThreadPool pool(2);
    for (int user : {1, 2}) {
      const fs::path ft = *dir_ / ("ft" + std::to_string(user));
      testing::make_finetune(*dir_ / "base", ft, 20 + user, 0.05f);
      CompressOptions options;
      options.adapter_id = AdapterId::parse("education/u" + std::to_string(user) + "/v3");
      compress_adapter(*dir_ / "base", ft, adapter(user), options, pool);
    }
    testing::write_text(*dir_ / "records.jsonl", "{\"user_id\": \"u1\"}\n");
    SigningKey::generate(*dir_ / "alice");
    SigningKey::generate(*dir_ / "mallory");
    fs::create_directories(*dir_ / "trusted");
    fs::copy_file(*dir_ / "alice" / "public_key.json", *dir_ / "trusted" / "alice.json");
  }
  static void TearDownTestSuite() { delete dir_; }
  static fs::path adapter(int user) { return *dir_ / ("u" + std::to_string(user) + ".bdelta"); }

  void SetUp() override {
    if (!fs::exists(adapter(1))) GTEST_SKIP() << "no adapter (shared assets missing)";
    trusted_.emplace(TrustedKeys::load(*dir_ / "trusted"));
  }

  // The inputs of a job for adapter 1, with differential privacy and a job id unless told.
  static ReceiptInputs inputs(bool dp = true) {
    ReceiptInputs in;
    in.requester_lux_id = "did:lux:122:0xabc";
    describe_adapter(adapter(1), in);
    in.job_id = "job-17";
    in.input_hash = sha256_file(*dir_ / "records.jsonl");
    in.compression_ratio = 7.25;
    in.quality_score = 0.9375;
    in.safety_score = std::nullopt;
    if (dp) in.dp = ReceiptInputs::Privacy{4.5, 1e-5};
    in.train_tokens = 123456;
    in.seconds = 81.5;
    in.timestamp = "2026-05-01T12:00:00Z";
    return in;
  }
  static SigningKey key(const char* name) { return SigningKey::load(*dir_ / name); }
  ReceiptCheck check(const std::string& text, bool with_trusted = true,
                     const std::optional<fs::path>& file = std::nullopt) {
    return verify_receipt(text, with_trusted ? &*trusted_ : nullptr, file);
  }

  static testing::ScratchDir* dir_;
  std::optional<TrustedKeys> trusted_;
};
testing::ScratchDir* Receipts::dir_ = nullptr;

TEST_F(Receipts, MadeVerifiedAndReadBack) {
  const ComputeReceipt r = make_receipt(inputs(), key("alice"));
  const std::string text = receipt_text(r);
  // Stored canonically: one line, no whitespace, its own canonical form.
  ASSERT_EQ(text.back(), '\n');
  EXPECT_EQ(text.find_first_of(" \t\r"), std::string::npos) << text;
  EXPECT_EQ(canonical_json(json::parse(text)) + "\n", text);
  EXPECT_EQ(text.rfind("{\"computeProof\":{\"algorithm\":\"Ed25519\",", 0), 0u) << text;
  EXPECT_NE(text.find("\"delta\":0.00001"), std::string::npos) << text;

  const ReceiptCheck c = check(text);
  EXPECT_EQ(c.status, ReceiptStatus::kValid) << c.message;
  EXPECT_TRUE(c.trusted);
  EXPECT_NE(c.message.find("education/u1/v3"), std::string::npos) << c.message;
  // Without trusted keys: valid against the key it names, and says so.
  const ReceiptCheck untrusted = check(text, false);
  EXPECT_EQ(untrusted.status, ReceiptStatus::kValid);
  EXPECT_FALSE(untrusted.trusted);
  EXPECT_NE(untrusted.message.find("not checked against trusted keys"), std::string::npos);

  // Every field reads back as it was made.
  const ComputeReceipt back = parse_receipt(text, "r.json");
  EXPECT_EQ(back.to_json(), r.to_json());
  EXPECT_EQ(back.job.model_hash, inputs().model_hash);
  EXPECT_EQ(back.job.adapter_bytes, fs::file_size(adapter(1)));
  EXPECT_EQ(back.job.requester_lux_id, "did:lux:122:0xabc");
  ASSERT_TRUE(back.job.dp.has_value());
  EXPECT_EQ(back.job.dp->delta, 1e-5);
  EXPECT_FALSE(back.job.safety_score.has_value());
  EXPECT_EQ(back.statement(), r.statement());
  EXPECT_EQ(r.statement().rfind("bitdelta-compute-receipt-v1\n{", 0), 0u);
  EXPECT_EQ(r.statement().find("\"signature\""), std::string::npos);

  // Without DP the two fields are absent; with no timestamp given, now.
  ReceiptInputs plain = inputs(false);
  plain.timestamp.clear();
  plain.job_id.clear();
  const ComputeReceipt p = make_receipt(plain, key("alice"));
  EXPECT_FALSE(p.to_json()["performanceMetrics"].contains("epsilon"));
  EXPECT_EQ(p.job.timestamp.size(), 20u);
  EXPECT_EQ(check(receipt_text(p)).status, ReceiptStatus::kValid);
}

TEST_F(Receipts, DescribeAdapterReadsTheFile) {
  ReceiptInputs in;
  describe_adapter(adapter(2), in);
  EXPECT_EQ(in.adapter_id, "education/u2/v3");
  EXPECT_EQ(in.domain, "education");
  EXPECT_EQ(in.requester_lux_id, "u2");  // the adapter's user_id when none is given
  EXPECT_EQ(in.adapter_hash, sha256_file(adapter(2)));
  EXPECT_EQ(in.model_hash, inputs().model_hash);  // same base
  EXPECT_NE(testing::error_message([&] { describe_adapter(*dir_ / "records.jsonl", in); }), "");
}

// Each leaf of the receipt, edited alone, makes it fail: the signature covers every field, the
// proof's own fields and teeQuote included. Fields with a fixed or checked value fail as
// malformed; the rest fail the signature.
TEST_F(Receipts, TamperingWithAnyFieldIsCaught) {
  const std::set<std::string> checked = {"/standard",
                                         "/receiptVersion",
                                         "/type",
                                         "/jobSpec/chainId",
                                         "/jobSpec/functionCall",
                                         "/jobSpec/domain",
                                         "/jobSpec/compressionRatio",
                                         "/performanceMetrics/compression_ratio",
                                         "/computeProof/type",
                                         "/computeProof/algorithm",
                                         "/computeProof/keyId",
                                         "/computeProof/publicKey",
                                         "/computeProof/teeQuote"};
  for (bool dp : {true, false}) {
    const json good = make_receipt(inputs(dp), key("alice")).to_json();
    const json leaves = good.flatten();
    EXPECT_EQ(leaves.size(), dp ? 28u : 26u);
    for (const auto& [pointer, value] : leaves.items()) {
      json edited = good;
      edited[json::json_pointer(pointer)] = tampered(value);
      ASSERT_NE(edited, good) << pointer;
      for (bool with_trusted : {true, false}) {
        const ReceiptCheck c = check(edited.dump(), with_trusted);
        EXPECT_NE(c.status, ReceiptStatus::kValid) << pointer << ": " << c.message;
        const ReceiptStatus expected =
            checked.count(pointer) ? ReceiptStatus::kMalformed : ReceiptStatus::kBadSignature;
        EXPECT_EQ(c.status, expected) << pointer << " → " << tampered(value) << ": " << c.message;
        if (c.status == ReceiptStatus::kMalformed) {
          EXPECT_NE(c.message.find(field_path(pointer)), std::string::npos) << c.message;
        }
      }
    }
  }
}

TEST_F(Receipts, EveryFieldIsRequired) {
  const json good = make_receipt(inputs(), key("alice")).to_json();
  std::vector<std::string> pointers = {"/jobSpec", "/performanceMetrics", "/computeProof"};
  const json leaves = good.flatten();
  for (const auto& [pointer, value] : leaves.items()) pointers.push_back(pointer);
  for (const std::string& pointer : pointers) {
    json edited = good;
    const json::json_pointer p(pointer);
    edited[p.parent_pointer()].erase(p.back());
    const ReceiptCheck c = check(edited.dump());
    EXPECT_EQ(c.status, ReceiptStatus::kMalformed) << pointer;
    EXPECT_NE(c.message.find(field_path(pointer) + " is missing"), std::string::npos)
        << pointer << ": " << c.message;
  }
}

TEST_F(Receipts, NoOtherFieldIsAllowedAtAnyLevel) {
  const json good = make_receipt(inputs(), key("alice")).to_json();
  for (const std::string level : {"", "/jobSpec", "/performanceMetrics", "/computeProof"}) {
    json edited = good;
    edited[json::json_pointer(level)]["note"] = "x";
    const ReceiptCheck c = check(edited.dump());
    EXPECT_EQ(c.status, ReceiptStatus::kMalformed) << level;
    EXPECT_NE(c.message.find("unknown field " + field_path(level + "/note")), std::string::npos)
        << c.message;
  }
}

TEST_F(Receipts, MalformedReceiptsNameTheFieldAndWhatIsExpected) {
  const json good = make_receipt(inputs(), key("alice")).to_json();
  auto message = [&](const std::string& pointer, const json& value) {
    json edited = good;
    edited[json::json_pointer(pointer)] = value;
    return testing::error_message([&] { parse_receipt(edited.dump(), "r.json"); });
  };
  auto expect_has = [](const std::string& got, const std::string& needle) {
    EXPECT_NE(got.find(needle), std::string::npos) << "got: " << got;
  };
  expect_has(message("/jobSpec/modelHash", 5), "r.json: jobSpec.modelHash must be a string");
  expect_has(message("/jobSpec/modelHash", "abc"), "jobSpec.modelHash must be 64 lowercase hex");
  expect_has(message("/jobSpec/adapterHash", std::string(64, 'A')),
             "jobSpec.adapterHash must be 64 lowercase hex");
  expect_has(message("/jobSpec/chainId", 1), "jobSpec.chainId must be 122, found 1");
  expect_has(message("/jobSpec/functionCall", "x"),
             "jobSpec.functionCall must be \"bitdelta_adaptation\"");
  expect_has(message("/jobSpec/adapterBytes", -3), "jobSpec.adapterBytes must be a whole number");
  expect_has(message("/jobSpec/adapterBytes", 1.5), "jobSpec.adapterBytes must be a whole number");
  expect_has(message("/jobSpec/adapterId", "nope"), "jobSpec.adapterId");
  expect_has(message("/jobSpec/requesterLuxId", ""), "jobSpec.requesterLuxId");
  expect_has(message("/receiptVersion", 2), "receiptVersion must be 1, found 2");
  expect_has(message("/standard", "LP-104"), "standard must be \"LP-105\"");
  expect_has(message("/performanceMetrics/quality_score", "high"),
             "performanceMetrics.quality_score must be a number or null");
  expect_has(message("/performanceMetrics/delta", 1.5), "performanceMetrics.delta");
  expect_has(message("/timestamp", "yesterday"), "timestamp must be an RFC 3339 time");
  expect_has(message("/timestamp", "2026-05-01T12:00:00+02:00"), "timestamp");
  expect_has(message("/computeProof/type", "tee-quote"),
             "computeProof.type \"tee-quote\" is not known");
  expect_has(message("/computeProof/teeQuote", "AAAA"), "computeProof.teeQuote must be null");
  expect_has(message("/computeProof/signature", std::string(127, '0')),
             "computeProof.signature must be 128 lowercase hex");
  expect_has(message("/computeProof/keyId", std::string(32, '0')),
             "computeProof.keyId 00000000000000000000000000000000 is not the id of "
             "computeProof.publicKey");
  expect_has(message("/jobSpec", json::array()), "jobSpec must be an object, found an array");
  // Text that is not a receipt at all, and a member named twice (readers could disagree on
  // which one counts).
  expect_has(testing::error_message([] { parse_receipt("{\"standard\":", "r.json"); }),
             "r.json is not JSON");
  expect_has(testing::error_message([] { parse_receipt("[1]", "r.json"); }),
             "r.json is not a JSON object");
  std::string twice = good.dump();
  twice.insert(1, "\"timestamp\":\"2020-01-01T00:00:00Z\",");
  expect_has(testing::error_message([&] { parse_receipt(twice, "r.json"); }),
             "the member \"timestamp\" appears twice");
  EXPECT_EQ(check(twice).status, ReceiptStatus::kMalformed);

  // The builder refuses what the parser would.
  ReceiptInputs in = inputs();
  in.compression_ratio = std::nan("");
  expect_has(testing::error_message([&] { make_receipt(in, key("alice")); }),
             "jobSpec.compressionRatio must be a number > 0");
  in = inputs();
  in.domain = "gaming";
  expect_has(testing::error_message([&] { make_receipt(in, key("alice")); }),
             "jobSpec.domain \"gaming\" is not the domain of jobSpec.adapterId");
  in = inputs();
  in.input_hash = "";
  expect_has(testing::error_message([&] { make_receipt(in, key("alice")); }), "jobSpec.inputHash");
}

TEST_F(Receipts, SignersOutsideTheTrustedKeysAreUnknown) {
  const std::string text = receipt_text(make_receipt(inputs(), key("mallory")));
  const ReceiptCheck c = check(text);
  EXPECT_EQ(c.status, ReceiptStatus::kUnknownKey);
  EXPECT_NE(c.message.find("not among the trusted keys"), std::string::npos);
  EXPECT_EQ(check(text, false).status, ReceiptStatus::kValid);  // intact, but of unknown origin
}

TEST_F(Receipts, ASignatureByAnotherKeyDoesNotVerify) {
  // Mallory signs, then names Alice as the signer.
  json forged = make_receipt(inputs(), key("mallory")).to_json();
  const SigningKey alice = key("alice");
  forged["computeProof"]["keyId"] = alice.public_key().key_id;
  forged["computeProof"]["publicKey"] = alice.public_key().hex();
  for (bool with_trusted : {true, false}) {
    const ReceiptCheck c = check(forged.dump(), with_trusted);
    EXPECT_EQ(c.status, ReceiptStatus::kBadSignature) << c.message;
    EXPECT_NE(c.message.find("bad signature"), std::string::npos);
  }
}

// Verification canonicalizes what it receives: whitespace, member order, number spelling and
// string escapes do not matter.
TEST_F(Receipts, AnyJsonSpellingOfASignedReceiptVerifies) {
  const ComputeReceipt r = make_receipt(inputs(), key("alice"));
  EXPECT_EQ(check(r.to_json().dump(4)).status, ReceiptStatus::kValid);
  json respelled = r.to_json();
  respelled["jobSpec"]["adapterBytes"] = static_cast<double>(r.job.adapter_bytes);  // "68940.0"
  respelled["receiptVersion"] = 1.0;
  std::string text = respelled.dump(2);
  ASSERT_NE(text.find(".0,"), std::string::npos);
  const size_t at = text.find("did:lux");
  text.replace(at, 1, "\\u0064");  // "\u0064id:lux" is the same string
  const ReceiptCheck c = check(text);
  EXPECT_EQ(c.status, ReceiptStatus::kValid) << c.message << "\n" << text;
  // Top-level members in reverse order.
  const json original = r.to_json();
  std::vector<std::string> members;
  for (const auto& [name, value] : original.items())
    members.push_back(json(name).dump() + ":" + value.dump());
  std::string reversed = "{";
  for (auto it = members.rbegin(); it != members.rend(); ++it) {
    reversed += (it == members.rbegin() ? "" : ",") + *it;
  }
  reversed += "}";
  ASSERT_EQ(reversed.rfind("{\"type\"", 0), 0u);
  EXPECT_EQ(check(reversed).status, ReceiptStatus::kValid);
}

TEST_F(Receipts, CheckedAgainstTheAdapterFileItDescribes) {
  const std::string text = receipt_text(make_receipt(inputs(), key("alice")));
  const ReceiptCheck good = check(text, true, adapter(1));
  EXPECT_EQ(good.status, ReceiptStatus::kValid) << good.message;
  EXPECT_NE(good.message.find("the adapter file matches"), std::string::npos);
  // Another adapter's file: other bytes.
  const ReceiptCheck other = check(text, true, adapter(2));
  EXPECT_EQ(other.status, ReceiptStatus::kAdapterMismatch);
  EXPECT_NE(other.message.find(sha256_file(adapter(2))), std::string::npos) << other.message;
  // The right file, but the receipt names another base.
  ReceiptInputs in = inputs();
  in.model_hash = std::string(64, '0');
  const ReceiptCheck base = check(receipt_text(make_receipt(in, key("alice"))), true, adapter(1));
  EXPECT_EQ(base.status, ReceiptStatus::kAdapterMismatch);
  EXPECT_NE(base.message.find("was made for base"), std::string::npos) << base.message;
  // The receipt's bytes, but not an adapter.
  const fs::path fake = *dir_ / "fake.bdelta";
  testing::write_text(fake, "not an adapter");
  in = inputs();
  in.adapter_hash = sha256_file(fake);
  in.adapter_bytes = fs::file_size(fake);
  const ReceiptCheck unreadable = check(receipt_text(make_receipt(in, key("alice"))), true, fake);
  EXPECT_EQ(unreadable.status, ReceiptStatus::kAdapterMismatch);
  EXPECT_NE(unreadable.message.find("not a readable adapter"), std::string::npos);
}

TEST_F(Receipts, CliVerifiesAndShows) {
  testing::ScratchDir scratch;
  const std::string file = (scratch / "r.json").string();
  write_file_atomic(file, receipt_text(make_receipt(inputs(), key("alice"))));
  const std::string trusted = " --trusted-keys " + (*dir_ / "trusted").string();

  auto ok =
      testing::run_cli("receipt verify " + file + trusted + " --adapter " + adapter(1).string());
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  EXPECT_NE(ok.out.find("valid: education/u1/v3"), std::string::npos) << ok.out;
  auto plain = testing::run_cli("receipt verify " + file);
  EXPECT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_NE(plain.out.find("not checked against trusted keys"), std::string::npos);
  auto mismatch =
      testing::run_cli("receipt verify " + file + " --adapter " + adapter(2).string() + " --json");
  EXPECT_EQ(mismatch.exit_code, 1);
  EXPECT_EQ(json::parse(mismatch.out)["status"], "adapter mismatch");

  auto show = testing::run_cli("receipt show " + file);
  EXPECT_EQ(show.exit_code, 0) << show.err;
  for (const char* needle : {"education/u1/v3", "did:lux:122:0xabc", "ε = 4.5", "job-17"}) {
    EXPECT_NE(show.out.find(needle), std::string::npos) << needle << "\n" << show.out;
  }

  json edited = json::parse(testing::read_text(file));
  edited["performanceMetrics"]["quality_score"] = 0.99;
  testing::write_text(file, edited.dump(2));
  auto bad = testing::run_cli("receipt verify " + file + trusted);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.out.find("bad signature"), std::string::npos) << bad.out;
  edited["jobSpec"].erase("inputHash");
  testing::write_text(file, edited.dump(2));
  auto broken = testing::run_cli("receipt show " + file);
  EXPECT_EQ(broken.exit_code, 1);
  EXPECT_NE(broken.err.find("jobSpec.inputHash is missing"), std::string::npos) << broken.err;
  auto help = testing::run_cli("receipt verify --help");
  EXPECT_NE(help.out.find("--trusted-keys"), std::string::npos);
}

}  // namespace
}  // namespace bitdelta
