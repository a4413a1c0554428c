// The imported stories260K reproduces llama2.c's greedy output token for token.
#include <gtest/gtest.h>

#include <sstream>

#include "io/llama2c_import.h"
#include "model/generate.h"
#include "model/transformer.h"
#include "support/test_support.h"

namespace bitdelta {
namespace {

using testing::ScratchDir;

class Stories260K : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    import_llama2c(testing::shared_asset("models/stories260K/stories260K.bin"),
                   testing::shared_asset("models/stories260K/tok512.bin"), dir_->path());
  }
  static void TearDownTestSuite() { delete dir_; }
  static ScratchDir* dir_;
};
ScratchDir* Stories260K::dir_ = nullptr;

std::vector<int32_t> golden_ids() {
  std::istringstream in(
      testing::read_text(testing::shared_asset("models/stories260K/greedy_t0_n256.ids")));
  std::vector<int32_t> ids;
  for (int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

TEST_F(Stories260K, GreedyDecodingReproducesLlama2c) {
  auto model = Transformer::load(dir_->path());
  Tokenizer tokenizer = Tokenizer::from_folder(dir_->path());
  std::vector<int32_t> golden = golden_ids();
  ASSERT_EQ(golden.size(), 257u);
  ASSERT_EQ(golden[0], 1);
  GenerateOptions options;
  options.max_tokens = 256;  // run.c stops only at BOS, never at EOS
  ThreadPool pool(2);
  std::string streamed;
  GenerateResult r = generate(*model, &tokenizer, std::span(golden).first(1), options,
                              [&](std::string_view t) { streamed += t; }, pool);
  std::vector<int32_t> expected(golden.begin() + 1, golden.end());
  EXPECT_EQ(r.tokens, expected);
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(r.text + "\n",
            testing::read_text(testing::shared_asset("models/stories260K/greedy_t0_n256.txt")));
}

TEST_F(Stories260K, StopStringEndsGenerationBeforeIt) {
  auto model = Transformer::load(dir_->path());
  Tokenizer tokenizer = Tokenizer::from_folder(dir_->path());
  std::vector<int32_t> bos = {1};
  ThreadPool pool(1);
  GenerateOptions options;
  options.max_tokens = 100;
  options.stop_strings = {"Lily"};
  std::string streamed;
  GenerateResult r = generate(*model, &tokenizer, bos, options,
                              [&](std::string_view t) { streamed += t; }, pool);
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(r.text, "Once upon a time, there was a little girl named ");
  EXPECT_EQ(streamed, r.text);
}

TEST_F(Stories260K, StopIdEndsGenerationAndSampledRunsAreReproducible) {
  auto model = Transformer::load(dir_->path());
  Tokenizer tokenizer = Tokenizer::from_folder(dir_->path());
  std::vector<int32_t> bos = {1};
  ThreadPool pool(2);
  GenerateOptions options;
  options.max_tokens = 50;
  options.stop_ids = {golden_ids()[3]};  // the third generated token
  GenerateResult r = generate(*model, &tokenizer, bos, options, nullptr, pool);
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(r.tokens, (std::vector<int32_t>{golden_ids()[1], golden_ids()[2]}));

  GenerateOptions sampled;
  sampled.max_tokens = 40;
  sampled.sampling.temperature = 0.9f;
  sampled.sampling.top_p = 0.9f;
  sampled.sampling.seed = 11;
  GenerateResult a = generate(*model, &tokenizer, bos, sampled, nullptr, pool);
  GenerateResult b = generate(*model, &tokenizer, bos, sampled, nullptr, pool);
  EXPECT_EQ(a.tokens, b.tokens);
  sampled.sampling.seed = 12;
  GenerateResult c = generate(*model, &tokenizer, bos, sampled, nullptr, pool);
  EXPECT_NE(a.tokens, c.tokens);
  EXPECT_EQ(a.finish_reason, "length");
  EXPECT_EQ(a.tokens.size(), 40u);
}

}  // namespace
}  // namespace bitdelta
