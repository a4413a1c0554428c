// export-gguf: the file is read back here by a small GGUF v3 reader written from gguf.h's
// layout (magic, version, counts, typed metadata, tensor infos, 32-byte aligned data) and checked
// against the model it came from: names, reversed dimensions, dtypes, bytes, llama's q/k row
// permutation, and the vocabulary. That llama.cpp itself loads these files and continues a prompt
// exactly as bitdelta does is checked by bench/llamacpp/check_export.sh (it needs llama.cpp
// built, which takes minutes: README, "Benchmarks").
#include "io/gguf_export.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <variant>

#include "io/weight_files.h"
#include "support/test_support.h"
#include "util/error.h"
#include "util/files.h"

namespace bitdelta {
namespace {

namespace fs = std::filesystem;

struct GgufTensor {
  std::vector<uint64_t> dims;
  uint32_t type = 0;
  uint64_t offset = 0;
};
using Value = std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<std::string>,
                           std::vector<int64_t>, std::vector<double>>;
struct GgufFile {
  uint32_t version = 0;
  std::map<std::string, Value> kv;
  std::map<std::string, GgufTensor> tensors;
  std::vector<std::string> order;
  uint64_t data_start = 0;
  std::string bytes;
};

class Reader {
 public:
  explicit Reader(const std::string& b) : b_(b) {}
  template <typename T>
  T get() {
    if (pos_ + sizeof(T) > b_.size()) throw Error("truncated GGUF");
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str() {
    const auto n = get<uint64_t>();
    if (pos_ + n > b_.size()) throw Error("truncated GGUF string");
    std::string s = b_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  Value value(uint32_t type) {
    switch (type) {
      case 0:
        return uint64_t{get<uint8_t>()};
      case 4:
        return uint64_t{get<uint32_t>()};
      case 5:
        return int64_t{get<int32_t>()};
      case 6:
        return double{get<float>()};
      case 7:
        return get<uint8_t>() != 0;
      case 8:
        return str();
      case 10:
        return get<uint64_t>();
      case 9: {
        const auto item = get<uint32_t>();
        const auto n = get<uint64_t>();
        if (item == 8) {
          std::vector<std::string> v;
          for (uint64_t i = 0; i < n; ++i) v.push_back(str());
          return v;
        }
        if (item == 5) {
          std::vector<int64_t> v;
          for (uint64_t i = 0; i < n; ++i) v.push_back(get<int32_t>());
          return v;
        }
        if (item == 6) {
          std::vector<double> v;
          for (uint64_t i = 0; i < n; ++i) v.push_back(get<float>());
          return v;
        }
        throw Error("unexpected array type");
      }
      default:
        throw Error("unexpected value type " + std::to_string(type));
    }
  }
  size_t pos() const { return pos_; }

 private:
  const std::string& b_;
  size_t pos_ = 0;
};

GgufFile read_gguf(const fs::path& path) {
  GgufFile f;
  f.bytes = read_file(path);
  Reader r(f.bytes);
  EXPECT_EQ(f.bytes.substr(0, 4), "GGUF");
  r.get<uint32_t>();
  f.version = r.get<uint32_t>();
  const auto n_tensors = r.get<uint64_t>(), n_kv = r.get<uint64_t>();
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.str();
    const auto type = r.get<uint32_t>();
    EXPECT_FALSE(f.kv.count(key)) << "duplicate key " << key;
    f.kv[key] = r.value(type);
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    std::string name = r.str();
    GgufTensor t;
    const auto dims = r.get<uint32_t>();
    for (uint32_t d = 0; d < dims; ++d) t.dims.push_back(r.get<uint64_t>());
    t.type = r.get<uint32_t>();
    t.offset = r.get<uint64_t>();
    f.order.push_back(name);
    f.tensors[name] = t;
  }
  f.data_start = (r.pos() + 31) / 32 * 32;
  return f;
}

template <typename T>
const T& at(const GgufFile& f, const std::string& key) {
  auto it = f.kv.find(key);
  if (it == f.kv.end()) throw Error("missing key " + key);
  return std::get<T>(it->second);
}

TEST(GgufExport, Stories260KReadsBackAsTheSameLlamaModel) {
  testing::ScratchDir dir;
  const fs::path model = dir / "stories";
  auto r = testing::run_cli(
      "import-llama2c --model " +
      testing::shared_asset("models/stories260K/stories260K.bin").string() + " --tokenizer " +
      testing::shared_asset("models/stories260K/tok512.bin").string() + " --out " + model.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const fs::path out = dir / "stories.gguf";
  r = testing::run_cli("export-gguf --model " + model.string() + " --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("47 tensors"), std::string::npos) << r.out;

  const GgufFile g = read_gguf(out);
  EXPECT_EQ(g.version, 3u);
  EXPECT_EQ(at<std::string>(g, "general.architecture"), "llama");
  EXPECT_EQ(at<uint64_t>(g, "general.alignment"), 32u);
  EXPECT_EQ(at<uint64_t>(g, "llama.embedding_length"), 64u);
  EXPECT_EQ(at<uint64_t>(g, "llama.block_count"), 5u);
  EXPECT_EQ(at<uint64_t>(g, "llama.attention.head_count"), 8u);
  EXPECT_EQ(at<uint64_t>(g, "llama.attention.head_count_kv"), 4u);
  EXPECT_EQ(at<uint64_t>(g, "llama.feed_forward_length"), 172u);
  EXPECT_EQ(at<uint64_t>(g, "llama.context_length"), 512u);
  EXPECT_NEAR(at<double>(g, "llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-12);
  // The byte-fallback vocabulary as sentencepiece-style "llama", scores from the merge order.
  EXPECT_EQ(at<std::string>(g, "tokenizer.ggml.model"), "llama");
  const auto& tokens = at<std::vector<std::string>>(g, "tokenizer.ggml.tokens");
  const auto& types = at<std::vector<int64_t>>(g, "tokenizer.ggml.token_type");
  const auto& scores = at<std::vector<double>>(g, "tokenizer.ggml.scores");
  ASSERT_EQ(tokens.size(), 512u);
  ASSERT_EQ(types.size(), 512u);
  ASSERT_EQ(scores.size(), 512u);
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(types[1], 3) << "control";
  EXPECT_EQ(tokens[3 + 10], "<0x0A>");
  EXPECT_EQ(types[3 + 10], 6) << "byte";
  EXPECT_EQ(at<uint64_t>(g, "tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(at<uint64_t>(g, "tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_FALSE(g.kv.count("tokenizer.ggml.merges"));

  // Tensors: tied embedding (no output), dims reversed, aligned, bytes as in the checkpoint.
  ASSERT_EQ(g.tensors.size(), 47u);
  EXPECT_FALSE(g.tensors.count("output.weight"));
  const WeightFiles w = WeightFiles::open(model);
  const GgufTensor& embd = g.tensors.at("token_embd.weight");
  EXPECT_EQ(embd.dims, (std::vector<uint64_t>{64, 512}));
  EXPECT_EQ(embd.type, 0u) << "F32, as stories260K is";
  auto data_of = [&](const GgufTensor& t, size_t bytes) {
    EXPECT_EQ(t.offset % 32, 0u);
    return std::string_view(g.bytes).substr(g.data_start + t.offset, bytes);
  };
  const TensorView e = w.view("model.embed_tokens.weight");
  EXPECT_EQ(data_of(embd, e.nbytes()),
            std::string_view(reinterpret_cast<const char*>(e.data), e.nbytes()));
  EXPECT_EQ(g.tensors.at("blk.4.ffn_down.weight").dims, (std::vector<uint64_t>{172, 64}));
  EXPECT_EQ(g.tensors.at("blk.0.attn_norm.weight").dims, (std::vector<uint64_t>{64}));

  // q: 8 heads of 8 rows; Hugging Face's row h·8 + part·4 + j is llama.cpp's h·8 + 2j + part.
  for (const auto& [hf, gg, heads] :
       {std::tuple{"model.layers.2.self_attn.q_proj.weight", "blk.2.attn_q.weight", 8},
        std::tuple{"model.layers.2.self_attn.k_proj.weight", "blk.2.attn_k.weight", 4}}) {
    const TensorView v = w.view(hf);
    const size_t row = static_cast<size_t>(v.shape()[1]) * 4;
    const std::string_view out_rows = data_of(g.tensors.at(gg), v.nbytes());
    const auto* in_rows = reinterpret_cast<const char*>(v.data);
    for (int h = 0; h < heads; ++h) {
      for (int part = 0; part < 2; ++part) {
        for (int j = 0; j < 4; ++j) {
          EXPECT_EQ(out_rows.substr((h * 8 + 2 * j + part) * row, row),
                    std::string_view(in_rows + (h * 8 + part * 4 + j) * row, row))
              << gg << " head " << h << " part " << part << " j " << j;
        }
      }
    }
    // v is not permuted.
  }
  const TensorView v = w.view("model.layers.2.self_attn.v_proj.weight");
  EXPECT_EQ(data_of(g.tensors.at("blk.2.attn_v.weight"), v.nbytes()),
            std::string_view(reinterpret_cast<const char*>(v.data), v.nbytes()));
  // The last tensor ends the file.
  const GgufTensor& last = g.tensors.at(g.order.back());
  uint64_t last_bytes = 4;
  for (uint64_t d : last.dims) last_bytes *= d;
  EXPECT_EQ(g.bytes.size(), g.data_start + last.offset + last_bytes);
}

TEST(GgufExport, UnsupportedInputIsRefused) {
  testing::ScratchDir dir;
  EXPECT_NE(testing::error_message([&] { export_gguf(dir / "nothing", dir / "x.gguf"); }), "");
  EXPECT_FALSE(fs::exists(dir / "x.gguf"));
  fs::create_directories(dir / "m");
  testing::write_text(dir / "m" / "config.json", R"({"model_type": "gpt2"})");
  const std::string message =
      testing::error_message([&] { export_gguf(dir / "m", dir / "x.gguf"); });
  EXPECT_FALSE(fs::exists(dir / "x.gguf"));
  EXPECT_FALSE(message.empty());
}

}  // namespace
}  // namespace bitdelta
