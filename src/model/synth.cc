#include "model/synth.h"

#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "io/hf_layout.h"
#include "io/safetensors.h"
#include "util/error.h"
#include "util/files.h"

namespace bitdelta {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

const std::vector<std::string>& synth_shapes() {
  static const std::vector<std::string> shapes = {"qwen3-0.6b", "qwen3-1.7b", "llama-3.2-1b",
                                                  "tiny", "tiny-llama"};
  return shapes;
}

fs::path shared_assets_dir(const std::string& relative) {
  std::vector<fs::path> looked;
  if (const char* env = std::getenv("BITDELTA_SHARED_ASSETS")) {
    if (fs::exists(fs::path(env) / relative)) return env;
    fail("BITDELTA_SHARED_ASSETS={} holds no {}; point it at the shared assets folder", env,
         relative);
  }
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (fs::path dir = exe.parent_path(); !dir.empty(); dir = dir.parent_path()) {
      looked.push_back(dir / "shared" / "assets");
      if (fs::exists(looked.back() / relative)) return looked.back();
      if (dir == dir.root_path()) break;
    }
  }
#ifdef BITDELTA_SHARED_ASSETS_DIR
  looked.emplace_back(BITDELTA_SHARED_ASSETS_DIR);
  if (fs::exists(looked.back() / relative)) return looked.back();
#endif
  std::vector<std::string> names;
  for (const auto& p : looked) names.push_back(p.string());
  fail(
      "cannot find the shared assets ({} is needed); looked in {}; set BITDELTA_SHARED_ASSETS "
      "to the folder that holds them",
      relative, fmt::join(names, ", "));
}

ModelConfig synth_config(const std::string& like) {
  ModelConfig c;
  auto qwen3 = [&](int64_t hidden, int64_t intermediate) {
    c.family = ModelFamily::kQwen3;
    c.model_type = "qwen3";
    c.hidden_size = hidden;
    c.intermediate_size = intermediate;
    c.num_hidden_layers = 28;
    c.num_attention_heads = 16;
    c.num_key_value_heads = 8;
    c.head_dim = 128;
    c.vocab_size = 151936;
    c.max_position_embeddings = 40960;
    c.rms_norm_eps = 1e-6;
    c.rope_theta = 1000000.0;
    c.tie_word_embeddings = true;
    c.qk_norm = true;
    c.bos_token_id = 151643;
    c.eos_token_id = 151645;
  };
  auto llama3 = [&](int64_t hidden, int64_t intermediate) {  // Llama-3.2-1B's
    c.family = ModelFamily::kLlama;
    c.model_type = "llama";
    c.hidden_size = hidden;
    c.intermediate_size = intermediate;
    c.num_hidden_layers = 16;
    c.num_attention_heads = 32;
    c.num_key_value_heads = 8;
    c.head_dim = 64;
    c.vocab_size = 128256;
    c.max_position_embeddings = 131072;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 500000.0;
    c.tie_word_embeddings = true;
    c.bos_token_id = 128000;
    c.eos_token_id = 128001;
  };
  if (like == "qwen3-0.6b") {
    qwen3(1024, 3072);
  } else if (like == "qwen3-1.7b") {
    qwen3(2048, 6144);
  } else if (like == "llama-3.2-1b") {
    llama3(2048, 8192);
    c.rope_scaling = {RopeScaling::Type::kLlama3, 32.0, 1.0, 4.0, 8192};
  } else if (like == "tiny") {
    qwen3(64, 176);
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 32;
    c.vocab_size = 512;
    c.max_position_embeddings = 2048;
    c.bos_token_id = 256;
    c.eos_token_id = 258;
  } else if (like == "tiny-llama") {  // tiny's widths, Llama-3's family and vocabulary ids
    llama3(64, 176);
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 16;
    c.max_position_embeddings = 2048;
  } else {
    fail(
        "unknown model shape '{}'; synth knows: qwen3-0.6b, qwen3-1.7b, llama-3.2-1b, tiny, "
        "tiny-llama",
        like);
  }
  c.torch_dtype = "bfloat16";
  return c;
}

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

