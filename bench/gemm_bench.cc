// Prefill-shaped matmuls (T tokens × BF16 weights of Qwen3-0.6B's shapes): this project's
// kernels (AMX tiles where the CPU has them, VDPBF16PS, F32 activations) against OpenBLAS and
// oneDNN (F32 or BF16 activations), at 1 and 2 threads, in GFLOP/s. The numbers chose the prefill
// path (see README "Why our own GEMM").
//
//   gemm_bench [--tokens 128]
#include <cblas.h>
#include <dnnl.hpp>
#include <fmt/format.h>

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "io/dtype.h"
#include "ops/matmul.h"
#include "util/thread_pool.h"

extern "C" void openblas_set_num_threads(int num_threads);

using namespace bitdelta;
using Clock = std::chrono::steady_clock;

namespace {

// One warm-up run, then the fastest of five.
template <typename F>
double best_seconds(F&& f) {
  f();
  return bench::best_seconds(5, f);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t T = 128;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--tokens") T = std::stoll(argv[i + 1]);
  }
  struct Shape {
    const char* name;
    int64_t rows, cols;
  };
  const Shape shapes[] = {{"q_proj 2048x1024", 2048, 1024},
                          {"gate/up 3072x1024", 3072, 1024},
                          {"down 1024x3072", 1024, 3072}};
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.f, 0.02f);
  fmt::print(
      "T = {} tokens, BF16 weights, F32 activations in and outputs out; GFLOP/s (higher is "
      "better). bitdelta's default rounds the activations to BF16 for the CPU's BF16 products "
      "where it has them ({}): AMX tiles (TDPBF16PS) where it has AMX ({}), else VDPBF16PS "
      "(the --no-amx column).\n\n",
      T, bf16_dot_products() ? "it does" : "this one does not: the first three columns are F32",
      amx_tile_products() ? "it does" : "this one does not: the first two columns are the same");
  fmt::print(
      "| shape | threads | bitdelta (default) | bitdelta --no-amx | bitdelta --f32-activations "
      "(Highway, BF16 in place) | OpenBLAS sgemm (F32 copy of weights) | OpenBLAS + BF16→F32 "
      "panels | oneDNN (BF16 weights) | oneDNN (BF16 weights, activations rounded to BF16) | "
      "oneDNN (F32 copy of weights) |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& s : shapes) {
    std::vector<float> w32(static_cast<size_t>(s.rows * s.cols));
    for (auto& v : w32) v = dist(rng);
    std::vector<uint16_t> w16(w32.size());
    convert_from_f32(DType::kBF16, w32.data(), w16.data(), w32.size());
    convert_to_f32(DType::kBF16, w16.data(), w32.data(), w32.size());  // same values everywhere
    std::vector<float> x(static_cast<size_t>(T * s.cols));
    for (auto& v : x) v = dist(rng);
    std::vector<uint16_t> x16(x.size());  // the activations rounded to BF16, for oneDNN
    convert_from_f32(DType::kBF16, x.data(), x16.data(), x.size());
    std::vector<float> y(static_cast<size_t>(T * s.rows));
    const double flops = 2.0 * T * s.rows * s.cols;
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      WeightMatrix w{DType::kBF16, reinterpret_cast<const uint8_t*>(w16.data()), s.rows, s.cols};
      double ours = best_seconds([&] { matmul(x.data(), T, w, nullptr, y.data(), pool); });
      set_amx_tiles(false);
      double ours_no_amx = best_seconds([&] { matmul(x.data(), T, w, nullptr, y.data(), pool); });
      set_amx_tiles(true);
      set_f32_activations(true);
      double ours_f32 = best_seconds([&] { matmul(x.data(), T, w, nullptr, y.data(), pool); });
      set_f32_activations(false);

      openblas_set_num_threads(threads);
      double blas = best_seconds([&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, s.rows, s.cols, 1.0f, x.data(),
                    s.cols, w32.data(), s.cols, 0.0f, y.data(), s.rows);
      });
      // What OpenBLAS would cost when the weights stay BF16: widen 256-row panels, then sgemm.
      openblas_set_num_threads(1);
      double blas_panels = best_seconds([&] {
        const int64_t panel = 256;
        pool.parallel_for((s.rows + panel - 1) / panel, [&](int64_t b, int64_t e) {
          std::vector<float> buf(static_cast<size_t>(panel * s.cols));
          for (int64_t p = b; p < e; ++p) {
            const int64_t r0 = p * panel, n = std::min(panel, s.rows - r0);
            convert_to_f32(DType::kBF16, w16.data() + r0 * s.cols, buf.data(),
                           static_cast<size_t>(n * s.cols));
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, n, s.cols, 1.0f, x.data(),
                        s.cols, buf.data(), s.cols, 0.0f, y.data() + r0, s.rows);
          }
        });
      });

      omp_set_num_threads(threads);  // oneDNN runs on OpenMP
      auto onednn = [&](dnnl::memory::data_type weight_type, void* weights,
                        dnnl::memory::data_type src_type, void* src_data) -> double {
        try {
          using dnnl::memory;
          dnnl::engine eng(dnnl::engine::kind::cpu, 0);
          dnnl::stream strm(eng);
          memory::desc src_md({T, s.cols}, src_type, memory::format_tag::ab);
          memory::desc wei_md({s.cols, s.rows}, weight_type, memory::format_tag::ba);
          memory::desc dst_md({T, s.rows}, memory::data_type::f32, memory::format_tag::ab);
          dnnl::matmul::desc desc(src_md, wei_md, dst_md);
          dnnl::matmul::primitive_desc pd(desc, eng);
          dnnl::matmul prim(pd);
          memory src(src_md, eng, src_data), wei(wei_md, eng, weights), dst(dst_md, eng, y.data());
          return best_seconds([&] {
            prim.execute(strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
            strm.wait();
          });
        } catch (const std::exception&) {
          return 0;  // this CPU has no kernel for the combination
        }
      };
      using dt = dnnl::memory::data_type;
      const double onednn_bf16 = onednn(dt::bf16, w16.data(), dt::f32, x.data());
      const double onednn_bf16_both = onednn(dt::bf16, w16.data(), dt::bf16, x16.data());
      const double onednn_f32 = onednn(dt::f32, w32.data(), dt::f32, x.data());
      auto gflops = [&](double seconds) {
        return seconds > 0 ? fmt::format("{:.1f}", flops / seconds / 1e9) : std::string("unsupported");
      };
      fmt::print("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", s.name, threads,
                 gflops(ours), gflops(ours_no_amx), gflops(ours_f32), gflops(blas),
                 gflops(blas_panels), gflops(onednn_bf16), gflops(onednn_bf16_both),
                 gflops(onednn_f32));
    }
  }
  return 0;
}
