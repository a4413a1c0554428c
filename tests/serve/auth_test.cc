// API keys: strict parsing of the keys file, hashed keys, the authorization matrix, and
// Authorization header parsing.
#include "serve/auth.h"

#include <gtest/gtest.h>

#include "support/test_support.h"
#include "util/error.h"
#include "util/sha256.h"

namespace bitdelta {
namespace {

using testing::ScratchDir;

std::string sha_of(std::string_view text) {
  return sha256_hex({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

// The error message of loading `json` from a file, or "" when it loads.
std::string load_error(const std::string& json) {
  ScratchDir dir;
  testing::write_text(dir / "keys.json", json);
  try {
    ApiKeys::load(dir / "keys.json");
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find((dir / "keys.json").string()), std::string::npos)
        << "the file is not named: " << message;
    return message;
  }
  return "";
}

TEST(ApiKeysLoad, LoadsAFileWithBothKindsOfEntry) {
  ScratchDir dir;
  testing::write_text(dir / "keys.json", R"({"keys": [
    {"key": "sk-admin-1", "role": "admin"},
    {"sha256": ")" + sha_of("sk-tenant-1") + R"(", "role": "tenant",
     "users": ["u2", "u1", "u2"], "domains": ["education"]}
  ]})");
  const ApiKeys keys = ApiKeys::load(dir / "keys.json");
  EXPECT_TRUE(keys.enabled());
  EXPECT_EQ(keys.size(), 2u);

  auto admin = keys.authenticate("sk-admin-1");
  ASSERT_TRUE(admin.has_value());
  EXPECT_TRUE(admin->is_admin());
  EXPECT_EQ(admin->key_id, sha_of("sk-admin-1").substr(0, 8));

  auto tenant = keys.authenticate("sk-tenant-1");
  ASSERT_TRUE(tenant.has_value());
  EXPECT_EQ(tenant->role, Role::kTenant);
  EXPECT_EQ(tenant->users, (std::vector<std::string>{"u1", "u2"}));  // sorted, deduplicated
  EXPECT_EQ(tenant->domains, (std::vector<std::string>{"education"}));
  EXPECT_EQ(tenant->key_id, sha_of("sk-tenant-1").substr(0, 8));
}

TEST(ApiKeysLoad, HashEntriesMatchTheKeyTheyHash) {
  // SHA-256("abc"), the FIPS 180-2 test vector, in upper case: hex case does not matter.
  const ApiKeys keys = ApiKeys::parse(
      R"({"keys": [{"sha256": "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
                    "role": "admin"}]})",
      "inline");
  auto principal = keys.authenticate("abc");
  ASSERT_TRUE(principal.has_value());
  EXPECT_EQ(principal->key_id, "ba7816bf");
  EXPECT_FALSE(keys.authenticate("abd").has_value());
  EXPECT_FALSE(keys.authenticate("ABC").has_value());
}

TEST(ApiKeysLoad, UnknownTokensAndEmptyTokensAreRefused) {
  const ApiKeys keys = ApiKeys::parse(R"({"keys": [{"key": "k1", "role": "admin"}]})", "inline");
  EXPECT_FALSE(keys.authenticate("").has_value());
  EXPECT_FALSE(keys.authenticate("k2").has_value());
  EXPECT_FALSE(keys.authenticate("k1 ").has_value());
  EXPECT_FALSE(keys.authenticate(sha_of("k1")).has_value()) << "the hash is not the key";
  EXPECT_TRUE(keys.authenticate("k1").has_value());
}

TEST(ApiKeysLoad, NoneMakesEveryoneAnAdmin) {
  const ApiKeys keys = ApiKeys::none();
  EXPECT_FALSE(keys.enabled());
  for (std::string_view token : {"", "anything"}) {
    auto principal = keys.authenticate(token);
    ASSERT_TRUE(principal.has_value());
    EXPECT_TRUE(principal->is_admin());
    EXPECT_EQ(principal->key_id, "anonymous");
  }
}

