// Added tokens, special-token handling and the tokenizer's metadata.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "support/test_support.h"
#include "tokenizer_test_util.h"
#include "util/error.h"

namespace bitdelta {
namespace {

TEST(AddedTokens, Qwen3Metadata) {
  const Tokenizer& t = testing::qwen3_tokenizer();
  EXPECT_EQ(t.vocab_size(), 151669);
  EXPECT_EQ(t.num_added_tokens(), 26u);
  EXPECT_EQ(t.num_merges(), 151387u);
  EXPECT_EQ(t.token_id("<|im_start|>"), 151644);
  EXPECT_EQ(t.token_id("Ġhello"), 23811);
  EXPECT_EQ(t.token_id("no such token"), std::nullopt);
  EXPECT_EQ(t.token_text(151645), "<|im_end|>");
  EXPECT_EQ(t.token_text(23811), "Ġhello");
  EXPECT_EQ(t.token_bytes(23811), " hello");
  EXPECT_TRUE(t.is_special(151643));
  EXPECT_FALSE(t.is_special(151667));  // <think> is added but not special
  EXPECT_FALSE(t.is_special(23811));
  EXPECT_EQ(t.bos_id(), std::nullopt);
  EXPECT_EQ(t.eos_id(), 151645);
  EXPECT_EQ(t.pad_id(), 151643);
  EXPECT_FALSE(t.add_bos());
  ASSERT_TRUE(t.chat_template_source().has_value());
  EXPECT_NE(t.chat_template_source()->find("enable_thinking"), std::string::npos);
}

TEST(AddedTokens, Gpt2Metadata) {
  const Tokenizer& t = testing::gpt2_tokenizer();
  EXPECT_EQ(t.vocab_size(), 50257);
  EXPECT_EQ(t.num_merges(), 50000u);
  EXPECT_EQ(t.bos_id(), 50256);
  EXPECT_EQ(t.eos_id(), 50256);
  EXPECT_EQ(t.encode("a<|endoftext|>b"), (std::vector<int32_t>{64, 50256, 65}));
  EXPECT_EQ(t.summary_kind(), "byte-level BPE");
}

TEST(AddedTokens, ParseSpecialFalseTreatsSpecialTokensAsText) {
  const Tokenizer& t = testing::qwen3_tokenizer();
  auto ids = t.encode("<|im_start|>", /*parse_special=*/false);
  EXPECT_GT(ids.size(), 1u);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 151644), 0);
  EXPECT_EQ(t.decode(ids), "<|im_start|>");
  // Non-special added tokens such as <think> are still matched (HF encode_special_tokens).
  EXPECT_EQ(t.encode("<think>", false), (std::vector<int32_t>{151667}));
}

TEST(AddedTokens, DecodeSkipsSpecialTokens) {
  const Tokenizer& t = testing::qwen3_tokenizer();
  auto ids = t.encode("<|im_start|>assistant\n<think>\nx\n</think>\n\nok<|im_end|>");
  EXPECT_EQ(t.decode(ids, true), "assistant\n<think>\nx\n</think>\n\nok");
}

TEST(AddedTokens, DecodeRejectsOutOfRangeIds) {
  const Tokenizer& t = testing::qwen3_tokenizer();
  std::vector<int32_t> bad = {1, 151669};
  EXPECT_THROW(t.decode(bad), Error);
  std::vector<int32_t> negative = {-1};
  EXPECT_THROW(t.decode(negative), Error);
  EXPECT_THROW(t.token_text(200000), Error);
  IncrementalDecoder stream(t);
  EXPECT_THROW(stream.push(151669), Error);
}

TEST(AddedTokens, SettersCopyOnWrite) {
  Tokenizer a = testing::qwen3_tokenizer();
  Tokenizer b = a;
  b.set_eos_id(151643);
  b.set_chat_template_source(std::nullopt);
  EXPECT_EQ(a.eos_id(), 151645);
  EXPECT_EQ(b.eos_id(), 151643);
  EXPECT_TRUE(a.chat_template_source().has_value());
  EXPECT_FALSE(b.chat_template_source().has_value());
  EXPECT_THROW(b.set_bos_id(999999), Error);
}

TEST(AddedTokens, ConcurrentEncodeIsConsistent) {
  const Tokenizer& t = testing::qwen3_tokenizer();
  std::string text;
  for (int i = 0; i < 200; ++i) text += "word" + std::to_string(i) + " thread-safe cache test ";
  auto expected = t.encode(text);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches = 0;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&] {
      for (int r = 0; r < 5; ++r) mismatches += t.encode(text) != expected;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace bitdelta
