// The per-domain quality table (slow): `bitdelta personalize` on stories260K for one user of each
// domain's shipped records, with the plain chat format. Each run must keep ≥ 90% of the
// fine-tune's held-out NLL gain, be ≥ 10x smaller than the fine-tuned model in BF16 (the
// adapter's tensor payload, the safetensors header aside), register as domain/user/v1 (a second
// run as v2) and carry the user's analytics and the chat format in its metadata. Prints one table
// line per domain, which the README quotes.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>

#include "support/test_support.h"

namespace bitdelta {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string quoted(const fs::path& p) { return fmt::format("'{}'", p.string()); }

struct Case {
  const char* domain;
  const char* user;
  const char* analytics_key;  // a key the adapter's metadata must carry
  bool second_run;            // also register v2
};

constexpr Case kCases[] = {
    {"education", "learner-03", "mastery_levels", true},
    {"gaming", "npc-smith-grum", "personality", false},
    {"defi", "0x3333333333333333333333333333333333333333", "risk_tolerance", false},
    {"general", "user-sailor", "user", false},
};

// gtest names a parameter by this (ctest lists it) instead of dumping its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.domain << " " << c.user; }

// The tensor bytes of a safetensors file: its size less the 8-byte header length and the header.
uint64_t payload_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  unsigned char b[8] = {};
  in.read(reinterpret_cast<char*>(b), 8);
  EXPECT_TRUE(in.good()) << file;
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = header << 8 | b[i];
  const uint64_t size = fs::file_size(file);
  EXPECT_LT(8 + header, size) << file;
  return size - 8 - header;
}

class PersonalizeQuality : public ::testing::TestWithParam<Case> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::ScratchDir();
    base_ = *dir_ / "stories260K";
    const auto r = testing::run_cli(
        "import-llama2c --model " +
        quoted(testing::shared_asset("models/stories260K/stories260K.bin")) + " --tokenizer " +
        quoted(testing::shared_asset("models/stories260K/tok512.bin")) + " --out " + quoted(base_));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static testing::ScratchDir* dir_;
  static fs::path base_;
};
testing::ScratchDir* PersonalizeQuality::dir_ = nullptr;
fs::path PersonalizeQuality::base_;

void print_header() {
  static bool printed = false;
  if (printed) return;
  printed = true;
  std::printf("\n%-9s %13s %10s %13s %9s %9s %9s %9s %10s %7s %7s %8s\n", "domain", "adapter_bytes",
              "file_ratio", "payload_ratio", "nll_base", "nll_ft", "nll_adapt", "retained",
              "multiplier", "safety", "kl", "seconds");
}

