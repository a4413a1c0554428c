// Gaming, DeFi and general records and analytics, computed by hand on small cases; the shipped
// JSON Schemas agree with the validators; the analyze command for every domain.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "domain/defi.h"
#include "domain/gaming.h"
#include "domain/general.h"
#include "support/test_support.h"
#include "util/error.h"

namespace bitdelta {
namespace {

std::string error_of(const std::function<void()>& f) { return testing::error_message(f); }

constexpr double kWeek = 7 * 24 * 3600.0;

// The NPC "smith", latest interaction at time 2 weeks:
//   ann  t = 0 (two half-lives ago, decay ¼), affinity +0.5, action trade
//   ann  t = 2w (decay 1), affinity +1.0, reply "Welcome back, friend! Need a blade?" (6 words, ?)
//   bob  t = 1w (decay ½), affinity −0.5, action attack, reply "Begone." (1 word)
// Relationships: ann strength ¼·1.5 + 1·2 = 2.375, affinity ¼·0.5 + 1 = 1.125; bob strength
//   ½·1.5 = 0.75, affinity −0.25.
// Memory importance = decay × (1 + |a| + ½ if acted) × ln(1 + interactions with that player):
//   ann@2w 1 · 2 · ln 3 = 2.197225; bob 0.5 · 2.0 · ln 2 = 0.693147; ann@0 0.25 · 2.0 · ln 3 =
//   0.549306.
// Personality: warmth = mean a = 1/3; talkativeness: replies of 4, 6 and 1 words → w = 11/3,
//   w / (w + 20) = 0.154930; curiosity 1/3 (one reply asks); assertiveness 2/3; volatility = std
//   of {0.5, 1, −0.5} = sqrt((0.25 + 1 + 0.25)/3 − 1/9) = 0.623610.
// Traits: friendly (mean a ≥ 0.2), terse (11/3 < 5 words), inquisitive (1/3 ≥ 0.3),
// action-oriented (2/3 ≥ 0.5); actions
//   trade ⅓, attack ⅓.
TEST(Gaming, AnalyticsByHand) {
  testing::ScratchDir dir;
  const std::string w = std::to_string(static_cast<int64_t>(kWeek));
  const std::string w2 = std::to_string(static_cast<int64_t>(2 * kWeek));
  testing::write_text(
      dir / "g.jsonl",
      R"({"npc": "smith", "player": "ann", "time": 0, "utterance": "Can I buy a sword?", "reply": "That will be ten.", "action": "trade", "affinity_change": 0.5}
{"npc": "smith", "player": "bob", "time": )" +
          w +
          R"(, "utterance": "Give me that!", "reply": "Begone.", "action": "attack", "affinity_change": -0.5}
{"npc": "smith", "player": "ann", "time": )" +
          w2 +
          R"(, "utterance": "Hello again", "reply": "Welcome back, friend! Need a blade?", "affinity_change": 1.0}
{"npc": "baker", "player": "ann", "time": 5, "utterance": "Bread?", "reply": "Fresh today."}
)");
  const auto records = read_gaming_records(dir / "g.jsonl");
  const GamingAnalytics g = analyze_gaming(records, "smith");
  EXPECT_EQ(g.interactions, 3);
  ASSERT_EQ(g.relationships.size(), 2u);
  EXPECT_EQ(g.relationships[0].player, "ann");
  EXPECT_NEAR(g.relationships[0].strength, 2.375, 1e-9);
  EXPECT_NEAR(g.relationships[0].affinity, 1.125, 1e-9);
  EXPECT_NEAR(g.relationships[1].strength, 0.75, 1e-9);
  EXPECT_NEAR(g.relationships[1].affinity, -0.25, 1e-9);
  ASSERT_EQ(g.memory_importance.size(), 3u);
  EXPECT_NEAR(g.memory_importance[0].importance, 2 * std::log(3.0), 1e-9);
  EXPECT_EQ(g.memory_importance[1].player, "bob");
  EXPECT_NEAR(g.memory_importance[1].importance, std::log(2.0), 1e-9);
  EXPECT_NEAR(g.memory_importance[2].importance, 0.5 * std::log(3.0), 1e-9);
  EXPECT_NEAR(g.personality.at("warmth"), 1.0 / 3, 1e-9);
  EXPECT_NEAR(g.personality.at("talkativeness"), (11.0 / 3) / (11.0 / 3 + 20), 1e-9);
  EXPECT_NEAR(g.personality.at("curiosity"), 1.0 / 3, 1e-9);
  EXPECT_NEAR(g.personality.at("assertiveness"), 2.0 / 3, 1e-9);
  EXPECT_NEAR(g.personality.at("volatility"), std::sqrt(1.5 / 3 - 1.0 / 9), 1e-9);
  EXPECT_EQ(g.trait_labels,
            (std::vector<std::string>{"friendly", "terse", "inquisitive", "action-oriented"}));
  EXPECT_NEAR(g.behavioral_traits.at("trade"), 1.0 / 3, 1e-12);
  const auto j = g.to_json();
  for (const char* key :
       {"personality", "relationships", "memory_importance", "behavioral_traits"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_NE(error_of([&] { analyze_gaming(records, "nobody"); }).find("no records"),
            std::string::npos);
  // A DID written with and without its EIP-55 capitals is one NPC.
  testing::write_text(
      dir / "did.jsonl",
      R"({"npc": "did:lux:122:0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "player": "ann", "time": 0, "utterance": "x", "reply": "y"}
{"npc": "did:lux:122:0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "player": "ann", "time": 1, "utterance": "x", "reply": "y"}
)");
  EXPECT_EQ(analyze_gaming(read_gaming_records(dir / "did.jsonl"),
                           "did:lux:122:0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
                .interactions,
            2);
  testing::write_text(
      dir / "bad.jsonl",
      R"({"npc": "smith", "player": "ann", "time": 0, "utterance": "x", "reply": "y", "affinity_change": 2})");
  EXPECT_NE(error_of([&] {
              read_gaming_records(dir / "bad.jsonl");
            }).find("bad.jsonl:1: field \"affinity_change\" is 2"),
            std::string::npos);
}

std::string defi_line(const std::string& fields) {
  static int n = 0;
  char hash[67];
  std::snprintf(hash, sizeof hash, "0x%064x", ++n);
  return R"({"address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "hash": ")" +
         std::string(hash) + R"(", "protocol": "uniswap", )" + fields + "}\n";
}

// One wallet, six transactions (day = 86400 s):
//   d0  swap USDC→PEPE  $1000 (pool A)          swing (sold 2 days later)
//   d2  swap PEPE→USDC  $1200, pnl +200 (A)     stablecoin parking (into a stablecoin)
//   d3  add_liquidity ETH/USDC $3000 (pool B)   LP provision
//   d4  supply USDC $500 (aave)                 lending
//   d5  open_long ETH $2000, leverage 5, pnl −600  leveraged trading
//   d20 swap ETH→ARB $300 (pool A)              other (never sold)
// avg position = 8000 / 6 = 1333.33; favourite pools: A (3), B (1).
// Risk: leverage mean of min(1, (L−1)/4) = (1 + 0·5)/6 = 1/6; asset volatility by the received
//   token: PEPE 1·1000 + USDC 0 + USDC 0 (LP receives its last token) + USDC 0 + ETH 0.5·2000 +
//   ARB 1·300 = 2300 / 8000 = 0.2875; position size: largest/mean − 1 = 3000/1333.33 − 1 = 1.25,
//   /9 = 0.138889; drawdown: cumulative pnl +200 (peak 200), then −400: drawdown 600 / 1333.33 =
//   0.45. Score = (1/6 + 0.2875 + 0.138889 + 0.45) / 4 = 0.260764 → conservative.
TEST(Defi, AnalyticsByHand) {
  testing::ScratchDir dir;
  const std::string day = "86400";
  std::string text;
  text += defi_line(
      R"("time": 0, "pool": "A", "action": "swap", "tokens": ["USDC", "PEPE"], "amount_usd": 1000)");
  text += defi_line(
      R"("time": 172800, "pool": "A", "action": "swap", "tokens": ["PEPE", "USDC"], "amount_usd": 1200, "pnl_usd": 200)");
  text += defi_line(
      R"("time": 259200, "pool": "B", "action": "add_liquidity", "tokens": ["ETH", "USDC"], "amount_usd": 3000)");
  text += defi_line(R"("time": 345600, "action": "supply", "tokens": ["USDC"], "amount_usd": 500)");
  text += defi_line(
      R"("time": 432000, "action": "open_long", "tokens": ["ETH"], "amount_usd": 2000, "leverage": 5, "pnl_usd": -600)");
  text += defi_line(
      R"("time": 1728000, "pool": "A", "action": "swap", "tokens": ["ETH", "ARB"], "amount_usd": 300)");
  testing::write_text(dir / "d.jsonl", text);
  const auto records = read_defi_records(dir / "d.jsonl");
  std::vector<const DefiRecord*> h;
  for (const auto& r : records) h.push_back(&r);
  EXPECT_EQ(label_strategies(h),
            (std::vector<std::string>{"swing trading", "stablecoin parking", "LP provision",
                                      "lending", "leveraged trading", "other"}));
  const DefiAnalytics d = analyze_defi(records, "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed");
  EXPECT_EQ(d.transactions, 6);
  EXPECT_NEAR(d.avg_position_size, 8000.0 / 6, 1e-9);
  EXPECT_EQ(d.favorite_pools, (std::vector<std::string>{"A", "B"}));
  EXPECT_NEAR(d.risk_components.at("leverage"), 1.0 / 6, 1e-12);
  EXPECT_NEAR(d.risk_components.at("asset_volatility"), 0.2875, 1e-12);
  EXPECT_NEAR(d.risk_components.at("position_size"), 1.25 / 9, 1e-12);
  EXPECT_NEAR(d.risk_components.at("drawdown"), 0.45, 1e-12);
  EXPECT_NEAR(d.risk_tolerance, (1.0 / 6 + 0.2875 + 1.25 / 9 + 0.45) / 4, 1e-12);
  EXPECT_EQ(d.risk_label, "conservative");
  // Every labelled strategy is 1/6 ≥ 10%: five preferred, "other" never.
  EXPECT_EQ(d.preferred_strategies.size(), 5u);
  EXPECT_EQ(token_volatility_class("usdc"), 0.0);
  EXPECT_EQ(token_volatility_class("WETH"), 0.5);

  const std::pair<std::string, std::string> bad[] = {
      {R"({"address": "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "time": 0, "hash": "0x)" +
           std::string(64, 'a') +
           R"(", "protocol": "p", "action": "swap", "tokens": ["A"], "amount_usd": 1})",
       "field \"address\" '0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed' has mixed-case hex that "
       "fails its EIP-55 checksum"},
      {R"({"address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "time": 0, "hash": "0x12", "protocol": "p", "action": "swap", "tokens": ["A"], "amount_usd": 1})",
       "field \"hash\" must be a transaction hash"},
      {R"({"address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "time": 0, "hash": "0x)" +
           std::string(64, 'a') + R"(", "protocol": "p", "action": "swap", "tokens": ["A"]})",
       "field \"amount_usd\" is missing"},
      {R"({"address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "time": 0, "hash": "0x)" +
           std::string(64, 'a') +
           R"(", "protocol": "p", "action": "swap", "tokens": ["A"], "amount_usd": 1, "leverage": 0.5})",
       "field \"leverage\" is 0.5"}};
  for (const auto& [line, message] : bad) {
    testing::write_text(dir / "bad.jsonl", line + "\n");
    EXPECT_NE(error_of([&] { read_defi_records(dir / "bad.jsonl"); }).find(message),
              std::string::npos)
        << error_of([&] { read_defi_records(dir / "bad.jsonl"); });
  }
}

