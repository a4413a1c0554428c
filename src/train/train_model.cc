#include "train/train_model.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "io/dtype.h"
#include "io/hf_layout.h"
#include "ops/backward.h"
#include "util/error.h"

namespace bitdelta {

namespace {

// Row-major GEMM: C[M, N] = alpha · op(A) · op(B) + beta · C, through OpenBLAS.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
          int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

template <typename F>
void rms_norm_forward(const F* x, const F* w, int64_t rows, int64_t width, double eps, F* out) {
  for (int64_t t = 0; t < rows; ++t) {
    double sum_sq = 0;
    for (int64_t c = 0; c < width; ++c) sum_sq += double(x[t * width + c]) * x[t * width + c];
    const F r = static_cast<F>(1.0 / std::sqrt(sum_sq / double(width) + eps));
    for (int64_t c = 0; c < width; ++c) out[t * width + c] = x[t * width + c] * r * w[c];
  }
}

// Positions 0..S-1 of every sequence; the angle is computed in float like the engine's.
template <typename F>
void rope_forward(F* x, int64_t batch, int64_t seq_len, int64_t heads, int64_t head_dim,
                  std::span<const double> inv_freq) {
  const int64_t half = head_dim / 2;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t s = 0; s < seq_len; ++s) {
      for (int64_t i = 0; i < half; ++i) {
        const float angle = static_cast<float>(s) * static_cast<float>(inv_freq[i]);
        const F c = static_cast<F>(std::cos(static_cast<double>(angle)));
        const F sn = static_cast<F>(std::sin(static_cast<double>(angle)));
        for (int64_t h = 0; h < heads; ++h) {
          F* v = x + ((b * seq_len + s) * heads + h) * head_dim;
          const F a0 = v[i], b0 = v[i + half];
          v[i] = a0 * c - b0 * sn;
          v[i + half] = b0 * c + a0 * sn;
        }
      }
    }
  }
}

template <typename F>
void fill_zero(std::vector<F>& v, int64_t n) {
  v.assign(static_cast<size_t>(n), F(0));
}

}  // namespace

template <typename F>
TrainModel<F>::TrainModel(ModelConfig config, const WeightFiles& files)
    : config_(std::move(config)) {
  const ModelConfig& c = config_;
  int64_t offset = 0;
  for (const ExpectedTensor& e : expected_tensors(c)) {
    ParamInfo p;
    p.name = e.name;
    p.shape = e.shape;
    p.size = 1;
    for (int64_t d : e.shape) p.size *= d;
    p.offset = offset;
    p.matrix = e.shape.size() == 2;
    offset += p.size;
    params_.push_back(std::move(p));
  }
  values_.resize(static_cast<size_t>(offset));
  grads_.assign(static_cast<size_t>(offset), F(0));
  std::vector<float> row;
  for (const ParamInfo& p : params_) {
    const TensorView t = files.view(p.name);
    if (t.shape() != p.shape) {
      fail("tensor '{}' in {} has the wrong shape for its config.json", p.name,
           files.dir().string());
    }
    if (!is_float_weight(t.dtype())) {
      fail("tensor '{}' in {} is not a float tensor", p.name, files.dir().string());
    }
    if constexpr (std::is_same_v<F, float>) {
      convert_to_f32(t.dtype(), t.data, values_.data() + p.offset, static_cast<size_t>(p.size));
    } else {
      row.resize(static_cast<size_t>(p.size));
      convert_to_f32(t.dtype(), t.data, row.data(), row.size());
      std::copy(row.begin(), row.end(), values_.begin() + p.offset);
    }
  }

  layers_.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int i = 0; i < static_cast<int>(params_.size()); ++i) {
    const std::string& name = params_[i].name;
    if (name == "model.embed_tokens.weight") embed_ = i;
    if (name == "model.norm.weight") final_norm_ = i;
    if (name == "lm_head.weight") lm_head_ = i;
    auto parsed = parse_layer_name(name);
    if (!parsed) continue;
    LayerParams& l = layers_[static_cast<size_t>(parsed->layer)];
    const std::pair<std::string_view, int LayerParams::*> roles[] = {
        {"input_layernorm.weight", &LayerParams::attn_norm},
        {"self_attn.q_proj.weight", &LayerParams::q},
        {"self_attn.q_proj.bias", &LayerParams::q_bias},
        {"self_attn.k_proj.weight", &LayerParams::k},
        {"self_attn.k_proj.bias", &LayerParams::k_bias},
        {"self_attn.v_proj.weight", &LayerParams::v},
        {"self_attn.v_proj.bias", &LayerParams::v_bias},
        {"self_attn.o_proj.weight", &LayerParams::o},
        {"self_attn.o_proj.bias", &LayerParams::o_bias},
        {"self_attn.q_norm.weight", &LayerParams::q_norm},
        {"self_attn.k_norm.weight", &LayerParams::k_norm},
        {"post_attention_layernorm.weight", &LayerParams::mlp_norm},
        {"mlp.gate_proj.weight", &LayerParams::gate},
        {"mlp.gate_proj.bias", &LayerParams::gate_bias},
        {"mlp.up_proj.weight", &LayerParams::up},
        {"mlp.up_proj.bias", &LayerParams::up_bias},
        {"mlp.down_proj.weight", &LayerParams::down},
        {"mlp.down_proj.bias", &LayerParams::down_bias},
    };
    bool known = false;
    for (const auto& [rest, member] : roles) {
      if (parsed->rest == rest) {
        l.*member = i;
        known = true;
      }
    }
    BD_CHECK(known);
  }
  if (lm_head_ < 0) lm_head_ = embed_;
  BD_CHECK(embed_ >= 0 && final_norm_ >= 0);
  inv_freq_ = c.rope_inverse_frequencies();
}

