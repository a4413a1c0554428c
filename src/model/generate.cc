#include "model/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <utility>

#include "util/error.h"

namespace bitdelta {

namespace {

// Length of the longest suffix of `text` that is a proper prefix of some stop string: that much
// must be held back, since the next token may complete the stop string.
size_t held_back(std::string_view text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const auto& stop : stops) {
    for (size_t n = std::min(stop.size() - 1, text.size()); n > hold; --n) {
      if (text.substr(text.size() - n) == std::string_view(stop).substr(0, n)) {
        hold = n;
        break;
      }
    }
  }
  return hold;
}

}  // namespace

SequenceDecoder::SequenceDecoder(const Tokenizer* tokenizer, std::span<const int32_t> prompt,
                                 const GenerateOptions& options)
    : tokenizer_(tokenizer),
      options_(options),
      sampler_(options.sampling),
      history_(prompt.begin(), prompt.end()),
      prompt_tokens_(static_cast<int64_t>(prompt.size())) {
  if (prompt.empty()) fail("the prompt is empty: give at least one token (e.g. BOS)");
  if (options.max_tokens < 0) fail("max_tokens must be ≥ 0, got {}", options.max_tokens);
  BD_CHECK(tokenizer != nullptr || options.stop_strings.empty());
  for (const auto& s : options.stop_strings) {
    if (s.empty()) fail("stop strings must not be empty");
  }
  if (tokenizer != nullptr) {
    decoder_.emplace(*tokenizer, /*skip_special=*/false,
                     options.continues_prompt ? prompt : std::span<const int32_t>());
  }
  if (options.logprobs < -1 || options.logprobs > kMaxTopLogprobs) {
    fail("logprobs must be between 0 and {} alternatives, got {}", kMaxTopLogprobs,
         options.logprobs);
  }
  if (options.constraint) constraint_ = options.constraint->clone();
  if (options.max_tokens == 0) {
    done_ = true;
    finish_reason_ = "length";
  }
}

namespace {

// The log-softmax of `logits` at `id`, and the k best ids with theirs (ties by lower id).
TokenLogprob log_probabilities(std::span<const float> logits, int32_t id, int k) {
  float max = -std::numeric_limits<float>::infinity();
  for (float l : logits) max = std::max(max, l);
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l - max));
  const float log_z = max + static_cast<float>(std::log(sum));
  TokenLogprob out;
  out.id = id;
  out.logprob = logits[static_cast<size_t>(id)] - log_z;
  if (k > 0) {
    std::vector<int32_t> best;
    best.reserve(static_cast<size_t>(k) + 1);
    auto worse = [&](int32_t a, int32_t b) {  // heap order: the worst kept candidate on top
      return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
    };
    for (int32_t i = 0; i < static_cast<int32_t>(logits.size()); ++i) {
      if (static_cast<int>(best.size()) == k && !worse(i, best.front())) continue;
      best.push_back(i);
      std::push_heap(best.begin(), best.end(), worse);
      if (static_cast<int>(best.size()) > k) {
        std::pop_heap(best.begin(), best.end(), worse);
        best.pop_back();
      }
    }
    std::sort(best.begin(), best.end(), worse);
    for (int32_t i : best) out.top.emplace_back(i, logits[i] - log_z);
  }
  return out;
}

}  // namespace

std::string SequenceDecoder::finish(std::string text, const char* reason) {
  done_ = true;
  finish_reason_ = reason;
  return text;
}

std::string SequenceDecoder::step(std::span<float> logits) {
  BD_CHECK(!done_);
  // Embedding rows past the tokenizer's last id (Qwen3 pads its vocab to 151,936) are not
  // tokens: never pick them.
  if (tokenizer_ != nullptr && tokenizer_->vocab_size() < static_cast<int32_t>(logits.size())) {
    std::fill(logits.begin() + tokenizer_->vocab_size(), logits.end(),
              -std::numeric_limits<float>::infinity());
  }
  if (options_.logprobs >= 0) raw_.assign(logits.begin(), logits.end());
  if (constraint_) constraint_->mask(logits);
  const int32_t id = sampler_.sample(logits, history_, tokens_);
  last_logprob_.reset();
  if (std::find(options_.stop_ids.begin(), options_.stop_ids.end(), id) !=
      options_.stop_ids.end()) {
    return finish(std::move(pending_), "stop");  // held back for a stop string that never came
  }
  if (options_.logprobs >= 0) last_logprob_ = log_probabilities(raw_, id, options_.logprobs);
  if (constraint_) constraint_->accept(id);
  history_.push_back(id);
  tokens_.push_back(id);
  const bool last = static_cast<int64_t>(tokens_.size()) >= options_.max_tokens;
  if (!decoder_) return last ? finish({}, "length") : std::string();
  pending_ += decoder_->push(id);
  if (options_.strip_leading_space && !text_started_ && !pending_.empty()) {
    if (pending_.front() == ' ') pending_.erase(0, 1);
    text_started_ = !pending_.empty();
  }
  size_t cut = std::string::npos;
  for (const auto& stop : options_.stop_strings) cut = std::min(cut, pending_.find(stop));
  if (cut != std::string::npos) return finish(pending_.substr(0, cut), "stop");
  if (last) return finish(pending_ + decoder_->flush(), "length");
  const size_t hold = held_back(pending_, options_.stop_strings);
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

GenerateResult generate(Transformer& model, const Tokenizer* tokenizer,
                        std::span<const int32_t> prompt, const GenerateOptions& options,
                        const std::function<void(std::string_view)>& on_text, ThreadPool& pool) {
  using Clock = std::chrono::steady_clock;
  SequenceDecoder decoder(tokenizer, prompt, options);
  GenerateResult result;
  result.prompt_tokens = decoder.prompt_tokens();
  result.finish_reason = "length";
  if (decoder.done()) return result;
  KVCache cache = model.new_cache();
  std::vector<float> logits;
  auto start = Clock::now();
  SequenceInput input{&cache, prompt, false, options.adapter};
  model.forward({&input, 1}, &logits, pool);
  result.prefill_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  auto decode_start = Clock::now();
  while (true) {
    const std::string text = decoder.step(logits);
    result.text += text;
    if (on_text && !text.empty()) on_text(text);
    if (decoder.done()) break;
    int32_t last = decoder.tokens().back();
    SequenceInput next{&cache, {&last, 1}, false, options.adapter};
    model.forward({&next, 1}, &logits, pool);
  }
  result.tokens = decoder.tokens();
  result.finish_reason = decoder.finish_reason();
  if (result.tokens.size() > 1) {
    result.decode_seconds = std::chrono::duration<double>(Clock::now() - decode_start).count();
  }
  return result;
}

}  // namespace bitdelta
