#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "util/error.h"

namespace bitdelta {

void validate(const SamplingParams& p) {
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature)) {
    fail("temperature must be a finite number ≥ 0 (0 means greedy), got {}", p.temperature);
  }
  if (p.top_k < 0) fail("top_k must be ≥ 0 (0 turns it off), got {}", p.top_k);
  if (!(p.top_p > 0 && p.top_p <= 1)) fail("top_p must be in (0, 1], got {}", p.top_p);
  if (!(p.min_p >= 0 && p.min_p <= 1)) fail("min_p must be in [0, 1], got {}", p.min_p);
  if (!(p.repetition_penalty > 0) || !std::isfinite(p.repetition_penalty)) {
    fail("repetition_penalty must be a finite number > 0 (1 turns it off), got {}",
         p.repetition_penalty);
  }
  if (!(p.frequency_penalty >= -2 && p.frequency_penalty <= 2)) {
    fail("frequency_penalty must be in [-2, 2] (0 turns it off), got {}", p.frequency_penalty);
  }
  if (!(p.presence_penalty >= -2 && p.presence_penalty <= 2)) {
    fail("presence_penalty must be in [-2, 2] (0 turns it off), got {}", p.presence_penalty);
  }
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0) fail("logit_bias: token id {} is negative", id);
    if (!(bias >= -100 && bias <= 100)) {
      fail("logit_bias: the bias of token {} must be in [-100, 100], got {}", id, bias);
    }
  }
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  validate(params);
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> history,
                        std::span<const int32_t> generated) {
  const int64_t V = static_cast<int64_t>(logits.size());
  for (const auto& [id, bias] : params_.logit_bias) {
    if (id < V) logits[id] += bias;
  }
  if (params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f) {
    std::vector<int32_t> seen(generated.begin(), generated.end());
    std::sort(seen.begin(), seen.end());
    for (size_t i = 0; i < seen.size();) {
      size_t j = i;
      while (j < seen.size() && seen[j] == seen[i]) ++j;
      if (seen[i] >= 0 && seen[i] < V) {
        logits[seen[i]] -=
            params_.frequency_penalty * static_cast<float>(j - i) + params_.presence_penalty;
      }
      i = j;
    }
  }
  if (params_.repetition_penalty != 1.0f) {
    // As Hugging Face: divide positive logits, multiply negative ones, once per distinct token.
    std::vector<int32_t> seen(history.begin(), history.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= V) continue;
      float& l = logits[id];
      l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    }
  }
  if (params_.temperature == 0.0f) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  if (params_.top_k == 0 && params_.top_p >= 1.0f && params_.min_p == 0.0f) {
    // Nothing is cut from the distribution: draw from the softmax in id order, one pass over the
    // vocabulary (sorting 150k logits per token would cost more than a decode step's matmuls).
    const float max_logit = *std::max_element(logits.begin(), logits.end());
    if (!std::isfinite(max_logit)) {
      return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    std::vector<double> probs(static_cast<size_t>(V));
    double total = 0;
    for (int64_t i = 0; i < V; ++i) {
      probs[i] = std::exp((static_cast<double>(logits[i]) - max_logit) / params_.temperature);
      total += probs[i];
    }
    std::uniform_real_distribution<double> uniform(0.0, total);
    double r = uniform(rng_);
    int32_t last = 0;
    for (int64_t i = 0; i < V; ++i) {
      if (probs[i] <= 0) continue;
      last = static_cast<int32_t>(i);
      r -= probs[i];
      if (r <= 0) return last;
    }
    return last;
  }
  // Candidates sorted by logit, best first; ties broken by id for reproducibility. Tokens a
  // constraint ruled out (-infinity) never are candidates.
  std::vector<int32_t> order;
  order.reserve(static_cast<size_t>(V));
  for (int32_t i = 0; i < static_cast<int32_t>(V); ++i) {
    if (logits[i] != -std::numeric_limits<float>::infinity()) order.push_back(i);
  }
  if (order.empty()) return 0;
  const int64_t candidates = static_cast<int64_t>(order.size());
  int64_t keep = candidates;
  if (params_.top_k > 0) keep = std::min<int64_t>(keep, params_.top_k);
  auto better = [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  };
  if (keep < candidates) {
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), better);
  } else {
    std::sort(order.begin(), order.end(), better);
  }
  order.resize(static_cast<size_t>(keep));
  std::vector<double> probs(order.size());
  const double max_logit = logits[order[0]];
  double total = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    probs[i] = std::exp((logits[order[i]] - max_logit) / params_.temperature);
    total += probs[i];
  }
  for (double& p : probs) p /= total;
  size_t n = order.size();
  if (params_.top_p < 1.0f) {
    double cumulative = 0;
    for (size_t i = 0; i < n; ++i) {
      cumulative += probs[i];
      if (cumulative >= params_.top_p) {
        n = i + 1;
        break;
      }
    }
  }
  if (params_.min_p > 0.0f) {
    const double threshold = params_.min_p * probs[0];
    size_t m = 1;
    while (m < n && probs[m] >= threshold) ++m;
    n = m;
  }
  double kept = 0;
  for (size_t i = 0; i < n; ++i) kept += probs[i];
  std::uniform_real_distribution<double> uniform(0.0, kept);
  double r = uniform(rng_);
  for (size_t i = 0; i < n; ++i) {
    r -= probs[i];
    if (r <= 0) return order[i];
  }
  return order[n - 1];
}

}  // namespace bitdelta