template <typename F>
int TrainModel<F>::find(std::string_view name) const {
  for (int i = 0; i < static_cast<int>(params_.size()); ++i) {
    if (params_[i].name == name) return i;
  }
  return -1;
}

template <typename F>
void TrainModel<F>::zero_grads() {
  std::fill(grads_.begin(), grads_.end(), F(0));
}

template <typename F>
int64_t TrainModel<F>::activation_bytes() const {
  int64_t n = static_cast<int64_t>(x_final_.size() + xn_final_.size() + logits_.size());
  for (const LayerActs& a : acts_) {
    for (const std::vector<F>* v : {&a.x, &a.xn1, &a.q_raw, &a.k_raw, &a.q, &a.k, &a.v, &a.probs,
                                    &a.att, &a.xmid, &a.xn2, &a.gate, &a.up, &a.h}) {
      n += static_cast<int64_t>(v->size());
    }
  }
  return n * static_cast<int64_t>(sizeof(F));
}

template <typename F>
void TrainModel<F>::linear_forward(int weight, int bias, const F* x, int64_t tokens,
                                   F* y) const {
  const ParamInfo& w = params_[weight];
  const int64_t n = w.shape[0], k = w.shape[1];
  if (input_hook_) input_hook_(weight, x, tokens);
  gemm(false, true, tokens, n, k, F(1), x, k, values_.data() + w.offset, k, F(0), y, n);
  if (bias >= 0) {
    const F* b = values_.data() + params_[bias].offset;
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t i = 0; i < n; ++i) y[t * n + i] += b[i];
    }
  }
}

template <typename F>
void TrainModel<F>::linear_backward(int weight, int bias, const F* x, const F* dy,
                                    int64_t tokens, F* dx, const BackwardHooks<F>& hooks) {
  const ParamInfo& w = params_[weight];
  const int64_t n = w.shape[0], k = w.shape[1];
  if (dx != nullptr) {
    gemm(false, false, tokens, k, n, F(1), dy, n, values_.data() + w.offset, k, F(1), dx, k);
  }
  if (hooks.param_grads) {
    gemm(true, false, n, k, tokens, F(1), dy, n, x, k, F(1), grads_.data() + w.offset, k);
    if (bias >= 0) {
      F* db = grads_.data() + params_[bias].offset;
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t i = 0; i < n; ++i) db[i] += dy[t * n + i];
      }
    }
  }
  if (hooks.on_linear) hooks.on_linear(weight, x, dy, tokens);
}

