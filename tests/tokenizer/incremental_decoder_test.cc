// Streaming decode: token-by-token output concatenates to decode() and every piece is valid UTF-8.
#include <gtest/gtest.h>

#include "support/test_support.h"
#include "tokenizer/unicode_util.h"
#include "tokenizer_test_util.h"

namespace bitdelta {
namespace {

void check_stream(const Tokenizer& t, const std::vector<int32_t>& ids, bool skip_special = false) {
  IncrementalDecoder stream(t, skip_special);
  std::string all;
  for (size_t i = 0; i < ids.size(); ++i) {
    std::string piece = stream.push(ids[i]);
    EXPECT_TRUE(tok::is_valid_utf8(piece)) << "after id #" << i << " (" << ids[i] << ")";
    all += piece;
  }
  std::string rest = stream.flush();
  EXPECT_TRUE(tok::is_valid_utf8(rest));
  all += rest;
  EXPECT_EQ(all, t.decode(ids, skip_special));
}

TEST(IncrementalDecoder, Qwen3EmojiAndCjkSplitAcrossByteTokens) {
  const Tokenizer& t = testing::qwen3_tokenizer();
  std::string text = "Hi 😀🎉 family 👨‍👩‍👧‍👦, 中文字符 and 한국어 ok";
  auto ids = t.encode(text);
  // The emoji need several byte-level tokens each, so some pushes must hold bytes back.
  EXPECT_GT(ids.size(), 12u);
  check_stream(t, ids);
  IncrementalDecoder stream(t);
  size_t empty_pushes = 0;
  for (int32_t id : ids) empty_pushes += stream.push(id).empty();
  EXPECT_GT(empty_pushes, 0u);
}

TEST(IncrementalDecoder, Qwen3SkipSpecial) {
  const Tokenizer& t = testing::qwen3_tokenizer();
  check_stream(t, t.encode("<|im_start|>user\nhé 😀<|im_end|>"), /*skip_special=*/true);
  check_stream(t, t.encode("<|im_start|>user\nhé 😀<|im_end|>"), /*skip_special=*/false);
}

TEST(IncrementalDecoder, InvalidBytesBecomeReplacementCharacters) {
  const Tokenizer& t = testing::qwen3_tokenizer();
  // Byte-level tokens for 0xF0 0x9F (an emoji cut short), then 'a', then a lone 0xE4 at the end.
  const auto& table = tok::byte_level_table();
  auto byte_id = [&](uint8_t b) { return *t.token_id(table.byte_to_utf8[b]); };
  std::vector<int32_t> ids = {byte_id(0xF0), byte_id(0x9F), *t.token_id("a"), byte_id(0xE4)};
  check_stream(t, ids);
  EXPECT_EQ(t.decode(ids),
            "\xEF\xBF\xBD"
            "a\xEF\xBF\xBD");
}

TEST(IncrementalDecoder, SentencepieceByteFallback) {
  Tokenizer t =
      Tokenizer::from_tokenizer_json(testing::test_data("tokenizer/spm_legacy.tokenizer.json"));
  auto ids = t.encode(" hello 😀 中文 world<s>the</s>");
  check_stream(t, ids);
  check_stream(t, ids, /*skip_special=*/true);
  Tokenizer m = Tokenizer::from_tokenizer_json(
      testing::test_data("tokenizer/spm_metaspace_always.tokenizer.json"));
  check_stream(m, m.encode("hello world and the"));
}

// A continuation decoded in the context of its prompt: prompt text + streamed text must equal the
// decode of all ids, split at every point (a completion's text keeps its leading space).
void check_continuation(const Tokenizer& t, const std::vector<int32_t>& ids) {
  for (size_t split = 1; split < ids.size(); ++split) {
    std::vector<int32_t> prompt(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(split));
    IncrementalDecoder stream(t, false, prompt);
    std::string text;
    for (size_t i = split; i < ids.size(); ++i) text += stream.push(ids[i]);
    text += stream.flush();
    const std::string whole = t.decode(ids);
    const std::string head = t.decode(prompt);
    if (!whole.starts_with(head)) continue;  // the prompt ends inside a character
    EXPECT_EQ(head + text, whole) << "split after id #" << split;
  }
}

TEST(IncrementalDecoder, ContinuationKeepsTheSpaceAfterThePrompt) {
  // Sentencepiece drops the leading space of the first token of a text ("▁time" → "time"),
  // but not of a token that continues one.
  Tokenizer spm =
      Tokenizer::from_tokenizer_json(testing::test_data("tokenizer/spm_legacy.tokenizer.json"));
  const auto prompt = spm.encode("Once upon a");
  const auto more = spm.encode("time");  // "▁time": the dummy prefix makes it a word start
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), more.begin(), more.end());
  ASSERT_EQ(spm.decode(all), "Once upon a time");
  IncrementalDecoder alone(spm);
  IncrementalDecoder after(spm, false, prompt);
  std::string a, b;
  for (size_t i = prompt.size(); i < all.size(); ++i) {
    a += alone.push(all[i]);
    b += after.push(all[i]);
  }
  EXPECT_EQ(a + alone.flush(), "time");  // a text of its own: the chat reply's rule
  EXPECT_EQ(b + after.flush(), " time");
  check_continuation(spm, spm.encode(" hello 😀 中文 world<s>the</s> and more"));
  Tokenizer m = Tokenizer::from_tokenizer_json(
      testing::test_data("tokenizer/spm_metaspace_always.tokenizer.json"));
  check_continuation(m, m.encode("hello world and the"));
  check_continuation(testing::qwen3_tokenizer(),
                     testing::qwen3_tokenizer().encode("Once upon a time 😀 中文, there"));
  check_continuation(testing::gpt2_tokenizer(),
                     testing::gpt2_tokenizer().encode("Once upon a time “quotes”"));
}

TEST(IncrementalDecoder, Gpt2Corpus) {
  const Tokenizer& t = testing::gpt2_tokenizer();
  check_stream(t, t.encode("Ünïcödé text, emoji 😀 and “quotes” — dashes"));
}

}  // namespace
}  // namespace bitdelta
