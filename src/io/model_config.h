// The architecture of a model, read from a Hugging Face config.json: the single source of truth
// for every size the engine uses.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace bitdelta {

enum class ModelFamily { kLlama, kQwen2, kQwen3, kMistral };

// RoPE frequency scaling (config.json "rope_scaling"). kNone and the two types below are
// implemented; anything else is refused at load.
struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 } type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;                  // llama3
  double high_freq_factor = 4.0;                 // llama3
  int64_t original_max_position_embeddings = 0;  // llama3
};

struct ModelConfig {
  ModelFamily family = ModelFamily::kLlama;
  std::string model_type;  // as written in config.json ("llama", "qwen2", "qwen3", "mistral")
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // may differ from hidden_size / num_attention_heads (Qwen3)
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2 always; Llama if attention_bias)
  bool mlp_bias = false;        // Llama's mlp_bias
  bool qk_norm = false;         // per-head RMSNorm on q and k (Qwen3)
  std::string torch_dtype;      // "bfloat16", "float16", "float32" (informational)
  int64_t bos_token_id = -1;    // -1 when absent
  int64_t eos_token_id = -1;    // the first one when config.json lists several

  int64_t q_dim() const { return num_attention_heads * head_dim; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  // RoPE inverse frequencies, head_dim / 2 of them, with rope_scaling applied.
  std::vector<double> rope_inverse_frequencies() const;
};

std::string_view family_name(ModelFamily family);

// Parses and validates config.json. Settings that change the math and are not implemented
// (rope_scaling types other than none/default, sliding-window attention, mixture of experts,
// activation other than silu) are refused with an Error, never ignored. `what` names the source.
ModelConfig parse_model_config(const nlohmann::json& config, const std::string& what);
ModelConfig load_model_config(const std::filesystem::path& config_json);
// The config.json a Hugging Face loader expects for this configuration.
nlohmann::json model_config_to_json(const ModelConfig& config);

}  // namespace bitdelta
