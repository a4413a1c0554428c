// llama.cpp's tokenizer vectors (tests/test-tokenizer-0 format): the .inp file holds inputs each
// followed by "\n__ggml_vocab_test__\n"; the .out file has one line of expected ids per input.
#include <gtest/gtest.h>

#include <sstream>

#include "support/test_support.h"
#include "tokenizer_test_util.h"
#include "util/files.h"

namespace bitdelta {
namespace {

using testing::shared_asset;

std::vector<std::string> split(const std::string& text, const std::string& sep) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (true) {
    size_t hit = text.find(sep, pos);
    if (hit == std::string::npos) {
      parts.push_back(text.substr(pos));
      return parts;
    }
    parts.push_back(text.substr(pos, hit - pos));
    pos = hit + sep.size();
  }
}

std::string ids_to_string(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) {
    s += ' ';  // appended separately: GCC 12's -Wrestrict misfires on `" " + std::string`
    s += std::to_string(id);
  }
  return s;
}

void check_vectors(const Tokenizer& tokenizer, const std::string& name) {
  std::string inp = read_file(shared_asset("tokenizer-tests/" + name + ".inp"));
  std::string out = read_file(shared_asset("tokenizer-tests/" + name + ".out"));
  std::vector<std::string> inputs = split(inp, "\n__ggml_vocab_test__\n");
  std::vector<std::string> expected = split(out, "\n");
  // Both files end with their separator, leaving one empty trailing element.
  ASSERT_EQ(inputs.back(), "");
  ASSERT_EQ(expected.back(), "");
  inputs.pop_back();
  expected.pop_back();
  ASSERT_EQ(inputs.size(), expected.size());
  ASSERT_GT(inputs.size(), 40u);
  size_t passed = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    std::string got = ids_to_string(tokenizer.encode(inputs[i]));
    EXPECT_EQ(got, expected[i]) << "vector " << i << " input: \"" << inputs[i] << "\"";
    passed += got == expected[i];
    // Every vector also round-trips through decode.
    EXPECT_EQ(tokenizer.decode(tokenizer.encode(inputs[i])), inputs[i]) << "vector " << i;
  }
  EXPECT_EQ(passed, inputs.size());
}

TEST(GgmlVectors, Gpt2) { check_vectors(testing::gpt2_tokenizer(), "ggml-vocab-gpt-2.gguf"); }

TEST(GgmlVectors, Qwen2VectorsWithQwen3Tokenizer) {
  check_vectors(testing::qwen3_tokenizer(), "ggml-vocab-qwen2.gguf");
}

}  // namespace
}  // namespace bitdelta
