// decode(encode(x)) on the shared corpora: NFC(x) for Qwen3 (its normalizer), x for GPT-2.
#include <gtest/gtest.h>

#include "support/test_support.h"
#include "tokenizer/unicode_util.h"
#include "tokenizer_test_util.h"
#include "util/files.h"

namespace bitdelta {
namespace {

using testing::shared_asset;

class CorpusRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(CorpusRoundTrip, Qwen3) {
  std::string text = read_file(shared_asset("corpora/" + GetParam()));
  const Tokenizer& t = testing::qwen3_tokenizer();
  auto ids = t.encode(text);
  EXPECT_GT(ids.size(), text.size() / 8);
  EXPECT_EQ(t.decode(ids), tok::unicode_normalize(text, tok::NormalForm::kNfc));
}

TEST_P(CorpusRoundTrip, Gpt2) {
  std::string text = read_file(shared_asset("corpora/" + GetParam()));
  const Tokenizer& t = testing::gpt2_tokenizer();
  EXPECT_EQ(t.decode(t.encode(text)), text);
}

INSTANTIATE_TEST_SUITE_P(Corpora, CorpusRoundTrip,
                         ::testing::Values("tinyshakespeare.txt", "tinystories_sample.txt",
                                           "web_sentences_en.txt"),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           return param_info.param.substr(0, param_info.param.find('.'));
                         });

TEST(RoundTrip, NfcIsApplied) {
  const Tokenizer& t = testing::qwen3_tokenizer();
  EXPECT_EQ(t.decode(t.encode("e\xCC\x81")), "\xC3\xA9");  // e + combining acute -> é
}

TEST(RoundTrip, InvalidUtf8InputIsRepaired) {
  const Tokenizer& t = testing::qwen3_tokenizer();
  EXPECT_EQ(t.decode(t.encode("a\xFF"
                              "b")),
            "a\xEF\xBF\xBD"
            "b");
}

}  // namespace
}  // namespace bitdelta