TEST_P(PersonalizeQuality, Table) {
  const Case& c = GetParam();
  testing::ScratchDir work;
  const fs::path store = work / "store";
  const std::string command =
      "personalize --base " + quoted(base_) + " --domain " + c.domain + " --user " + c.user +
      " --data " +
      quoted(testing::source_path(std::string("data/domains/") + c.domain + ".jsonl")) +
      " --store " + quoted(store) +
      " --chat-format plain --json --quiet --steps 60 --calibrate-steps 60";
  const auto r = testing::run_cli(command);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);

  const std::string id = fmt::format("{}/{}/v1", c.domain, c.user);
  EXPECT_EQ(j["adapter_id"], id);
  const fs::path blob = j["adapter_file"].get<std::string>();
  ASSERT_TRUE(fs::exists(blob)) << blob;
  EXPECT_EQ(blob.string().rfind((store / "blobs").string(), 0), 0u) << blob;
  const uint64_t adapter_bytes = j["adapter_bytes"].get<uint64_t>();
  EXPECT_EQ(adapter_bytes, fs::file_size(blob));
  const uint64_t bf16 = j["finetuned_bf16_bytes"].get<uint64_t>();
  EXPECT_EQ(bf16, 260032u * 2) << "stories260K has 260032 parameters";
  const double file_ratio = j["compression_ratio"].get<double>();
  EXPECT_NEAR(file_ratio, static_cast<double>(bf16) / static_cast<double>(adapter_bytes), 1e-9);
  const uint64_t payload = payload_bytes(blob);
  const double payload_ratio = static_cast<double>(bf16) / static_cast<double>(payload);
  EXPECT_GE(payload_ratio, 10.0) << payload << " tensor bytes of " << adapter_bytes;

  const json& h = j["heldout"];
  ASSERT_TRUE(h["quality_retained"].is_number()) << h.dump();
  const double retained = h["quality_retained"].get<double>();
  EXPECT_GE(retained, 0.90) << h.dump();
  EXPECT_LT(h["nll_finetuned"].get<double>(), h["nll_base"].get<double>()) << h.dump();
  EXPECT_GE(j["heldout_conversations"].get<int64_t>(), 1);
  const json& objective = j["objective"];
  EXPECT_EQ(objective["objective"], c.domain);
  const double multiplier = objective["multiplier"].get<double>();
  EXPECT_GE(multiplier, 0.25);
  EXPECT_LE(multiplier, 2.0);
  EXPECT_GE(objective["score"].get<double>(), objective["score_calibrated"].get<double>());
  EXPECT_TRUE(j["analytics"].contains(c.analytics_key)) << j["analytics"].dump();
  // An ordinary personalization passes the safety gate (docs/safety.md) and its records are
  // clean.
  EXPECT_EQ(j["safety"]["passed"], true) << j["safety"].dump();
  EXPECT_GE(j["safety"]["safety_score"].get<double>(), 0.95);
  EXPECT_EQ(j["screening"]["flagged"], 0);

  // The registered blob carries the analytics and the chat format.
  const auto inspected = testing::run_cli("inspect --json " + quoted(blob));
  ASSERT_EQ(inspected.exit_code, 0) << inspected.err;
  const json meta = json::parse(inspected.out)["metadata"];
  EXPECT_EQ(meta["chat_format"], "plain");
  ASSERT_TRUE(meta.contains("metadata")) << meta.dump();
  const json analytics = json::parse(meta["metadata"].get<std::string>());
  EXPECT_TRUE(analytics.contains(c.analytics_key)) << analytics.dump();
  EXPECT_EQ(analytics, j["analytics"]);
  const json personalization = json::parse(meta["personalization"].get<std::string>());
  EXPECT_EQ(personalization["chat_format"], "plain");
  EXPECT_EQ(personalization["domain"], c.domain);
  EXPECT_EQ(personalization["user"], c.user);
  const json calibration = json::parse(meta["calibration"].get<std::string>());
  EXPECT_EQ(calibration["objective"]["multiplier"], objective["multiplier"]);

  print_header();
  std::printf("%-9s %13llu %10.1f %13.1f %9.4f %9.4f %9.4f %9.3f %10.4f %7.3f %7.3f %8.1f\n",
              c.domain, static_cast<unsigned long long>(adapter_bytes), file_ratio, payload_ratio,
              h["nll_base"].get<double>(), h["nll_finetuned"].get<double>(),
              h["nll_adapter"].get<double>(), retained, multiplier,
              j["safety"]["safety_score"].get<double>(), j["safety"]["mean_kl"].get<double>(),
              j["seconds"].get<double>());
  std::fflush(stdout);

  if (c.second_run) {
    const auto again = testing::run_cli(command);
    ASSERT_EQ(again.exit_code, 0) << again.err;
    EXPECT_EQ(json::parse(again.out)["adapter_id"], fmt::format("{}/{}/v2", c.domain, c.user));
    const auto listed = testing::run_cli("store list --json --store " + quoted(store));
    ASSERT_EQ(listed.exit_code, 0) << listed.err;
    const json records = json::parse(listed.out);
    ASSERT_EQ(records.size(), 2u) << records.dump();
    EXPECT_EQ(records[0]["id"], id);
    EXPECT_EQ(records[0]["latest"], false);
    EXPECT_EQ(records[1]["id"], fmt::format("{}/{}/v2", c.domain, c.user));
    EXPECT_EQ(records[1]["latest"], true);
  }
}

INSTANTIATE_TEST_SUITE_P(Domains, PersonalizeQuality, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& param) {
                           return std::string(param.param.domain);
                         });

}  // namespace
}  // namespace bitdelta
