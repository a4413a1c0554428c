#include "model/transformer.h"

#include <cmath>
#include <algorithm>
#include <cstring>

#include "ops/attention.h"
#include "ops/elementwise.h"
#include "util/error.h"

namespace bitdelta {

namespace fs = std::filesystem;

std::unique_ptr<Transformer> Transformer::load(const fs::path& dir, const QuantOptions& quant) {
  if (!fs::is_directory(dir)) fail("model folder '{}' does not exist", dir.string());
  ModelConfig config = load_model_config(dir / "config.json");
  WeightFiles files = WeightFiles::open(dir);
  auto model = std::unique_ptr<Transformer>(new Transformer(std::move(config), std::move(files)));
  if (quant.quant != Quant::kNone) {
    model->quantized_ =
        QuantizedBase::attach(model->files_, model->weights_, quant, default_thread_pool());
  }
  return model;
}

Transformer::Transformer(ModelConfig config, WeightFiles files)
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

  // Embedding rows, widened to F32, plus the adapter's embedding delta.
  token_adapter_.resize(static_cast<size_t>(T));
  groups_.clear();
  any_adapter_ = false;
  {
    int64_t t = 0;
    const size_t row_bytes = static_cast<size_t>(C) * dtype_size(weights_.embed.dtype);
    std::vector<float> delta_row(static_cast<size_t>(C));
    for (size_t s = 0; s < batch.size(); ++s) {
      const int64_t start = batch[s].cache->length();
      const AdapterWeights* adapter = batch[s].adapter;
      const int64_t first = t;
      for (size_t i = 0; i < batch[s].tokens.size(); ++i, ++t) {
        const int32_t id = batch[s].tokens[i];
        positions_[t] = start + static_cast<int64_t>(i);
        token_seq_[t] = static_cast<int64_t>(s);
        token_adapter_[t] = adapter;
        float* row = x_.data() + t * C;
        convert_to_f32(weights_.embed.dtype, weights_.embed.data + id * row_bytes, row,
                       static_cast<size_t>(C));
        if (adapter != nullptr && adapter->embed.signs) {
          add_scaled_signs_row(*adapter->embed.signs, id, row);
        }
        if (adapter != nullptr && adapter->embed.dense) {
          const WeightMatrix& d = *adapter->embed.dense;
          convert_to_f32(d.dtype, d.data + id * C * dtype_size(d.dtype), delta_row.data(),
                         delta_row.size());
          add_into(row, delta_row.data(), C);
        }
      }
      if (adapter != nullptr) {
        any_adapter_ = true;
        auto it = std::find_if(groups_.begin(), groups_.end(),
                               [&](const AdapterGroup& g) { return g.adapter == adapter; });
        if (it == groups_.end()) it = groups_.insert(groups_.end(), AdapterGroup{adapter, {}, 0});
        it->ranges.emplace_back(first, t);
        it->tokens += t - first;
      }
    }
  }

  using A = const AdapterWeights&;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& layer = weights_.layers[l];
    norm(
        layer.attn_norm, [](A a, int64_t i) { return &a.layers[i].attn_norm; }, l, x_.data(), 1, C,
        xn_.data(), pool);
    linears({{&layer.q, [](A a, int64_t i) { return &a.layers[i].q; }, q_.data()},
             {&layer.k, [](A a, int64_t i) { return &a.layers[i].k; }, k_.data()},
             {&layer.v, [](A a, int64_t i) { return &a.layers[i].v; }, v_.data()}},
            l, xn_.data(), T, pool);
    if (!layer.q_norm.empty()) {
      norm(
          layer.q_norm, [](A a, int64_t i) { return &a.layers[i].q_norm; }, l, q_.data(),
          c.num_attention_heads, c.head_dim, q_.data(), pool);
      norm(
          layer.k_norm, [](A a, int64_t i) { return &a.layers[i].k_norm; }, l, k_.data(),
          c.num_key_value_heads, c.head_dim, k_.data(), pool);
    }
    rope_rotate_half(q_.data(), T, c.num_attention_heads, c.head_dim, positions_, inv_freq_, pool);
    rope_rotate_half(k_.data(), T, c.num_key_value_heads, c.head_dim, positions_, inv_freq_, pool);
    attention(l, batch, pool);
    linear(layer.o, [](A a, int64_t i) { return &a.layers[i].o; }, l, attn_.data(), T, out_.data(), pool);
    add_into(x_.data(), out_.data(), T, C, pool);

