#include "model/transformer.h"

#include <cmath>
#include <cstring>

#include "ops/attention.h"
#include "ops/elementwise.h"
#include "util/error.h"

namespace bitdelta {

namespace fs = std::filesystem;

std::unique_ptr<Transformer> Transformer::load(const fs::path& dir) {
  if (!fs::is_directory(dir)) fail("model folder '{}' does not exist", dir.string());
  ModelConfig config = load_model_config(dir / "config.json");
  WeightFiles files = WeightFiles::open(dir);
  return std::unique_ptr<Transformer>(new Transformer(dir, std::move(config), std::move(files)));
}

Transformer::Transformer(fs::path /*dir*/, ModelConfig config, WeightFiles files)
    : config_(std::move(config)), files_(std::move(files)) {
  weights_ = bind_weights(config_, files_);
  inv_freq_ = config_.rope_inverse_frequencies();
}

namespace {
void resize(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}
}  // namespace

void Transformer::forward(std::span<const SequenceInput> batch, std::vector<float>* logits,
                          ThreadPool& pool) {
  const ModelConfig& c = config_;
  const int64_t C = c.hidden_size, V = c.vocab_size;
  int64_t T = 0, rows = 0;
  for (const auto& s : batch) {
    BD_CHECK(s.cache != nullptr);
    if (s.tokens.empty()) fail("a sequence in the batch has no tokens to process");
    for (int32_t id : s.tokens) {
      if (id < 0 || id >= V) {
        fail("token id {} is out of range for this model (vocabulary of {})", id, V);
      }
    }
    s.cache->reserve_more(static_cast<int64_t>(s.tokens.size()));
    T += static_cast<int64_t>(s.tokens.size());
    rows += s.all_logits ? static_cast<int64_t>(s.tokens.size()) : 1;
  }
  positions_.resize(static_cast<size_t>(T));
  token_seq_.resize(static_cast<size_t>(T));
  resize(x_, T * C);
  resize(xn_, T * C);
  resize(q_, T * c.q_dim());
  resize(k_, T * c.kv_dim());
  resize(v_, T * c.kv_dim());
  resize(attn_, T * c.q_dim());
  resize(gate_, T * c.intermediate_size);
  resize(up_, T * c.intermediate_size);
  resize(out_, T * C);

  // Embedding rows, widened to F32.
  {
    int64_t t = 0;
    const size_t row_bytes = static_cast<size_t>(C) * dtype_size(weights_.embed.dtype);
    for (size_t s = 0; s < batch.size(); ++s) {
      const int64_t start = batch[s].cache->length();
      for (size_t i = 0; i < batch[s].tokens.size(); ++i, ++t) {
        positions_[t] = start + static_cast<int64_t>(i);
        token_seq_[t] = static_cast<int64_t>(s);
        convert_to_f32(weights_.embed.dtype, weights_.embed.data + batch[s].tokens[i] * row_bytes,
                       x_.data() + t * C, static_cast<size_t>(C));
      }
    }
  }

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& layer = weights_.layers[l];
    rms_norm(x_.data(), layer.attn_norm.data(), T, C, c.rms_norm_eps, xn_.data());
    matmul(xn_.data(), T, layer.q.weight, layer.q.bias_or_null(), q_.data(), pool);
    matmul(xn_.data(), T, layer.k.weight, layer.k.bias_or_null(), k_.data(), pool);
    matmul(xn_.data(), T, layer.v.weight, layer.v.bias_or_null(), v_.data(), pool);
    if (!layer.q_norm.empty()) {
      rms_norm(q_.data(), layer.q_norm.data(), T * c.num_attention_heads, c.head_dim,
               c.rms_norm_eps, q_.data());
      rms_norm(k_.data(), layer.k_norm.data(), T * c.num_key_value_heads, c.head_dim,
               c.rms_norm_eps, k_.data());
    }
    rope_rotate_half(q_.data(), T, c.num_attention_heads, c.head_dim, positions_, inv_freq_);
    rope_rotate_half(k_.data(), T, c.num_key_value_heads, c.head_dim, positions_, inv_freq_);
    attention(layer, l, batch, pool);
    matmul(attn_.data(), T, layer.o.weight, layer.o.bias_or_null(), out_.data(), pool);
    add_into(x_.data(), out_.data(), T * C);

    rms_norm(x_.data(), layer.mlp_norm.data(), T, C, c.rms_norm_eps, xn_.data());
    matmul(xn_.data(), T, layer.gate.weight, layer.gate.bias_or_null(), gate_.data(), pool);
    matmul(xn_.data(), T, layer.up.weight, layer.up.bias_or_null(), up_.data(), pool);
    silu_mul(gate_.data(), up_.data(), T * c.intermediate_size);
    matmul(gate_.data(), T, layer.down.weight, layer.down.bias_or_null(), out_.data(), pool);
    add_into(x_.data(), out_.data(), T * C);
  }

  // Final norm and LM head only on the rows whose logits are wanted.
  int64_t row = 0, t = 0;
  for (const auto& s : batch) {
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    const int64_t first = s.all_logits ? t : t + n - 1;
    for (int64_t i = first; i < t + n; ++i, ++row) {
      std::memcpy(xn_.data() + row * C, x_.data() + i * C, static_cast<size_t>(C) * 4);
    }
    t += n;
  }
  rms_norm(xn_.data(), weights_.final_norm.data(), rows, C, c.rms_norm_eps, xn_.data());
  logits->resize(static_cast<size_t>(rows * V));
  matmul(xn_.data(), rows, weights_.lm_head, nullptr, logits->data(), pool);
  for (const auto& s : batch) s.cache->advance(static_cast<int64_t>(s.tokens.size()));
}

// Writes this batch's keys and values into the caches, then computes causal attention of every
// new token over its sequence's cache.
void Transformer::attention(const LayerWeights& /*layer*/, int64_t l,
                            std::span<const SequenceInput> batch, ThreadPool& pool) {
  const ModelConfig& c = config_;
  const int64_t D = c.head_dim, H = c.num_attention_heads, KV = c.kv_dim();
  const int64_t group = H / c.num_key_value_heads;
  const int64_t T = static_cast<int64_t>(positions_.size());
  for (int64_t t = 0; t < T; ++t) {
    KVCache* cache = batch[token_seq_[t]].cache;
    std::memcpy(cache->key(l, positions_[t]), k_.data() + t * KV, static_cast<size_t>(KV) * 4);
    std::memcpy(cache->value(l, positions_[t]), v_.data() + t * KV, static_cast<size_t>(KV) * 4);
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  pool.parallel_for(T * H, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    for (int64_t th = begin; th < end; ++th) {
      const int64_t t = th / H, h = th % H;
      const KVCache& cache = *batch[token_seq_[t]].cache;
      const int64_t len = positions_[t] + 1;  // causal: positions 0..pos
      const int64_t kv_offset = (h / group) * D;
      const float* q = q_.data() + (t * H + h) * D;
      if (static_cast<int64_t>(scores.size()) < len) scores.resize(static_cast<size_t>(len));
      attend(q, cache.key(l, 0) + kv_offset, cache.value(l, 0) + kv_offset, KV, len, D, scale,
             scores.data(), attn_.data() + (t * H + h) * D);
    }
  }, /*grain=*/std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(1, (positions_.back() + 1) * D)));
}

}  // namespace bitdelta
