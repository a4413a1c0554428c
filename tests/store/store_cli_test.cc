// `bitdelta store add / list / rm`, run as a real process against real adapters.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "store/store_test_util.h"

namespace bitdelta {
namespace {

using testing::run_cli;
using testing::ScratchDir;
using testing::StoreAssets;

std::string quoted(const std::filesystem::path& p) { return fmt::format("'{}'", p.string()); }

class StoreCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { StoreAssets::get(); }
  const StoreAssets& assets_ = StoreAssets::get();
  ScratchDir scratch_;
  std::string store_ = quoted(scratch_ / "store");
};

TEST_F(StoreCli, HelpForEverySubcommand) {
  auto top = run_cli("store --help");
  EXPECT_EQ(top.exit_code, 0);
  EXPECT_NE(top.out.find("Options"), std::string::npos) << top.out;
  for (const char* sub : {"add", "list", "rm"}) {
    EXPECT_NE(top.out.find(sub), std::string::npos) << sub;
    auto help = run_cli(fmt::format("store {} --help", sub));
    EXPECT_EQ(help.exit_code, 0) << sub;
    EXPECT_NE(help.out.find("--store"), std::string::npos) << help.out;
  }
  EXPECT_NE(run_cli("store").exit_code, 0);
  EXPECT_NE(run_cli("store frobnicate").exit_code, 0);
}

TEST_F(StoreCli, AddListRemove) {
  auto added = run_cli("store add --store " + store_ + " " + quoted(assets_.alice_v1()));
  ASSERT_EQ(added.exit_code, 0) << added.err;
  EXPECT_NE(added.out.find("added gaming/alice/v1 (latest)"), std::string::npos) << added.out;

  auto with_model = run_cli("store add --store " + store_ + " --model " +
                            quoted(assets_.base()) + " --json " + quoted(assets_.alice_v2()));
  ASSERT_EQ(with_model.exit_code, 0) << with_model.err;
  auto record = nlohmann::json::parse(with_model.out);
  EXPECT_EQ(record.at("id"), "gaming/alice/v2");
  EXPECT_EQ(record.at("latest"), true);
  EXPECT_TRUE(std::filesystem::exists(record.at("blob").get<std::string>()));

  auto renamed = run_cli("store add --store " + store_ + " --id education/bob/v7 " +
                         quoted(assets_.bob_v1()));
  ASSERT_EQ(renamed.exit_code, 0) << renamed.err;

  auto list = run_cli("store list --store " + store_ + " --json");
  ASSERT_EQ(list.exit_code, 0) << list.err;
  auto records = nlohmann::json::parse(list.out);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].at("id"), "education/bob/v7");
  EXPECT_EQ(records[1].at("id"), "gaming/alice/v1");
  EXPECT_EQ(records[1].at("latest"), false);
  EXPECT_EQ(records[2].at("id"), "gaming/alice/v2");
  EXPECT_EQ(records[2].at("metadata").at("format"), "bitdelta");

  auto text = run_cli("store list --store " + store_ + " --domain gaming");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("gaming/alice/v1"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("gaming/alice/v2"), std::string::npos) << text.out;
  EXPECT_EQ(text.out.find("education/bob"), std::string::npos) << text.out;
  auto by_user = run_cli("store list --store " + store_ + " --user bob --json");
  EXPECT_EQ(nlohmann::json::parse(by_user.out).size(), 1u);
  auto none = run_cli("store list --store " + store_ + " --domain medical");
  EXPECT_EQ(none.exit_code, 0);
  EXPECT_NE(none.out.find("no adapters"), std::string::npos) << none.out;

  auto removed = run_cli("store rm --store " + store_ + " gaming/alice/v2");
  ASSERT_EQ(removed.exit_code, 0) << removed.err;
  EXPECT_NE(removed.out.find("removed gaming/alice/v2"), std::string::npos) << removed.out;
  auto after = nlohmann::json::parse(run_cli("store list --store " + store_ + " --json").out);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[1].at("id"), "gaming/alice/v1");
  EXPECT_EQ(after[1].at("latest"), true);
}

TEST_F(StoreCli, ErrorsAreClearAndExitOne) {
  ASSERT_EQ(run_cli("store add --store " + store_ + " " + quoted(assets_.alice_v1())).exit_code, 0);

  auto duplicate = run_cli("store add --store " + store_ + " " + quoted(assets_.alice_v1()));
  EXPECT_EQ(duplicate.exit_code, 1);
  EXPECT_NE(duplicate.err.find("already in the store"), std::string::npos) << duplicate.err;

  auto wrong_base = run_cli("store add --store " + store_ + " --model " + quoted(assets_.base()) +
                            " " + quoted(assets_.other_base_adapter()));
  EXPECT_EQ(wrong_base.exit_code, 1);
  EXPECT_NE(wrong_base.err.find("was made for base"), std::string::npos) << wrong_base.err;

  auto bad_id = run_cli("store add --store " + store_ + " --id 'gaming/../v1' " +
                        quoted(assets_.bob_v1()));
  EXPECT_EQ(bad_id.exit_code, 1);
  EXPECT_NE(bad_id.err.find("is invalid"), std::string::npos) << bad_id.err;

  testing::write_text(scratch_ / "junk.bdelta", "not an adapter");
  auto junk = run_cli("store add --store " + store_ + " " + quoted(scratch_ / "junk.bdelta"));
  EXPECT_EQ(junk.exit_code, 1);
  EXPECT_NE(junk.err.find("junk.bdelta"), std::string::npos) << junk.err;

  auto missing = run_cli("store add --store " + store_ + " " + quoted(scratch_ / "nope.bdelta"));
  EXPECT_NE(missing.exit_code, 0);

  auto absent = run_cli("store rm --store " + store_ + " gaming/alice/v9");
  EXPECT_EQ(absent.exit_code, 1);
  EXPECT_NE(absent.err.find("no adapter gaming/alice/v9"), std::string::npos) << absent.err;
  auto latest_rm = run_cli("store rm --store " + store_ + " gaming/alice");
  EXPECT_EQ(latest_rm.exit_code, 1);
  EXPECT_NE(latest_rm.err.find("error:"), std::string::npos) << latest_rm.err;

  auto records = nlohmann::json::parse(run_cli("store list --store " + store_ + " --json").out);
  EXPECT_EQ(records.size(), 1u);
  EXPECT_TRUE(std::filesystem::is_empty(scratch_ / "store" / "tmp"));

  std::filesystem::create_directories(scratch_ / "other");
  testing::write_text(scratch_ / "other" / "notes.txt", "mine");
  auto not_store = run_cli("store list --store " + quoted(scratch_ / "other"));
  EXPECT_EQ(not_store.exit_code, 1);
  EXPECT_NE(not_store.err.find("not an adapter store"), std::string::npos) << not_store.err;
  EXPECT_NE(run_cli("store list --store " + quoted(scratch_ / "does-not-exist")).exit_code, 0);
}

}  // namespace
}  // namespace bitdelta
