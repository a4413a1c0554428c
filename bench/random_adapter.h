// Random BitDelta adapters for benchmarks: random signs and a small scale on every block linear
// of a model, with the base's real fingerprint, so they load, bind and serve like real ones.
#pragma once

#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "delta/compress.h"
#include "delta/fingerprint.h"
#include "io/safetensors.h"
#include "model/transformer.h"

namespace bitdelta::bench {

inline void write_random_adapter(const Transformer& model, BaseFingerprints& fp,
                                 const std::filesystem::path& path, uint64_t seed,
                                 ThreadPool& pool) {
  SafetensorsWriter w;
  std::vector<std::string> touched;
  for (const auto& name : model.files().names()) {
    if (!is_block_linear(name)) continue;
    const TensorInfo* t = model.files().find(name);
    const int64_t rows = t->shape[0], cols = t->shape[1], row_bytes = (cols + 7) / 8;
    touched.push_back(name);
    w.add_generated(name + ".signs", DType::kU8, {rows, row_bytes}, [=](std::span<uint8_t> out) {
      std::mt19937_64 rng(seed ^ std::hash<std::string>()(name));
      for (size_t i = 0; i + 8 <= out.size(); i += 8) {
        const uint64_t r = rng();
        std::memcpy(out.data() + i, &r, 8);
      }
    });
    std::vector<float> scale = {0.002f};
    w.add_f32(name + ".scale", {1}, scale);
  }
  w.set_checksums(true);
  w.set_metadata("format", "bitdelta");
  w.set_metadata("format_version", "1");
  w.set_metadata("base_model", "synth-qwen3-0.6b");
  w.set_metadata("base_fingerprint", fp.fingerprint(touched, pool));
  w.set_metadata("adapter_id", fmt::format("general/bench{}/v1", seed));
  w.write(path);
}


}  // namespace bitdelta::bench