// "At least 10%" counts transactions: 10 of 100 is preferred (summing 1/100 ten times gives
// 0.0999…, which a float comparison would drop), 9 of 100 is not.
TEST(Defi, PreferredStrategiesAtExactlyTenPercent) {
  testing::ScratchDir dir;
  std::string text;
  for (int i = 0; i < 100; ++i) {
    const std::string action = i < 10   ? R"("supply", "tokens": ["USDC"])"
                               : i < 19 ? R"("add_liquidity", "tokens": ["ETH", "USDC"])"
                                        : R"("stake", "tokens": ["ETH"])";
    text += defi_line(R"("time": )" + std::to_string(i) + R"(, "action": )" + action +
                      R"(, "amount_usd": 10)");
  }
  testing::write_text(dir / "d.jsonl", text);
  const auto records = read_defi_records(dir / "d.jsonl");
  const DefiAnalytics d = analyze_defi(records, records[0].address);
  ASSERT_EQ(d.preferred_strategies.size(), 1u);
  EXPECT_EQ(d.preferred_strategies[0].first, "lending");
  EXPECT_DOUBLE_EQ(d.strategy_shares.at("LP provision"), 0.09);
}

TEST(General, CountsAndBadRecords) {
  testing::ScratchDir dir;
  testing::write_text(
      dir / "c.jsonl",
      R"({"user": "u1", "time": 1, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}, {"role": "assistant", "content": "see you"}]}
{"user": "u2", "time": 2, "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
)");
  const auto records = read_general_records(dir / "c.jsonl");
  const GeneralAnalytics g = analyze_general(records, "u1");
  EXPECT_EQ(g.conversations, 1);
  EXPECT_EQ(g.user_turns, 2);
  EXPECT_EQ(g.assistant_turns, 2);
  testing::write_text(
      dir / "b.jsonl",
      R"({"user": "u1", "time": 1, "messages": [{"role": "user", "content": "hi"}]})");
  EXPECT_NE(error_of([&] {
              read_general_records(dir / "b.jsonl");
            }).find("b.jsonl:1: field \"messages\" has no assistant message"),
            std::string::npos);
}

// Each domain's JSON Schema (docs/schemas/, checked with Debian's python3-jsonschema) and the
// engine's validator agree on records either can judge.
TEST(Schemas, AgreeWithTheValidators) {
  testing::ScratchDir dir;
  const std::string hash = "0x" + std::string(64, 'b');
  const std::string addr = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
  struct Case {
    const char* domain;
    std::function<void(const std::filesystem::path&)> read;
    std::vector<std::string> lines;
  };
  const std::vector<Case> cases = {
      {"gaming",
       [](const auto& p) { read_gaming_records(p); },
       {R"({"npc": "smith", "player": "ann", "time": 1, "utterance": "hi", "reply": "hello"})",
        R"({"npc": "smith", "player": "ann", "time": "2026-11-30T12:00:00Z", "utterance": "hi", "reply": "hello", "action": "trade", "affinity_change": -0.3, "messages": [{"role": "user", "content": "hi"}]})",
        R"({"npc": "smith", "player": "ann", "time": 1, "utterance": "hi"})",
        R"({"npc": "smith", "player": "ann", "time": 1, "utterance": "hi", "reply": "hello", "affinity_change": 1.5})",
        R"({"npc": "sm ith", "player": "ann", "time": 1, "utterance": "hi", "reply": "hello"})",
        R"({"npc": "smith", "player": "ann", "time": -4, "utterance": "hi", "reply": "hello"})"}},
      {"defi",
       [](const auto& p) { read_defi_records(p); },
       {R"({"address": ")" + addr + R"(", "time": 1, "hash": ")" + hash +
            R"(", "protocol": "aave", "action": "supply", "tokens": ["USDC"], "amount_usd": 10})",
        R"({"address": ")" + addr + R"(", "time": 1, "hash": ")" + hash +
            R"(", "protocol": "gmx", "pool": "ETH-PERP", "action": "open_long", "tokens": ["ETH"], "amount_usd": 10, "pnl_usd": -3, "leverage": 3})",
        R"({"address": "0x12", "time": 1, "hash": ")" + hash +
            R"(", "protocol": "aave", "action": "supply", "tokens": ["USDC"], "amount_usd": 10})",
        R"({"address": ")" + addr + R"(", "time": 1, "hash": ")" + hash +
            R"(", "protocol": "aave", "action": "supply", "tokens": [], "amount_usd": 10})",
        R"({"address": ")" + addr + R"(", "time": 1, "hash": ")" + hash +
            R"(", "protocol": "aave", "action": "supply", "tokens": ["USDC"], "amount_usd": -1})",
        R"({"address": ")" + addr + R"(", "time": 1, "hash": ")" + hash +
            R"(", "protocol": "aave", "action": "supply", "tokens": ["USDC"]})"}},
      {"general",
       [](const auto& p) { read_general_records(p); },
       {R"({"user": "did:lux:122:0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "time": 3, "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})",
        R"({"user": "u", "time": 3})",
        R"({"user": "u", "time": 3, "messages": [{"role": "robot", "content": "b"}]})"}}};
  for (const Case& c : cases) {
    std::string all;
    for (const auto& l : c.lines) all += l + "\n";
    testing::write_text(dir / "all.jsonl", all);
    auto verdicts = testing::run_command(
        "/usr/bin/python3 '" + testing::source_path("tools/validate_jsonl.py").string() + "' '" +
        testing::source_path(std::string("docs/schemas/") + c.domain + ".schema.json").string() +
        "' '" + (dir / "all.jsonl").string() + "'");
    ASSERT_EQ(verdicts.exit_code, 0) << verdicts.err;
    std::istringstream in(verdicts.out);
    for (const auto& l : c.lines) {
      std::string verdict;
      ASSERT_TRUE(std::getline(in, verdict)) << verdicts.out;
      testing::write_text(dir / "one.jsonl", l + "\n");
      const std::string ours = error_of([&] { c.read(dir / "one.jsonl"); });
      EXPECT_EQ(verdict == "ok", ours.empty())
          << c.domain << ": " << l << "\nschema: " << verdict << "\nours: " << ours;
    }
  }
}