// Uniform values with the given mean and standard deviation, reproducible per tensor name.
void fill_random(std::span<uint8_t> out, DType dtype, uint64_t seed, const std::string& name,
                 float mean, float stddev) {
  uint64_t state = seed ^ fnv1a(name);
  const size_t n = out.size() / dtype_size(dtype);
  const float half_width = stddev * std::sqrt(3.0f);
  std::vector<float> chunk(4096);
  for (size_t done = 0; done < n; done += chunk.size()) {
    const size_t m = std::min(chunk.size(), n - done);
    for (size_t i = 0; i < m; ++i) {
      const float u = static_cast<float>(splitmix64(state) >> 40) * (1.0f / 16777216.0f);
      chunk[i] = mean + (2.0f * u - 1.0f) * half_width;
    }
    convert_from_f32(dtype, chunk.data(), out.data() + done * dtype_size(dtype), m);
  }
}

// GPT-2's reversible byte → printable character map used by byte-level BPE.
std::string byte_level_char(int byte) {
  int code;
  if ((byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || (byte >= 174 && byte <= 255)) {
    code = byte;
  } else {
    int n = 0;
    for (int b = 0; b < byte; ++b) {
      if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) ++n;
    }
    code = 256 + n;
  }
  std::string s;
  if (code < 0x80) {
    s += static_cast<char>(code);
  } else {
    s += static_cast<char>(0xC0 | (code >> 6));
    s += static_cast<char>(0x80 | (code & 0x3F));
  }
  return s;
}

struct SpecialToken {
  int64_t id;
  std::string content;
  bool special;
};

// A byte-level BPE tokenizer whose tokens are the 256 bytes (ids 0..255), plus special tokens.
void write_byte_tokenizer(const fs::path& dir, const std::vector<SpecialToken>& specials,
                          const std::string& bos, const std::string& eos, bool add_bos) {
  ordered_json vocab = ordered_json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level_char(b)] = b;
  ordered_json added = ordered_json::array();
  for (const auto& s : specials) {
    added.push_back({{"id", s.id},
                     {"content", s.content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", s.special}});
  }
  ordered_json byte_level = {{"type", "ByteLevel"},
                             {"add_prefix_space", false},
                             {"trim_offsets", true},
                             {"use_regex", true}};
  ordered_json t = {{"version", "1.0"},
                    {"truncation", nullptr},
                    {"padding", nullptr},
                    {"added_tokens", added},
                    {"normalizer", {{"type", "NFC"}}},
                    {"pre_tokenizer", byte_level},
                    {"post_processor", nullptr},
                    {"decoder", byte_level},
                    {"model",
                     {{"type", "BPE"},
                      {"dropout", nullptr},
                      {"unk_token", nullptr},
                      {"continuing_subword_prefix", ""},
                      {"end_of_word_suffix", ""},
                      {"fuse_unk", false},
                      {"byte_fallback", false},
                      {"ignore_merges", false},
                      {"vocab", vocab},
                      {"merges", ordered_json::array()}}}};
  write_file_atomic(dir / "tokenizer.json", t.dump(2) + "\n");
  ordered_json config = {{"add_bos_token", add_bos},
                         {"bos_token", bos.empty() ? ordered_json(nullptr) : ordered_json(bos)},
                         {"eos_token", eos},
                         {"pad_token", nullptr},
                         {"model_max_length", 131072},
                         {"tokenizer_class", "PreTrainedTokenizerFast"}};
  write_file_atomic(dir / "tokenizer_config.json", config.dump(2) + "\n");
}

void copy_tokenizer(const fs::path& from, const fs::path& to) {
  bool any = false;
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                           "vocab.json", "merges.txt"}) {
    if (fs::exists(from / name)) {
      write_file_atomic(to / name, read_file(from / name));
      any = true;
    }
  }
  if (!any) fail("'{}' holds no tokenizer.json (or vocab.json + merges.txt)", from.string());
}

}  // namespace