    norm(
        layer.mlp_norm, [](A a, int64_t i) { return &a.layers[i].mlp_norm; }, l, x_.data(), 1, C,
        xn_.data(), pool);
    linears({{&layer.gate, [](A a, int64_t i) { return &a.layers[i].gate; }, gate_.data()},
             {&layer.up, [](A a, int64_t i) { return &a.layers[i].up; }, up_.data()}},
            l, xn_.data(), T, pool);
    silu_mul(gate_.data(), up_.data(), T, c.intermediate_size, pool);
    linear(layer.down, [](A a, int64_t i) { return &a.layers[i].down; }, l, gate_.data(), T,
           out_.data(), pool);
    add_into(x_.data(), out_.data(), T, C, pool);
  }

  // Final norm and LM head only on the rows whose logits are wanted. The token bookkeeping is
  // narrowed to those rows so the adapter groups still line up.
  std::vector<const AdapterWeights*> row_adapter;
  int64_t row = 0, t = 0;
  for (const auto& s : batch) {
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    const int64_t first = s.all_logits ? t : t + n - 1;
    for (int64_t i = first; i < t + n; ++i, ++row) {
      std::memcpy(xn_.data() + row * C, x_.data() + i * C, static_cast<size_t>(C) * 4);
      row_adapter.push_back(s.adapter);
    }
    t += n;
  }
  token_adapter_ = row_adapter;
  for (auto& g : groups_) {
    g.ranges.clear();
    g.tokens = 0;
  }
  for (int64_t r = 0; r < rows;) {
    int64_t end = r;
    while (end < rows && token_adapter_[end] == token_adapter_[r]) ++end;
    for (auto& g : groups_) {
      if (g.adapter == token_adapter_[r]) {
        g.ranges.emplace_back(r, end);
        g.tokens += end - r;
      }
    }
    r = end;
  }
  norm(
      weights_.final_norm, [](A a, int64_t) { return &a.final_norm; }, 0, xn_.data(), 1, C,
      xn_.data(), pool);
  logits->resize(static_cast<size_t>(rows * V));
  Linear head{weights_.lm_head, {}};
  linear(head, [](A a, int64_t) { return &a.lm_head; }, 0, xn_.data(), rows, logits->data(), pool);
  for (const auto& s : batch) s.cache->advance(static_cast<int64_t>(s.tokens.size()));
}

void Transformer::norm(const std::vector<float>& base,
                       const std::vector<float>* (*pick)(const AdapterWeights&, int64_t),
                       int64_t layer, const float* x, int64_t rows_per_token, int64_t width,
                       float* out, ThreadPool& pool) {
  const ModelConfig& c = config_;
  const int64_t T = static_cast<int64_t>(token_adapter_.size());
  for (int64_t t = 0; t < T;) {
    // Runs of tokens with the same norm weight go through in one call.
    const std::vector<float>* weight = &base;
    if (token_adapter_[t] != nullptr) {
      const std::vector<float>* adapted = pick(*token_adapter_[t], layer);
      if (!adapted->empty()) weight = adapted;
    }
    int64_t end = t + 1;
    while (end < T && token_adapter_[end] == token_adapter_[t]) ++end;
    rms_norm(x + t * rows_per_token * width, weight->data(), (end - t) * rows_per_token, width,
             c.rms_norm_eps, out + t * rows_per_token * width, pool);
    t = end;
  }
}

void Transformer::linear(const Linear& base, PickDelta pick, int64_t layer, const float* x,
                         int64_t T, float* y, ThreadPool& pool) {
  // The base product once for every token, then each distinct adapter adds one pass over its
  // bits for its own tokens (gathered, all adapters in one split across threads). Prompt and
  // generated tokens, alone or beside other users, all take this same path, and both kernels
  // compute a token's outputs from that token alone: a sequence's numerics do not depend on the
  // batch (merging α·S into the base panels for a lone prefill, as an earlier version did, gave
  // a prompt other logits, and near-tied greedy picks another text, whenever it shared a batch).
  matmul(x, T, base.weight, base.bias_or_null(), y, pool);
  add_deltas(pick, layer, x, base.weight.cols, base.weight.rows, y, pool);
}

void Transformer::linears(std::initializer_list<LinearCall> calls, int64_t layer, const float* x,
                          int64_t T, ThreadPool& pool) {
  MatmulTarget targets[4];
  BD_CHECK(calls.size() <= std::size(targets));
  size_t n = 0;
  for (const LinearCall& c : calls) targets[n++] = {&c.base->weight, c.base->bias_or_null(), c.y};
  matmul_many(x, T, {targets, n}, pool);
  if (groups_.empty()) return;
  for (const LinearCall& c : calls) {
    add_deltas(c.pick, layer, x, c.base->weight.cols, c.base->weight.rows, c.y, pool);
  }
}

