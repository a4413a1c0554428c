#include "io/model_config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "io/hf_layout.h"
#include "util/error.h"

namespace bitdelta {
namespace {

using nlohmann::json;

// The published config.json of Qwen/Qwen3-0.6B.
json qwen3_0_6b() {
  return json::parse(R"({
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
    "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
    "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000,
    "sliding_window": null, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0", "use_cache": true, "use_sliding_window": false,
    "vocab_size": 151936})");
}

// The published config.json of meta-llama/Llama-3.2-1B.
json llama_3_2_1b() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
    "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "use_cache": true, "vocab_size": 128256})");
}

// Qwen/Qwen2.5-0.5B.
json qwen2_5_0_5b() {
  return json::parse(R"({
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896,
    "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
    "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})");
}

void expect_refused(const json& j, const std::string& needle) {
  try {
    parse_model_config(j, "config.json");
    FAIL() << "expected refusal mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(ModelConfig, ParsesQwen3) {
  ModelConfig c = parse_model_config(qwen3_0_6b(), "config.json");
  EXPECT_EQ(c.family, ModelFamily::kQwen3);
  EXPECT_EQ(c.hidden_size, 1024);
  EXPECT_EQ(c.head_dim, 128);  // ≠ hidden / heads = 64
  EXPECT_EQ(c.q_dim(), 2048);
  EXPECT_EQ(c.kv_dim(), 1024);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.eos_token_id, 151645);
  // The real checkpoint has 596,049,920 parameters (tied embedding counted once).
  EXPECT_EQ(expected_parameter_count(c), 596049920);
}

TEST(ModelConfig, ParsesLlama32WithLlama3RopeScaling) {
  ModelConfig c = parse_model_config(llama_3_2_1b(), "config.json");
  EXPECT_EQ(c.family, ModelFamily::kLlama);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(expected_parameter_count(c), 1235814400);  // Llama-3.2-1B
  auto inv = c.rope_inverse_frequencies();
  ASSERT_EQ(inv.size(), 32u);
  // High frequencies are untouched, low ones divided by the factor (transformers' formula).
  EXPECT_DOUBLE_EQ(inv[0], 1.0);
  EXPECT_NEAR(inv[31], std::pow(500000.0, -62.0 / 64.0) / 32.0, 1e-18);
}

TEST(ModelConfig, ParsesQwen2WithBiasAndUnusedSlidingWindow) {
  ModelConfig c = parse_model_config(qwen2_5_0_5b(), "config.json");
  EXPECT_EQ(c.family, ModelFamily::kQwen2);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(expected_parameter_count(c), 494032768);  // Qwen2.5-0.5B
}

TEST(ModelConfig, RefusesWhatItCannotCompute) {
  json j = qwen3_0_6b();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  expect_refused(j, "rope_scaling");
  j = qwen2_5_0_5b();
  j["use_sliding_window"] = true;
  j["sliding_window"] = 4096;
  expect_refused(j, "sliding-window");
  j = qwen3_0_6b();
  j["num_experts"] = 128;
  expect_refused(j, "mixture-of-experts");
  j = qwen3_0_6b();
  j["model_type"] = "gemma";
  expect_refused(j, "not supported");
  j = qwen3_0_6b();
  j["hidden_act"] = "gelu";
  expect_refused(j, "hidden_act");
  j = json::parse(R"({"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "vocab_size": 32000, "max_position_embeddings": 32768, "sliding_window": 4096})");
  expect_refused(j, "sliding-window");  // Mistral-7B-v0.1
  j.erase("sliding_window");
  EXPECT_EQ(parse_model_config(j, "config.json").family, ModelFamily::kMistral);
}

TEST(ModelConfig, ExplainsMissingAndInvalidFields) {
  json j = qwen3_0_6b();
  j.erase("hidden_size");
  expect_refused(j, "'hidden_size' is missing");
  j = qwen3_0_6b();
  j["num_key_value_heads"] = 3;
  expect_refused(j, "multiple of num_key_value_heads");
  j = qwen3_0_6b();
  j["vocab_size"] = "many";
  expect_refused(j, "positive integer");
  j = qwen3_0_6b();
  j.erase("model_type");
  expect_refused(j, "model_type");
}

TEST(ModelConfig, JsonRoundTrip) {
  for (const json& j : {qwen3_0_6b(), llama_3_2_1b(), qwen2_5_0_5b()}) {
    ModelConfig a = parse_model_config(j, "a");
    ModelConfig b = parse_model_config(model_config_to_json(a), "b");
    EXPECT_EQ(expected_tensors(a).size(), expected_tensors(b).size());
    EXPECT_EQ(a.head_dim, b.head_dim);
    EXPECT_EQ(a.attention_bias, b.attention_bias);
    EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
    EXPECT_EQ(a.rope_inverse_frequencies(), b.rope_inverse_frequencies());
  }
}

TEST(HfLayout, ParsesLayerTensorNames) {
  auto p = parse_layer_name("model.layers.27.mlp.down_proj.weight");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->layer, 27);
  EXPECT_EQ(p->rest, "mlp.down_proj.weight");
  for (const char* bad : {"model.layers..x", "model.layers.3", "model.layers.3.", "model.norm.weight",
                          "model.layers.a1.mlp", "model.layers.99999999999.x"}) {
    EXPECT_FALSE(parse_layer_name(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace bitdelta
