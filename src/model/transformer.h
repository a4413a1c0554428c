// One transformer implementation for every family (Qwen3, Llama, Qwen2, Mistral), used for
// inference, scoring and serving: a batched forward pass over several sequences at once, each
// with its own KV cache and position (prefill and decode mixed freely).
//   B sequences, T tokens in the batch (all sequences together), C hidden, V vocab
#pragma once

#include <filesystem>
#include <initializer_list>
#include <memory>
#include <span>
#include <vector>

#include "io/model_config.h"
#include "io/weight_files.h"
#include "model/adapter_weights.h"
#include "model/kv_cache.h"
#include "model/quantized_base.h"
#include "model/weights.h"
#include "util/thread_pool.h"

namespace bitdelta {

// One sequence's part of a batch: its new tokens are appended to `cache`.
struct SequenceInput {
  KVCache* cache = nullptr;
  std::span<const int32_t> tokens;
  bool all_logits = false;  // logits for every new token, not just the last
  // The user's adapter for this sequence (null: the base model). Built for this model (see
  // delta/adapter.h); several sequences may share one.
  const AdapterWeights* adapter = nullptr;
};

class Transformer {
 public:
  // Loads config.json and maps the weights of a Hugging Face folder; validates every tensor.
  // With quant.quant set, the matrices run on a quantized copy (model/quantized_base.h).
  static std::unique_ptr<Transformer> load(const std::filesystem::path& dir,
                                           const QuantOptions& quant = {});
  // The quantized copy of the matrices, or null when the model runs on the checkpoint's dtype.
  const QuantizedBase* quantized() const { return quantized_.get(); }

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const WeightFiles& files() const { return files_; }
  KVCache new_cache() const { return KVCache(config_); }

  // Runs the batch and fills `logits` with [rows, V]: per sequence in order, its last token's
  // logits (or all of its tokens' with all_logits). A sequence's logits are bitwise the same
  // whatever else is in the batch and however its tokens were split over calls (a prompt
  // prefilled at once or in chunks, alone or beside other users' prefills and decodes): every
  // kernel computes a token's outputs from that token's inputs alone, in a fixed order. Token ids
  // are checked (Error if out of range); the caches advance only if the whole pass succeeds. Not
  // reentrant: one forward at a time per Transformer.
  void forward(std::span<const SequenceInput> batch, std::vector<float>* logits,
               ThreadPool& pool);

 private:
  Transformer(ModelConfig config, WeightFiles files);
  void attention(int64_t layer_index, std::span<const SequenceInput> batch, ThreadPool& pool);
  // y[T, N] = the linear for every token, each with its sequence's adapter delta applied.
  using PickDelta = const LinearDelta* (*)(const AdapterWeights&, int64_t);
  void linear(const Linear& base, PickDelta pick, int64_t layer, const float* x, int64_t tokens,
              float* y, ThreadPool& pool);
  // Several linears of the same input (a layer's q, k and v; its gate and up): the base products
  // in one matmul_many, then each linear's adapter deltas. Each y is what linear() gives it.
  struct LinearCall {
    const Linear* base;
    PickDelta pick;
    float* y;
  };
  void linears(std::initializer_list<LinearCall> calls, int64_t layer, const float* x,
               int64_t tokens, ThreadPool& pool);
  // Adds the adapter deltas of a linear (K inputs, N outputs) to y (its base product).
  void add_deltas(PickDelta pick, int64_t layer, const float* x, int64_t K, int64_t N, float* y,
                  ThreadPool& pool);
  // RMSNorm with each sequence's (possibly adapted) weight.
  void norm(const std::vector<float>& base,
            const std::vector<float>* (*pick)(const AdapterWeights&, int64_t), int64_t layer,
            const float* x, int64_t rows_per_token, int64_t width, float* out, ThreadPool& pool);

  // Token ranges of the current batch that share an adapter (null = base).
  struct AdapterGroup {
    const AdapterWeights* adapter;
    std::vector<std::pair<int64_t, int64_t>> ranges;  // [begin, end) token indices
    int64_t tokens = 0;
  };
  // Adds a delta's exact parts (dense matrix, bias) for the group's tokens.
  void apply_exact_delta(const LinearDelta& d, const float* x, const AdapterGroup& g, int64_t K,
                         int64_t N, float* y, ThreadPool& pool);

  ModelConfig config_;
  WeightFiles files_;
  ModelWeights weights_;
  std::unique_ptr<QuantizedBase> quantized_;
  std::vector<double> inv_freq_;

  // Activations, reused between calls.
  std::vector<float> x_, xn_, q_, k_, v_, attn_, gate_, up_, out_;
  std::vector<int64_t> positions_;
  std::vector<int64_t> token_seq_;  // which sequence each batch token belongs to
  std::vector<const AdapterWeights*> token_adapter_;
  std::vector<AdapterGroup> groups_;   // adapters present in the batch (base excluded)
  bool any_adapter_ = false;
  std::vector<float> gather_x_, gather_y_, dense_out_;
  std::vector<SignMatmulJob> sign_jobs_;
};

}  // namespace bitdelta
