// Inference speed against the hardware limit, measured in the same run.
//
//   inference_bench [--model DIR] [--prompt 128] [--new 64] [--threads 1,2] [--f32-activations]
//                   [--no-amx] [--quantize q8_0|q4_0]
//
// Without --model it writes `synth --like qwen3-0.6b` (BF16) to a temporary folder first. For
// each thread count it prints prefill tokens/s (the whole prompt in one forward) and decode
// tokens/s (new tokens one at a time after the prompt), next to the memory-bandwidth limit for
// decode: weight bytes read per token ÷ the read bandwidth measured here with the same number of
// threads, the fastest of several read shapes (bandwidth.h). The same runs with one user's adapter
// (random signs on every q/k/v/o and gate/up/down matrix) give what personalization costs a lone
// user, prompt and decode. It also reports peak RSS after loading and running, against the weights'
// bytes (the weights are mapped, so there should be no second copy).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bandwidth.h"
#include "bench_util.h"
#include "delta/adapter.h"
#include "model/synth.h"
#include "model/transformer.h"
#include "ops/matmul.h"
#include "random_adapter.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace bitdelta;

namespace {

uint64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

void reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
}

// Bytes of weights one decode step streams: every linear of every layer plus the LM head (the
// embedding row lookup is negligible).
uint64_t weight_bytes_per_token(const ModelWeights& w) {
  uint64_t total = w.lm_head.nbytes();
  for (const auto& l : w.layers) {
    for (const Linear* lin : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) {
      total += lin->weight.nbytes();
    }
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir;
  int prompt_len = 128, new_tokens = 64;
  std::vector<int> thread_counts = {1, 2};
  QuantOptions quant;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--model") {
      model_dir = value();
    } else if (a == "--prompt") {
      prompt_len = std::stoi(value());
    } else if (a == "--new") {
      new_tokens = std::stoi(value());
    } else if (a == "--threads") {
      thread_counts = bench::parse_int_list(value());
    } else if (a == "--f32-activations") {
      set_f32_activations(true);
    } else if (a == "--no-amx") {
      set_amx_tiles(false);
    } else if (a == "--quantize") {
      const std::string q = value();
      if (!parse_quant(q)) {
        std::fprintf(stderr, "--quantize: give none, q8_0 or q4_0\n");
        return 2;
      }
      quant.quant = *parse_quant(q);
    } else {
      std::fprintf(stderr,
                   "usage: inference_bench [--model DIR] [--prompt 128] [--new 64] "
                   "[--threads 1,2] [--f32-activations] [--no-amx] [--quantize "
                   "q8_0|q4_0]\n(without --model, "
                   "synth --like qwen3-0.6b "
                   "BF16 is written "
                   "to a temporary folder)\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  try {
    fs::path temp;
    if (model_dir.empty()) {
      temp = fs::temp_directory_path() / fmt::format("bitdelta-bench-{}", ::getpid());
      fmt::print("writing synth --like qwen3-0.6b (BF16) to {} ...\n", temp.string());
      SynthOptions options;
      options.like = "qwen3-0.6b";
      synth_model(options, temp);
      model_dir = temp.string();
    }
    reset_peak_rss();  // the synth step's buffers are not the engine's
    const uint64_t rss_before = peak_rss_bytes();
    auto model = Transformer::load(model_dir, quant);
    const ModelConfig& c = model->config();
    const uint64_t weight_file_bytes = model->files().tensor_bytes();
    const uint64_t per_token = weight_bytes_per_token(model->weights());
    fmt::print("model: {} ({} layers, hidden {}), weights {:.1f} MiB, {:.1f} MiB read per decode "
               "token\n",
               model_dir, c.num_hidden_layers, c.hidden_size, weight_file_bytes / 1048576.0,
               per_token / 1048576.0);
    std::vector<int32_t> prompt(static_cast<size_t>(prompt_len));
    for (int i = 0; i < prompt_len; ++i) prompt[i] = (i * 7919 + 13) % 1000 + 100;
    {
      // One prefill and a few decode steps touch every weight page, so the peak RSS below is
      // the real working set of a loaded, running model.
      KVCache cache = model->new_cache();
      std::vector<float> logits;
      SequenceInput input{&cache, prompt, false};
      model->forward({&input, 1}, &logits, default_thread_pool());
      for (int32_t t = 0; t < 4; ++t) {
        SequenceInput step{&cache, {&t, 1}, false};
        model->forward({&step, 1}, &logits, default_thread_pool());
      }
    }
    const uint64_t rss = peak_rss_bytes();
    fmt::print("peak RSS after loading and running: {:.1f} MiB = {:.3f} x the weights ({:.1f} MiB "
               "before loading)\n",
               rss / 1048576.0, static_cast<double>(rss) / weight_file_bytes,
               rss_before / 1048576.0);

    const fs::path adapter_dir =
        fs::temp_directory_path() / fmt::format("bitdelta-bench-adapter-{}", ::getpid());
    fs::create_directories(adapter_dir);
    std::shared_ptr<Adapter> adapter;
    {
      BaseFingerprints fp(model->files());
      bench::write_random_adapter(*model, fp, adapter_dir / "user.bdelta", 1,
                                  default_thread_pool());
      adapter = Adapter::open(adapter_dir / "user.bdelta");
      adapter->bind(*model, fp, default_thread_pool());
    }
    fmt::print(
        "\n| threads | prefill tok/s | with an adapter | decode tok/s | with an adapter | "
        "read GB/s (1 stream / best) | decode limit tok/s | decode / limit |\n"
        "|---|---|---|---|---|---|---|---|\n");
    for (int threads : thread_counts) {
      ThreadPool pool(threads);
      // The limit: the fastest way these threads read memory (bandwidth.h).
      const bench::ReadBandwidth read = bench::measure_read_bandwidth(pool);
      const double bandwidth = read.best;
      const double limit = bandwidth / static_cast<double>(per_token);
      std::vector<float> logits;
      // Best of three prefills and decodes, the base and the adapter runs alternating (the
      // shared VM drifts; both sides see the same drift).
      double best_prefill[2] = {1e30, 1e30}, best_decode[2] = {1e30, 1e30};
      for (int rep = 0; rep < 6; ++rep) {
        const int with = rep % 2;
        const AdapterWeights* a = with ? &adapter->weights() : nullptr;
        KVCache cache = model->new_cache();
        SequenceInput input{&cache, prompt, false, a};
        auto start = Clock::now();
        model->forward({&input, 1}, &logits, pool);
        best_prefill[with] = std::min(best_prefill[with], bench::seconds_since(start));
        int32_t next = static_cast<int32_t>(
            std::max_element(logits.begin(), logits.end()) - logits.begin());
        start = Clock::now();
        for (int t = 0; t < new_tokens; ++t) {
          SequenceInput step{&cache, {&next, 1}, false, a};
          model->forward({&step, 1}, &logits, pool);
          next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) -
                                      logits.begin());
        }
        best_decode[with] = std::min(best_decode[with], bench::seconds_since(start));
      }
      const double decode_tps = new_tokens / best_decode[0];
      fmt::print(
          "| {} | {:.1f} | {:.1f} ({:.2f}x) | {:.2f} | {:.2f} ({:.2f}x) | {:.1f} / {:.1f} | "
          "{:.2f} | {:.0f}% |\n",
          threads, prompt_len / best_prefill[0], prompt_len / best_prefill[1],
          best_prefill[0] / best_prefill[1], decode_tps, new_tokens / best_decode[1],
          best_decode[0] / best_decode[1], read.single_stream / 1e9, read.best / 1e9, limit,
          100.0 * decode_tps / limit);
      fmt::print(stderr, "{} thread(s): best read shape {}\n", threads, read.best_shape);
    }
    adapter.reset();
    fs::remove_all(adapter_dir);
    if (!temp.empty()) fs::remove_all(temp);
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
