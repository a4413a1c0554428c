// Tokenizer throughput: Qwen3 encode of English text on one thread (bytes/s), decode, and the
// time to load Qwen3's 11 MB tokenizer.json. Uses the shared assets; see ../shared/assets.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <string>

#include "tokenizer/tokenizer.h"
#include "util/files.h"

namespace {

namespace fs = std::filesystem;
using bitdelta::Tokenizer;

fs::path asset(const std::string& relative) {
  return fs::path(BITDELTA_SHARED_ASSETS_DIR) / relative;
}

const Tokenizer& qwen3() {
  static const Tokenizer t = Tokenizer::from_folder(asset("tokenizers/qwen3"));
  return t;
}

// Each iteration encodes the whole corpus; the word cache is warm after the first, which is the
// steady state of a server.
void encode_corpus(benchmark::State& state, const char* corpus) {
  const std::string text = bitdelta::read_file(asset(std::string("corpora/") + corpus));
  const Tokenizer& t = qwen3();
  size_t tokens = 0;
  for (auto _ : state) {
    auto ids = t.encode(text);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
  state.counters["tokens"] = double(tokens);
}
BENCHMARK_CAPTURE(encode_corpus, web_sentences_en, "web_sentences_en.txt")
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(encode_corpus, tinyshakespeare, "tinyshakespeare.txt")
    ->Unit(benchmark::kMillisecond);

// A fresh tokenizer per iteration: the first pass over text, with an empty word cache.
void encode_cold(benchmark::State& state) {
  const std::string text = bitdelta::read_file(asset("corpora/web_sentences_en.txt"));
  for (auto _ : state) {
    state.PauseTiming();
    Tokenizer t = Tokenizer::from_folder(asset("tokenizers/qwen3"));
    state.ResumeTiming();
    benchmark::DoNotOptimize(t.encode(text).data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}
BENCHMARK(encode_cold)->Unit(benchmark::kMillisecond)->Iterations(3);

void decode_corpus(benchmark::State& state) {
  const std::string text = bitdelta::read_file(asset("corpora/web_sentences_en.txt"));
  const auto ids = qwen3().encode(text);
  for (auto _ : state) benchmark::DoNotOptimize(qwen3().decode(ids).data());
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}
BENCHMARK(decode_corpus)->Unit(benchmark::kMillisecond);

void load_tokenizer_json(benchmark::State& state) {
  for (auto _ : state) {
    Tokenizer t = Tokenizer::from_folder(asset("tokenizers/qwen3"));
    benchmark::DoNotOptimize(t.vocab_size());
  }
}
BENCHMARK(load_tokenizer_json)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