SynthResult synth_model(const SynthOptions& options, const fs::path& out_dir) {
  if (!is_float_weight(options.dtype)) fail("synth writes F32, F16 or BF16 weights");
  SynthResult result;
  result.config = synth_config(options.like);
  ModelConfig& c = result.config;
  if (options.hidden_size > 0) c.hidden_size = options.hidden_size;
  if (options.intermediate_size > 0) c.intermediate_size = options.intermediate_size;
  if (options.vocab_size > 0) c.vocab_size = options.vocab_size;
  c.torch_dtype = options.dtype == DType::kBF16  ? "bfloat16"
                  : options.dtype == DType::kF16 ? "float16"
                                                 : "float32";
  // Found (or refused) before anything is written.
  std::optional<fs::path> tokenizer_dir = options.tokenizer_dir;
  if (!tokenizer_dir && !options.generated_tokenizer && c.family == ModelFamily::kQwen3 &&
      options.like != "tiny") {
    tokenizer_dir = shared_assets_dir("tokenizers/qwen3/tokenizer.json") / "tokenizers" / "qwen3";
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) fail("cannot create output folder '{}': {}", out_dir.string(), ec.message());

  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  writer.set_metadata("synthetic",
                      fmt::format("bitdelta synth --like {} --seed {} (hidden {}, intermediate {})",
                                  options.like, options.seed, c.hidden_size, c.intermediate_size));
  for (const auto& t : expected_tensors(c)) {
    const bool is_norm = t.shape.size() == 1 && t.name.find("norm") != std::string::npos;
    const bool is_bias = t.name.size() > 5 && t.name.compare(t.name.size() - 5, 5, ".bias") == 0;
    const float mean = is_norm ? 1.0f : 0.0f;
    const float stddev = is_norm ? 0.05f : is_bias ? 0.01f : 0.02f;  // HF's initializer_range
    writer.add_generated(t.name, options.dtype, t.shape,
                         [=, seed = options.seed, name = t.name](std::span<uint8_t> out) {
                           fill_random(out, options.dtype, seed, name, mean, stddev);
                         });
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    result.parameters += n;
  }
  result.bytes = static_cast<uint64_t>(result.parameters) * dtype_size(options.dtype);
  writer.write(out_dir / "model.safetensors");
  write_file_atomic(out_dir / "config.json", model_config_to_json(c).dump(2) + "\n");
  ordered_json generation = {{"bos_token_id", c.bos_token_id}, {"eos_token_id", c.eos_token_id}};
  write_file_atomic(out_dir / "generation_config.json", generation.dump(2) + "\n");

  if (tokenizer_dir) {
    copy_tokenizer(*tokenizer_dir, out_dir);
    result.tokenizer_source = tokenizer_dir->string();
  } else if (c.family == ModelFamily::kLlama) {
    write_byte_tokenizer(out_dir,
                         {{128000, "<|begin_of_text|>", true},
                          {128001, "<|end_of_text|>", true},
                          {128006, "<|start_header_id|>", true},
                          {128007, "<|end_header_id|>", true},
                          {128008, "<|eom_id|>", true},
                          {128009, "<|eot_id|>", true},
                          {128010, "<|python_tag|>", true}},
                         "<|begin_of_text|>", "<|end_of_text|>", true);
    result.tokenizer_source = "generated byte-level tokenizer with Llama-3 special tokens";
  } else {
    const int64_t base = options.like == "tiny" ? 256 : 151643;
    write_byte_tokenizer(out_dir,
                         {{base, "<|endoftext|>", true},
                          {base + 1, "<|im_start|>", true},
                          {base + 2, "<|im_end|>", true}},
                         "", "<|im_end|>", false);
    result.tokenizer_source = "generated byte-level tokenizer with ChatML special tokens";
  }
  return result;
}

}  // namespace bitdelta