void Transformer::add_deltas(PickDelta pick, int64_t layer, const float* x, int64_t K, int64_t N,
                             float* y, ThreadPool& pool) {
  // A group in one run of tokens (one sequence) is passed in place; several runs are gathered
  // into one block first, so its bits are read once for all of them.
  int64_t gathered = 0;
  for (const AdapterGroup& g : groups_) {
    if (pick(*g.adapter, layer)->signs && g.ranges.size() > 1) gathered += g.tokens;
  }
  resize(gather_x_, gathered * K);
  resize(gather_y_, gathered * N);
  std::vector<SignMatmulJob>& jobs = sign_jobs_;
  jobs.clear();
  int64_t row = 0;
  for (const AdapterGroup& g : groups_) {
    const LinearDelta* d = pick(*g.adapter, layer);
    if (!d->signs) continue;
    if (g.ranges.size() == 1) {
      const int64_t b = g.ranges[0].first;
      jobs.push_back({x + b * K, g.tokens, &*d->signs, y + b * N});
      continue;
    }
    jobs.push_back({gather_x_.data() + row * K, g.tokens, &*d->signs, gather_y_.data() + row * N});
    for (auto [b, e] : g.ranges) {
      std::memcpy(gather_x_.data() + row * K, x + b * K, static_cast<size_t>((e - b) * K) * 4);
      std::memcpy(gather_y_.data() + row * N, y + b * N, static_cast<size_t>((e - b) * N) * 4);
      row += e - b;
    }
  }
  sign_matmul_add_many(jobs, pool);
  row = 0;
  for (const AdapterGroup& g : groups_) {
    if (!pick(*g.adapter, layer)->signs || g.ranges.size() == 1) continue;
    for (auto [b, e] : g.ranges) {
      std::memcpy(y + b * N, gather_y_.data() + row * N, static_cast<size_t>((e - b) * N) * 4);
      row += e - b;
    }
  }
  for (const AdapterGroup& g : groups_) {
    const LinearDelta* d = pick(*g.adapter, layer);
    if (d->dense || !d->bias.empty()) apply_exact_delta(*d, x, g, K, N, y, pool);
  }
}

void Transformer::apply_exact_delta(const LinearDelta& d, const float* x, const AdapterGroup& g,
                                    int64_t K, int64_t N, float* y, ThreadPool& pool) {
  for (auto [b, e] : g.ranges) {
    if (d.dense) {
      resize(dense_out_, (e - b) * N);
      matmul(x + b * K, e - b, *d.dense, nullptr, dense_out_.data(), pool);
      add_into(y + b * N, dense_out_.data(), (e - b) * N);
    }
    if (!d.bias.empty()) {
      for (int64_t t = b; t < e; ++t) add_into(y + t * N, d.bias.data(), N);
    }
  }
}

// Writes this batch's keys and values into the caches, then computes causal attention of every
// new token over its sequence's cache.
void Transformer::attention(int64_t l, std::span<const SequenceInput> batch, ThreadPool& pool) {
  const ModelConfig& c = config_;
  const int64_t D = c.head_dim, H = c.num_attention_heads, KV = c.kv_dim();
  const int64_t group = H / c.num_key_value_heads;
  const int64_t T = static_cast<int64_t>(positions_.size());
  for (int64_t t = 0; t < T; ++t) {
    batch[token_seq_[t]].cache->write(l, positions_[t], 1, k_.data() + t * KV, v_.data() + t * KV);
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  // One item per (key/value head, token), its query heads together (each key and value row read
  // once for the group). Head-major: consecutive items read the same head's keys and values, a
  // sequential stretch of the cache (a prompt's fit in L2).
  const int64_t kv_heads = c.num_key_value_heads;
  pool.parallel_for(
      T * kv_heads,
      [&](int64_t begin, int64_t end) {
        thread_local std::vector<float> scores;
        for (int64_t ht = begin; ht < end; ++ht) {
          const int64_t h = ht / T, t = ht % T;
          const KVCache& cache = *batch[token_seq_[t]].cache;
          const int64_t len = positions_[t] + 1;  // causal: positions 0..pos
          const float* q = q_.data() + (t * H + h * group) * D;
          if (static_cast<int64_t>(scores.size()) < group * len) {
            scores.resize(static_cast<size_t>(group * len));
          }
          attend_group(q, group, cache.key(l, h, 0), cache.value(l, h, 0), D, len, D, scale,
                       scores.data(), attn_.data() + (t * H + h * group) * D);
        }
      },
      /*grain=*/
      std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(1, (positions_.back() + 1) * D * group)));
}

}  // namespace bitdelta
