#include "train/eval.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "delta/adapter.h"
#include "util/error.h"

namespace bitdelta {

namespace {

// Per target token of one batch: NLL, argmax, log-sum-exp of the logits and, against a reference
// model, KL(reference ‖ this).
struct TokenScores {
  std::vector<double> nll, lse, kl;
  std::vector<int32_t> argmax;
};

// The sequences of a batch that have targets, cut after their last target (causal attention: the
// padding behind it cannot change the logits before it).
struct Window {
  int64_t index = 0;   // sequence in the batch
  int64_t length = 0;  // tokens fed
};

// `logits` holds [rows, V]; rows[k] is the row of the k-th target token.
TokenScores score_tokens(const std::vector<float>& logits, int64_t V,
                         const std::vector<int64_t>& rows, const std::vector<int32_t>& targets,
                         const std::vector<float>* reference, const TokenScores* reference_scores,
                         ThreadPool& pool) {
  const auto n = static_cast<int64_t>(rows.size());
  TokenScores s;
  s.nll.resize(rows.size());
  s.lse.resize(rows.size());
  s.kl.resize(reference != nullptr ? rows.size() : 0);
  s.argmax.resize(rows.size());
  pool.parallel_for(
      n,
      [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          const float* x = logits.data() + rows[k] * V;
          const int64_t best = std::max_element(x, x + V) - x;
          const double top = x[best];
          double sum = 0;
          for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(x[v]) - top);
          const double lse = top + std::log(sum);
          s.lse[k] = lse;
          s.nll[k] = lse - x[targets[k]];
          s.argmax[k] = static_cast<int32_t>(best);
          if (reference != nullptr) {
            const float* p = reference->data() + rows[k] * V;
            const double p_lse = reference_scores->lse[k];
            double kl = 0;
            for (int64_t v = 0; v < V; ++v) {
              const double log_p = p[v] - p_lse, log_q = x[v] - lse;
              kl += std::exp(log_p) * (log_p - log_q);
            }
            s.kl[k] = std::max(0.0, kl);  // rounding can leave a hair below 0
          }
        }
      },
      4);
  return s;
}

std::unique_ptr<Transformer> load_model(const std::filesystem::path& dir, const char* what,
                                        const QuantOptions& quant = {}) {
  if (!std::filesystem::is_directory(dir)) {
    fail("the {} model folder '{}' does not exist (expected a Hugging Face model folder)", what,
         dir.string());
  }
  return Transformer::load(dir, quant);
}

}  // namespace

