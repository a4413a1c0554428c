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
  // OpenAI's penalties, over the generated tokens only (as vLLM): a token's logit loses
  // frequency_penalty × its count so far, and presence_penalty once it has appeared. In [-2, 2].
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  // Added to the logits of these token ids before anything else (OpenAI's logit_bias, in
  // [-100, 100]; -100 in effect bans a token, 100 all but forces it).
  std::vector<std::pair<int32_t, float>> logit_bias;
  uint64_t seed = 0;
};

// Throws Error for values outside their ranges, saying which and why.
void validate(const SamplingParams& params);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks a token. `logits` ([V]) is modified in place; `history` is the sequence so far (prompt
  // and generated tokens), used by the repetition penalty; `generated` its generated tokens, used
  // by the frequency and presence penalties.
  int32_t sample(std::span<float> logits, std::span<const int32_t> history,
                 std::span<const int32_t> generated = {});

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace bitdelta
