// The DeFi domain: a wallet's transactions, and the analytics a DeFi advisor's personal adapter is
// conditioned on — risk tolerance, preferred strategies, average position size, favourite pools.
// Formulas, token classes and labelling rules in docs/domains.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace bitdelta {

// One line of a DeFi JSONL file (docs/schemas/defi.schema.json).
struct DefiRecord {
  std::string address;  // the wallet, an EVM address (EIP-55 checked when mixed case)
  double time = 0;
  std::string hash;  // 0x + 64 hex digits
  std::string protocol, pool, action;
  std::vector<std::string> tokens;  // for swaps: tokens[0] spent, tokens.back() received
  double amount_usd = 0;
  std::optional<double> pnl_usd;
  double leverage = 1;  // ≥ 1
  std::vector<ChatMessage> messages;
  int64_t line = 0;
};

std::vector<DefiRecord> read_defi_records(const std::filesystem::path& path);

// The strategy a transaction belongs to, by the documented rules (first that holds):
// "leveraged trading", "LP provision", "lending", "stablecoin parking", "swing trading", "other".
// Swing trading needs the wallet's other swaps, so this labels a whole history (time order).
std::vector<std::string> label_strategies(const std::vector<const DefiRecord*>& history);

// Token classes for the volatility of held assets: 0 stablecoins, 0.5 majors, 1 the rest.
double token_volatility_class(const std::string& symbol);

struct DefiAnalytics {
  std::string address;
  int64_t transactions = 0;
  double risk_tolerance = 0;  // [0, 1]: the mean of the components it could compute
  std::string risk_label;     // conservative < 0.33 ≤ moderate < 0.66 ≤ aggressive
  std::map<std::string, double>
      risk_components;  // asset_volatility, leverage, position_size, drawdown
  std::vector<std::pair<std::string, double>> preferred_strategies;  // share ≥ 10%, largest first
  std::map<std::string, double> strategy_shares;
  double avg_position_size = 0;             // mean amount_usd
  std::vector<std::string> favorite_pools;  // up to 3: most transactions, then volume
  nlohmann::json to_json() const;
};

// Error when the address has no records.
DefiAnalytics analyze_defi(const std::vector<DefiRecord>& records, const std::string& address);

}  // namespace bitdelta
