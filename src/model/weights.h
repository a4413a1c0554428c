// The weights of a transformer, as views into the mapped checkpoint (no copies of the big
// matrices; small vectors such as norms and biases are widened to F32 once at load).
// All four families share this layout; what differs is data: Qwen2 gives the q/k/v linears a
// bias, Qwen3 adds per-head q/k norms, Llama may have biases when its config says so.
#pragma once

#include <filesystem>
#include <optional>
#include <vector>

#include "io/model_config.h"
#include "io/weight_files.h"
#include "ops/matmul.h"

namespace bitdelta {

struct Linear {
  WeightMatrix weight;
  std::vector<float> bias;  // empty when the layer has none
  const float* bias_or_null() const { return bias.empty() ? nullptr : bias.data(); }
};

struct LayerWeights {
  std::vector<float> attn_norm;  // input_layernorm [C]
  Linear q, k, v, o;
  std::vector<float> q_norm, k_norm;  // [D] each, Qwen3 only (empty otherwise)
  std::vector<float> mlp_norm;        // post_attention_layernorm [C]
  Linear gate, up, down;
};

struct ModelWeights {
  WeightMatrix embed;  // [V, C]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;
  WeightMatrix lm_head;  // [V, C]; the embedding itself when tied
};

// Builds the views and checks every tensor against the config: present, shape, float dtype.
// Throws Error naming the folder and the first problem. `files` must outlive the result.
ModelWeights bind_weights(const ModelConfig& config, const WeightFiles& files);

}  // namespace bitdelta
