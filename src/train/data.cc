#include "train/data.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <span>

#include "tokenizer/chat_template.h"
#include "util/error.h"
#include "util/files.h"
#include "util/sha256.h"

namespace bitdelta {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A generator that depends on (seed, index) only, distinct per purpose.
std::mt19937_64 seeded_rng(uint64_t seed, uint64_t index, uint64_t purpose) {
  return std::mt19937_64(splitmix64(splitmix64(splitmix64(seed) ^ index) ^ purpose));
}
constexpr uint64_t kTextOffsets = 1, kEpochShuffle = 2;

// Where `line` of `path` comes from, for error messages ("chat.jsonl:12").
std::string where(const std::filesystem::path& path, int64_t line) {
  return fmt::format("{}:{}", path.string(), line);
}

std::string trimmed(std::string_view s) {
  const size_t begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return "";
  return std::string(s.substr(begin, s.find_last_not_of(" \t\r\n") - begin + 1));
}

void append(Example& ex, const std::vector<int32_t>& ids, bool target) {
  ex.tokens.insert(ex.tokens.end(), ids.begin(), ids.end());
  ex.loss_mask.insert(ex.loss_mask.end(), ids.size(), target ? 1 : 0);
}

// A string field of a JSON object; Error naming the line when it is missing or not a string.
std::string string_field(const nlohmann::json& j, const char* key, const std::string& at,
                         const char* what) {
  auto it = j.find(key);
  if (it == j.end()) fail("{}: {} has no \"{}\"", at, what, key);
  if (!it->is_string())
    fail("{}: \"{}\" of {} must be a string, not {}", at, key, what, it->type_name());
  return it->get<std::string>();
}

// The incremental rendering failed: the template renders earlier turns differently from the
// last one (Qwen3 drops their think blocks).
struct NotIncremental {
  size_t upto;
};

// Rethrows a template's error as this example's: prefixed with its file and line once.
[[noreturn]] void fail_at(const Error& e, const std::string& at) {
  const std::string message = e.what();
  if (message.starts_with(at)) throw e;
  fail("{}: {}", at, message);
}

// Renders the conversation one assistant turn at a time: the text up to and including the
// generation prompt is context, the rest of the turn (answer and end-of-turn) is the target.
// Each rendering must extend the previous one, or the segments would not add up to the whole
// (throws NotIncremental).
Example incremental_chat_example(const std::vector<ChatMessage>& messages, const ChatTemplate& chat,
                                 const Tokenizer& tokenizer, const std::string& at) {
  Example ex;
  std::string rendered;
  auto extend = [&](const std::string& text, bool target, size_t upto) {
    if (!text.starts_with(rendered)) throw NotIncremental{upto};
    append(ex, tokenizer.encode(std::string_view(text).substr(rendered.size())), target);
    rendered = text;
  };
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "assistant") continue;
    const std::vector<ChatMessage> before(messages.begin(),
                                          messages.begin() + static_cast<std::ptrdiff_t>(i));
    const std::vector<ChatMessage> through(messages.begin(),
                                           messages.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    try {
      extend(chat.render(before, {.add_generation_prompt = true}), false, i - 1);
      extend(chat.render(through, {.add_generation_prompt = false}), true, i);
    } catch (const Error& e) {
      fail_at(e, at);
    }
  }
  return ex;
}

// The examples of one conversation: one with every assistant turn a target where the template
// renders incrementally; otherwise one example per assistant turn, each rendered as the model
// sees that turn at inference time (the conversation up to it, the turn itself last), with only
// that turn as the target.
std::vector<Example> chat_examples(const std::vector<ChatMessage>& messages,
                                   const ChatTemplate& chat, const Tokenizer& tokenizer,
                                   const std::string& at) {
  bool any_assistant = false;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "assistant") continue;
    if (i == 0)
      fail("{}: the conversation starts with an assistant message; put a user message first", at);
    any_assistant = true;
  }
  if (!any_assistant)
    fail("{}: the conversation has no assistant message, so nothing to learn", at);
  try {
    return {incremental_chat_example(messages, chat, tokenizer, at)};
  } catch (const NotIncremental&) {
  }
  std::vector<Example> out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "assistant") continue;
    const std::vector<ChatMessage> through(messages.begin(),
                                           messages.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    try {
      const std::string context =
          chat.render(std::vector<ChatMessage>(messages.begin(),
                                               messages.begin() + static_cast<std::ptrdiff_t>(i)),
                      {.add_generation_prompt = true});
      const std::string whole = chat.render(through, {.add_generation_prompt = false});
      if (!whole.starts_with(context)) throw NotIncremental{i};
      Example turn;
      append(turn, tokenizer.encode(context), false);
      append(turn, tokenizer.encode(std::string_view(whole).substr(context.size())), true);
      out.push_back(std::move(turn));
    } catch (const NotIncremental& e) {
      fail(
          "{}: the {} chat template does not render the conversation up to message {} as an "
          "extension of the messages before it plus a generation prompt, so that reply cannot "
          "be masked; split the conversation",
          at, chat.name(), e.upto);
    } catch (const Error& e) {
      fail_at(e, at);
    }
  }
  return out;
}

