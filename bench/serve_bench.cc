// The server under load: a load generator of concurrent streaming users over real HTTP, each user
// with their own adapter, against the same load all on the base model, measured in the same run.
//
//   serve_bench [--model DIR] [--users 1,8,32] [--requests 2] [--tokens 16]
//               [--soak-seconds 0] [--soak-users 32] [--rounds 2] [--prefill-budget 128]
//
// Without --model it writes `synth --like qwen3-0.6b` (BF16) to a temporary folder and 32 random
// adapters (random signs, small scales) into a store. For each user count it prints aggregate
// generated tokens/s and p50/p99 time to first token and inter-token latency, with adapters and
// all on the base, and their ratio. --soak-seconds runs that many seconds of continuous streams
// and reports errors and the server's resident memory over time.
#include <fmt/format.h>
#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "model/synth.h"
#include "random_adapter.h"
#include "serve/server.h"
#include "serve_load.h"
#include "store/adapter_store.h"
#include "util/error.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;
using namespace bitdelta;

namespace {
using bench::one_request;
using bench::percentile;
using bench::Samples;

int64_t rss_bytes(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string model_dir;
  std::vector<int> users = {1, 8, 32};
  int requests = 2, tokens = 16, soak_seconds = 0, soak_users = 32, rounds = 2;
  int64_t prefill_budget = 0;  // 0: the server's default
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] {
      if (i + 1 >= argc) fail("{} needs a value", a);
      return std::string(argv[++i]);
    };
    if (a == "--model") model_dir = next();
    else if (a == "--users") users = bench::parse_int_list(next());
    else if (a == "--requests") requests = std::stoi(next());
    else if (a == "--tokens") tokens = std::stoi(next());
    else if (a == "--soak-seconds") soak_seconds = std::stoi(next());
    else if (a == "--soak-users") soak_users = std::stoi(next());
    else if (a == "--rounds") rounds = std::max(1, std::stoi(next()));
    else if (a == "--prefill-budget")
      prefill_budget = std::stoll(next());
    else if (a == "--help" || a == "-h") {
      fmt::print(
          "usage: serve_bench [--model DIR] [--users 1,8,32] [--requests 2] [--tokens 16] "
          "[--soak-seconds 0] [--soak-users 32] [--rounds 2] [--prefill-budget 128]\n");
      return 0;
    } else {
      fail("unknown argument '{}' (try --help)", a);
    }
  }
  const fs::path tmp = fs::temp_directory_path() / fmt::format("bitdelta-serve-bench-{}", getpid());
  fs::create_directories(tmp);
  if (model_dir.empty()) {
    SynthOptions so;
    so.like = "qwen3-0.6b";
    synth_model(so, tmp / "qwen3-0.6b");
    model_dir = (tmp / "qwen3-0.6b").string();
  }
  const int max_users = std::max(*std::max_element(users.begin(), users.end()), soak_users);
  {
    auto model = Transformer::load(model_dir);
    BaseFingerprints fp(model->files());
    AdapterStore store = AdapterStore::open(tmp / "store");
    for (int u = 0; u < max_users; ++u) {
      const fs::path p = tmp / fmt::format("user{}.bdelta", u);
      bench::write_random_adapter(*model, fp, p, static_cast<uint64_t>(u + 1),
                                  default_thread_pool());
      store.add(p, AdapterId::parse(fmt::format("general/user{}/v1", u)));
      fs::remove(p);
    }
  }
  ServeOptions so;
  so.model = model_dir;
  so.store = tmp / "store";
  so.port = 0;
  so.max_batch = max_users;
  if (prefill_budget > 0) so.prefill_budget = prefill_budget;
  so.max_queue = 4 * max_users;
  so.http_threads = max_users + 8;
  Server server(so);
  std::thread serving([&] { server.run(); });
  const std::string base = fs::path(model_dir).filename().string();

  auto run_load = [&](int n, bool adapters) {
    Samples s;
    const auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int u = 0; u < n; ++u) {
      threads.emplace_back([&, u] {
        for (int r = 0; r < requests; ++r) {
          one_request(server.port(), adapters ? fmt::format("general/user{}/v1", u) : base,
                      tokens, s);
        }
      });
    }
    for (auto& t : threads) t.join();
    const double seconds = bench::seconds_since(start);
    return std::tuple{s.tokens / seconds, percentile(s.ttft, 0.5), percentile(s.ttft, 0.99),
                      percentile(s.itl, 0.5), percentile(s.itl, 0.99), s.errors};
  };
  fmt::print("{} ({} threads); {} streaming requests per user of {} tokens\n\n", base,
             default_thread_pool().size(), requests, tokens);
  fmt::print("| users | load | tokens/s | TTFT p50 / p99 (s) | ITL p50 / p99 (s) | errors |\n");
  fmt::print("|---|---|---|---|---|---|\n");
  for (int n : users) {
    // The two loads alternate `rounds` times and each keeps its best round, so that the shared
    // machine's drifts hit both sides of the ratio alike.
    using Result = decltype(run_load(0, false));
    Result best[2];
    double rates[2] = {0, 0};
    int64_t errors_total = 0;
    for (int round = 0; round < rounds; ++round) {
      for (int adapters = 0; adapters < 2; ++adapters) {
        Result r = run_load(n, adapters == 1);
        errors_total += std::get<5>(r);
        if (std::get<0>(r) > rates[adapters]) {
          rates[adapters] = std::get<0>(r);
          best[adapters] = r;
        }
      }
    }
    for (int adapters = 0; adapters < 2; ++adapters) {
      auto [rate, t50, t99, i50, i99, errors] = best[adapters];
      fmt::print("| {} | {} | {:.1f} | {:.2f} / {:.2f} | {:.3f} / {:.3f} | {} |\n", n,
                 adapters ? "each user's own adapter" : "all on the base", rate, t50, t99, i50,
                 i99, errors);
    }
    fmt::print("| {} | adapters ÷ base | {:.2f} | | | {} in all rounds |\n", n, rates[1] / rates[0],
               errors_total);
    std::fflush(stdout);
  }

  if (soak_seconds > 0) {
    Samples s;
    std::atomic<bool> done{false};
    std::vector<std::thread> threads;
    for (int u = 0; u < soak_users; ++u) {
      threads.emplace_back([&, u] {
        while (!done) one_request(server.port(), fmt::format("general/user{}/v1", u), tokens, s);
      });
    }
    std::vector<int64_t> rss;
    const auto start = Clock::now();
    while (bench::seconds_since(start) < soak_seconds) {
      std::this_thread::sleep_for(std::chrono::seconds(30));
      rss.push_back(rss_bytes(getpid()));
      fmt::print("soak {:>4.0f} s: {} tokens, {} errors, RSS {:.2f} GiB\n",
                 bench::seconds_since(start), s.tokens, s.errors, rss.back() / double(1 << 30));
      std::fflush(stdout);
    }
    done = true;
    for (auto& t : threads) t.join();
    fmt::print("soak: {} streams for {} s: {} tokens, {} errors; RSS first {:.2f} GiB, last "
               "{:.2f} GiB, max {:.2f} GiB\n",
               soak_users, soak_seconds, s.tokens, s.errors, rss.front() / double(1 << 30),
               rss.back() / double(1 << 30),
               *std::max_element(rss.begin(), rss.end()) / double(1 << 30));
  }
  server.stop();
  serving.join();
  fs::remove_all(tmp);
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 1;
}
