#include "train/finetune.h"

#include <fmt/format.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>

#include "io/safetensors.h"
#include "io/weight_files.h"
#include "train/loss.h"
#include "train/optimizer.h"
#include "train/privacy.h"
#include "util/error.h"
#include "util/files.h"

namespace bitdelta {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Files of a Hugging Face folder that travel with the weights.
const char* kSideFiles[] = {"config.json",         "tokenizer.json",   "tokenizer_config.json",
                            "generation_config.json", "special_tokens_map.json", "vocab.json",
                            "merges.txt",          "chat_template.jinja"};

const char* kCheckpoint = "checkpoint";
const char* kTrainerState = "trainer_state.safetensors";

// What must not change between a run and its resumption.
json run_identity(const FinetuneOptions& o, const TrainingData& data) {
  return json{{"data_sha256", data.sha256()},
              {"data", data.describe()},
              {"batch", o.batch},
              {"seq_len", o.seq_len},
              {"grad_accum", o.grad_accum},
              {"steps", o.steps},
              {"lr", o.lr},
              {"warmup", o.warmup},
              {"min_lr_ratio", o.min_lr_ratio},
              {"weight_decay", o.weight_decay},
              {"beta1", o.beta1},
              {"beta2", o.beta2},
              {"max_grad_norm", o.max_grad_norm},
              {"seed", o.seed},
              // DP-SGD's noise is set for the whole run: a private run resumes only unchanged.
              {"dp", o.dp_epsilon > 0 ? json{{"epsilon", o.dp_epsilon},
                                             {"delta", o.dp_delta},
                                             {"clip", o.dp_clip},
                                             {"steps", o.steps}}
                                      : json()}};
}

void write_checkpoint(const TrainModel<float>& model, AdamW<float>& adam, int64_t step,
                      const json& identity, const FinetuneOptions& o, DType dtype) {
  const fs::path dir = o.out / kCheckpoint, tmp = o.out / ".checkpoint.tmp",
                 old = o.out / ".checkpoint.old";
  fs::remove_all(tmp);
  save_hf_folder(model, o.model, dtype, tmp);
  SafetensorsWriter w;
  std::span<const float> values = model.values();
  for (const ParamInfo& p : model.params()) {
    w.add_f32("master." + p.name, p.shape, values.subspan(p.offset, p.size));
    w.add_f32("adam.m." + p.name, p.shape,
              std::span<const float>(adam.first_moment()).subspan(p.offset, p.size));
    w.add_f32("adam.v." + p.name, p.shape,
              std::span<const float>(adam.second_moment()).subspan(p.offset, p.size));
  }
  w.set_metadata("step", std::to_string(step));
  w.set_metadata("run", identity.dump());
  w.write(tmp / kTrainerState);
  // Swap in the new checkpoint: the previous one stays complete until the rename.
  fs::remove_all(old);
  if (fs::exists(dir)) fs::rename(dir, old);
  fs::rename(tmp, dir);
  fs::remove_all(old);
}

// Restores parameters, moments and the step from out/checkpoint; returns the step.
int64_t read_checkpoint(TrainModel<float>& model, AdamW<float>& adam, const json& identity,
                        const FinetuneOptions& o) {
  const fs::path path = o.out / kCheckpoint / kTrainerState;
  if (!fs::exists(path)) {
    fail("--resume: no checkpoint in {} (expected {}); start without --resume",
         o.out.string(), path.string());
  }
  SafetensorsFile f = SafetensorsFile::open(path);
  json saved = json::parse(f.metadata().at("run"));
  for (const auto& [key, value] : identity.items()) {
    if (key == "steps") continue;  // a resumed run may be extended
    if (saved[key] != value) {
      fail("--resume: the checkpoint in {} was made with {} = {}, this run has {}; resume with "
           "the same settings or start a new --out folder",
           o.out.string(), key, saved[key].dump(), value.dump());
    }
  }
  std::span<float> values = model.values();
  auto load = [&](const std::string& name, const ParamInfo& p, float* dst) {
    TensorView v = f.view(name);
    if (v.dtype() != DType::kF32 || v.shape() != p.shape) fail("{}: '{}' is damaged", path.string(), name);
    std::memcpy(dst, v.data, static_cast<size_t>(p.size) * 4);
  };
  for (const ParamInfo& p : model.params()) {
    load("master." + p.name, p, values.data() + p.offset);
    load("adam.m." + p.name, p, adam.first_moment().data() + p.offset);
    load("adam.v." + p.name, p, adam.second_moment().data() + p.offset);
  }
  const int64_t step = std::stoll(f.metadata().at("step"));
  adam.set_steps(step);
  return step;
}

}  // namespace