void check_example(const Example& ex, const std::string& at) {
  if (ex.tokens.size() < 2 ||
      std::accumulate(ex.loss_mask.begin() + 1, ex.loss_mask.end(), 0) == 0) {
    fail("{}: the example has no tokens to learn from (empty response?)", at);
  }
}

Example prompt_response_example(const std::string& prompt, const std::string& response,
                                const Tokenizer& tokenizer) {
  Example ex;
  if (tokenizer.add_bos() && tokenizer.bos_id()) append(ex, {*tokenizer.bos_id()}, false);
  append(ex, tokenizer.encode(prompt, false), false);
  append(ex, tokenizer.encode(response, false), true);
  if (tokenizer.eos_id()) append(ex, {*tokenizer.eos_id()}, true);
  return ex;
}

// The longest prefix of at most `n` bytes that does not cut a UTF-8 character.
std::string_view utf8_prefix(std::string_view text, size_t n) {
  if (n >= text.size()) return text;
  while (n > 0 && (static_cast<uint8_t>(text[n]) & 0xC0) == 0x80) --n;
  return text.substr(0, n);
}

// Writes sequence `b` of `batch`: the first S+1 tokens of `ex`, padded.
void fill_example(const Example& ex, int64_t b, Batch& batch) {
  const int64_t S = batch.seq_len;
  const int64_t n = std::min<int64_t>(static_cast<int64_t>(ex.tokens.size()), S + 1);
  for (int64_t i = 0; i + 1 < n; ++i) {
    batch.tokens[b * S + i] = ex.tokens[i];
    batch.targets[b * S + i] = ex.loss_mask[i + 1] ? ex.tokens[i + 1] : -1;
  }
  if (n == 1) batch.tokens[b * S] = ex.tokens[0];
}

// Writes sequence `b` of `batch` from stream[offset, offset + S + 1), clipped to the stream.
void fill_window(const std::vector<int32_t>& stream, int64_t offset, int64_t b, Batch& batch) {
  const int64_t S = batch.seq_len;
  const int64_t n = std::min<int64_t>(S, static_cast<int64_t>(stream.size()) - 1 - offset);
  for (int64_t i = 0; i < n; ++i) {
    batch.tokens[b * S + i] = stream[offset + i];
    batch.targets[b * S + i] = stream[offset + i + 1];
  }
}

Batch empty_batch(int64_t batch, int64_t seq_len, int32_t pad) {
  if (batch < 1 || seq_len < 1) {
    fail("batch size and sequence length must be at least 1 (got {} and {})", batch, seq_len);
  }
  Batch out{batch, seq_len, {}, {}};
  out.tokens.assign(static_cast<size_t>(batch * seq_len), pad);
  out.targets.assign(static_cast<size_t>(batch * seq_len), -1);
  return out;
}

}  // namespace

std::vector<ChatMessage> parse_chat_messages(const nlohmann::json& list, const std::string& at) {
  if (!list.is_array() || list.empty()) {
    fail("{}: \"messages\" must be a non-empty array of {{\"role\", \"content\"}} objects", at);
  }
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string what = fmt::format("message {}", i);
    if (!list[i].is_object())
      fail("{}: {} must be an object with \"role\" and \"content\"", at, what);
    ChatMessage m{string_field(list[i], "role", at, what.c_str()),
                  string_field(list[i], "content", at, what.c_str()), ""};
    if (m.role != "system" && m.role != "user" && m.role != "assistant") {
      fail("{}: {} has role \"{}\"; roles must be system, user or assistant", at, what, m.role);
    }
    if (list[i].contains("reasoning_content")) {
      m.reasoning_content = string_field(list[i], "reasoning_content", at, what.c_str());
    }
    messages.push_back(std::move(m));
  }
  return messages;
}

int64_t Batch::target_count() const {
  return std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t >= 0; });
}