TEST(ApiKeysLoad, RefusesBadFilesWithClearMessages) {
  const std::string good_sha = sha_of("x");
  struct Case {
    std::string json;
    std::vector<std::string> expected;  // substrings of the message
  };
  const std::vector<Case> cases = {
      {"", {"empty"}},
      {"  \n", {"empty"}},
      {"{\"keys\": [", {"not valid JSON"}},
      {"[]", {"not a JSON object"}},
      {"{}", {"'keys' is missing"}},
      {R"({"keys": {}})", {"'keys' is missing or not a list"}},
      {R"({"keys": []})", {"lists no keys"}},
      {R"({"keys": [], "extra": 1})", {"unknown top-level field 'extra'"}},
      {R"({"keys": ["k"]})", {"keys[0]", "not a JSON object"}},
      {R"({"keys": [{"key": "a", "role": "admin"}, {"key": "b", "role": "root"}]})",
       {"keys[1]", "unknown role 'root'"}},
      {R"({"keys": [{"key": "a"}]})", {"keys[0]", "'role' is missing"}},
      {R"({"keys": [{"key": "a", "role": 1}]})", {"keys[0]", "'role' is missing"}},
      {R"({"keys": [{"role": "admin"}]})", {"keys[0]", "exactly one of 'key'"}},
      {R"({"keys": [{"key": "a", "sha256": ")" + good_sha + R"(", "role": "admin"}]})",
       {"keys[0]", "exactly one of 'key'"}},
      {R"({"keys": [{"key": "", "role": "admin"}]})", {"keys[0]", "non-empty string"}},
      {R"({"keys": [{"key": "a b", "role": "admin"}]})", {"keys[0]", "without spaces"}},
      {R"({"keys": [{"key": 7, "role": "admin"}]})", {"keys[0]", "'key' must be"}},
      {R"({"keys": [{"sha256": "abc", "role": "admin"}]})", {"keys[0]", "64 hex digits"}},
      {R"({"keys": [{"sha256": ")" + good_sha.substr(0, 63) + R"(g", "role": "admin"}]})",
       {"keys[0]", "64 hex digits"}},
      {R"({"keys": [{"sha256": 5, "role": "admin"}]})", {"keys[0]", "64 hex digits"}},
      {R"({"keys": [{"key": "x", "role": "admin"}, {"key": "y", "role": "admin", "x": 1}]})",
       {"keys[1]", "unknown field 'x'"}},
      {R"({"keys": [{"key": "x", "role": "admin"}, {"key": "y", "role": "admin"}, {"sha256": ")" +
           good_sha + R"(", "role": "tenant"}]})",
       {"keys[2]", "the same key as keys[0]"}},
      {R"({"keys": [{"key": "x", "role": "admin"}, {"key": "x", "role": "tenant"}]})",
       {"keys[1]", "the same key as keys[0]"}},
      {R"({"keys": [{"key": "a", "role": "tenant", "users": "u1"}]})",
       {"keys[0]", "'users' must be a list of strings"}},
      {R"({"keys": [{"key": "a", "role": "tenant", "users": [1]}]})",
       {"keys[0]", "'users' must be a list of strings"}},
      {R"({"keys": [{"key": "a", "role": "tenant", "domains": {"d": 1}}]})",
       {"keys[0]", "'domains' must be a list of strings"}},
      {R"({"keys": [{"key": "a", "role": "tenant", "domains": ["Education"]}]})",
       {"keys[0]", "'Education'", "not a valid adapter-id domain"}},
      {R"({"keys": [{"key": "a", "role": "tenant", "users": ["a/b"]}]})",
       {"keys[0]", "'a/b'", "not a valid adapter-id user"}},
      {R"({"keys": [{"key": "a", "role": "tenant", "users": [".."]}]})",
       {"keys[0]", "not a valid adapter-id user"}},
      {R"({"keys": [{"key": "a", "role": "admin", "users": ["u"]}]})", {"keys[0]", "tenants only"}},
      {R"({"keys": [{"key": "a", "role": "tenant", "user": ["u"]}]})",
       {"keys[0]", "unknown field 'user'"}},
  };
  for (const Case& c : cases) {
    const std::string message = load_error(c.json);
    ASSERT_FALSE(message.empty()) << "accepted: " << c.json;
    for (const auto& expected : c.expected) {
      EXPECT_NE(message.find(expected), std::string::npos)
          << "'" << expected << "' not in: " << message << "\nfor: " << c.json;
    }
  }
}

TEST(ApiKeysLoad, MissingFileIsAnError) {
  ScratchDir dir;
  EXPECT_THROW(ApiKeys::load(dir / "absent.json"), Error);
}

