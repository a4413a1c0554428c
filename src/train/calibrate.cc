#include "train/calibrate.h"

#include <cblas.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>

#include "delta/adapter.h"
#include "delta/fingerprint.h"
#include "io/dtype.h"
#include "io/safetensors.h"
#include "model/transformer.h"
#include "ops/backward.h"
#include "ops/sign_matmul.h"
#include "train/optimizer.h"
#include "train/train_model.h"
#include "util/error.h"

namespace bitdelta {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// One 1-bit tensor of the adapter whose scales are trained.
struct Trainable {
  int param = -1;                 // the weight in the student model
  std::string scale_name;         // the adapter tensor holding its scales
  SignMatrix signs;               // scales point into the flat scale vector
  int64_t offset = 0, count = 0;  // its scales in the flat vector
  std::vector<float> base;        // the base weight (the student's is base + α⊙S)
};

class Calibrator {
 public:
  Calibrator(const CalibrateOptions& o, ThreadPool& pool) : o_(o), pool_(pool) {
    if (o.steps < 0 || o.batch <= 0 || o.seq_len <= 0) {
      fail("--steps must be ≥ 0, --batch and --seq-len positive");
    }
    if (!(o.lr > 0)) fail("--lr must be positive");
    base_files_.emplace(WeightFiles::open(o.base));
    const ModelConfig config = load_model_config(o.base / "config.json");
    teacher_ = Transformer::load(o.finetuned);
    if (model_config_to_json(teacher_->config()) != model_config_to_json(config)) {
      fail("the fine-tuned model in {} does not have the base's architecture ({}); calibrate "
           "against the fine-tune the adapter was made from",
           o.finetuned.string(), o.base.string());
    }
    adapter_ = Adapter::open(o.adapter);
    BaseFingerprints fingerprints(*base_files_);
    adapter_->check_base(*base_files_, fingerprints, pool);
    student_.emplace(config, *base_files_);

    data_.emplace(
        TrainingData::load_for_model(o.data, o.base, config.model_type, o.data_options));
    bind_adapter();
  }

  CalibrationResult run(const std::function<void(const CalibrateStep&)>& on_step) {
    const auto start = std::chrono::steady_clock::now();
    CalibrationResult r;
    r.scales = static_cast<int64_t>(scales_.size());
    std::vector<Batch> eval;
    for (int64_t i = 0; i < o_.eval_batches; ++i) {
      eval.push_back(data_->sample((int64_t{1} << 40) + i, o_.batch, o_.seq_len, o_.seed));
    }
    std::vector<std::vector<float>> eval_teacher;
    for (const Batch& b : eval) eval_teacher.push_back(teacher_logits(b));
    r.loss_before = held_out_loss(eval, eval_teacher);
    if (o_.init == ScaleInit::kActivationAware) activation_aware_init();
    r.loss_after_init = held_out_loss(eval, eval_teacher);

    std::vector<ParamInfo> layout;
    for (const Trainable& t : trainables_) {
      layout.push_back({t.scale_name, {t.count}, t.offset, t.count, false});
    }
    AdamW<float> adam(layout, {.beta1 = o_.beta1, .beta2 = o_.beta2, .eps = 1e-8,
                               .weight_decay = 0.0});
    std::vector<float> grads(scales_.size());
    for (int64_t step = 0; step < o_.steps; ++step) {
      const Batch b = data_->sample(step, o_.batch, o_.seq_len, o_.seed);
      const std::vector<float> teacher = teacher_logits(b);
      const double loss = loss_and_scale_grads(b, teacher, &grads);
      const double lr = cosine_lr(step, o_.steps, o_.warmup, o_.lr, o_.min_lr_ratio);
      adam.step(scales_, grads, lr);
      for (float& a : scales_) a = std::max(a, 0.0f);  // scales stay ≥ 0 (the format's rule)
      if (on_step) {
        on_step({step + 1, o_.steps, loss, lr,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()});
      }
    }
    r.loss_after = held_out_loss(eval, eval_teacher);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    write(r);
    return r;
  }

 private:
  // Exact deltas go into the student's weights once; 1-bit tensors become trainables.
  void bind_adapter() {
    const SafetensorsFile& file = adapter_->file();
    int64_t total = 0;
    for (const Adapter::Entry& e : adapter_->entries()) {
      if (e.signs != nullptr) total += e.scale->numel();
    }
    scales_.resize(static_cast<size_t>(total));  // no reallocation after this: SignMatrix points in
    int64_t offset = 0;
    for (const Adapter::Entry& e : adapter_->entries()) {
      const int param = student_->find(e.base_name);
      if (param < 0) fail("{}: the model has no tensor '{}'", o_.adapter.string(), e.base_name);
      const ParamInfo& p = student_->params()[param];
      float* w = student_->value(param);
      if (e.delta != nullptr) {
        std::vector<float> delta = file.view(*e.delta).to_f32();
        for (int64_t i = 0; i < p.size; ++i) w[i] += delta[i];
        continue;
      }
      Trainable t;
      t.param = param;
      t.scale_name = e.scale->name;
      const int64_t cols = p.shape.size() == 2 ? p.shape[1] : p.size;
      t.signs = adapter_->sign_matrix(e, cols);
      t.count = e.scale->numel();
      t.offset = offset;
      std::copy_n(t.signs.scales, t.count, scales_.begin() + offset);
      t.signs.scales = scales_.data() + offset;
      offset += t.count;
      t.base.assign(w, w + p.size);
      if (e.base_name == "model.embed_tokens.weight") embedding_ = trainables_.size();
      by_param_[param] = trainables_.size();
      trainables_.push_back(std::move(t));
    }
    materialize();
  }

