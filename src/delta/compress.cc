#include "delta/compress.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>

#include "delta/fingerprint.h"
#include "io/hf_layout.h"
#include "io/model_config.h"
#include "ops/delta_stats.h"
#include "io/safetensors.h"
#include "io/weight_files.h"
#include "util/error.h"
#include "util/sha256.h"

namespace bitdelta {

namespace fs = std::filesystem;
using nlohmann::json;

bool is_block_linear(std::string_view name) {
  auto parsed = parse_layer_name(name);
  if (!parsed) return false;
  for (std::string_view linear :
       {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
        "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
        "mlp.down_proj.weight"}) {
    if (parsed->rest == linear) return true;
  }
  return false;
}

bool is_embedding_or_head(std::string_view name) {
  return name == "model.embed_tokens.weight" || name == "lm_head.weight";
}

namespace {

void check_same_architecture(const ModelConfig& a, const ModelConfig& b, const fs::path& base,
                             const fs::path& ft) {
  auto mismatch = [&](const char* field, auto x, auto y) {
    fail("the fine-tuned model ({}) does not have the base's architecture ({}): {} is {} in the "
         "base but {} in the fine-tune",
         ft.string(), base.string(), field, x, y);
  };
  if (a.model_type != b.model_type) mismatch("model_type", a.model_type, b.model_type);
  if (a.hidden_size != b.hidden_size) mismatch("hidden_size", a.hidden_size, b.hidden_size);
  if (a.intermediate_size != b.intermediate_size) {
    mismatch("intermediate_size", a.intermediate_size, b.intermediate_size);
  }
  if (a.num_hidden_layers != b.num_hidden_layers) {
    mismatch("num_hidden_layers", a.num_hidden_layers, b.num_hidden_layers);
  }
  if (a.num_attention_heads != b.num_attention_heads) {
    mismatch("num_attention_heads", a.num_attention_heads, b.num_attention_heads);
  }
  if (a.num_key_value_heads != b.num_key_value_heads) {
    mismatch("num_key_value_heads", a.num_key_value_heads, b.num_key_value_heads);
  }
  if (a.head_dim != b.head_dim) mismatch("head_dim", a.head_dim, b.head_dim);
  if (a.vocab_size != b.vocab_size) mismatch("vocab_size", a.vocab_size, b.vocab_size);
  if (a.tie_word_embeddings != b.tie_word_embeddings) {
    mismatch("tie_word_embeddings", a.tie_word_embeddings, b.tie_word_embeddings);
  }
}

// Per-row sums the sign pass collects; the scales and statistics follow from them.
struct RowSums {
  std::vector<double> abs_sum, sq_sum;
  std::vector<int64_t> plus;
};

struct Pending {
  RowSums sums;
  std::vector<float> scales;
  TensorStats stats;
};

// memcmp split across the pool: the unchanged-tensor check reads both models in full.
bool bytes_equal(const uint8_t* a, const uint8_t* b, uint64_t n, ThreadPool& pool) {
  constexpr int64_t kChunk = 1 << 20;
  std::atomic<bool> equal{true};
  pool.parallel_for(static_cast<int64_t>((n + kChunk - 1) / kChunk), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1 && equal.load(std::memory_order_relaxed); ++c) {
      const uint64_t begin = static_cast<uint64_t>(c) * kChunk;
      const uint64_t len = std::min<uint64_t>(kChunk, n - begin);
      if (std::memcmp(a + begin, b + begin, len) != 0) equal = false;
    }
  });
  return equal;
}

std::string sanitize_user(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    out += ok ? c : '_';
  }
  if (out.empty() || out == "." || out == "..") out = "local";
  return out.substr(0, 128);
}

}  // namespace

