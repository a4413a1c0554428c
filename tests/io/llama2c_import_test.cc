#include "io/llama2c_import.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "io/model_config.h"
#include "io/weight_files.h"
#include "support/test_support.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace bitdelta {
namespace {

using testing::ScratchDir;

// llama2.c's encode() from run.c, written out independently: optional dummy-prefix space, one
// token per UTF-8 character (or its bytes as <0xNN> = byte + 3), then repeatedly merge the
// adjacent pair whose concatenation is the vocabulary entry with the highest score (leftmost on
// ties), until no pair merges.
std::vector<int32_t> llama2c_encode(const Llama2cVocab& vocab, const std::string& text) {
  static std::unordered_map<const Llama2cVocab*, std::unordered_map<std::string, int32_t>> cache;
  auto& lookup = cache[&vocab];
  if (lookup.empty()) {
    for (size_t i = 0; i < vocab.pieces.size(); ++i) lookup.emplace(vocab.pieces[i], int32_t(i));
  }
  auto find = [&](const std::string& s) {
    auto it = lookup.find(s);
    return it == lookup.end() ? -1 : it->second;
  };
  std::vector<int32_t> tokens;
  if (!text.empty()) tokens.push_back(find(" "));
  for (size_t i = 0; i < text.size();) {
    size_t len = 1;
    while (i + len < text.size() && len < 4 &&
           (static_cast<unsigned char>(text[i + len]) & 0xC0) == 0x80) {
      ++len;
    }
    int32_t id = find(text.substr(i, len));
    if (id >= 0) {
      tokens.push_back(id);
    } else {
      for (size_t j = 0; j < len; ++j) tokens.push_back(static_cast<unsigned char>(text[i + j]) + 3);
    }
    i += len;
  }
  while (true) {
    float best_score = -1e10f;
    int32_t best_id = -1;
    size_t best_idx = 0;
    for (size_t i = 0; i + 1 < tokens.size(); ++i) {
      int32_t id = find(vocab.pieces[tokens[i]] + vocab.pieces[tokens[i + 1]]);
      if (id != -1 && vocab.scores[id] > best_score) {
        best_score = vocab.scores[id];
        best_id = id;
        best_idx = i;
      }
    }
    if (best_id == -1) break;
    tokens[best_idx] = best_id;
    tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(best_idx) + 1);
  }
  return tokens;
}

class Llama2cImport : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    result_ = import_llama2c(testing::shared_asset("models/stories260K/stories260K.bin"),
                             testing::shared_asset("models/stories260K/tok512.bin"),
                             dir_->path() / "model");
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::filesystem::path model_dir() { return dir_->path() / "model"; }
  static ScratchDir* dir_;
  static Llama2cImportResult result_;
};
ScratchDir* Llama2cImport::dir_ = nullptr;
Llama2cImportResult Llama2cImport::result_;

TEST_F(Llama2cImport, WritesAHuggingFaceLlamaFolder) {
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json",
                        "tokenizer_config.json", "generation_config.json"}) {
    EXPECT_TRUE(std::filesystem::exists(model_dir() / f)) << f;
  }
  ModelConfig c = load_model_config(model_dir() / "config.json");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.num_hidden_layers, 5);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_TRUE(c.tie_word_embeddings);  // llama2.c's shared classifier
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  auto w = WeightFiles::open(model_dir());
  EXPECT_FALSE(w.contains("lm_head.weight"));
  EXPECT_EQ(w.names().size(), 2u + 9u * 5u);
  EXPECT_EQ(result_.parameters, 260032);  // "stories260K"
}

// The q/k rows are the llama2.c rows permuted per head (interleaved pairs → halves); every other
// tensor is a byte-for-byte copy.
TEST_F(Llama2cImport, PermutesQueryAndKeyRowsOnly) {
  MappedFile bin = MappedFile::open(testing::shared_asset("models/stories260K/stories260K.bin"));
  const float* raw = reinterpret_cast<const float*>(bin.data() + 28);
  const int64_t dim = 64, vocab = 512, L = 5, hd = 8, kv_dim = 32;
  const float* embed = raw;
  const float* wq = raw + vocab * dim + L * dim;
  const float* wk = wq + L * dim * dim;
  auto w = WeightFiles::open(model_dir());
  auto emb = w.view("model.embed_tokens.weight").to_f32();
  EXPECT_EQ(std::memcmp(emb.data(), embed, emb.size() * 4), 0);
  for (int64_t l = 0; l < L; ++l) {
    auto q = w.view("model.layers." + std::to_string(l) + ".self_attn.q_proj.weight").to_f32();
    auto k = w.view("model.layers." + std::to_string(l) + ".self_attn.k_proj.weight").to_f32();
    for (int64_t row = 0; row < dim; ++row) {
      int64_t head = row / hd, r = row % hd;
      int64_t half = r / (hd / 2), i = r % (hd / 2);  // HF row: half*hd/2 + i
      int64_t src_row = head * hd + 2 * i + half;     // llama2.c row: 2i + half
      ASSERT_EQ(q[row * dim], wq[l * dim * dim + src_row * dim]) << "layer " << l << " row " << row;
      if (row < kv_dim) {
        ASSERT_EQ(k[row * dim + 5], wk[l * kv_dim * dim + src_row * dim + 5]);
      }
    }
  }
}