template <typename F>
std::span<F> TrainModel<F>::forward(std::span<const int32_t> tokens, int64_t batch,
                                    int64_t seq_len) {
  const ModelConfig& c = config_;
  const int64_t T = batch * seq_len, C = c.hidden_size, V = c.vocab_size, D = c.head_dim;
  const int64_t H = c.num_attention_heads, G = c.num_key_value_heads, FF = c.intermediate_size;
  if (batch <= 0 || seq_len <= 0 || static_cast<int64_t>(tokens.size()) != T) {
    fail("training batch of {} tokens does not hold {} sequences of {}", tokens.size(), batch,
         seq_len);
  }
  for (int32_t id : tokens) {
    if (id < 0 || id >= V) fail("token id {} is out of range (vocabulary of {})", id, V);
  }
  batch_ = batch;
  seq_len_ = seq_len;
  tokens_.assign(tokens.begin(), tokens.end());

  std::vector<F> x(static_cast<size_t>(T * C)), out(static_cast<size_t>(T * C));
  const F* embed = value(embed_);
  for (int64_t t = 0; t < T; ++t) {
    std::copy_n(embed + tokens[t] * C, C, x.data() + t * C);
  }
  acts_.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerParams& p = layers_[l];
    LayerActs& a = acts_[l];
    a.x = x;
    a.xn1.resize(static_cast<size_t>(T * C));
    rms_norm_forward(x.data(), value(p.attn_norm), T, C, c.rms_norm_eps, a.xn1.data());
    a.q.resize(static_cast<size_t>(T * H * D));
    a.k.resize(static_cast<size_t>(T * G * D));
    a.v.resize(static_cast<size_t>(T * G * D));
    linear_forward(p.q, p.q_bias, a.xn1.data(), T, a.q.data());
    linear_forward(p.k, p.k_bias, a.xn1.data(), T, a.k.data());
    linear_forward(p.v, p.v_bias, a.xn1.data(), T, a.v.data());
    if (p.q_norm >= 0) {
      a.q_raw = a.q;
      a.k_raw = a.k;
      rms_norm_forward(a.q_raw.data(), value(p.q_norm), T * H, D, c.rms_norm_eps, a.q.data());
      rms_norm_forward(a.k_raw.data(), value(p.k_norm), T * G, D, c.rms_norm_eps, a.k.data());
    }
    rope_forward(a.q.data(), batch, seq_len, H, D, inv_freq_);
    rope_forward(a.k.data(), batch, seq_len, G, D, inv_freq_);
    attention_forward(a);
    linear_forward(p.o, p.o_bias, a.att.data(), T, out.data());
    for (int64_t i = 0; i < T * C; ++i) x[i] += out[i];
    a.xmid = x;
    a.xn2.resize(static_cast<size_t>(T * C));
    rms_norm_forward(x.data(), value(p.mlp_norm), T, C, c.rms_norm_eps, a.xn2.data());
    a.gate.resize(static_cast<size_t>(T * FF));
    a.up.resize(static_cast<size_t>(T * FF));
    a.h.resize(static_cast<size_t>(T * FF));
    linear_forward(p.gate, p.gate_bias, a.xn2.data(), T, a.gate.data());
    linear_forward(p.up, p.up_bias, a.xn2.data(), T, a.up.data());
    for (int64_t i = 0; i < T * FF; ++i) {
      const F g = a.gate[i];
      a.h[i] = g / (F(1) + std::exp(-g)) * a.up[i];
    }
    linear_forward(p.down, p.down_bias, a.h.data(), T, out.data());
    for (int64_t i = 0; i < T * C; ++i) x[i] += out[i];
  }
  x_final_ = std::move(x);
  xn_final_.resize(static_cast<size_t>(T * C));
  rms_norm_forward(x_final_.data(), value(final_norm_), T, C, c.rms_norm_eps, xn_final_.data());
  logits_.resize(static_cast<size_t>(T * V));
  linear_forward(lm_head_, -1, xn_final_.data(), T, logits_.data());
  return logits_;
}

