// Corrupt and unsupported tokenizer files give an Error that names the file and the problem.
#include <gtest/gtest.h>

#include "support/test_support.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace bitdelta {
namespace {

using testing::ScratchDir;
using testing::write_text;

// A minimal valid byte-level tokenizer.json with `patch` spliced into the top-level object.
std::string tokenizer_json(const std::string& model, const std::string& extra = "") {
  return R"({"version": "1.0", "added_tokens": [], "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "decoder": {"type": "ByteLevel"})" +
         extra + R"(, "model": )" + model + "}";
}
const char* kGoodModel =
    R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";

// Loads `text` from a file and returns the error message ("" if it loaded).
std::string load_error(const std::string& text) {
  ScratchDir dir;
  write_text(dir / "tokenizer.json", text);
  try {
    Tokenizer::from_folder(dir.path());
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("tokenizer.json"), std::string::npos) << "no file name: " << message;
    return message;
  }
  return "";
}

void expect_error(const std::string& text, const std::string& part) {
  std::string message = load_error(text);
  EXPECT_NE(message.find(part), std::string::npos)
      << "expected \"" << part << "\" in: " << (message.empty() ? "(loaded fine)" : message);
}

TEST(TokenizerErrors, ValidMinimalFileLoads) {
  EXPECT_EQ(load_error(tokenizer_json(kGoodModel)), "");
  ScratchDir dir;
  write_text(dir / "tokenizer.json", tokenizer_json(kGoodModel));
  Tokenizer t = Tokenizer::from_folder(dir.path());
  EXPECT_EQ(t.encode("ab"), (std::vector<int32_t>{2}));
}

TEST(TokenizerErrors, CorruptJson) {
  expect_error("{\"model\": {", "not valid JSON");
  expect_error("", "not valid JSON");
  expect_error("[1, 2]", "JSON object");
  expect_error(tokenizer_json(kGoodModel).substr(0, 120), "not valid JSON");
}

TEST(TokenizerErrors, MissingOrBrokenModel) {
  expect_error(R"({"version": "1.0"})", "\"model\" section is missing");
  expect_error(tokenizer_json(R"({"type": "BPE", "merges": []})"), "model.vocab");
  expect_error(tokenizer_json(R"({"type": "BPE", "vocab": {"a": "x"}, "merges": []})"),
               "integer id");
  expect_error(tokenizer_json(R"({"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []})"),
               "ids must be unique");
  expect_error(tokenizer_json(R"({"type": "BPE", "vocab": {"a": 0}, "merges": ["a q"]})"),
               "not in the vocab");
  expect_error(tokenizer_json(R"({"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]})"),
               "produces \"ab\"");
  expect_error(tokenizer_json(R"({"type": "BPE", "vocab": {"a": 0}, "merges": ["a"]})"),
               "two tokens");
  expect_error(
      tokenizer_json(R"({"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<unk>"})"),
      "unk_token");
}

TEST(TokenizerErrors, UnsupportedFeatures) {
  expect_error(tokenizer_json(R"({"type": "WordPiece", "vocab": {}})"), "model type \"WordPiece\"");
  expect_error(tokenizer_json(R"({"type": "Unigram", "vocab": []})"), "model type \"Unigram\"");
  expect_error(tokenizer_json(R"({"type": "BPE", "dropout": 0.1, "vocab": {}, "merges": []})"),
               "dropout");
  std::string base = tokenizer_json(kGoodModel);
  auto with = [&](const std::string& key, const std::string& value) {
    std::string text = base;
    size_t pos = text.find("\"" + key + "\"");
    size_t end = text.find(key == "normalizer" ? ",\n" : "}", pos);
    if (key == "normalizer") return text.replace(pos, end - pos, "\"normalizer\": " + value);
    return text.replace(pos, end - pos + 1, "\"" + key + "\": " + value);
  };
  expect_error(with("normalizer", R"({"type": "Lowercase"})"), "normalizer type \"Lowercase\"");
  expect_error(with("pre_tokenizer", R"({"type": "Whitespace"})"),
               "pre_tokenizer type \"Whitespace\"");
  expect_error(with("decoder", R"({"type": "WordPiece"})"), "decoder type \"WordPiece\"");
  expect_error(with("pre_tokenizer",
                    R"({"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated"})"),
               "regex");
  expect_error(with("pre_tokenizer",
                    R"({"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Contiguous"})"),
               "Contiguous");
}

TEST(TokenizerErrors, MissingFiles) {
  ScratchDir dir;
  EXPECT_THROW(Tokenizer::from_folder(dir.path()), Error);
  EXPECT_THROW(Tokenizer::from_tokenizer_json(dir / "nope.json"), Error);
  write_text(dir / "vocab.json", R"({"a": 0, "b": 1})");
  write_text(dir / "merges.txt", "#version: 0.2\na b\n");
  try {
    Tokenizer::from_folder(dir.path());
    FAIL() << "merges name a token missing from the vocab";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"ab\""), std::string::npos) << e.what();
  }
  write_text(dir / "merges.txt", "#version: 0.2\na b c\n");
  EXPECT_THROW(Tokenizer::from_folder(dir.path()), Error);
}

TEST(TokenizerErrors, BadTokenizerConfig) {
  ScratchDir dir;
  write_text(dir / "tokenizer.json", tokenizer_json(kGoodModel));
  write_text(dir / "tokenizer_config.json", "{not json");
  EXPECT_THROW(Tokenizer::from_folder(dir.path()), Error);
  write_text(dir / "tokenizer_config.json", R"({"eos_token": "ab", "chat_template": 5})");
  EXPECT_THROW(Tokenizer::from_folder(dir.path()), Error);
  write_text(
      dir / "tokenizer_config.json",
      R"({"eos_token": {"content": "ab"}, "add_bos_token": true, "chat_template": [{"name": "default", "template": "T"}]})");
  Tokenizer t = Tokenizer::from_folder(dir.path());
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_TRUE(t.add_bos());
  EXPECT_EQ(t.chat_template_source(), "T");
}

}  // namespace
}  // namespace bitdelta