TEST_F(Llama2cImport, TokenizerEncodesExactlyAsLlama2c) {
  Llama2cVocab vocab =
      read_llama2c_tokenizer(testing::shared_asset("models/stories260K/tok512.bin"), 512);
  Tokenizer tokenizer = Tokenizer::from_folder(model_dir());
  EXPECT_EQ(tokenizer.bos_id(), 1);
  EXPECT_EQ(tokenizer.eos_id(), 2);
  EXPECT_EQ(tokenizer.vocab_size(), 512);
  // Paragraphs and lines of every shared corpus, plus awkward cases.
  std::vector<std::string> texts = {"Once upon a time", "", " ", "  two  spaces ",
                                    "tab\there", "new\nline", "café naïve – “quotes”",
                                    "emoji 🎉 and 中文", "Lily's mom said, \"Lily, let's go!\""};
  for (const char* corpus : {"corpora/tinystories_sample.txt", "corpora/tinyshakespeare.txt",
                             "corpora/web_sentences_en.txt"}) {
    std::string all = testing::read_text(testing::shared_asset(corpus));
    all = all.substr(0, 40000);
    std::istringstream lines(all);
    std::string line, paragraph;
    while (std::getline(lines, line)) {
      texts.push_back(line);
      if (line.empty()) {
        texts.push_back(paragraph);
        paragraph.clear();
      } else {
        paragraph += line + "\n";
      }
    }
  }
  size_t tokens = 0;
  for (const auto& text : texts) {
    auto expected = llama2c_encode(vocab, text);
    auto actual = tokenizer.encode(text);
    ASSERT_EQ(actual, expected) << "text: '" << text << "'";
    tokens += actual.size();
    // llama2.c decodes by stripping the dummy-prefix space after BOS.
    EXPECT_EQ(tokenizer.decode(actual), text);
  }
  EXPECT_GT(tokens, 10000u);
}

TEST_F(Llama2cImport, GoldenOutputDecodesToGoldenText) {
  std::istringstream ids_text(
      testing::read_text(testing::shared_asset("models/stories260K/greedy_t0_n256.ids")));
  std::vector<int32_t> ids;
  for (int32_t id; ids_text >> id;) ids.push_back(id);
  ASSERT_EQ(ids.size(), 257u);
  Tokenizer tokenizer = Tokenizer::from_folder(model_dir());
  std::string text = tokenizer.decode(std::span(ids).subspan(1));
  std::string golden =
      testing::read_text(testing::shared_asset("models/stories260K/greedy_t0_n256.txt"));
  // run.c ends its output with one newline of its own.
  EXPECT_EQ(text + "\n", golden);
}

TEST(Llama2cImportErrors, RejectsBadInputAndWritesNothing) {
  ScratchDir dir;
  std::string bin = testing::read_text(testing::shared_asset("models/stories260K/stories260K.bin"));
  testing::write_text(dir / "trunc.bin", bin.substr(0, bin.size() - 4));
  auto tok = testing::shared_asset("models/stories260K/tok512.bin");
  try {
    import_llama2c(dir / "trunc.bin", tok, dir / "out");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  testing::write_text(dir / "garbage.bin", std::string(100, '\xff'));
  EXPECT_THROW(import_llama2c(dir / "garbage.bin", tok, dir / "out"), Error);
  std::string t = testing::read_text(tok);
  testing::write_text(dir / "tok.bin", t.substr(0, t.size() / 2));
  try {
    import_llama2c(testing::shared_asset("models/stories260K/stories260K.bin"), dir / "tok.bin",
                   dir / "out");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "out"));
}

}  // namespace
}  // namespace bitdelta
