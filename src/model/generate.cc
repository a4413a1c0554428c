#include "model/generate.h"

#include <algorithm>
#include <chrono>
#include <limits>

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

GenerateResult generate(Transformer& model, const Tokenizer* tokenizer,
                        std::span<const int32_t> prompt, const GenerateOptions& options,
                        const std::function<void(std::string_view)>& on_text, ThreadPool& pool) {
  using Clock = std::chrono::steady_clock;
  if (prompt.empty()) fail("the prompt is empty: give at least one token (e.g. BOS)");
  if (options.max_tokens < 0) fail("max_tokens must be ≥ 0, got {}", options.max_tokens);
  BD_CHECK(tokenizer != nullptr || options.stop_strings.empty());
  for (const auto& s : options.stop_strings) {
    if (s.empty()) fail("stop strings must not be empty");
  }
  Sampler sampler(options.sampling);
  GenerateResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  result.finish_reason = "length";
  KVCache cache = model.new_cache();
  std::vector<int32_t> history(prompt.begin(), prompt.end());
  std::vector<float> logits;
  std::optional<IncrementalDecoder> decoder;
  if (tokenizer != nullptr) decoder.emplace(*tokenizer);
  std::string pending;  // decoded text not yet handed to on_text

  auto emit = [&](std::string_view text) {
    result.text += text;
    if (on_text && !text.empty()) on_text(text);
  };

  auto start = Clock::now();
  if (options.max_tokens == 0) return result;
  SequenceInput input{&cache, prompt, false, options.adapter};
  model.forward({&input, 1}, &logits, pool);
  result.prefill_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  auto decode_start = Clock::now();
  bool stopped = false;
  for (int64_t step = 0; step < options.max_tokens; ++step) {
    if (step > 0) {
      int32_t last = history.back();
      SequenceInput next{&cache, {&last, 1}, false, options.adapter};
      model.forward({&next, 1}, &logits, pool);
    }
    // Embedding rows past the tokenizer's last id (Qwen3 pads its vocab to 151,936) are not
    // tokens: never pick them.
    if (tokenizer != nullptr && tokenizer->vocab_size() < static_cast<int32_t>(logits.size())) {
      std::fill(logits.begin() + tokenizer->vocab_size(), logits.end(),
                -std::numeric_limits<float>::infinity());
    }
    int32_t id = sampler.sample(logits, history);
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), id) !=
        options.stop_ids.end()) {
      result.finish_reason = "stop";
      stopped = true;
      break;
    }
    history.push_back(id);
    result.tokens.push_back(id);
    if (!decoder) continue;
    pending += decoder->push(id);
    size_t cut = std::string::npos;
    for (const auto& stop : options.stop_strings) cut = std::min(cut, pending.find(stop));
    if (cut != std::string::npos) {
      emit(std::string_view(pending).substr(0, cut));
      pending.clear();
      result.finish_reason = "stop";
      stopped = true;
      break;
    }
    size_t hold = held_back(pending, options.stop_strings);
    emit(std::string_view(pending).substr(0, pending.size() - hold));
    pending.erase(0, pending.size() - hold);
  }
  if (decoder && !stopped) {
    pending += decoder->flush();
    emit(pending);
  }
  if (result.tokens.size() > 1) {
    result.decode_seconds = std::chrono::duration<double>(Clock::now() - decode_start).count();
  }
  return result;
}

}  // namespace bitdelta