CompressResult compress_adapter(const fs::path& base_dir, const fs::path& finetuned_dir,
                                const fs::path& out, const CompressOptions& options,
                                ThreadPool& pool) {
  const ModelConfig base_config = load_model_config(base_dir / "config.json");
  const ModelConfig ft_config = load_model_config(finetuned_dir / "config.json");
  check_same_architecture(base_config, ft_config, base_dir, finetuned_dir);
  const WeightFiles base = WeightFiles::open(base_dir);
  const WeightFiles ft = WeightFiles::open(finetuned_dir);
  {
    json metadata = json::parse(options.metadata_json, nullptr, false);
    if (metadata.is_discarded() || !metadata.is_object()) {
      fail("the adapter metadata must be a JSON object, got: {}", options.metadata_json);
    }
  }
  for (const auto& name : ft.names()) {
    if (!base.contains(name)) {
      fail("the fine-tuned model has a tensor '{}' that the base model lacks", name);
    }
  }

  CompressResult result;
  result.adapter_id = options.adapter_id.value_or(
      AdapterId{"general", sanitize_user(fs::absolute(finetuned_dir).filename().string()), 1});
  result.finetuned_bytes = ft.tensor_bytes();

  // Pass 1: which tensors changed (bytes compared in place, nothing copied), and how each is
  // stored.
  struct Plan {
    std::string name;
    enum Kind { kBits, kExact } kind;
    bool per_row;
  };
  std::vector<Plan> plans;
  for (const auto& name : base.names()) {
    const TensorInfo* b = base.find(name);
    const TensorInfo* f = ft.find(name);
    if (f == nullptr) fail("the fine-tuned model has no tensor '{}' (the base has it)", name);
    if (b->shape != f->shape) {
      fail("tensor '{}' has shape [{}] in the base but [{}] in the fine-tune", name,
           fmt::join(b->shape, ", "), fmt::join(f->shape, ", "));
    }
    if (!is_float_weight(b->dtype) || !is_float_weight(f->dtype)) {
      fail("tensor '{}' is not a float weight (F32, F16 or BF16)", name);
    }
    if (b->dtype == f->dtype &&
        bytes_equal(base.view(name).data, ft.view(name).data, b->nbytes(), pool)) {
      ++result.unchanged;
      continue;
    }
    const bool matrix = b->shape.size() == 2;
    if (is_embedding_or_head(name)) {
      if (options.embeddings == EmbeddingMode::kBase) {
        ++result.unchanged;
        continue;
      }
      plans.push_back({name, options.embeddings == EmbeddingMode::kBit ? Plan::kBits : Plan::kExact,
                       true});
    } else if (matrix && is_block_linear(name)) {
      plans.push_back({name, Plan::kBits, options.granularity == ScaleGranularity::kRow});
    } else {
      plans.push_back({name, Plan::kExact, false});
    }
  }
  if (plans.empty()) {
    fail("the fine-tuned model is identical to the base: there is no delta to compress");
  }

  std::vector<std::string> touched;
  for (const auto& p : plans) touched.push_back(p.name);
  // The base tensors' digests are computed on a thread of their own while the compressor works
  // (hashing is the single biggest cost); the fingerprint joins the header at the end.
  BaseFingerprints fingerprints(base);
  std::atomic<size_t> next_to_hash{0};
  auto hash_some = [&] {
    for (size_t i; (i = next_to_hash.fetch_add(1)) < touched.size();) {
      fingerprints.set_digest(touched[i], sha256_hex(base.view(touched[i]).bytes()));
    }
    sha256_thread_done();
  };
  std::vector<std::future<void>> hashing;
  for (int i = 0; i < pool.size(); ++i) hashing.push_back(std::async(std::launch::async, hash_some));

  SafetensorsWriter writer;
  writer.set_checksums(true);
  writer.set_metadata("format", "bitdelta");
  writer.set_metadata("format_version", "1");
  writer.set_metadata("base_model", options.base_model.empty()
                                        ? fs::absolute(base_dir).filename().string()
                                        : options.base_model);
  writer.set_metadata("adapter_id", result.adapter_id.to_string());
  writer.set_metadata("domain", result.adapter_id.domain);
  writer.set_metadata("user_id", result.adapter_id.user);
  writer.set_metadata("version", std::to_string(result.adapter_id.version));
  writer.set_metadata("scale_granularity",
                      options.granularity == ScaleGranularity::kRow ? "row" : "tensor");
  writer.set_metadata("embeddings", options.embeddings == EmbeddingMode::kBit     ? "bit"
                                    : options.embeddings == EmbeddingMode::kExact ? "exact"
                                                                                  : "base");
  writer.set_metadata("created_at", fmt::format("{:%Y-%m-%dT%H:%M:%SZ}",
                                                fmt::gmtime(std::chrono::system_clock::now())));
  writer.set_metadata("created_by", "bitdelta 0.1.0 compress");
  writer.set_metadata("metadata", json::parse(options.metadata_json).dump());
  if (!options.chat_format.empty()) writer.set_metadata("chat_format", options.chat_format);

  std::vector<std::shared_ptr<Pending>> pendings;
  for (const Plan& plan : plans) {
    const TensorInfo* info = base.find(plan.name);
    const int64_t rows = info->shape.size() == 2 ? info->shape[0] : 1;
    const int64_t cols = info->numel() / std::max<int64_t>(1, rows);
    auto pending = std::make_shared<Pending>();
    pending->stats.name = plan.name;
    pending->stats.shape = info->shape;
    pendings.push_back(pending);
    result.bf16_delta_bytes += static_cast<uint64_t>(info->numel()) * 2;
    const TensorView bv = base.view(plan.name), fv = ft.view(plan.name);
    if (plan.kind == Plan::kExact) {
      pending->stats.kind = "exact";
      writer.add_generated(plan.name + ".delta", DType::kF32, info->shape,
                           [=, &pool](std::span<uint8_t> out_bytes) {
        auto* delta = reinterpret_cast<float*>(out_bytes.data());
        const int64_t n = info->numel();
        pool.parallel_for(n, [&](int64_t begin, int64_t end) {
          std::vector<float> a(static_cast<size_t>(end - begin)), b(a.size());
          convert_to_f32(bv.dtype(), bv.data + begin * dtype_size(bv.dtype()), a.data(), a.size());
          convert_to_f32(fv.dtype(), fv.data + begin * dtype_size(fv.dtype()), b.data(), b.size());
          for (size_t i = 0; i < a.size(); ++i) delta[begin + i] = b[i] - a[i];
        }, 1 << 16);
        double sq = 0;
        for (int64_t i = 0; i < n; ++i) sq += double(delta[i]) * delta[i];
        pending->stats.delta_norm = std::sqrt(sq);
      });
      continue;
    }
    pending->stats.kind = "1bit";
    const int64_t row_bytes = (cols + 7) / 8;
    writer.add_generated(plan.name + ".signs", DType::kU8, {rows, row_bytes},
                         [=, &pool](std::span<uint8_t> bits) {
      RowSums& sums = pending->sums;
      sums.abs_sum.assign(static_cast<size_t>(rows), 0);
      sums.sq_sum.assign(static_cast<size_t>(rows), 0);
      sums.plus.assign(static_cast<size_t>(rows), 0);
      pool.parallel_for(rows, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const RowDeltaStats row = delta_signs_row(
              bv.data + r * cols * dtype_size(bv.dtype()), bv.dtype(),
              fv.data + r * cols * dtype_size(fv.dtype()), fv.dtype(), cols,
              bits.data() + r * row_bytes);
          sums.abs_sum[r] = row.abs_sum;
          sums.sq_sum[r] = row.sq_sum;
          sums.plus[r] = row.plus;
        }
      }, 8);
      // α = mean |Δ| (per row, or over the whole matrix): the L2-optimal scale for fixed signs.
      std::vector<float>& scales = pending->scales;
      double total_abs = 0, total_sq = 0, err_sq = 0;
      int64_t total_plus = 0;
      for (int64_t r = 0; r < rows; ++r) {
        total_abs += sums.abs_sum[r];
        total_sq += sums.sq_sum[r];
        total_plus += sums.plus[r];
      }
      if (plan.per_row) {
        scales.resize(static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r) {
          const double a = sums.abs_sum[r] / static_cast<double>(cols);
          scales[r] = static_cast<float>(a);
          err_sq += sums.sq_sum[r] - 2 * a * sums.abs_sum[r] + static_cast<double>(cols) * a * a;
        }
      } else {
        const double a = total_abs / static_cast<double>(rows * cols);
        scales.assign(1, static_cast<float>(a));
        err_sq = total_sq - 2 * a * total_abs + static_cast<double>(rows * cols) * a * a;
      }
      TensorStats& st = pending->stats;
      st.scale = total_abs / static_cast<double>(rows * cols);
      st.plus_share = static_cast<double>(total_plus) / static_cast<double>(rows * cols);
      st.delta_norm = std::sqrt(total_sq);
      st.rel_error = total_sq > 0 ? std::sqrt(std::max(0.0, err_sq) / total_sq) : 0;
    });
    writer.add_generated(plan.name + ".scale", DType::kF32, {plan.per_row ? rows : 1},
                         [pending](std::span<uint8_t> out_bytes) {
      std::memcpy(out_bytes.data(), pending->scales.data(), out_bytes.size());
    });
  }

  const size_t reserve = 4096 + 320 * pendings.size();
  writer.write(out, reserve, [&] {
    json tensors = json::object();
    double norm_sq = 0, err_sq = 0;
    for (const auto& p : pendings) {
      const TensorStats& s = p->stats;
      tensors[s.name] = {{"kind", s.kind},
                         {"scale", s.scale},
                         {"plus_share", s.plus_share},
                         {"delta_norm", s.delta_norm},
                         {"rel_error", s.rel_error}};
      norm_sq += s.delta_norm * s.delta_norm;
      err_sq += s.rel_error * s.rel_error * s.delta_norm * s.delta_norm;
      result.tensors.push_back(s);
    }
    json quality = {{"finetuned_bytes", result.finetuned_bytes},
                    {"bf16_delta_bytes", result.bf16_delta_bytes},
                    {"delta_norm", std::sqrt(norm_sq)},
                    {"rel_error", norm_sq > 0 ? std::sqrt(err_sq / norm_sq) : 0.0},
                    {"tensors", tensors}};
    for (auto& h : hashing) h.get();  // rethrows a failure
    result.base_fingerprint = fingerprints.fingerprint(touched, pool);
    return std::map<std::string, std::string>{{"quality", quality.dump()},
                                              {"base_fingerprint", result.base_fingerprint}};
  });
  result.file_bytes = fs::file_size(out);
  return result;
}

}  // namespace bitdelta