void parse_token_range(const std::string& text, DataOptions* options) {
  const size_t colon = text.find(':');
  double begin = 0, end = 0;
  auto parse = [&](std::string_view part, double* value) {
    auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), *value);
    return !part.empty() && ec == std::errc() && ptr == part.data() + part.size();
  };
  if (colon == std::string::npos || !parse(std::string_view(text).substr(0, colon), &begin) ||
      !parse(std::string_view(text).substr(colon + 1), &end) || !(0 <= begin) || !(begin < end) ||
      !(end <= 1)) {
    fail("token range '{}' is not A:B with fractions 0 <= A < B <= 1 (e.g. 0:0.9 or 0.9:1)", text);
  }
  options->range_begin = begin;
  options->range_end = end;
}

TrainingData TrainingData::load_for_model(const std::filesystem::path& path,
                                          const std::filesystem::path& model_dir,
                                          std::string_view model_type,
                                          const DataOptions& options) {
  const Tokenizer tokenizer = Tokenizer::from_folder(model_dir);
  std::optional<ChatTemplate> chat;
  if (path.extension() == ".jsonl" && options.chat_format != "auto") {
    chat = ChatTemplate::select(tokenizer, model_type, options.chat_format);
  } else if (path.extension() == ".jsonl" && tokenizer.chat_template_source()) {
    chat = ChatTemplate::detect(tokenizer, model_type);
  }
  return load(path, tokenizer, chat ? &*chat : nullptr, options);
}

TrainingData TrainingData::load(const std::filesystem::path& path, const Tokenizer& tokenizer,
                                const ChatTemplate* chat, const DataOptions& options) {
  if (!(0 <= options.range_begin && options.range_begin < options.range_end &&
        options.range_end <= 1)) {
    fail("token range [{}, {}) is not within [0, 1]", options.range_begin, options.range_end);
  }
  if (options.max_chars && *options.max_chars < 1) {
    fail("the character limit must be at least 1 (got {})", *options.max_chars);
  }
  const std::string bytes = read_file(path);
  TrainingData data;
  data.sha256_ = sha256_hex({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  data.pad_id_ = tokenizer.pad_id().value_or(tokenizer.eos_id().value_or(0));
  const std::string name = path.filename().string();

  if (path.extension() != ".jsonl") {
    std::string_view text = bytes;
    if (options.max_chars) text = utf8_prefix(text, static_cast<size_t>(*options.max_chars));
    std::vector<int32_t> all;
    if (tokenizer.add_bos() && tokenizer.bos_id()) all.push_back(*tokenizer.bos_id());
    // A corpus is text: a "<s>" written in it is not a control token.
    const std::vector<int32_t> encoded = tokenizer.encode(text, false);
    all.insert(all.end(), encoded.begin(), encoded.end());
    const auto n = static_cast<double>(all.size());
    const auto begin = static_cast<int64_t>(std::floor(options.range_begin * n));
    const auto end = static_cast<int64_t>(std::floor(options.range_end * n));
    data.stream_.assign(all.begin() + begin, all.begin() + end);
    data.description_ =
        fmt::format("{}{}, tokens [{}, {}) of {}", name,
                    text.size() < bytes.size() ? fmt::format(" (first {} bytes)", text.size()) : "",
                    begin, end, all.size());
    return data;
  }

  int64_t line_number = 0;
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t eol = bytes.find('\n', pos);
    if (eol == std::string::npos) eol = bytes.size();
    const std::string line = trimmed(std::string_view(bytes).substr(pos, eol - pos));
    pos = eol + 1;
    ++line_number;
    if (line.empty()) continue;
    const std::string at = where(path, line_number);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      fail("{}: not valid JSON ({}); each line must be one JSON object", at, e.what());
    }
    if (!j.is_object()) fail("{}: expected a JSON object, found {}", at, j.type_name());
    Example ex;
    if (j.contains("messages")) {
      const std::vector<ChatMessage> messages = parse_chat_messages(j["messages"], at);
      if (chat == nullptr) {
        fail(
            "{}: \"messages\" needs a chat template and this model has none; pass --chat-format "
            "plain (\"User: …\" / \"Assistant: …\" lines, docs/personalization.md) or a template "
            "name, "
            "or use {{\"prompt\", \"response\"}} lines or a plain text file",
            at);
      }
      for (Example& e : chat_examples(messages, *chat, tokenizer, at)) {
        check_example(e, at);
        data.examples_.push_back(std::move(e));
      }
      continue;
    } else if (j.contains("prompt")) {
      const char* reply =
          j.contains("completion") && !j.contains("response") ? "completion" : "response";
      const std::string prompt = string_field(j, "prompt", at, "the example");
      const std::string response = string_field(j, reply, at, "the example");
      ex = chat != nullptr ? chat_examples({{"user", prompt, ""}, {"assistant", response, ""}},
                                           *chat, tokenizer, at)
                                 .front()
                           : prompt_response_example(prompt, response, tokenizer);
    } else {
      std::vector<std::string> keys;
      for (const auto& item : j.items()) keys.push_back(item.key());
      fail(
          "{}: expected {{\"messages\": [...]}} or {{\"prompt\": ..., \"response\": ...}}, found "
          "keys [{}]",
          at, fmt::join(keys, ", "));
    }
    check_example(ex, at);
    data.examples_.push_back(std::move(ex));
  }
  if (data.examples_.empty()) fail("{}: no examples (the file has no JSON lines)", path.string());
  data.description_ =
      fmt::format("{}, {} examples, {} tokens ({} targets)", name, data.examples_.size(),
                  data.num_tokens(), data.num_target_tokens());
  return data;
}