TEST(ApiKeysLoad, TenantWithNoScopeIsAllowed) {
  const ApiKeys keys = ApiKeys::parse(
      R"({"keys": [{"key": "t", "role": "tenant", "users": [], "domains": []}]})", "inline");
  auto principal = keys.authenticate("t");
  ASSERT_TRUE(principal.has_value());
  EXPECT_FALSE(may_use(*principal, AdapterId::parse("education/u1/v1")));
}

TEST(Authorization, Matrix) {
  Principal admin;
  admin.role = Role::kAdmin;
  Principal by_user;
  by_user.users = {"alice"};
  Principal by_domain;
  by_domain.domains = {"education"};
  Principal both;
  both.users = {"bob"};
  both.domains = {"gaming"};
  Principal nobody;  // a tenant with no users and no domains: the base model only

  const AdapterId alice_edu = AdapterId::parse("education/alice/v1");
  const AdapterId alice_med = AdapterId::parse("medicine/alice/v2");
  const AdapterId bob_edu = AdapterId::parse("education/bob/v1");
  const AdapterId carol_med = AdapterId::parse("medicine/carol/v1");
  const AdapterId bob_latest = AdapterId::parse("medicine/bob", /*allow_latest=*/true);
  const AdapterId dave_gaming = AdapterId::parse("gaming/dave/v3");

  struct Row {
    const Principal* principal;
    const AdapterId* adapter;
    bool allowed;
  };
  const std::vector<Row> rows = {
      {&admin, &alice_edu, true},      {&admin, &carol_med, true},
      {&by_user, &alice_edu, true},    {&by_user, &alice_med, true},
      {&by_user, &bob_edu, false},     {&by_user, &carol_med, false},
      {&by_domain, &alice_edu, true},  {&by_domain, &bob_edu, true},
      {&by_domain, &alice_med, false}, {&by_domain, &carol_med, false},
      {&both, &bob_latest, true},      {&both, &dave_gaming, true},
      {&both, &carol_med, false},      {&nobody, &alice_edu, false},
      {&nobody, &carol_med, false},
  };
  for (const Row& row : rows) {
    const std::string what = fmt::format("{} {}", row.principal->users.empty() ? "-" : "users",
                                         row.adapter->to_string());
    EXPECT_EQ(may_use(*row.principal, *row.adapter), row.allowed) << what;
    EXPECT_EQ(may_list(*row.principal, *row.adapter), row.allowed) << what;
    EXPECT_EQ(may_modify(*row.principal, *row.adapter), row.allowed) << what;
  }
}

TEST(Authorization, MatchesWholeNamesOnly) {
  Principal tenant;
  tenant.users = {"alice"};
  tenant.domains = {"edu"};
  EXPECT_FALSE(may_use(tenant, AdapterId::parse("education/alicex/v1")));
  EXPECT_FALSE(may_use(tenant, AdapterId::parse("edu2/al/v1")));
  EXPECT_TRUE(may_use(tenant, AdapterId::parse("edu/zed/v1")));
}

TEST(Bearer, ParsesTheToken) {
  EXPECT_EQ(parse_bearer("Bearer abc"), "abc");
  EXPECT_EQ(parse_bearer("bearer abc"), "abc");
  EXPECT_EQ(parse_bearer("BEARER sk-1.2_3~+/="), "sk-1.2_3~+/=");
  EXPECT_EQ(parse_bearer("  Bearer \t  abc \t"), "abc");
}

TEST(Bearer, RefusesMalformedValues) {
  for (std::string_view value : {"", "Bearer", "Bearer ", "Bearer   ", "Bearerabc", "Basic abc",
                                 "abc", "Bearer a b", "Bearer a\tb", "Token abc", "Bear abc"}) {
    EXPECT_FALSE(parse_bearer(value).has_value()) << "'" << value << "'";
  }
  EXPECT_FALSE(parse_bearer(std::string_view("Bearer a\0b", 10)).has_value());
  EXPECT_FALSE(parse_bearer("Bearer caf\xc3\xa9").has_value());
}

TEST(Bearer, RoundTripsThroughAuthenticate) {
  const ApiKeys keys = ApiKeys::parse(R"({"keys": [{"key": "sk-xyz", "role": "admin"}]})", "x");
  auto token = parse_bearer("Bearer sk-xyz");
  ASSERT_TRUE(token.has_value());
  EXPECT_TRUE(keys.authenticate(*token).has_value());
}

}  // namespace
}  // namespace bitdelta
