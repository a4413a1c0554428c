// One transformer implementation for every family (Qwen3, Llama, Qwen2, Mistral), used for
// inference, scoring and serving: a batched forward pass over several sequences at once, each
// with its own KV cache and position (prefill and decode mixed freely).
//   B sequences, T tokens in the batch (all sequences together), C hidden, V vocab
#pragma once

#include <filesystem>
#include <memory>
#include <span>
#include <vector>

#include "io/model_config.h"
#include "io/weight_files.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "util/thread_pool.h"

namespace bitdelta {

// One sequence's part of a batch: its new tokens are appended to `cache`.
struct SequenceInput {
  KVCache* cache = nullptr;
  std::span<const int32_t> tokens;
  bool all_logits = false;  // logits for every new token, not just the last
};

class Transformer {
 public:
  // Loads config.json and maps the weights of a Hugging Face folder; validates every tensor.
  static std::unique_ptr<Transformer> load(const std::filesystem::path& dir);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const WeightFiles& files() const { return files_; }
  KVCache new_cache() const { return KVCache(config_); }

  // Runs the batch and fills `logits` with [rows, V]: per sequence in order, its last token's
  // logits (or all of its tokens' with all_logits). Token ids are checked (Error if out of
  // range); the caches advance only if the whole pass succeeds. Not reentrant: one forward at a
  // time per Transformer.
  void forward(std::span<const SequenceInput> batch, std::vector<float>* logits,
               ThreadPool& pool);

 private:
  Transformer(std::filesystem::path dir, ModelConfig config, WeightFiles files);
  void attention(const LayerWeights& layer, int64_t layer_index,
                 std::span<const SequenceInput> batch, ThreadPool& pool);

  ModelConfig config_;
  WeightFiles files_;
  ModelWeights weights_;
  std::vector<double> inv_freq_;

  // Activations, reused between calls.
  std::vector<float> x_, xn_, q_, k_, v_, attn_, gate_, up_, out_;
  std::vector<int64_t> positions_;
  std::vector<int64_t> token_seq_;  // which sequence each batch token belongs to
};

}  // namespace bitdelta