// Causal attention of every sequence and head: probs [B, H, S, S] (kept), att [T, H·D].
template <typename F>
void TrainModel<F>::attention_forward(LayerActs& a) const {
  const ModelConfig& c = config_;
  const int64_t S = seq_len_, D = c.head_dim, H = c.num_attention_heads;
  const int64_t G = c.num_key_value_heads, group = H / G;
  const F scale = static_cast<F>(1.0 / std::sqrt(static_cast<double>(D)));
  a.probs.assign(static_cast<size_t>(batch_ * H * S * S), F(0));
  a.att.resize(static_cast<size_t>(batch_ * S * H * D));
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const F* q = a.q.data() + b * S * H * D + h * D;
      const F* k = a.k.data() + b * S * G * D + (h / group) * D;
      const F* v = a.v.data() + b * S * G * D + (h / group) * D;
      F* p = a.probs.data() + (b * H + h) * S * S;
      gemm(false, true, S, S, D, scale, q, H * D, k, G * D, F(0), p, S);
      for (int64_t i = 0; i < S; ++i) {
        F* row = p + i * S;
        F max = row[0];
        for (int64_t j = 1; j <= i; ++j) max = std::max(max, row[j]);
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          row[j] = std::exp(row[j] - max);
          sum += row[j];
        }
        const F inv = static_cast<F>(1.0 / sum);
        for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
        for (int64_t j = i + 1; j < S; ++j) row[j] = F(0);
      }
      gemm(false, false, S, D, S, F(1), p, S, v, G * D, F(0),
           a.att.data() + b * S * H * D + h * D, H * D);
    }
  }
}

template <typename F>
void TrainModel<F>::attention_backward(const LayerActs& a, const F* datt, F* dq, F* dk,
                                       F* dv) const {
  const ModelConfig& c = config_;
  const int64_t S = seq_len_, D = c.head_dim, H = c.num_attention_heads;
  const int64_t G = c.num_key_value_heads, group = H / G;
  const F scale = static_cast<F>(1.0 / std::sqrt(static_cast<double>(D)));
  std::vector<F> dp(static_cast<size_t>(S * S));
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t qo = b * S * H * D + h * D, ko = b * S * G * D + (h / group) * D;
      const F* p = a.probs.data() + (b * H + h) * S * S;
      const F* dout = datt + qo;
      // dV += Pᵀ·dO;  dP = dO·Vᵀ;  dS = P ⊙ (dP − rowsum(dP ⊙ P));  dQ = s·dS·K;  dK += s·dSᵀ·Q
      gemm(true, false, S, D, S, F(1), p, S, dout, H * D, F(1), dv + ko, G * D);
      gemm(false, true, S, S, D, F(1), dout, H * D, a.v.data() + ko, G * D, F(0), dp.data(), S);
      for (int64_t i = 0; i < S; ++i) {
        F* row = dp.data() + i * S;
        double dot = 0;
        for (int64_t j = 0; j <= i; ++j) dot += double(row[j]) * p[i * S + j];
        for (int64_t j = 0; j <= i; ++j) row[j] = p[i * S + j] * (row[j] - static_cast<F>(dot));
        for (int64_t j = i + 1; j < S; ++j) row[j] = F(0);
      }
      gemm(false, false, S, D, S, scale, dp.data(), S, a.k.data() + ko, G * D, F(0), dq + qo,
           H * D);
      gemm(true, false, S, D, S, scale, dp.data(), S, a.q.data() + qo, H * D, F(1), dk + ko,
           G * D);
    }
  }
}

