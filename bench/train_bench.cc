// Training speed: fine-tuning tokens/s and one calibration run, against the machine's own
// single-precision GEMM rate measured in the same run (model FLOPs utilisation).
//
//   train_bench [--threads 2] [--skip-large]
//
// 1. stories260K (shared assets): fine-tune steps of 16 × 128 tokens, then compress and run the
//    paper's calibration (200 steps of 4 × 128, MSE) — the target is < 60 s on 2 cores.
// 2. `synth --like qwen3-0.6b` (BF16): full fine-tuning steps of 1 × 128 tokens (FP32 master
//    weights, gradients and AdamW moments: 16 bytes per parameter), tokens/s and peak memory.
#include <cblas.h>
#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bench_util.h"
#include "delta/compress.h"
#include "io/llama2c_import.h"
#include "model/synth.h"
#include "train/calibrate.h"
#include "train/finetune.h"
#include "train/loss.h"
#include "train/optimizer.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace bitdelta;

namespace {

// FLOP/s of a large square SGEMM (the same OpenBLAS the training path calls).
double sgemm_rate() {
  const int n = 1536;
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  const double s = bench::best_seconds(3, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
  });
  return 2.0 * n * n * double(n) / s;
}

// Linear-layer FLOPs of one training step (forward 2, backward 4 per weight and token) plus
// attention (forward 4·S·D per head and token, backward 8).
double step_flops(const ModelConfig& c, int64_t params_in_linears, int64_t tokens, int64_t seq) {
  const double attn = 12.0 * double(seq) / 2 * c.head_dim * c.num_attention_heads *
                      c.num_hidden_layers;
  return 6.0 * double(params_in_linears) * tokens + attn * tokens;
}

int64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  int threads = 2;
  bool skip_large = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--skip-large") skip_large = true;
    else if (a == "--help" || a == "-h") {
      fmt::print("usage: train_bench [--threads N] [--skip-large]\n");
      return 0;
    } else {
      fail("unknown argument '{}' (try --help)", a);
    }
  }
  set_default_threads(threads);
  openblas_set_num_threads(threads);
  ThreadPool& pool = default_thread_pool();
  const fs::path tmp = fs::temp_directory_path() / fmt::format("bitdelta-train-bench-{}", getpid());
  fs::create_directories(tmp);
  const fs::path assets = BITDELTA_SHARED_ASSETS_DIR;

  const double peak = sgemm_rate();
  fmt::print("threads {}; OpenBLAS SGEMM {:.1f} GFLOP/s (baseline)\n\n", threads, peak / 1e9);

  // 1. stories260K: fine-tune, compress, calibrate.
  import_llama2c(assets / "models/stories260K/stories260K.bin",
                 assets / "models/stories260K/tok512.bin", tmp / "base");
  FinetuneOptions f;
  f.model = tmp / "base";
  f.data = assets / "corpora/tinyshakespeare.txt";
  f.data_options.max_chars = 300000;
  f.out = tmp / "ft";
  f.steps = 30;
  f.lr = 1e-3;
  auto start = Clock::now();
  FinetuneResult fr = finetune(f, {}, pool);
  const double ft_s = bench::seconds_since(start);
  const ModelConfig small = load_model_config(tmp / "base/config.json");
  int64_t linear_params = fr.parameter_count - small.vocab_size * small.hidden_size;
  const double small_flops = step_flops(small, linear_params + small.vocab_size * small.hidden_size,
                                        16 * 128, 128);
  fmt::print("stories260K fine-tune (16 x 128 tokens/step): {:.0f} tokens/s, {:.3f} s/step, "
             "{:.1f}% of SGEMM rate\n",
             fr.tokens_per_s, ft_s / f.steps, 100 * small_flops / (ft_s / f.steps) / peak);
  CompressOptions co;
  compress_adapter(tmp / "base", tmp / "ft", tmp / "a.bdelta", co, pool);
  CalibrateOptions cal;
  cal.base = tmp / "base";
  cal.finetuned = tmp / "ft";
  cal.adapter = tmp / "a.bdelta";
  cal.data = assets / "corpora/web_sentences_en.txt";
  cal.out = tmp / "a_cal.bdelta";
  CalibrationResult cr = calibrate_adapter(cal, {}, pool);
  fmt::print("stories260K calibration, 200 steps of 4 x 128 (MSE): {:.1f} s (target < 60 s); "
             "held-out loss {:.4f} -> {:.4f}\n\n",
             cr.seconds, cr.loss_before, cr.loss_after);

  // 2. qwen3-0.6b shapes: fine-tuning steps.
  if (!skip_large) {
    SynthOptions so;
    so.like = "qwen3-0.6b";
    synth_model(so, tmp / "qwen");
    const ModelConfig c = load_model_config(tmp / "qwen/config.json");
    WeightFiles files = WeightFiles::open(tmp / "qwen");
    TrainModel<float> model(c, files);
    AdamW<float> adam(model.params(), {});
    const int64_t S = 128;
    std::vector<int32_t> tokens(S), targets(S);
    for (int64_t i = 0; i < S; ++i) tokens[i] = int32_t(1000 + 37 * i), targets[i] = int32_t(7 * i);
    std::vector<float> dlogits;
    auto step = [&] {
      model.zero_grads();
      auto logits = model.forward(tokens, 1, S);
      dlogits.resize(logits.size());
      cross_entropy(logits, targets, c.vocab_size, double(S), dlogits, pool);
      model.backward(dlogits, {});
      clip_grad_norm(model.grads(), 1.0);
      adam.step(model.values(), model.grads(), 1e-5);
    };
    step();  // warm-up
    const double s = bench::best_seconds(2, step);
    const double flops = step_flops(c, model.parameter_count(), S, S);
    fmt::print("qwen3-0.6b shapes fine-tune (1 x 128 tokens/step): {:.1f} tokens/s, {:.2f} s/step, "
               "{:.1f}% of SGEMM rate\n",
               S / s, s, 100 * flops / s / peak);
    const double params = double(model.parameter_count());
    fmt::print("  parameters {:.0f} M; peak RSS {:.2f} GiB = {:.1f} bytes/parameter "
               "(16 for weights + gradients + AdamW moments, the rest activations and the "
               "mapped checkpoint); activations {:.0f} MiB for 128 tokens\n",
               params / 1e6, peak_rss_bytes() / double(1 << 30), peak_rss_bytes() / params,
               model.activation_bytes() / double(1 << 20));
  }
  fs::remove_all(tmp);
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 1;
}
