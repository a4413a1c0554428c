#include "io/model_config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/files.h"

namespace bitdelta {

using nlohmann::json;

std::string_view family_name(ModelFamily family) {
  switch (family) {
    case ModelFamily::kLlama:
      return "llama";
    case ModelFamily::kQwen2:
      return "qwen2";
    case ModelFamily::kQwen3:
      return "qwen3";
    case ModelFamily::kMistral:
      return "mistral";
  }
  return "?";
}

namespace {

class ConfigReader {
 public:
  ConfigReader(const json& j, const std::string& what) : j_(j), what_(what) {}

  int64_t positive_int(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) fail("{}: '{}' is missing", what_, key);
    if (!it->is_number_integer() || it->get<int64_t>() <= 0) {
      fail("{}: '{}' must be a positive integer, got {}", what_, key, it->dump());
    }
    return it->get<int64_t>();
  }
  int64_t optional_int(const char* key, int64_t fallback) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return fallback;
    return positive_int(key);
  }
  double number(const char* key, double fallback) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return fallback;
    if (!it->is_number()) fail("{}: '{}' must be a number, got {}", what_, key, it->dump());
    return it->get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) fail("{}: '{}' must be true or false, got {}", what_, key, it->dump());
    return it->get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return fallback;
    if (!it->is_string()) fail("{}: '{}' must be a string, got {}", what_, key, it->dump());
    return it->get<std::string>();
  }
  const json* find(const char* key) const {
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }

 private:
  const json& j_;
  const std::string& what_;
};

int64_t first_token_id(const json* value, const std::string& what, const char* key) {
  if (value == nullptr) return -1;
  if (value->is_number_integer()) return value->get<int64_t>();
  if (value->is_array() && !value->empty() && (*value)[0].is_number_integer()) {
    return (*value)[0].get<int64_t>();
  }
  fail("{}: '{}' must be a token id or a list of token ids", what, key);
}

RopeScaling parse_rope_scaling(const json& scaling, const std::string& what) {
  RopeScaling s;
  std::string type;
  if (scaling.is_object()) {
    auto t = scaling.find("rope_type");
    if (t == scaling.end()) t = scaling.find("type");
    if (t != scaling.end() && t->is_string()) type = t->get<std::string>();
  }
  auto number = [&](const char* key) {
    auto it = scaling.find(key);
    if (it == scaling.end() || !it->is_number() || !(it->get<double>() > 0)) {
      fail("{}: rope_scaling type '{}' needs a positive number '{}'", what, type, key);
    }
    return it->get<double>();
  };
  if (type == "default") return s;
  if (type == "linear") {
    s.type = RopeScaling::Type::kLinear;
    s.factor = number("factor");
    return s;
  }
  if (type == "llama3") {
    s.type = RopeScaling::Type::kLlama3;
    s.factor = number("factor");
    s.low_freq_factor = number("low_freq_factor");
    s.high_freq_factor = number("high_freq_factor");
    s.original_max_position_embeddings =
        static_cast<int64_t>(number("original_max_position_embeddings"));
    if (!(s.high_freq_factor > s.low_freq_factor)) {
      fail("{}: rope_scaling llama3 needs high_freq_factor > low_freq_factor", what);
    }
    return s;
  }
  fail("{}: rope_scaling {} is not supported (supported: none, 'default', 'linear', 'llama3'); "
       "running this model without it would give wrong results",
       what, scaling.dump());
}

}  // namespace

std::vector<double> ModelConfig::rope_inverse_frequencies() const {
  std::vector<double> inv(static_cast<size_t>(head_dim / 2));
  for (size_t i = 0; i < inv.size(); ++i) {
    inv[i] = 1.0 / std::pow(rope_theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
  }
  const RopeScaling& s = rope_scaling;
  if (s.type == RopeScaling::Type::kLinear) {
    for (double& f : inv) f /= s.factor;
  } else if (s.type == RopeScaling::Type::kLlama3) {
    // As transformers' _compute_llama3_parameters.
    const double old_context = static_cast<double>(s.original_max_position_embeddings);
    const double low_freq_wavelen = old_context / s.low_freq_factor;
    const double high_freq_wavelen = old_context / s.high_freq_factor;
    for (double& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen > low_freq_wavelen) {
        f /= s.factor;
      } else if (wavelen >= high_freq_wavelen) {
        const double smooth = (old_context / wavelen - s.low_freq_factor) /
                              (s.high_freq_factor - s.low_freq_factor);
        f = (1.0 - smooth) * f / s.factor + smooth * f;
      }
    }
  }
  return inv;
}