template <typename F>
void TrainModel<F>::backward(std::span<const F> dlogits, const BackwardHooks<F>& hooks) {
  const ModelConfig& c = config_;
  const int64_t T = batch_ * seq_len_, C = c.hidden_size, D = c.head_dim;
  const int64_t H = c.num_attention_heads, G = c.num_key_value_heads, FF = c.intermediate_size;
  BD_CHECK(T > 0 && static_cast<int64_t>(dlogits.size()) == T * c.vocab_size);
  const double eps = c.rms_norm_eps;
  auto grad_or_null = [&](int param) { return hooks.param_grads ? grad(param) : nullptr; };

  std::vector<F> dxn(static_cast<size_t>(T * C), F(0));
  linear_backward(lm_head_, -1, xn_final_.data(), dlogits.data(), T, dxn.data(), hooks);
  std::vector<F> dx(static_cast<size_t>(T * C), F(0));
  rms_norm_backward(x_final_.data(), value(final_norm_), dxn.data(), T, C, eps, dx.data(),
                    grad_or_null(final_norm_));

  std::vector<F> dh, dgate, dup, datt, dq, dk, dv, dq_raw, dk_raw;
  std::vector<int64_t> positions(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) positions[t] = t % seq_len_;
  for (int64_t l = c.num_hidden_layers - 1; l >= 0; --l) {
    const LayerParams& p = layers_[l];
    const LayerActs& a = acts_[l];
    // x = xmid + down(silu(gate(xn2)) ⊙ up(xn2)), xn2 = norm(xmid)
    fill_zero(dh, T * FF);
    linear_backward(p.down, p.down_bias, a.h.data(), dx.data(), T, dh.data(), hooks);
    fill_zero(dgate, T * FF);
    fill_zero(dup, T * FF);
    silu_mul_backward(a.gate.data(), a.up.data(), dh.data(), T * FF, dgate.data(), dup.data());
    fill_zero(dxn, T * C);
    linear_backward(p.gate, p.gate_bias, a.xn2.data(), dgate.data(), T, dxn.data(), hooks);
    linear_backward(p.up, p.up_bias, a.xn2.data(), dup.data(), T, dxn.data(), hooks);
    rms_norm_backward(a.xmid.data(), value(p.mlp_norm), dxn.data(), T, C, eps, dx.data(),
                      grad_or_null(p.mlp_norm));
    // xmid = x + o(attention(rope(norm(q(xn1))), rope(norm(k(xn1))), v(xn1))), xn1 = norm(x)
    fill_zero(datt, T * H * D);
    linear_backward(p.o, p.o_bias, a.att.data(), dx.data(), T, datt.data(), hooks);
    fill_zero(dq, T * H * D);
    fill_zero(dk, T * G * D);
    fill_zero(dv, T * G * D);
    attention_backward(a, datt.data(), dq.data(), dk.data(), dv.data());
    rope_rotate_half_backward(dq.data(), T, H, D, positions, inv_freq_);
    rope_rotate_half_backward(dk.data(), T, G, D, positions, inv_freq_);
    if (p.q_norm >= 0) {
      fill_zero(dq_raw, T * H * D);
      fill_zero(dk_raw, T * G * D);
      rms_norm_backward(a.q_raw.data(), value(p.q_norm), dq.data(), T * H, D, eps,
                        dq_raw.data(), grad_or_null(p.q_norm));
      rms_norm_backward(a.k_raw.data(), value(p.k_norm), dk.data(), T * G, D, eps,
                        dk_raw.data(), grad_or_null(p.k_norm));
      std::swap(dq, dq_raw);
      std::swap(dk, dk_raw);
    }
    fill_zero(dxn, T * C);
    linear_backward(p.q, p.q_bias, a.xn1.data(), dq.data(), T, dxn.data(), hooks);
    linear_backward(p.k, p.k_bias, a.xn1.data(), dk.data(), T, dxn.data(), hooks);
    linear_backward(p.v, p.v_bias, a.xn1.data(), dv.data(), T, dxn.data(), hooks);
    rms_norm_backward(a.x.data(), value(p.attn_norm), dxn.data(), T, C, eps, dx.data(),
                      grad_or_null(p.attn_norm));
  }
  if (hooks.param_grads) {
    F* de = grad(embed_);
    for (int64_t t = 0; t < T; ++t) {
      F* row = de + tokens_[t] * C;
      for (int64_t i = 0; i < C; ++i) row[i] += dx[t * C + i];
    }
  }
  if (hooks.on_embedding) hooks.on_embedding(tokens_, dx.data());
}

template class TrainModel<float>;
template class TrainModel<double>;

}  // namespace bitdelta
