// Evaluation: how well a base, its fine-tune and the fine-tune's BitDelta adapter (base +
// adapter) predict held-out data, and how closely the adapter reproduces the fine-tune.
//   B windows per forward call, S tokens per window, V vocab
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/adapter_weights.h"
#include "model/quantized_base.h"
#include "model/transformer.h"
#include "train/data.h"
#include "util/thread_pool.h"

namespace bitdelta {

struct EvalOptions {
  int64_t seq_len = 128;     // S: tokens per window
  int64_t max_windows = 16;  // windows evaluated (all when <= 0); see TrainingData::windows
  int64_t batch = 4;         // B: windows per forward call
  bool score_base = true;    // false: with an adapter, score only base + adapter (and fine-tune)
  // Called after each batch with (batches done, batches in all); may be empty.
  std::function<void(int64_t, int64_t)> progress;
};

// The models to compare. `adapter` is applied to `base` (it must be bound to it, see
// open_adapter_for); the pointers are borrowed for the call.
struct EvalModels {
  Transformer* base = nullptr;              // required
  Transformer* finetuned = nullptr;         // optional
  const AdapterWeights* adapter = nullptr;  // optional: the "bitdelta" model
};

struct ModelScore {
  std::string name;       // "base", "finetuned" or "bitdelta"
  double nll = 0;         // mean next-token negative log-likelihood over target tokens, nats
  double perplexity = 0;  // exp(nll)
  // Per window (for JSONL: per example, in file order) the summed NLL of its target tokens and
  // how many there are (0 for a window without targets).
  std::vector<double> window_nll;
  std::vector<int64_t> window_targets;
};

// How closely `model` follows the fine-tune, per target token.
struct Agreement {
  double kl = 0;    // mean KL(finetuned ‖ model), nats
  double top1 = 0;  // share of tokens whose argmax equals the fine-tune's, in [0, 1]
};

struct EvalReport {
  std::string data;         // TrainingData::describe()
  std::string data_sha256;  // TrainingData::sha256()
  int64_t seq_len = 0, windows = 0, target_tokens = 0;
  std::vector<ModelScore> models;  // base, then finetuned and bitdelta when given
  // With a fine-tune: the base and (with an adapter) bitdelta against it.
  std::optional<Agreement> base_vs_finetuned, bitdelta_vs_finetuned;
  // (NLL_base − NLL_bitdelta) / (NLL_base − NLL_finetuned): the share of the fine-tune's gain the
  // adapter keeps. Unset without both models, or when the fine-tune gains nothing (|denominator|
  // below 1e-6 nats).
  std::optional<double> quality_retained;

  const ModelScore* find(std::string_view name) const;  // null when not evaluated
};

// Runs every model over data.windows(seq_len, max_windows, batch), each window in a fresh KV
// cache, and scores the target tokens (log-softmax in double). Throws Error when the models do
// not share a vocabulary, the windows exceed the model's context, or the data has no targets.
EvalReport evaluate(const EvalModels& models, const TrainingData& data, const EvalOptions& options,
                    ThreadPool& pool);

// What `bitdelta eval` reads: model folders, an adapter file and a data file.
struct EvalInputs {
  std::filesystem::path base;
  std::optional<std::filesystem::path> finetuned, adapter;
  std::filesystem::path data;
  DataOptions data_options;
  QuantOptions base_quant;  // the base (and base + adapter) on a quantized copy
};

// Loads the models (the adapter checked against and bound to the base), tokenizes the data with
// the base's tokenizer (JSONL conversations through its chat template, if it has one) and
// evaluates. Throws Error for missing folders or files, an adapter made for another base, or
// unusable data.
EvalReport evaluate_files(const EvalInputs& inputs, const EvalOptions& options, ThreadPool& pool);

// The report as a JSON object: {"data", "data_sha256", "seq_len", "windows", "target_tokens",
// "models": {name: {"nll", "perplexity"}}, "base_vs_finetuned": {"kl", "top1"},
// "bitdelta_vs_finetuned": {...}, "quality_retained"} (absent parts left out; quality_retained
// null when the fine-tune gains nothing).
nlohmann::ordered_json to_json(const EvalReport& report);

}  // namespace bitdelta