ModelConfig parse_model_config(const json& j, const std::string& what) {
  if (!j.is_object()) fail("{}: config.json must be a JSON object", what);
  ConfigReader r(j, what);
  ModelConfig c;
  c.model_type = r.string("model_type", "");
  if (c.model_type == "llama") {
    c.family = ModelFamily::kLlama;
  } else if (c.model_type == "qwen2") {
    c.family = ModelFamily::kQwen2;
  } else if (c.model_type == "qwen3") {
    c.family = ModelFamily::kQwen3;
  } else if (c.model_type == "mistral") {
    c.family = ModelFamily::kMistral;
  } else if (c.model_type.empty()) {
    fail("{}: 'model_type' is missing; supported model types are qwen3, llama, qwen2, mistral",
         what);
  } else {
    fail("{}: model_type '{}' is not supported; supported model types are qwen3, llama, qwen2, "
         "mistral",
         what, c.model_type);
  }
  c.hidden_size = r.positive_int("hidden_size");
  c.intermediate_size = r.positive_int("intermediate_size");
  c.num_hidden_layers = r.positive_int("num_hidden_layers");
  c.num_attention_heads = r.positive_int("num_attention_heads");
  c.num_key_value_heads = r.optional_int("num_key_value_heads", c.num_attention_heads);
  c.vocab_size = r.positive_int("vocab_size");
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    fail("{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", what,
         c.num_attention_heads, c.num_key_value_heads);
  }
  if (r.find("head_dim") != nullptr) {
    c.head_dim = r.positive_int("head_dim");
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      fail("{}: hidden_size ({}) is not divisible by num_attention_heads ({}) and no head_dim is "
           "given",
           what, c.hidden_size, c.num_attention_heads);
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0) fail("{}: head_dim ({}) must be even for RoPE", what, c.head_dim);
  c.max_position_embeddings = r.optional_int("max_position_embeddings", 2048);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  c.rope_theta = r.number("rope_theta", 10000.0);
  if (!(c.rms_norm_eps > 0) || !(c.rope_theta > 0)) {
    fail("{}: rms_norm_eps and rope_theta must be positive", what);
  }
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.torch_dtype = r.string("torch_dtype", "");
  c.bos_token_id = first_token_id(r.find("bos_token_id"), what, "bos_token_id");
  c.eos_token_id = first_token_id(r.find("eos_token_id"), what, "eos_token_id");

  switch (c.family) {
    case ModelFamily::kQwen2:
      c.attention_bias = true;  // Qwen2 always has q/k/v biases
      break;
    case ModelFamily::kQwen3:
      c.qk_norm = true;
      c.attention_bias = r.boolean("attention_bias", false);
      break;
    case ModelFamily::kLlama:
      c.attention_bias = r.boolean("attention_bias", false);
      c.mlp_bias = r.boolean("mlp_bias", false);
      break;
    case ModelFamily::kMistral:
      break;
  }

  // Settings that would change the math: refuse rather than silently compute something else.
  std::string act = r.string("hidden_act", "silu");
  if (act != "silu") {
    fail("{}: hidden_act '{}' is not supported (only silu, as SwiGLU)", what, act);
  }
  if (const json* scaling = r.find("rope_scaling")) c.rope_scaling = parse_rope_scaling(*scaling, what);
  bool sliding = r.boolean("use_sliding_window", c.family == ModelFamily::kMistral);
  if (const json* window = r.find("sliding_window"); window != nullptr && sliding) {
    if (!window->is_number_integer() || window->get<int64_t>() < c.max_position_embeddings) {
      fail("{}: sliding-window attention (sliding_window={}) is not supported; it would change "
           "attention for sequences longer than the window",
           what, window->dump());
    }
  }
  for (const char* moe_key : {"num_experts", "num_local_experts", "num_experts_per_tok"}) {
    if (const json* v = r.find(moe_key); v != nullptr && !(v->is_number() && v->get<double>() == 0)) {
      fail("{}: mixture-of-experts models ('{}') are not supported", what, moe_key);
    }
  }
  if (r.boolean("attention_dropout_enabled", false)) {
    fail("{}: attention dropout is not supported", what);
  }
  return c;
}

ModelConfig load_model_config(const std::filesystem::path& config_json) {
  const std::string what = config_json.string();
  json j;
  try {
    j = json::parse(read_file(config_json));
  } catch (const json::parse_error& e) {
    fail("{}: not valid JSON ({})", what, e.what());
  }
  return parse_model_config(j, what);
}

json model_config_to_json(const ModelConfig& c) {
  static const char* kArchitectures[] = {"LlamaForCausalLM", "Qwen2ForCausalLM",
                                         "Qwen3ForCausalLM", "MistralForCausalLM"};
  json j = {
      {"architectures", {kArchitectures[static_cast<int>(c.family)]}},
      {"model_type", c.model_type.empty() ? std::string(family_name(c.family)) : c.model_type},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_position_embeddings},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"hidden_act", "silu"},
  };
  switch (c.rope_scaling.type) {
    case RopeScaling::Type::kNone:
      j["rope_scaling"] = nullptr;
      break;
    case RopeScaling::Type::kLinear:
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
      break;
    case RopeScaling::Type::kLlama3:
      j["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", c.rope_scaling.factor},
                           {"low_freq_factor", c.rope_scaling.low_freq_factor},
                           {"high_freq_factor", c.rope_scaling.high_freq_factor},
                           {"original_max_position_embeddings",
                            c.rope_scaling.original_max_position_embeddings}};
      break;
  }
  if (c.family == ModelFamily::kLlama) {
    j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = c.mlp_bias;
  }
  if (c.family == ModelFamily::kQwen3) j["attention_bias"] = c.attention_bias;
  if (c.family == ModelFamily::kQwen2 || c.family == ModelFamily::kQwen3 ||
      c.family == ModelFamily::kMistral) {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
  }
  if (!c.torch_dtype.empty()) j["torch_dtype"] = c.torch_dtype;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
  return j;
}

}  // namespace bitdelta
