#include "domain/defi.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

#include "domain/records.h"
#include "util/error.h"

namespace bitdelta {

namespace {

const std::set<std::string> kStablecoins = {"USDC", "USDT",   "DAI",   "FRAX", "LUSD",
                                            "TUSD", "USDP",   "PYUSD", "GUSD", "USDE",
                                            "BUSD", "USDC.E", "CRVUSD"};
const std::set<std::string> kMajors = {"ETH",    "WETH",  "BTC",  "WBTC",  "STETH",
                                       "WSTETH", "CBETH", "RETH", "CBBTC", "TBTC"};

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

bool is_stable(const std::string& token) { return kStablecoins.count(upper(token)) > 0; }

// Swing trading: a token bought by a swap and sold by a later one 1 to 14 days after.
constexpr double kSwingMinSeconds = 86400.0, kSwingMaxSeconds = 14 * 86400.0;
constexpr int64_t kPreferredShareDenominator = 10;  // preferred: ≥ 1/10 of the transactions

}  // namespace

double token_volatility_class(const std::string& symbol) {
  const std::string s = upper(symbol);
  if (kStablecoins.count(s)) return 0.0;
  if (kMajors.count(s)) return 0.5;
  return 1.0;
}

std::vector<DefiRecord> read_defi_records(const std::filesystem::path& path) {
  std::vector<DefiRecord> out;
  for (const RecordLine& line : read_jsonl_records(path)) {
    RecordFields f(line);
    DefiRecord r;
    r.address = f.string("address");
    try {
      validate_evm_address(r.address);
    } catch (const Error& e) {
      f.fail_field("address", e.what());
    }
    r.time = f.time("time");
    r.hash = f.string("hash");
    if (r.hash.size() != 66 || !r.hash.starts_with("0x") ||
        r.hash.find_first_not_of("0123456789abcdefABCDEF", 2) != std::string::npos) {
      f.fail_field("hash", "must be a transaction hash: 0x followed by 64 hex digits");
    }
    r.protocol = f.string("protocol");
    r.pool = f.optional_string("pool").value_or("");
    r.action = f.string("action");
    r.tokens = f.optional_strings("tokens");
    if (r.tokens.empty()) f.fail_field("tokens", "is missing (a non-empty array of token symbols)");
    const auto amount = f.optional_number("amount_usd", 0, 1e15);
    if (!amount) f.fail_field("amount_usd", "is missing (the transaction's value in USD)");
    r.amount_usd = *amount;
    r.pnl_usd = f.optional_number("pnl_usd", -1e15, 1e15);
    r.leverage = f.optional_number("leverage", 1, 1000).value_or(1.0);
    r.messages = f.messages();
    r.line = line.line;
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<std::string> label_strategies(const std::vector<const DefiRecord*>& history) {
  std::vector<std::string> labels(history.size(), "other");
  // Swing trades first: a swap receiving X, then a swap spending X 1-14 days later.
  std::vector<bool> swing(history.size(), false);
  for (size_t i = 0; i < history.size(); ++i) {
    const DefiRecord& buy = *history[i];
    if (buy.action != "swap" || buy.tokens.size() < 2 || is_stable(buy.tokens.back())) continue;
    for (size_t j = i + 1; j < history.size(); ++j) {
      const DefiRecord& sell = *history[j];
      const double gap = sell.time - buy.time;
      if (gap > kSwingMaxSeconds) break;
      if (sell.action == "swap" && sell.tokens.size() >= 2 &&
          upper(sell.tokens.front()) == upper(buy.tokens.back()) && gap >= kSwingMinSeconds) {
        swing[i] = swing[j] = true;
      }
    }
  }
  for (size_t i = 0; i < history.size(); ++i) {
    const DefiRecord& r = *history[i];
    const std::string& a = r.action;
    if (r.leverage > 1 || a == "open_long" || a == "open_short" || a == "close_position") {
      labels[i] = "leveraged trading";
    } else if (a == "add_liquidity" || a == "remove_liquidity") {
      labels[i] = "LP provision";
    } else if (a == "supply" || a == "withdraw" || a == "borrow" || a == "repay") {
      labels[i] = "lending";
    } else if ((a == "swap" && r.tokens.size() >= 2 && is_stable(r.tokens.back()) &&
                !is_stable(r.tokens.front())) ||
               (a == "deposit" && is_stable(r.tokens.back()))) {
      labels[i] = "stablecoin parking";
    } else if (swing[i]) {
      labels[i] = "swing trading";
    }
  }
  return labels;
}

DefiAnalytics analyze_defi(const std::vector<DefiRecord>& records, const std::string& address) {
  std::vector<const DefiRecord*> h;
  for (const auto& r : records) {
    if (same_evm_address(r.address, address)) h.push_back(&r);
  }
  if (h.empty()) fail("address '{}' has no records", address);
  std::stable_sort(h.begin(), h.end(),
                   [](const DefiRecord* a, const DefiRecord* b) { return a->time < b->time; });
  DefiAnalytics d;
  d.address = h.front()->address;
  d.transactions = static_cast<int64_t>(h.size());
  const double n = static_cast<double>(h.size());

  double volume = 0, weighted_vol = 0, leverage = 0, largest = 0;
  for (const DefiRecord* r : h) {
    volume += r->amount_usd;
    weighted_vol += r->amount_usd * token_volatility_class(r->tokens.back());
    leverage += std::min(1.0, (r->leverage - 1.0) / 4.0);
    largest = std::max(largest, r->amount_usd);
  }
  d.avg_position_size = volume / n;
  // Risk components, each in [0, 1].
  d.risk_components["leverage"] = leverage / n;
  if (volume > 0) {
    d.risk_components["asset_volatility"] = weighted_vol / volume;
    d.risk_components["position_size"] =
        std::clamp((largest / d.avg_position_size - 1.0) / 9.0, 0.0, 1.0);
  }
  double cumulative = 0, peak = 0, drawdown = 0;
  bool any_pnl = false;
  for (const DefiRecord* r : h) {
    if (!r->pnl_usd) continue;
    any_pnl = true;
    cumulative += *r->pnl_usd;
    peak = std::max(peak, cumulative);
    drawdown = std::max(drawdown, peak - cumulative);
  }
  if (any_pnl && d.avg_position_size > 0) {
    d.risk_components["drawdown"] = std::min(1.0, drawdown / d.avg_position_size);
  }
  double sum = 0;
  for (const auto& [name, v] : d.risk_components) sum += v;
  d.risk_tolerance = sum / static_cast<double>(d.risk_components.size());
  d.risk_label = d.risk_tolerance < 0.33   ? "conservative"
                 : d.risk_tolerance < 0.66 ? "moderate"
                                           : "aggressive";

  const std::vector<std::string> labels = label_strategies(h);
  std::map<std::string, int64_t> counts;  // counted, not summed shares: 10 of 100 is 10%
  for (const auto& l : labels) counts[l] += 1;
  for (const auto& [label, count] : counts) {
    const double share = static_cast<double>(count) / n;
    d.strategy_shares[label] = share;
    if (label != "other" && count * kPreferredShareDenominator >= d.transactions) {
      d.preferred_strategies.emplace_back(label, share);
    }
  }
  std::stable_sort(d.preferred_strategies.begin(), d.preferred_strategies.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });

  std::map<std::string, std::pair<int64_t, double>> pools;  // count, volume
  for (const DefiRecord* r : h) {
    if (r->pool.empty()) continue;
    pools[r->pool].first += 1;
    pools[r->pool].second += r->amount_usd;
  }
  std::vector<std::pair<std::string, std::pair<int64_t, double>>> ranked(pools.begin(),
                                                                         pools.end());
  std::stable_sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    return a.second.first != b.second.first ? a.second.first > b.second.first
                                            : a.second.second > b.second.second;
  });
  for (size_t i = 0; i < ranked.size() && i < 3; ++i) d.favorite_pools.push_back(ranked[i].first);
  return d;
}

nlohmann::json DefiAnalytics::to_json() const {
  using nlohmann::json;
  json preferred = json::array();
  for (const auto& [label, share] : preferred_strategies) {
    preferred.push_back({{"strategy", label}, {"share", share}});
  }
  return {{"domain", "defi"},
          {"address", address},
          {"transactions", transactions},
          {"risk_tolerance",
           {{"score", risk_tolerance}, {"label", risk_label}, {"components", risk_components}}},
          {"preferred_strategies", preferred},
          {"strategy_shares", strategy_shares},
          {"avg_position_size", avg_position_size},
          {"favorite_pools", favorite_pools}};
}

}  // namespace bitdelta
