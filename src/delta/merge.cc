#include "delta/merge.h"

#include "delta/adapter.h"
#include "io/weight_files.h"
#include "util/error.h"
#include "util/files.h"

namespace bitdelta {

namespace fs = std::filesystem;

MergeResult merge_adapter(const fs::path& base_dir, const fs::path& adapter_path,
                          const fs::path& out_dir, ThreadPool& pool, bool overwrite) {
  if (fs::exists(out_dir) && fs::equivalent(out_dir, base_dir)) {
    fail("--out must not be the base folder: merging would overwrite the base");
  }
  if (fs::exists(out_dir) && !overwrite && (!fs::is_directory(out_dir) || !fs::is_empty(out_dir))) {
    fail(
        "'{}' already exists and is not an empty folder; choose another --out, or give --force "
        "to replace the model files in it",
        out_dir.string());
  }
  const WeightFiles base = WeightFiles::open(base_dir);
  std::shared_ptr<Adapter> adapter = Adapter::open(adapter_path);
  BaseFingerprints fingerprints(base);
  adapter->check_base(base, fingerprints, pool);
  std::map<std::string, const Adapter::Entry*> changes;
  for (const auto& e : adapter->entries()) changes[e.base_name] = &e;

  MergeResult result;
  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  writer.set_metadata("bitdelta_merged_adapter", adapter->id().to_string());
  for (const auto& name : base.names()) {
    const TensorView bv = base.view(name);
    auto it = changes.find(name);
    if (it == changes.end()) {
      writer.add(name, bv.dtype(), bv.shape(), bv.bytes());  // unchanged: straight from the mapping
      continue;
    }
    ++result.changed_tensors;
    const Adapter::Entry* e = it->second;
    writer.add_generated(name, bv.dtype(), bv.shape(), [=, &pool](std::span<uint8_t> out) {
      const int64_t rows = bv.shape().size() == 2 ? bv.shape()[0] : 1;
      const int64_t cols = bv.numel() / std::max<int64_t>(rows, 1);
      const size_t elem = dtype_size(bv.dtype());
      SignMatrix signs;
      std::vector<float> delta;
      if (e->signs != nullptr) {
        signs = adapter->sign_matrix(*e, cols);
      } else {
        delta = adapter->file().view(*e->delta).to_f32();
      }
      pool.parallel_for(rows, [&](int64_t r0, int64_t r1) {
        std::vector<float> row(static_cast<size_t>(cols));
        for (int64_t r = r0; r < r1; ++r) {
          convert_to_f32(bv.dtype(), bv.data + r * cols * elem, row.data(), row.size());
          if (e->signs != nullptr) {
            add_scaled_signs_row(signs, r, row.data());
          } else {
            for (int64_t k = 0; k < cols; ++k) row[k] += delta[r * cols + k];
          }
          convert_from_f32(bv.dtype(), row.data(), out.data() + r * cols * elem, row.size());
        }
      }, 1);
    });
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) fail("cannot create output folder '{}': {}", out_dir.string(), ec.message());
  writer.write(out_dir / "model.safetensors");
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json",
                        "tokenizer_config.json", "chat_template.jinja", "vocab.json",
                        "merges.txt"}) {
    if (fs::exists(base_dir / f)) write_file_atomic(out_dir / f, read_file(base_dir / f));
  }
  result.bytes = fs::file_size(out_dir / "model.safetensors");
  return result;
}

}  // namespace bitdelta
