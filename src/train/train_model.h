// The transformer in training form: every parameter as a trainable copy (FP32 master weights,
// or double for gradient checks), a forward pass over B packed sequences that keeps what the
// backward pass needs, and the backward pass itself, op by op from ops/backward.h. The math is
// the inference engine's (model/transformer.h; a test holds the two to the same logits); the
// inference path stays free of activation bookkeeping.
//   B sequences, S tokens each, T = B·S, C hidden, H heads, G kv heads, D head_dim, F ffn, V vocab
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "io/weight_files.h"

namespace bitdelta {

// One parameter tensor, a slice of the flat parameter (and gradient) array.
struct ParamInfo {
  std::string name;  // Hugging Face tensor name
  std::vector<int64_t> shape;
  int64_t offset = 0, size = 0;
  bool matrix = false;  // 2-D (weights, embeddings): the ones AdamW decays
};

// What the backward pass computes besides the input gradients.
template <typename F>
struct BackwardHooks {
  bool param_grads = true;  // accumulate every parameter's gradient
  // Called for every linear layer (LM head included) with its input x [T, K] and output
  // gradient dy [T, N]; `param` is the weight's parameter index (the embedding's for a tied head).
  std::function<void(int param, const F* x, const F* dy, int64_t tokens)> on_linear;
  // Called once with the gradient reaching the embedding rows: dx [T, C] for `tokens`.
  std::function<void(std::span<const int32_t> tokens, const F* dx)> on_embedding;
};

template <typename F>
class TrainModel {
 public:
  // Reads every tensor of the checkpoint (any float dtype) into a trainable copy.
  TrainModel(ModelConfig config, const WeightFiles& files);

  const ModelConfig& config() const { return config_; }
  const std::vector<ParamInfo>& params() const { return params_; }
  int find(std::string_view name) const;  // parameter index, or -1
  std::span<F> values() { return values_; }
  std::span<const F> values() const { return values_; }
  std::span<F> grads() { return grads_; }
  F* value(int param) { return values_.data() + params_[param].offset; }
  F* grad(int param) { return grads_.data() + params_[param].offset; }
  void zero_grads();
  // Parameters, gradients and one Adam moment pair, in bytes (for memory reports).
  int64_t parameter_count() const { return static_cast<int64_t>(values_.size()); }

  // Runs B sequences of S tokens (each from position 0, causal within itself) and returns the
  // logits [T, V]. Keeps the activations for backward(). Token ids are checked.
  std::span<F> forward(std::span<const int32_t> tokens, int64_t batch, int64_t seq_len);

  // Backpropagates dlogits [T, V] of the last forward(); gradients are added (+=) to grads().
  void backward(std::span<const F> dlogits, const BackwardHooks<F>& hooks);

  // Called by forward() with the input x [T, K] of every linear layer (`param`: its weight), e.g.
  // to collect input statistics. Empty: none.
  void set_linear_input_hook(std::function<void(int param, const F* x, int64_t tokens)> hook) {
    input_hook_ = std::move(hook);
  }

  // Bytes of activations the last forward kept.
  int64_t activation_bytes() const;

 private:
  struct LayerParams {
    int attn_norm = -1, q = -1, q_bias = -1, k = -1, k_bias = -1, v = -1, v_bias = -1, o = -1,
        o_bias = -1, q_norm = -1, k_norm = -1, mlp_norm = -1, gate = -1, gate_bias = -1, up = -1,
        up_bias = -1, down = -1, down_bias = -1;
  };
  struct LayerActs {
    std::vector<F> x, xn1, q_raw, k_raw, q, k, v, probs, att, xmid, xn2, gate, up, h;
  };
  void linear_forward(int weight, int bias, const F* x, int64_t tokens, F* y) const;
  void linear_backward(int weight, int bias, const F* x, const F* dy, int64_t tokens, F* dx,
                       const BackwardHooks<F>& hooks);
  void attention_forward(LayerActs& a) const;
  void attention_backward(const LayerActs& a, const F* datt, F* dq, F* dk, F* dv) const;

  ModelConfig config_;
  std::vector<ParamInfo> params_;
  std::vector<F> values_, grads_;
  std::vector<LayerParams> layers_;
  int embed_ = -1, final_norm_ = -1, lm_head_ = -1;  // lm_head_ == embed_ when tied
  std::vector<double> inv_freq_;
  std::function<void(int, const F*, int64_t)> input_hook_;

  // Activations of the last forward.
  int64_t batch_ = 0, seq_len_ = 0;
  std::vector<int32_t> tokens_;
  std::vector<LayerActs> acts_;
  std::vector<F> x_final_, xn_final_, logits_;
};

extern template class TrainModel<float>;
extern template class TrainModel<double>;

}  // namespace bitdelta