  // The student's weights = base + α⊙S with the current scales.
  void materialize() {
    for (const Trainable& t : trainables_) {
      float* w = student_->value(t.param);
      const int64_t cols = t.signs.cols;
      pool_.parallel_for(t.signs.rows, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          std::copy_n(t.base.data() + n * cols, cols, w + n * cols);
          add_scaled_signs_row(t.signs, n, w + n * cols);
        }
      }, 16);
    }
  }

  std::vector<float> teacher_logits(const Batch& b) {
    std::vector<KVCache> caches;
    caches.reserve(static_cast<size_t>(b.batch));
    std::vector<SequenceInput> inputs;
    for (int64_t i = 0; i < b.batch; ++i) {
      caches.push_back(teacher_->new_cache());
      inputs.push_back({&caches.back(),
                        std::span<const int32_t>(b.tokens).subspan(i * b.seq_len, b.seq_len),
                        true, nullptr});
    }
    std::vector<float> logits;
    teacher_->forward(inputs, &logits, pool_);
    return logits;
  }

  double held_out_loss(const std::vector<Batch>& batches,
                       const std::vector<std::vector<float>>& teachers) {
    materialize();
    double sum = 0;
    for (size_t i = 0; i < batches.size(); ++i) {
      std::span<float> logits =
          student_->forward(batches[i].tokens, batches[i].batch, batches[i].seq_len);
      dlogits_.resize(logits.size());
      sum += distill_loss(logits, teachers[i], student_->config().vocab_size, o_.loss, 1.0,
                          dlogits_, pool_);
    }
    return batches.empty() ? 0.0 : sum / static_cast<double>(batches.size());
  }

  double loss_and_scale_grads(const Batch& b, const std::vector<float>& teacher,
                              std::vector<float>* grads) {
    materialize();
    std::span<float> logits = student_->forward(b.tokens, b.batch, b.seq_len);
    dlogits_.resize(logits.size());
    const double loss = distill_loss(logits, teacher, student_->config().vocab_size, o_.loss,
                                     1.0, dlogits_, pool_);
    std::vector<double> g(scales_.size(), 0.0);
    BackwardHooks<float> hooks;
    hooks.param_grads = false;
    hooks.on_linear = [&](int param, const float* x, const float* dy, int64_t tokens) {
      auto it = by_param_.find(param);
      if (it == by_param_.end()) return;
      const Trainable& t = trainables_[it->second];
      sign_linear_scale_backward(x, dy, tokens, t.signs, g.data() + t.offset, pool_);
    };
    hooks.on_embedding = [&](std::span<const int32_t> tokens, const float* dx) {
      if (!embedding_) return;
      const Trainable& t = trainables_[*embedding_];
      const int64_t C = t.signs.cols;
      for (size_t i = 0; i < tokens.size(); ++i) {
        double dot = 0;
        for (int64_t k = 0; k < C; ++k) dot += t.signs.plus(tokens[i], k) ? dx[i * C + k] : -dx[i * C + k];
        g[t.offset + (t.signs.per_row ? tokens[i] : 0)] += dot;
      }
    };
    student_->backward(dlogits_, hooks);
    for (size_t i = 0; i < g.size(); ++i) (*grads)[i] = static_cast<float>(g[i]);
    return loss;
  }

  // α = ⟨Δ·C, S⟩ / ⟨S·C, S⟩ (per row: the same per row) with C = Σ xᵀx over the inputs the
  // layer sees on calibration data: the scale that minimises the output error ‖(Δ − αS)·x‖².
  void activation_aware_init() {
    std::map<int, std::vector<double>> cov;
    for (const Trainable& t : trainables_) {
      if (embedding_ && &t == &trainables_[*embedding_]) continue;  // a lookup, not a linear
      cov[t.param].assign(static_cast<size_t>(t.signs.cols * t.signs.cols), 0.0);
    }
    student_->set_linear_input_hook([&](int param, const float* x, int64_t tokens) {
      auto it = cov.find(param);
      if (it == cov.end()) return;
      const int64_t K = student_->params()[param].shape[1];
      std::vector<double> xd(x, x + tokens * K);
      cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(K),
                  static_cast<int>(tokens), 1.0, xd.data(), static_cast<int>(K), 1.0,
                  it->second.data(), static_cast<int>(K));
    });
    materialize();
    for (int64_t i = 0; i < o_.init_batches; ++i) {
      const Batch b = data_->sample((int64_t{1} << 41) + i, o_.batch, o_.seq_len, o_.seed);
      student_->forward(b.tokens, b.batch, b.seq_len);
    }
    student_->set_linear_input_hook({});
    const WeightFiles& ft = teacher_->files();
    for (auto& [param, c] : cov) {
      Trainable& t = trainables_[by_param_.at(param)];
      const int64_t N = t.signs.rows, K = t.signs.cols;
      for (int64_t i = 0; i < K; ++i) {
        for (int64_t j = 0; j < i; ++j) c[i * K + j] = c[j * K + i];  // syrk filled the upper half
      }
      std::vector<double> s(static_cast<size_t>(N * K)), u(static_cast<size_t>(N * K));
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t k = 0; k < K; ++k) s[n * K + k] = t.signs.plus(n, k) ? 1.0 : -1.0;
      }
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(N),
                  static_cast<int>(K), static_cast<int>(K), 1.0, s.data(), static_cast<int>(K),
                  c.data(), static_cast<int>(K), 0.0, u.data(), static_cast<int>(K));
      const std::vector<float> w_ft = ft.view(student_->params()[param].name).to_f32();
      double num_all = 0, den_all = 0;
      std::vector<double> num(static_cast<size_t>(N)), den(static_cast<size_t>(N));
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t k = 0; k < K; ++k) {
          const double delta = double(w_ft[n * K + k]) - t.base[n * K + k];
          num[n] += delta * u[n * K + k];
          den[n] += s[n * K + k] * u[n * K + k];
        }
        num_all += num[n];
        den_all += den[n];
      }
      float* alpha = scales_.data() + t.offset;
      if (t.signs.per_row) {
        for (int64_t n = 0; n < N; ++n) {
          if (den[n] > 0 && num[n] > 0) alpha[n] = static_cast<float>(num[n] / den[n]);
        }
      } else if (den_all > 0 && num_all > 0) {
        alpha[0] = static_cast<float>(num_all / den_all);
      }
    }
  }

  void write(const CalibrationResult& r) {
    const SafetensorsFile& file = adapter_->file();
    std::map<std::string, const Trainable*> scale_of;
    for (const Trainable& t : trainables_) scale_of[t.scale_name] = &t;
    SafetensorsWriter w;
    w.set_checksums(true);
    for (const TensorInfo& info : file.tensors()) {
      auto it = scale_of.find(info.name);
      if (it != scale_of.end()) {
        w.add_f32(info.name, info.shape,
                  std::span<const float>(scales_).subspan(it->second->offset, it->second->count));
      } else {
        w.add(info.name, info.dtype, info.shape, file.view(info).bytes());
      }
    }
    for (const auto& [key, value] : file.metadata()) w.set_metadata(key, value);
    json calibration{
        {"method", "scale distillation"},
        {"loss", o_.loss == DistillLoss::kMse ? "mse" : "kl"},
        {"init", o_.init == ScaleInit::kFile ? "compressed" : "activation-aware"},
        {"data", data_->describe()},
        {"data_sha256", data_->sha256()},
        {"steps", o_.steps},
        {"batch", o_.batch},
        {"seq_len", o_.seq_len},
        {"lr", o_.lr},
        {"schedule", "cosine"},
        {"seed", o_.seed},
        {"finetuned", o_.finetuned.filename().string()},
        {"loss_before", r.loss_before},
        {"loss_after_init", r.loss_after_init},
        {"loss_after", r.loss_after},
        {"seconds", r.seconds}};
    w.set_metadata("calibration", calibration.dump());
    w.write(o_.out);
  }

  const CalibrateOptions& o_;
  ThreadPool& pool_;
  std::optional<WeightFiles> base_files_;
  std::unique_ptr<Transformer> teacher_;
  std::shared_ptr<Adapter> adapter_;
  std::optional<TrainModel<float>> student_;
  std::optional<TrainingData> data_;
  std::vector<float> scales_, dlogits_;
  std::vector<Trainable> trainables_;
  std::map<int, size_t> by_param_;
  std::optional<size_t> embedding_;
};

}  // namespace

ScaleInit parse_scale_init(std::string_view name) {
  if (name == "compressed") return ScaleInit::kFile;
  if (name == "activation-aware") return ScaleInit::kActivationAware;
  fail("unknown scale initialisation '{}': use compressed or activation-aware", name);
}

CalibrationResult calibrate_adapter(const CalibrateOptions& options,
                                    const std::function<void(const CalibrateStep&)>& on_step,
                                    ThreadPool& pool) {
  Calibrator calibrator(options, pool);
  return calibrator.run(on_step);
}

}  // namespace bitdelta
