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

}  // namespace
}  // namespace bitdelta
