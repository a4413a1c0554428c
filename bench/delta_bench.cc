// BitDelta's costs against baselines measured in the same run, on synth --like qwen3-0.6b (BF16)
// with random adapters:
//   1. the 1-bit delta pass ÷ the base BF16 GEMV, over the model's matrices (one token);
//   2. one decode step of 8 sequences with 8 distinct adapters ÷ the same step on the base, and
//      ÷ naive serving (each user's own merged weights: 8 single-sequence steps, each streaming
//      a full weight set);
//   3. compression throughput (fine-tuned weight bytes per second);
//   4. adapter load (open, validate, bind; base digests precomputed as a server does);
//   5. memory of a loaded adapter ÷ its file size.
//
//   delta_bench [--model DIR] [--finetuned DIR] [--threads 1,2] [--quantize q8_0|q4_0]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "bench_util.h"
#include "random_adapter.h"
#include "delta/adapter.h"
#include "delta/compress.h"
#include "delta/fingerprint.h"
#include "model/synth.h"
#include "model/transformer.h"
#include "util/error.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace bitdelta;

namespace {

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir, finetuned_dir;
  std::vector<int> thread_counts = {1, 2};
  QuantOptions quant;  // --quantize: the base (and its steps) on a quantized copy
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--model" && i + 1 < argc) {
      model_dir = argv[++i];
    } else if (a == "--finetuned" && i + 1 < argc) {
      finetuned_dir = argv[++i];
    } else if (a == "--threads" && i + 1 < argc) {
      thread_counts = bench::parse_int_list(argv[++i]);
    } else if (a == "--quantize" && i + 1 < argc && parse_quant(argv[i + 1])) {
      quant.quant = *parse_quant(argv[++i]);
    } else {
      std::printf(
          "usage: delta_bench [--model DIR] [--finetuned DIR] [--threads 1,2] "
          "[--quantize q8_0|q4_0]\n"
          "(without them, synth --like qwen3-0.6b BF16 seeds 0 and 1 are written to a "
          "temporary folder)\n");
      return a == "--help" ? 0 : 2;
    }
  }
  try {
    const fs::path temp = fs::temp_directory_path() / fmt::format("bitdelta-delta-bench-{}", getpid());
    fs::create_directories(temp);
    if (model_dir.empty() || finetuned_dir.empty()) {
      fmt::print("writing synth --like qwen3-0.6b (BF16), seeds 0 and 1 ...\n");
      SynthOptions options;
      options.like = "qwen3-0.6b";
      if (model_dir.empty()) {
        synth_model(options, temp / "base");
        model_dir = (temp / "base").string();
      }
      if (finetuned_dir.empty()) {
        options.seed = 1;
        synth_model(options, temp / "ft");
        finetuned_dir = (temp / "ft").string();
      }
    }
    ThreadPool pool2(2);
    auto model = Transformer::load(model_dir, quant);
    BaseFingerprints fp(model->files());
    auto start = Clock::now();
    fp.precompute(pool2);
    fmt::print("base digests (once per server start): {:.2f} s\n", since(start));
    std::vector<std::shared_ptr<Adapter>> adapters;
    for (uint64_t s = 0; s < 8; ++s) {
      const fs::path p = temp / fmt::format("user{}.bdelta", s);
      bench::write_random_adapter(*model, fp, p, s + 1, pool2);
      adapters.push_back(Adapter::open(p));
      adapters.back()->bind(*model, fp, pool2);
    }
    const ModelWeights& w = model->weights();
    const ModelConfig& c = model->config();

    fmt::print("\n| threads | delta GEMV / base GEMV | 8 users / base step | naive merged / 8 users | "
               "compress GB/s |\n|---|---|---|---|---|\n");
    for (int threads : thread_counts) {
      ThreadPool pool(threads);
      // 1. Over every block matrix of the model, one token.
      std::vector<float> x(static_cast<size_t>(c.intermediate_size), 0.01f), y(16384);
      const AdapterWeights& aw = adapters[0]->weights();
      const auto [base_s, delta_s] = bench::best_seconds_interleaved(
          9,
          [&] {
            for (const auto& l : w.layers) {
              for (const Linear* lin : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) {
                matmul(x.data(), 1, lin->weight, nullptr, y.data(), pool);
              }
            }
          },
          [&] {
            for (const auto& l : aw.layers) {
              for (const LinearDelta* d : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) {
                sign_matmul_add(x.data(), 1, *d->signs, y.data(), pool);
              }
            }
          });
      // 2. Decode steps of 8 sequences after a 32-token prompt each: all on the base, each on
      // its own adapter, and naive serving, where each user has a merged dense copy, so one step
      // is 8 single-sequence passes, each streaming a whole weight set (the base here: it is read
      // from DRAM just as a distinct copy would be, the model being far larger than the caches).
      // Measured in alternation.
      std::vector<int32_t> prompt(32);
      for (int i = 0; i < 32; ++i) prompt[i] = 100 + 37 * i;
      std::vector<float> logits;
      auto prefilled = [&](bool with_adapters, int n) {
        std::vector<KVCache> caches;
        for (int s = 0; s < n; ++s) {
          caches.push_back(model->new_cache());
          SequenceInput in{&caches.back(), prompt, false,
                           with_adapters ? &adapters[s]->weights() : nullptr};
          model->forward({&in, 1}, &logits, pool);
        }
        return caches;
      };
      std::vector<KVCache> base_caches = prefilled(false, 8), user_caches = prefilled(true, 8);
      std::vector<KVCache> naive_cache = prefilled(false, 1);
      std::vector<int32_t> next(8, 42);
      auto step = [&](std::vector<KVCache>& caches, bool with_adapters) {
        std::vector<SequenceInput> batch;
        for (int s = 0; s < 8; ++s) {
          batch.push_back({&caches[s], {&next[s], 1}, false,
                           with_adapters ? &adapters[s]->weights() : nullptr});
        }
        model->forward(batch, &logits, pool);
        for (auto& cache : caches) cache.truncate(cache.length() - 1);
      };
      const auto [base_step, users_step, naive_one] = bench::best_seconds_interleaved(
          5, [&] { step(base_caches, false); }, [&] { step(user_caches, true); },
          [&] {
            SequenceInput s{&naive_cache[0], {&next[0], 1}, false, nullptr};
            model->forward({&s, 1}, &logits, pool);
            naive_cache[0].truncate(naive_cache[0].length() - 1);
          });
      const double naive_step = 8 * naive_one;
      // 3. Compression throughput.
      uint64_t ft_bytes = 0;
      const double compress_s = bench::best_seconds(1, [&] {
        CompressResult r = compress_adapter(model_dir, finetuned_dir, temp / "c.bdelta", {}, pool);
        ft_bytes = r.finetuned_bytes;
      });
      fmt::print("| {} | {:.3f} ({:.2f} vs {:.2f} ms) | {:.2f} ({:.0f} vs {:.0f} ms) | {:.1f}x "
                 "({:.0f} ms) | {:.2f} |\n",
                 threads, delta_s / base_s, delta_s * 1e3, base_s * 1e3, users_step / base_step,
                 users_step * 1e3, base_step * 1e3, naive_step / users_step, naive_step * 1e3,
                 ft_bytes / compress_s / 1e9);
    }
    // 4 and 5. Load time and memory of one adapter, from the page cache.
    const fs::path p = temp / "user0.bdelta";
    std::shared_ptr<Adapter> loaded;
    std::vector<double> times;
    for (int i = 0; i < 10; ++i) {
      auto t = Clock::now();
      loaded = Adapter::open(p, &pool2);
      loaded->bind(*model, fp, pool2);
      times.push_back(since(t));
    }
    std::sort(times.begin(), times.end());
    const double file = static_cast<double>(loaded->file_bytes());
    fmt::print("\nadapter: {:.1f} MiB; load (open + validate + bind, median of 10) {:.2f} ms; "
               "memory {:.4f} x the file (mapping {:.1f} MiB + {:.1f} KiB owned)\n",
               file / 1048576.0, times[5] * 1e3, (file + loaded->owned_bytes()) / file,
               file / 1048576.0, loaded->owned_bytes() / 1024.0);
    fs::remove_all(temp);
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
