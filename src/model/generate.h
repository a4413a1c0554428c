// Text generation: prefill the prompt, then decode token by token with a sampler, streaming
// text that is final (whole UTF-8 characters, never part of a stop string).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/sampler.h"
#include "model/transformer.h"
#include "tokenizer/tokenizer.h"

namespace bitdelta {

// Restricts which tokens may come next, e.g. a grammar that keeps the output valid JSON. A
// prototype lives in GenerateOptions; every sequence works on its own clone.
class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  // Sets the logits of the tokens that may not come next to -infinity.
  virtual void mask(std::span<float> logits) = 0;
  // The token that was picked (one that mask() allowed).
  virtual void accept(int32_t token) = 0;
  virtual std::unique_ptr<TokenConstraint> clone() const = 0;
};

// One generated token's log probability under the model (the log-softmax of its raw logits,
// before logit_bias, penalties, constraints and temperature), with the most likely alternatives.
struct TokenLogprob {
  int32_t id = -1;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>>
      top;  // most likely first, `GenerateOptions::logprobs` long
};

struct GenerateOptions {
  int64_t max_tokens = 256;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;         // e.g. EOS; not included in the output
  std::vector<std::string> stop_strings; // generation ends before the first occurrence
  const AdapterWeights* adapter = nullptr; // a user's adapter, or null for the base model
  // The text continues the prompt's (a completion: prompt + text == decode(prompt ++ tokens),
  // leading space included) rather than starting a text of its own (a chat reply, whose
  // content does not begin with the space the template put before it).
  bool continues_prompt = true;
  // Drop one space at the start of the text: the plain chat format writes "Assistant: reply", so
  // the reply's first token carries the separating space, which is not part of the content.
  bool strip_leading_space = false;
  // Log probabilities of the generated tokens: -1 none, k ≥ 0 each token's own and its k most
  // likely alternatives (at most kMaxTopLogprobs).
  int logprobs = -1;
  std::shared_ptr<const TokenConstraint> constraint;  // null: any token
};

inline constexpr int kMaxTopLogprobs = 20;

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (without the prompt; a stop id is not included)
  std::string text;             // their text, cut before a stop string
  std::string finish_reason;    // "stop" or "length"
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;    // for tokens after the first
};

// One sequence's decoding after its prompt: picks each next token from the logits, watches the
// stop ids, stop strings and max_tokens, and turns tokens into text that is final. Shared by
// generate() (one sequence) and the server's scheduler (many, batched).
class SequenceDecoder {
 public:
  // Validates the options (Error on a bad value). `tokenizer` may be null when only ids are
  // wanted (then stop_strings must be empty).
  SequenceDecoder(const Tokenizer* tokenizer, std::span<const int32_t> prompt,
                  const GenerateOptions& options);

  // Picks the next token from `logits` ([V], modified in place) and returns the text that became
  // final. After the last token (a stop, or max_tokens) done() is true and the remaining text
  // has been returned.
  std::string step(std::span<float> logits);
  bool done() const { return done_; }
  const std::string& finish_reason() const { return finish_reason_; }  // "stop" or "length"
  const std::vector<int32_t>& tokens() const { return tokens_; }      // generated, no stop id
  // With options.logprobs ≥ 0: the token the last step() generated (none when it was a stop id).
  const std::optional<TokenLogprob>& last_logprob() const { return last_logprob_; }
  int64_t prompt_tokens() const { return prompt_tokens_; }

 private:
  std::string finish(std::string text, const char* reason);
  const Tokenizer* tokenizer_;
  GenerateOptions options_;
  Sampler sampler_;
  std::vector<int32_t> history_, tokens_;
  std::optional<IncrementalDecoder> decoder_;
  std::unique_ptr<TokenConstraint> constraint_;
  std::optional<TokenLogprob> last_logprob_;
  std::vector<float> raw_;  // the last logits before sampling changed them (for logprobs)
  std::string pending_;  // decoded text held back: it may be the start of a stop string
  int64_t prompt_tokens_ = 0;
  bool done_ = false;
  bool text_started_ = false;
  std::string finish_reason_;
};

// `on_text` (optional) receives text as it becomes final. `tokenizer` may be null when only ids
// are wanted (then stop_strings must be empty).
GenerateResult generate(Transformer& model, const Tokenizer* tokenizer,
                        std::span<const int32_t> prompt, const GenerateOptions& options,
                        const std::function<void(std::string_view)>& on_text, ThreadPool& pool);

}  // namespace bitdelta