int64_t TrainingData::num_tokens() const {
  if (is_text()) return static_cast<int64_t>(stream_.size());
  int64_t n = 0;
  for (const auto& ex : examples_) n += static_cast<int64_t>(ex.tokens.size());
  return n;
}

int64_t TrainingData::num_target_tokens() const {
  if (is_text()) return std::max<int64_t>(0, static_cast<int64_t>(stream_.size()) - 1);
  int64_t n = 0;
  // The first token of an example has nothing before it to be predicted from.
  for (const auto& ex : examples_) {
    n += std::accumulate(ex.loss_mask.begin() + 1, ex.loss_mask.end(), int64_t{0});
  }
  return n;
}

std::string TrainingData::describe() const { return description_; }

Batch TrainingData::sample(int64_t step, int64_t batch, int64_t seq_len, uint64_t seed) const {
  Batch out = empty_batch(batch, seq_len, pad_id_);
  if (is_text()) {
    const auto n = static_cast<int64_t>(stream_.size());
    if (n < seq_len + 1) {
      fail(
          "{} has {} tokens, fewer than the {} a training window needs (sequence length + 1); "
          "use a shorter sequence length or more data",
          description_, n, seq_len + 1);
    }
    std::mt19937_64 rng = seeded_rng(seed, static_cast<uint64_t>(step), kTextOffsets);
    std::uniform_int_distribution<int64_t> offset(0, n - seq_len - 1);
    for (int64_t b = 0; b < batch; ++b) fill_window(stream_, offset(rng), b, out);
    return out;
  }
  const auto n = static_cast<int64_t>(examples_.size());
  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t index = step * batch + b, epoch = index / n;
    if (epoch != order_epoch) {
      order.resize(static_cast<size_t>(n));
      std::iota(order.begin(), order.end(), 0);
      std::mt19937_64 rng = seeded_rng(seed, static_cast<uint64_t>(epoch), kEpochShuffle);
      std::shuffle(order.begin(), order.end(), rng);
      order_epoch = epoch;
    }
    fill_example(examples_[order[index % n]], b, out);
  }
  return out;
}

Batch TrainingData::example_batch(int64_t index, int64_t seq_len) const {
  BD_CHECK(!is_text() && index >= 0 && index < static_cast<int64_t>(examples_.size()));
  Batch out = empty_batch(1, seq_len, pad_id_);
  fill_example(examples_[static_cast<size_t>(index)], 0, out);
  return out;
}

std::vector<Batch> TrainingData::windows(int64_t seq_len, int64_t max_windows,
                                         int64_t batch) const {
  empty_batch(batch, seq_len, pad_id_);  // validates the sizes
  int64_t count = 0;
  const auto n = static_cast<int64_t>(is_text() ? stream_.size() : examples_.size());
  if (is_text()) {
    if (n < 2)
      fail("{} has {} token(s): too short to evaluate (at least 2 needed)", description_, n);
    count = (n - 1 + seq_len - 1) / seq_len;
  } else {
    count = n;
  }
  if (max_windows > 0) count = std::min(count, max_windows);
  std::vector<Batch> batches;
  for (int64_t first = 0; first < count; first += batch) {
    const int64_t size = std::min(batch, count - first);
    Batch out = empty_batch(size, seq_len, pad_id_);
    for (int64_t b = 0; b < size; ++b) {
      if (is_text()) {
        fill_window(stream_, (first + b) * seq_len, b, out);
      } else {
        fill_example(examples_[first + b], b, out);
      }
    }
    batches.push_back(std::move(out));
  }
  return batches;
}

}  // namespace bitdelta