TEST(Analyze, EveryDomainThroughTheCli) {
  testing::ScratchDir dir;
  testing::write_text(
      dir / "g.jsonl",
      R"({"npc": "smith", "player": "ann", "time": 1, "utterance": "hi", "reply": "Hello there?", "action": "trade", "affinity_change": 0.4})");
  testing::write_text(
      dir / "d.jsonl",
      defi_line(
          R"("time": 0, "pool": "A", "action": "swap", "tokens": ["USDC", "PEPE"], "amount_usd": 1000)"));
  testing::write_text(
      dir / "c.jsonl",
      R"({"user": "u1", "time": 1, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})");
  for (const auto& [domain, file, key] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"gaming", "g.jsonl", "personality"},
           {"defi", "d.jsonl", "risk_tolerance"},
           {"general", "c.jsonl", "assistant_turns"}}) {
    auto r = testing::run_cli("analyze --domain " + domain + " --data '" + (dir / file).string() +
                              "' --json");
    ASSERT_EQ(r.exit_code, 0) << domain << ": " << r.err;
    EXPECT_TRUE(nlohmann::json::parse(r.out).contains(key)) << r.out;
    auto table =
        testing::run_cli("analyze --domain " + domain + " --data '" + (dir / file).string() + "'");
    EXPECT_EQ(table.exit_code, 0) << table.err;
    EXPECT_FALSE(table.out.empty());
  }
  auto unknown =
      testing::run_cli("analyze --domain cooking --data '" + (dir / "g.jsonl").string() + "'");
  EXPECT_NE(unknown.exit_code, 0);
}

}  // namespace
}  // namespace bitdelta
