// Prefix caching's time to first token (issue 14, point 5): on synth --like qwen3-0.6b (BF16),
// through the server's scheduler (prefill chunks of 128, as `serve` defaults), a request whose
// 1,000-token system prompt is not cached, then requests with the same system prompt and another
// question, restored from the prefix cache. Prints both times and their ratio; the uncached and
// cached requests alternate with new system prompts, best of three.
//
//   prefix_bench [--model DIR] [--system 1000] [--threads 2]
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "bench_util.h"
#include "model/synth.h"
#include "model/transformer.h"
#include "serve/scheduler.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

using namespace bitdelta;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  std::string model_dir;
  int64_t system_tokens = 1000;
  int threads = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--model" && i + 1 < argc) {
      model_dir = argv[++i];
    } else if (a == "--system" && i + 1 < argc) {
      system_tokens = std::stoll(argv[++i]);
    } else if (a == "--threads" && i + 1 < argc) {
      threads = std::stoi(argv[++i]);
    } else {
      std::printf("usage: prefix_bench [--model DIR] [--system 1000] [--threads 2]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  try {
    fs::path temp;
    if (model_dir.empty()) {
      temp = fs::temp_directory_path() / fmt::format("bitdelta-prefix-bench-{}", getpid());
      SynthOptions so;
      so.like = "qwen3-0.6b";
      synth_model(so, temp);
      model_dir = temp.string();
    }
    auto model = Transformer::load(model_dir);
    Tokenizer tokenizer = Tokenizer::from_folder(model_dir);
    ThreadPool pool(threads);
    Scheduler scheduler(*model, tokenizer,
                        {.max_batch = 8,
                         .max_queue = 8,
                         .prefill_chunk = 128,
                         .prefix_cache_bytes = 2048ull << 20,
                         .prefix_block = 32},
                        pool);
    GenerateOptions o;
    o.max_tokens = 1;
    const auto first_token_seconds = [&](const std::vector<int32_t>& ids) {
      const auto start = Clock::now();
      auto channel = scheduler.submit({ids, o, nullptr, ""});
      while (true) {
        auto e = channel->next(std::chrono::seconds(600));
        if (!e || e->done) break;
      }
      return std::chrono::duration<double>(Clock::now() - start).count();
    };
    double uncached = 1e30, cached = 1e30;
    for (int round = 0; round < 3; ++round) {
      std::vector<int32_t> system(static_cast<size_t>(system_tokens));
      for (int64_t i = 0; i < system_tokens; ++i)
        system[i] = 1000 + (i * 7919 + round * 131) % 50000;
      std::vector<int32_t> a = system, b = system;
      for (int i = 0; i < 12; ++i) {
        a.push_back(2000 + i);
        b.push_back(3000 + 5 * i);
      }
      uncached = std::min(uncached, first_token_seconds(a));
      cached = std::min(cached, first_token_seconds(b));
    }
    const PrefixCacheStats st = scheduler.prefix_cache()->stats();
    fmt::print(
        "| system prompt | threads | first token, uncached | with the prefix cached | "
        "cached ÷ uncached | restored tokens |\n|---|---|---|---|---|---|\n");
    fmt::print("| {} tokens | {} | {:.0f} ms | {:.0f} ms | {:.3f} | {} of {} looked up |\n",
               system_tokens, threads, uncached * 1e3, cached * 1e3, cached / uncached,
               st.hit_tokens, st.lookup_tokens);
    scheduler.drain();
    if (!temp.empty()) fs::remove_all(temp);
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