const ModelScore* EvalReport::find(std::string_view name) const {
  for (const auto& m : models) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

EvalReport evaluate(const EvalModels& models, const TrainingData& data, const EvalOptions& options,
                    ThreadPool& pool) {
  BD_CHECK(models.base != nullptr);
  const ModelConfig& config = models.base->config();
  const int64_t V = config.vocab_size, S = options.seq_len;
  if (models.finetuned != nullptr && models.finetuned->config().vocab_size != V) {
    fail("the fine-tune has a vocabulary of {} tokens and the base {}: they are not the same model",
         models.finetuned->config().vocab_size, V);
  }
  if (S > config.max_position_embeddings) {
    fail("a sequence length of {} exceeds the model's context of {} tokens", S,
         config.max_position_embeddings);
  }

  // What runs, in the order it runs: the fine-tune first, so the others can be compared with it.
  struct Run {
    std::string name;
    Transformer* model;
    const AdapterWeights* adapter;
    double nll = 0, kl = 0;
    int64_t agree = 0;
    std::vector<double> window_nll;
    std::vector<int64_t> window_targets;
  };
  std::vector<Run> runs;
  if (models.finetuned != nullptr) runs.push_back({"finetuned", models.finetuned, nullptr});
  if (options.score_base || models.adapter == nullptr)
    runs.push_back({"base", models.base, nullptr});
  if (models.adapter != nullptr) runs.push_back({"bitdelta", models.base, models.adapter});
  const bool compare = models.finetuned != nullptr;

  const std::vector<Batch> batches = data.windows(S, options.max_windows, options.batch);
  EvalReport report;
  report.data = data.describe();
  report.data_sha256 = data.sha256();
  report.seq_len = S;
  std::vector<float> logits, reference;
  int64_t first_window = 0;  // of this batch, among all windows
  for (size_t i = 0; i < batches.size(); ++i) {
    const Batch& batch = batches[i];
    for (Run& run : runs) {
      run.window_nll.resize(static_cast<size_t>(first_window + batch.batch), 0.0);
      run.window_targets.resize(static_cast<size_t>(first_window + batch.batch), 0);
    }
    std::vector<Window> windows;
    std::vector<int64_t> rows;
    std::vector<int32_t> targets;
    std::vector<int64_t> row_window;  // per target: its window among all
    int64_t row = 0;
    for (int64_t b = 0; b < batch.batch; ++b) {
      const int32_t* t = batch.targets.data() + b * S;
      int64_t length = S;
      while (length > 0 && t[length - 1] < 0) --length;
      if (length == 0) continue;
      windows.push_back({b, length});
      for (int64_t j = 0; j < length; ++j, ++row) {
        if (t[j] < 0) continue;
        rows.push_back(row);
        targets.push_back(t[j]);
        row_window.push_back(first_window + b);
      }
    }
    report.windows += static_cast<int64_t>(windows.size());
    report.target_tokens += static_cast<int64_t>(rows.size());
    first_window += batch.batch;
    if (rows.empty()) continue;

    TokenScores finetuned;
    for (Run& run : runs) {
      std::vector<KVCache> caches;
      caches.reserve(windows.size());
      std::vector<SequenceInput> inputs;
      for (const Window& w : windows) {
        caches.push_back(run.model->new_cache());
        inputs.push_back({&caches.back(),
                          {batch.tokens.data() + w.index * S, static_cast<size_t>(w.length)},
                          true,
                          run.adapter});
      }
      const bool is_reference = run.name == "finetuned";
      std::vector<float>& out = is_reference ? reference : logits;
      run.model->forward(inputs, &out, pool);
      TokenScores s = score_tokens(
          out, V, rows, targets, compare && !is_reference ? &reference : nullptr, &finetuned, pool);
      for (size_t k = 0; k < rows.size(); ++k) {
        run.nll += s.nll[k];
        run.window_nll[static_cast<size_t>(row_window[k])] += s.nll[k];
        run.window_targets[static_cast<size_t>(row_window[k])] += 1;
        if (!s.kl.empty()) {
          run.kl += s.kl[k];
          run.agree += s.argmax[k] == finetuned.argmax[k];
        }
      }
      if (is_reference) finetuned = std::move(s);
    }
    if (options.progress)
      options.progress(static_cast<int64_t>(i) + 1, static_cast<int64_t>(batches.size()));
  }
  if (report.target_tokens == 0) {
    fail("{} has no target tokens within the first {} tokens of its windows; nothing to evaluate",
         report.data, S + 1);
  }

  const auto n = static_cast<double>(report.target_tokens);
  for (const char* name : {"base", "finetuned", "bitdelta"}) {
    for (const Run& run : runs) {
      if (run.name != name) continue;
      report.models.push_back(
          {run.name, run.nll / n, std::exp(run.nll / n), run.window_nll, run.window_targets});
      if (compare && run.name != "finetuned") {
        (run.name == "base" ? report.base_vs_finetuned : report.bitdelta_vs_finetuned) =
            Agreement{run.kl / n, static_cast<double>(run.agree) / n};
      }
    }
  }
  if (compare && models.adapter != nullptr && report.find("base") != nullptr) {
    const double gain = report.find("base")->nll - report.find("finetuned")->nll;
    if (std::abs(gain) >= 1e-6) {
      report.quality_retained = (report.find("base")->nll - report.find("bitdelta")->nll) / gain;
    }
  }
  return report;
}

EvalReport evaluate_files(const EvalInputs& inputs, const EvalOptions& options, ThreadPool& pool) {
  std::unique_ptr<Transformer> base = load_model(inputs.base, "base", inputs.base_quant);
  std::unique_ptr<Transformer> finetuned;
  if (inputs.finetuned) finetuned = load_model(*inputs.finetuned, "fine-tuned");
  std::shared_ptr<Adapter> adapter;
  if (inputs.adapter) {
    if (!std::filesystem::is_regular_file(*inputs.adapter)) {
      fail("the adapter file '{}' does not exist", inputs.adapter->string());
    }
    adapter = open_adapter_for(*inputs.adapter, *base, pool);
  }
  const TrainingData data = TrainingData::load_for_model(
      inputs.data, inputs.base, base->config().model_type, inputs.data_options);
  EvalModels models{base.get(), finetuned.get(), adapter ? &adapter->weights() : nullptr};
  return evaluate(models, data, options, pool);
}

nlohmann::ordered_json to_json(const EvalReport& report) {
  using nlohmann::ordered_json;
  ordered_json out = {{"data", report.data},
                      {"data_sha256", report.data_sha256},
                      {"seq_len", report.seq_len},
                      {"windows", report.windows},
                      {"target_tokens", report.target_tokens}};
  ordered_json models = ordered_json::object();
  for (const auto& m : report.models) {
    models[m.name] = {{"nll", m.nll}, {"perplexity", m.perplexity}};
  }
  out["models"] = models;
  auto agreement = [&](const char* key, const std::optional<Agreement>& a) {
    if (a) out[key] = {{"kl", a->kl}, {"top1", a->top1}};
  };
  agreement("base_vs_finetuned", report.base_vs_finetuned);
  agreement("bitdelta_vs_finetuned", report.bitdelta_vs_finetuned);
  if (report.bitdelta_vs_finetuned) {
    out["quality_retained"] =
        report.quality_retained ? ordered_json(*report.quality_retained) : ordered_json(nullptr);
  }
  return out;
}

}  // namespace bitdelta
