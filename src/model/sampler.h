// Choosing the next token from logits: greedy, or sampling with temperature, top-k, top-p, min-p
// and a repetition penalty, reproducible from a seed.
#pragma once

#include <cstdint>
#include <random>
#include <span>

namespace bitdelta {

struct SamplingParams {
  float temperature = 0.0f;         // 0 → greedy (argmax)
  int top_k = 0;                    // 0 → off
  float top_p = 1.0f;               // 1 → off
  float min_p = 0.0f;               // 0 → off; keeps tokens with p ≥ min_p · p_max
  float repetition_penalty = 1.0f;  // 1 → off; > 1 discourages tokens already in the sequence
  uint64_t seed = 0;
};

// Throws Error for values outside their ranges, saying which and why.
void validate(const SamplingParams& params);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks a token. `logits` ([V]) is modified in place; `history` is the sequence so far (prompt
  // and generated tokens), used by the repetition penalty.
  int32_t sample(std::span<float> logits, std::span<const int32_t> history);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace bitdelta
