#include "model/weights.h"

#include <fmt/format.h>

#include "io/hf_layout.h"
#include "util/error.h"

namespace bitdelta {

namespace {

class Binder {
 public:
  Binder(const ModelConfig& config, const WeightFiles& files) : config_(config), files_(files) {}

  TensorView tensor(const std::string& name, std::vector<int64_t> shape) {
    const TensorInfo* info = files_.find(name);
    if (info == nullptr) {
      fail("{}: the checkpoint has no tensor '{}', which a {} model with this config.json needs",
           files_.dir().string(), name, config_.model_type);
    }
    if (info->shape != shape) {
      fail("{}: tensor '{}' has shape [{}], but config.json implies [{}]", files_.dir().string(),
           name, fmt::join(info->shape, ", "), fmt::join(shape, ", "));
    }
    if (!is_float_weight(info->dtype)) {
      fail("{}: tensor '{}' has dtype {}; weights must be F32, F16 or BF16",
           files_.dir().string(), name, dtype_name(info->dtype));
    }
    return files_.view(name);
  }
  WeightMatrix matrix(const std::string& name, int64_t rows, int64_t cols) {
    TensorView v = tensor(name, {rows, cols});
    return WeightMatrix{v.dtype(), v.data, rows, cols};
  }
  std::vector<float> vector(const std::string& name, int64_t n) {
    return tensor(name, {n}).to_f32();
  }
  Linear linear(const std::string& prefix, int64_t rows, int64_t cols, bool bias) {
    Linear l;
    l.weight = matrix(prefix + ".weight", rows, cols);
    if (bias) l.bias = vector(prefix + ".bias", rows);
    return l;
  }

 private:
  const ModelConfig& config_;
  const WeightFiles& files_;
};

}  // namespace

ModelWeights bind_weights(const ModelConfig& c, const WeightFiles& files) {
  Binder b(c, files);
  ModelWeights w;
  const int64_t C = c.hidden_size, F = c.intermediate_size;
  w.embed = b.matrix("model.embed_tokens.weight", c.vocab_size, C);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(l);
    LayerWeights layer;
    layer.attn_norm = b.vector(p + "input_layernorm.weight", C);
    layer.q = b.linear(p + "self_attn.q_proj", c.q_dim(), C, c.attention_bias);
    layer.k = b.linear(p + "self_attn.k_proj", c.kv_dim(), C, c.attention_bias);
    layer.v = b.linear(p + "self_attn.v_proj", c.kv_dim(), C, c.attention_bias);
    layer.o = b.linear(p + "self_attn.o_proj", C, c.q_dim(),
                       c.attention_bias && c.family == ModelFamily::kLlama);
    if (c.qk_norm) {
      layer.q_norm = b.vector(p + "self_attn.q_norm.weight", c.head_dim);
      layer.k_norm = b.vector(p + "self_attn.k_norm.weight", c.head_dim);
    }
    layer.mlp_norm = b.vector(p + "post_attention_layernorm.weight", C);
    layer.gate = b.linear(p + "mlp.gate_proj", F, C, c.mlp_bias);
    layer.up = b.linear(p + "mlp.up_proj", F, C, c.mlp_bias);
    layer.down = b.linear(p + "mlp.down_proj", C, F, c.mlp_bias);
    w.layers.push_back(std::move(layer));
  }
  w.final_norm = b.vector("model.norm.weight", C);
  w.lm_head = c.tie_word_embeddings ? w.embed : b.matrix("lm_head.weight", c.vocab_size, C);
  return w;
}

}  // namespace bitdelta
