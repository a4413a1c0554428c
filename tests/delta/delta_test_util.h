// Helpers for the adapter tests: synthetic fine-tunes of the real stories260K model, and
// rewriting adapter files to corrupt them on purpose.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "io/llama2c_import.h"
#include "io/safetensors.h"
#include "model/synth.h"
#include "support/test_support.h"
#include "util/files.h"

namespace bitdelta::testing {

// Imports stories260K into `dir` (the base).
inline void make_base(const std::filesystem::path& dir) {
  import_llama2c(shared_asset("models/stories260K/stories260K.bin"),
                 shared_asset("models/stories260K/tok512.bin"), dir);
}

// A tiny Qwen3 widened to hidden 512 and intermediate 1024: wide enough that adapters take the
// int8 table pass on every q/k/v/o/gate/up/down matrix (it covers whole 512-column chunks on
// AVX-512, 256 on AVX2), still small enough for a test.
inline void make_wide_base(const std::filesystem::path& dir, DType dtype = DType::kBF16) {
  SynthOptions so;
  so.like = "tiny";
  so.hidden_size = 512;
  so.intermediate_size = 1024;
  so.dtype = dtype;
  synth_model(so, dir);
}

// A synthetic fine-tune: every tensor whose name passes `changes` gets Gaussian noise of
// relative size `scale`; the rest is copied byte for byte. Config and tokenizer are copied.
inline void make_finetune(const std::filesystem::path& base, const std::filesystem::path& out,
                          uint32_t seed, float scale,
                          const std::function<bool(const std::string&)>& changes =
                              [](const std::string&) { return true; }) {
  std::filesystem::create_directories(out);
  auto st = SafetensorsFile::open(base / "model.safetensors");
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.f, 1.f);
  SafetensorsWriter w;
  for (const auto& t : st.tensors()) {
    std::vector<float> v = st.view(t).to_f32();
    if (changes(t.name)) {
      double sq = 0;
      for (float x : v) sq += double(x) * x;
      const float rms = static_cast<float>(std::sqrt(sq / std::max<size_t>(1, v.size())));
      for (float& x : v) x += scale * rms * noise(rng);
    }
    w.add_f32(t.name, t.shape, v);
  }
  w.write(out / "model.safetensors");
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json",
                        "tokenizer_config.json"}) {
    write_file_atomic(out / f, read_file(base / f));
  }
}

struct RawTensor {
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

// Copies a safetensors file through `edit`, which may change its metadata and tensors.
inline void rewrite(const std::filesystem::path& in, const std::filesystem::path& out,
                    const std::function<void(std::map<std::string, std::string>&,
                                             std::map<std::string, RawTensor>&)>& edit) {
  auto st = SafetensorsFile::open(in);
  std::map<std::string, std::string> meta = st.metadata();
  std::map<std::string, RawTensor> tensors;
  for (const auto& t : st.tensors()) {
    auto b = st.view(t).bytes();
    tensors[t.name] = RawTensor{t.dtype, t.shape, std::vector<uint8_t>(b.begin(), b.end())};
  }
  edit(meta, tensors);
  SafetensorsWriter w;
  for (auto& [k, v] : meta) w.set_metadata(k, v);
  for (auto& [name, t] : tensors) w.add_owned(name, t.dtype, t.shape, t.bytes);
  w.write(out);
}

}  // namespace bitdelta::testing
