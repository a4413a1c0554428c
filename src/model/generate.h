// Text generation: prefill the prompt, then decode token by token with a sampler, streaming
// text that is final (whole UTF-8 characters, never part of a stop string).
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "model/sampler.h"
#include "model/transformer.h"
#include "tokenizer/tokenizer.h"

namespace bitdelta {

struct GenerateOptions {
  int64_t max_tokens = 256;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;         // e.g. EOS; not included in the output
  std::vector<std::string> stop_strings; // generation ends before the first occurrence
  const AdapterWeights* adapter = nullptr; // a user's adapter, or null for the base model
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (without the prompt; a stop id is not included)
  std::string text;             // their text, cut before a stop string
  std::string finish_reason;    // "stop" or "length"
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;    // for tokens after the first
};

// `on_text` (optional) receives text as it becomes final. `tokenizer` may be null when only ids
// are wanted (then stop_strings must be empty).
GenerateResult generate(Transformer& model, const Tokenizer* tokenizer,
                        std::span<const int32_t> prompt, const GenerateOptions& options,
                        const std::function<void(std::string_view)>& on_text, ThreadPool& pool);

}  // namespace bitdelta