void save_hf_folder(const TrainModel<float>& model, const fs::path& base_dir, DType dtype,
                    const fs::path& out) {
  fs::create_directories(out);
  for (const char* name : kSideFiles) {
    if (fs::exists(base_dir / name)) write_file_atomic(out / name, read_file(base_dir / name));
  }
  SafetensorsWriter w;
  std::span<const float> values = model.values();
  for (const ParamInfo& p : model.params()) {
    std::span<const float> src = values.subspan(p.offset, p.size);
    w.add_generated(p.name, dtype, p.shape, [src, dtype](std::span<uint8_t> dst) {
      convert_from_f32(dtype, src.data(), dst.data(), src.size());
    });
  }
  w.set_metadata("format", "pt");
  w.write(out / "model.safetensors");
}

FinetuneResult finetune(const FinetuneOptions& o,
                        const std::function<void(const FinetuneStep&)>& on_step,
                        ThreadPool& pool) {
  if (o.steps <= 0 || o.batch <= 0 || o.seq_len <= 0 || o.grad_accum <= 0) {
    fail("--steps, --batch, --seq-len and --grad-accum must be positive");
  }
  if (!(o.lr > 0) || !std::isfinite(o.lr)) fail("--lr must be a positive number");
  if (o.weight_decay < 0 || o.max_grad_norm < 0) fail("--weight-decay and --clip must be ≥ 0");
  if (!fs::is_directory(o.model)) fail("model folder '{}' does not exist", o.model.string());
  const ModelConfig config = load_model_config(o.model / "config.json");
  if (o.seq_len > config.max_position_embeddings && config.max_position_embeddings > 0) {
    fail("--seq-len {} is longer than the model's context ({})", o.seq_len,
         config.max_position_embeddings);
  }
  WeightFiles files = WeightFiles::open(o.model);
  const DType dtype = files.view("model.embed_tokens.weight").dtype();  // checkpoints keep it

  const TrainingData data =
      TrainingData::load_for_model(o.data, o.model, config.model_type, o.data_options);

  if (!data.is_text()) {
    int64_t cut = 0, usable = 0;
    for (const Example& e : data.examples()) {
      const auto within = std::min<size_t>(e.tokens.size(), static_cast<size_t>(o.seq_len) + 1);
      bool any = false;
      for (size_t i = 1; i < within; ++i) any = any || e.loss_mask[i] != 0;
      usable += any;
      cut += e.tokens.size() > within;
    }
    if (usable == 0) {
      fail(
          "no example of {} has a reply within its first {} tokens (the longest is {} tokens): "
          "raise --seq-len (the model's context is {})",
          o.data.string(), o.seq_len + 1,
          std::max_element(
              data.examples().begin(), data.examples().end(),
              [](const Example& a, const Example& b) { return a.tokens.size() < b.tokens.size(); })
              ->tokens.size(),
          config.max_position_embeddings);
    }
    if (cut > 0 && o.progress) {
      spdlog::warn("{} of {} examples are longer than --seq-len {} + 1 tokens and are cut", cut,
                   data.examples().size(), o.seq_len);
    }
  }
  FinetuneOptions opts = o;
  if (opts.warmup < 0) opts.warmup = o.steps / 20;
  const json identity = run_identity(opts, data);

  TrainModel<float> model(config, files);
  AdamW<float> adam(model.params(), {.beta1 = o.beta1, .beta2 = o.beta2, .eps = 1e-8,
                                     .weight_decay = o.weight_decay});
  fs::create_directories(o.out);
  FinetuneResult result;
  result.parameter_count = model.parameter_count();
  int64_t step = 0;
  if (o.resume) {
    step = read_checkpoint(model, adam, identity, opts);
    result.resumed_from = step;
    if (step >= o.steps) fail("--resume: the checkpoint is at step {}, the run has {} steps", step, o.steps);
  }

  // DP-SGD: the noise multiplier that keeps the whole run within the ε target.
  const bool dp = o.dp_epsilon > 0;
  double sigma = 0, q = 0;
  int64_t examples = 0;
  if (dp) {
    if (data.is_text()) {
      fail(
          "DP-SGD protects one training sequence at a time, so it needs JSONL examples "
          "(conversations or prompt/response pairs); {} is plain text",
          o.data.string());
    }
    if (!(o.dp_clip > 0)) fail("--dp-clip must be positive, got {}", o.dp_clip);
    examples = static_cast<int64_t>(data.examples().size());
    if (!(o.dp_delta > 0 && o.dp_delta < 1.0 / static_cast<double>(examples))) {
      fail("--dp-delta must be in (0, 1/examples) = (0, {:.3g}) for {} examples, got {}",
           1.0 / static_cast<double>(examples), examples, o.dp_delta);
    }
    q = std::min(1.0, static_cast<double>(o.batch * o.grad_accum) / static_cast<double>(examples));
    sigma = dp_sgd_noise_for_epsilon(q, o.steps, o.dp_delta, o.dp_epsilon);
    result.dp_noise_multiplier = sigma;
    result.dp_sample_rate = q;
    if (sodium_init() < 0) fail("libsodium failed to initialize");
  }
  auto secure_gaussian = [] { return secure_standard_normal(); };
  std::vector<float> dp_sum;

  const int64_t V = config.vocab_size;
  std::vector<float> dlogits;
  const auto start = std::chrono::steady_clock::now();
  int64_t tokens_done = 0;
  for (; step < o.steps; ++step) {
    double loss = 0, norm = 0;
    if (dp) {
      // Poisson sampling; each sampled example's gradient clipped; noise on the sum.
      std::span<float> grads = model.grads();
      dp_sum.assign(grads.size(), 0.0f);
      double nll = 0, targets = 0;
      const auto threshold = static_cast<uint32_t>(std::min(1.0, q) * 4294967295.0);
      for (int64_t i = 0; i < examples; ++i) {
        if (q < 1 && randombytes_random() >= threshold) continue;
        const Batch b = data.example_batch(i, o.seq_len);
        const double t = static_cast<double>(b.target_count());
        if (t == 0) continue;
        model.zero_grads();
        std::span<float> logits = model.forward(b.tokens, 1, b.seq_len);
        dlogits.resize(logits.size());
        nll += cross_entropy(logits, b.targets, V, t, dlogits, pool);
        model.backward(dlogits, {});
        targets += t;
        tokens_done += b.seq_len;
        double norm2 = 0;
        for (float g : grads) norm2 += static_cast<double>(g) * g;
        const auto scale = static_cast<float>(std::min(1.0, o.dp_clip / std::sqrt(norm2 + 1e-30)));
        for (size_t k = 0; k < grads.size(); ++k) dp_sum[k] += scale * grads[k];
      }
      const double expected = q * static_cast<double>(examples);
      double norm2 = 0;
      for (size_t k = 0; k < grads.size(); ++k) {
        grads[k] =
            static_cast<float>((dp_sum[k] + sigma * o.dp_clip * secure_gaussian()) / expected);
        norm2 += static_cast<double>(grads[k]) * grads[k];
      }
      loss = targets > 0 ? nll / targets : 0.0;
      norm = std::sqrt(norm2);
    } else {
      std::vector<Batch> micro;
      double targets = 0;
      for (int64_t m = 0; m < o.grad_accum; ++m) {
        micro.push_back(data.sample(step * o.grad_accum + m, o.batch, o.seq_len, o.seed));
        targets += static_cast<double>(micro.back().target_count());
      }
      model.zero_grads();
      double nll = 0;
      for (const Batch& b : micro) {
        std::span<float> logits = model.forward(b.tokens, b.batch, b.seq_len);
        dlogits.resize(logits.size());
        nll += cross_entropy(logits, b.targets, V, targets, dlogits, pool);
        model.backward(dlogits, {});
        result.peak_activation_bytes =
            std::max(result.peak_activation_bytes, model.activation_bytes());
        tokens_done += b.batch * b.seq_len;
      }
      loss = targets > 0 ? nll / targets : 0.0;
      if (std::isfinite(loss)) norm = clip_grad_norm(model.grads(), o.max_grad_norm);
    }
    if (!std::isfinite(loss)) {
      fail("the loss became {} at step {}; lower --lr or check the data", loss, step + 1);
    }
    const double lr = cosine_lr(step, o.steps, opts.warmup, o.lr, o.min_lr_ratio);
    adam.step(model.values(), model.grads(), lr);

    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    FinetuneStep s{step + 1, o.steps, loss, lr, norm, tokens_done / std::max(elapsed, 1e-9), 0};
    s.eta_s = elapsed / static_cast<double>(step + 1 - result.resumed_from) *
              static_cast<double>(o.steps - step - 1);
    if (dp)
      s.epsilon = result.dp_epsilon_spent = dp_sgd_epsilon(q, sigma, step + 1, o.dp_delta).epsilon;
    if (step == result.resumed_from) result.first_loss = loss;
    result.last_loss = loss;
    result.tokens_per_s = s.tokens_per_s;
    ++result.steps_run;
    if (on_step) on_step(s);
    if (o.stop_after > 0 && step + 1 == o.stop_after && step + 1 < o.steps) {
      write_checkpoint(model, adam, step + 1, identity, opts, dtype);
      result.stopped = true;
      return result;
    }
    if (o.save_every > 0 && (step + 1) % o.save_every == 0 && step + 1 < o.steps) {
      write_checkpoint(model, adam, step + 1, identity, opts, dtype);
    }
  }
  save_hf_folder(model, o.model, dtype, o.out);
  fs::remove_all(o.out / kCheckpoint);
  return result;
}

}  // namespace bitdelta
