// Domain objectives for the scales: after scale distillation, one multiplier m on every scale of
// the adapter is chosen by Brent's method over documented bounds to maximize a domain score on
// the user's held-out interactions (docs/domains.md, "Domain objectives"), or an operator's own
// evaluator (--scorer-cmd).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <list>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "domain/examples.h"
#include "model/adapter_weights.h"
#include "model/transformer.h"
#include "tokenizer/chat_template.h"
#include "train/data.h"
#include "train/eval.h"
#include "util/thread_pool.h"

namespace bitdelta {

struct ObjectiveOptions {
  double lo = 0.25, hi = 2.0;  // bounds of the multiplier (1 = the calibrated scales)
  double tol = 0.02;           // Brent stops when the bracket is this tight around the best m
  int max_evaluations = 12;
  int64_t seq_len = 384;  // tokens per scored example (longer ones are cut)
  // An operator's evaluator: run through /bin/sh -c with the candidate responses as JSON lines on
  // stdin; it prints one number, the score (higher is better). Empty: the domain's own score.
  std::string scorer_cmd;
  double scorer_timeout_s = 60;
  int64_t scorer_items = 16;       // held-out conversations answered per candidate
  int64_t scorer_max_tokens = 64;  // greedy reply length per item
};

struct ObjectiveResult {
  std::string objective;    // the domain, or "scorer-cmd"
  std::string description;  // what is scored
  double lo = 0, hi = 0;
  double multiplier = 1;        // chosen
  double score = 0;             // at the chosen multiplier
  double score_calibrated = 0;  // at m = 1
  double score_base = 0;        // of the base model alone (no adapter)
  double min_gain = 0;          // what the chosen multiplier had to gain over m = 1
  int evaluations = 0;
  std::vector<std::pair<double, double>> trace;  // (m, score) in evaluation order
  nlohmann::json to_json() const;
};

// A view of `weights` with every 1-bit scale multiplied by m (exact deltas unchanged); the new
// scales live in `storage`, which must outlive the result.
AdapterWeights scaled_adapter_weights(const AdapterWeights& weights, float m,
                                      std::list<std::vector<float>>& storage);

class DomainObjective {
 public:
  // `heldout` are the held-out conversations (for --scorer-cmd); files for the scored data go
  // to `work_dir`.
  DomainObjective(const DomainObjectiveData& data,
                  const std::vector<std::vector<ChatMessage>>& heldout, Transformer& base,
                  const Tokenizer& tokenizer, const ChatTemplate& chat,
                  const ObjectiveOptions& options, const std::filesystem::path& work_dir,
                  ThreadPool& pool);
  ~DomainObjective();

  // The score of base + adapter (the base alone when null). Error when --scorer-cmd fails, times
  // out or prints something that is not a number.
  double score(const AdapterWeights* adapter);

  // Brent over [lo, hi] on the multiplier of `calibrated`'s scales; `on_evaluation` (optional)
  // sees each (m, score).
  ObjectiveResult search(const AdapterWeights& calibrated,
                         const std::function<void(double, double)>& on_evaluation);

 private:
  // The held-out scores of base + adapter (the base alone when null) on `data`.
  ModelScore scores(const TrainingData& data, const AdapterWeights* adapter);
  double likelihood(const AdapterWeights* adapter);
  double choice_accuracy(const AdapterWeights* adapter);
  double external(const AdapterWeights* adapter);

  const DomainObjectiveData& data_;
  const std::vector<std::vector<ChatMessage>>& heldout_;
  Transformer& base_;
  const Tokenizer& tokenizer_;
  const ChatTemplate& chat_;
  ObjectiveOptions o_;
  ThreadPool& pool_;
  std::unique_ptr<TrainingData> scored_, choices_;
};

}  // namespace bitdelta
