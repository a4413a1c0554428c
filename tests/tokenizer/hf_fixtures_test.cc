// Ids and decodes from the Hugging Face `tokenizers` library itself (fixtures written by
// tools/gen_tokenizer_fixtures.mjs): the real Qwen3 tokenizer on varied texts, and hand-built
// sentencepiece-style tokenizers (legacy Prepend/Replace normalizer, Metaspace first/always,
// byte fallback, unk, lstrip/rstrip/single_word added tokens).
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "support/test_support.h"
#include "tokenizer_test_util.h"
#include "util/files.h"

namespace bitdelta {
namespace {

using nlohmann::json;
using testing::test_data;

void check_cases(const Tokenizer& tokenizer, const json& cases, const std::string& label) {
  ASSERT_TRUE(cases.is_array());
  ASSERT_FALSE(cases.empty());
  for (const json& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const auto expected = c["ids"].get<std::vector<int32_t>>();
    auto ids = tokenizer.encode(text);
    EXPECT_EQ(ids, expected) << label << " text: \"" << text << "\"";
    EXPECT_EQ(tokenizer.decode(expected), c["decoded"].get<std::string>())
        << label << " text: \"" << text << "\"";
    EXPECT_EQ(tokenizer.decode(expected, /*skip_special=*/true),
              c["decoded_skip_special"].get<std::string>())
        << label << " text: \"" << text << "\"";
  }
}

TEST(HfFixtures, Qwen3) {
  json cases = json::parse(read_file(test_data("tokenizer/qwen3_hf.json")));
  EXPECT_GE(cases.size(), 40u);
  check_cases(testing::qwen3_tokenizer(), cases, "qwen3");
}

TEST(HfFixtures, ChatMarkupIds) {
  EXPECT_EQ(testing::qwen3_tokenizer().encode("<|im_start|>user\nhi<|im_end|>"),
            (std::vector<int32_t>{151644, 872, 198, 6023, 151645}));
}

class SentencepieceFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(SentencepieceFixture, MatchesHf) {
  const std::string variant = GetParam();
  json all = json::parse(read_file(test_data("tokenizer/spm_hf.json")));
  Tokenizer t =
      Tokenizer::from_tokenizer_json(test_data("tokenizer/spm_" + variant + ".tokenizer.json"));
  check_cases(t, all.at(variant), variant);
}

INSTANTIATE_TEST_SUITE_P(Variants, SentencepieceFixture,
                         ::testing::Values("legacy", "metaspace_first", "metaspace_always"));

TEST(HfFixtures, SentencepieceSummary) {
  Tokenizer legacy =
      Tokenizer::from_tokenizer_json(test_data("tokenizer/spm_legacy.tokenizer.json"));
  EXPECT_EQ(legacy.summary_kind(), "sentencepiece BPE (byte fallback)");
  EXPECT_EQ(legacy.token_text(3), "<0x00>");
  EXPECT_EQ(legacy.token_bytes(3), std::string(1, '\0'));
  EXPECT_TRUE(legacy.is_special(1));
  EXPECT_EQ(legacy.num_added_tokens(), 6u);
  EXPECT_EQ(testing::qwen3_tokenizer().summary_kind(), "byte-level BPE");
}

// A 300 KB text without any pre-tokenizer split is one BPE word: the merge loop must stay
// O(n log n).
TEST(HfFixtures, LongSentencepieceWordIsFast) {
  Tokenizer t = Tokenizer::from_tokenizer_json(test_data("tokenizer/spm_legacy.tokenizer.json"));
  std::string text;
  while (text.size() < 300000) text += "hello world the and héllo 😀 ";
  auto start = std::chrono::steady_clock::now();
  auto ids = t.encode(text);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 1.0);
  EXPECT_EQ(t.decode(ids), text);
}

}  // namespace
}  // namespace bitdelta
