// Training and evaluation data: plain text (one token stream, cut into windows) and JSONL of
// chat conversations or prompt/response pairs (one example per line, or per assistant turn where
// the chat template needs it; loss only on the replies).
//   B sequences per batch, S tokens per sequence
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace bitdelta {

class ChatTemplate;

// A batch of B sequences of S tokens. targets[b*S + i] is the token to predict after
// tokens[b*S + i] (the next token), or -1 where no loss is taken (prompt, padding).
struct Batch {
  int64_t batch = 0, seq_len = 0;
  std::vector<int32_t> tokens;   // [B*S]
  std::vector<int32_t> targets;  // [B*S]
  int64_t target_count() const;  // targets >= 0
};

// One JSONL example: its tokens and, per token, whether it is a loss target (predicted from the
// tokens before it).
struct Example {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;  // same length as tokens; 1 for assistant/response tokens
};

struct DataOptions {
  // Fractions [begin, end) of a text file's token stream to use (e.g. 0:0.9 to train on the
  // first 90%, 0.9:1 to evaluate on the rest). Ignored for JSONL.
  double range_begin = 0, range_end = 1;
  std::optional<int64_t> max_chars;  // use only the first N characters (bytes) of a text file
  // How load_for_model renders JSONL conversations: "auto" (the tokenizer's own chat template;
  // none without one) or a ChatTemplate::select name such as "plain".
  std::string chat_format = "auto";
};

// A JSON `messages` array ([{"role": "system"|"user"|"assistant", "content", optional
// "reasoning_content"}, ...]) as chat messages; Error prefixed with `at` ("file.jsonl:12") that
// says what is wrong.
std::vector<ChatMessage> parse_chat_messages(const nlohmann::json& list, const std::string& at);

// Parses "A:B" fractions (0 <= A < B <= 1) for --token-range; Error with a clear message.
void parse_token_range(const std::string& text, DataOptions* options);

class TrainingData {
 public:
  // Text files (any extension but .jsonl) are tokenized whole (BOS first when the tokenizer adds
  // one) into one stream. .jsonl files hold one JSON object per line: {"messages": [{"role",
  // "content"}, ...]} (rendered with `chat`, loss on every assistant message; where the template
  // renders earlier turns differently from the last, as Qwen3's drops their think blocks, each
  // assistant turn becomes an example of its own, rendered as at inference time) or {"prompt",
  // "response"} (also "completion" for "response"; rendered as a user + assistant turn when
  // `chat` is given, else concatenated as plain text with BOS/EOS, loss on the response and EOS).
  // `chat` may be null. Errors name the file, the line and what is wrong.
  static TrainingData load(const std::filesystem::path& path, const Tokenizer& tokenizer,
                           const ChatTemplate* chat, const DataOptions& options = {});
  // load() with the tokenizer of the model folder `model_dir` and, for .jsonl data, its chat
  // template when the tokenizer carries one (plain text never needs, so never fails on, one).
  static TrainingData load_for_model(const std::filesystem::path& path,
                                     const std::filesystem::path& model_dir,
                                     std::string_view model_type,
                                     const DataOptions& options = {});

  bool is_text() const { return examples_.empty(); }
  int64_t num_tokens() const;  // the stream's tokens, or all examples' tokens
  int64_t num_target_tokens() const;  // tokens that carry a loss
  const std::vector<int32_t>& stream() const { return stream_; }
  const std::vector<Example>& examples() const { return examples_; }
  // SHA-256 (hex) of the file's bytes as read, and the options that selected the data, for
  // recording calibration provenance.
  const std::string& sha256() const { return sha256_; }
  std::string describe() const;  // e.g. "tinyshakespeare.txt, tokens [0, 81234) of 90254"

  // The training batch for `step` (deterministic in (seed, step), so a resumed run sees the same
  // batches): text — B windows of S+1 tokens at uniformly random offsets; JSONL — the next B
  // examples of a seeded per-epoch shuffle, truncated to S+1 tokens and padded (pad targets -1).
  Batch sample(int64_t step, int64_t batch, int64_t seq_len, uint64_t seed) const;
  // JSONL only: example `index` alone as a batch of one, cut to S+1 tokens (DP-SGD's unit).
  Batch example_batch(int64_t index, int64_t seq_len) const;

  // Evaluation windows: text — up to `max_windows` (all if <= 0) non-overlapping windows of S+1
  // tokens from the start of the stream (consecutive windows share their boundary token so every
  // token after the first is predicted exactly once); JSONL — every example (as in sample()),
  // up to max_windows. Returned as batches of at most `batch` sequences each.
  std::vector<Batch> windows(int64_t seq_len, int64_t max_windows, int64_t batch) const;

 private:
  std::vector<int32_t> stream_;
  std::vector<Example> examples_;
  std::string sha256_, description_;
  int32_t pad_id_ = 0;
};

}  // namespace bitdelta
