#include "io/gguf_export.h"

#include <fmt/format.h>

#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "io/dtype.h"
#include "io/hf_layout.h"
#include "io/model_config.h"
#include "io/weight_files.h"
#include "util/error.h"
#include "util/files.h"

namespace bitdelta {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// gguf.h's value types and ggml's tensor types.
enum GgufType : uint32_t {
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
};
enum GgmlType : uint32_t { kGgmlF32 = 0, kGgmlF16 = 1, kGgmlBF16 = 30 };
constexpr uint64_t kAlignment = 32;  // GGUF_DEFAULT_ALIGNMENT
// llama.cpp's token types (llama_token_type).
enum TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

// The header and metadata, built in memory (the tensors are streamed after it).
class Buffer {
 public:
  void u32(uint32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void i32(int32_t v) { raw(&v, 4); }
  void f32(float v) { raw(&v, 4); }
  void str(std::string_view s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    bytes.insert(bytes.end(), b, b + n);
  }
  std::vector<uint8_t> bytes;
};

class Metadata {
 public:
  void u32(const std::string& key, uint32_t v) {
    begin(key, kU32);
    b_.u32(v);
  }
  void f32(const std::string& key, float v) {
    begin(key, kF32);
    b_.f32(v);
  }
  void boolean(const std::string& key, bool v) {
    begin(key, kBool);
    const uint8_t x = v ? 1 : 0;
    b_.raw(&x, 1);
  }
  void str(const std::string& key, std::string_view v) {
    begin(key, kString);
    b_.str(v);
  }
  void strings(const std::string& key, const std::vector<std::string>& v) {
    begin(key, kArray);
    b_.u32(kString);
    b_.u64(v.size());
    for (const std::string& s : v) b_.str(s);
  }
  void i32s(const std::string& key, const std::vector<int32_t>& v) {
    begin(key, kArray);
    b_.u32(kI32);
    b_.u64(v.size());
    for (int32_t x : v) b_.i32(x);
  }
  void f32s(const std::string& key, const std::vector<float>& v) {
    begin(key, kArray);
    b_.u32(kF32);
    b_.u64(v.size());
    for (float x : v) b_.f32(x);
  }
  int64_t count() const { return count_; }
  const std::vector<uint8_t>& bytes() const { return b_.bytes; }

 private:
  void begin(const std::string& key, uint32_t type) {
    b_.str(key);
    b_.u32(type);
    ++count_;
  }
  Buffer b_;
  int64_t count_ = 0;
};

std::string architecture_of(const ModelConfig& c) {
  if (c.model_type == "llama" || c.model_type == "mistral") return "llama";
  if (c.model_type == "qwen2") return "qwen2";
  if (c.model_type == "qwen3") return "qwen3";
  fail("export-gguf supports llama, mistral, qwen2 and qwen3 models, not '{}'", c.model_type);
}

// llama.cpp's name for a Hugging Face tensor; empty for none.
std::string gguf_name(const std::string& hf) {
  static const std::map<std::string, std::string> top = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"}};
  if (auto it = top.find(hf); it != top.end()) return it->second;
  static const std::map<std::string, std::string> layer = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.q_norm.weight", "attn_q_norm.weight"},
      {"self_attn.k_norm.weight", "attn_k_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"}};
  if (auto p = parse_layer_name(hf)) {
    if (auto it = layer.find(std::string(p->rest)); it != layer.end()) {
      return fmt::format("blk.{}.{}", p->layer, it->second);
    }
  }
  return "";
}

// The vocabulary of tokenizer.json in llama.cpp's terms.
struct Vocab {
  std::string model, pre;
  std::vector<std::string> tokens, merges;
  std::vector<int32_t> types;
  std::vector<float> scores;  // "llama" only
};

Vocab read_vocab(const fs::path& dir, const ModelConfig& config, const std::string& arch) {
  const fs::path file = dir / "tokenizer.json";
  if (!fs::exists(file))
    fail("{} has no tokenizer.json; llama.cpp needs the vocabulary", dir.string());
  const json t = json::parse(read_file(file), nullptr, false);
  if (t.is_discarded() || !t.contains("model") || t["model"].value("type", "") != "BPE") {
    fail("{}: only BPE tokenizers can be exported to GGUF", file.string());
  }
  const json& m = t["model"];
  Vocab v;
  const bool byte_fallback = m.value("byte_fallback", false);
  v.model = byte_fallback ? "llama" : "gpt2";
  v.pre = arch == "qwen2" || arch == "qwen3" ? "qwen2" : byte_fallback ? "" : "llama-bpe";
  std::map<int64_t, std::pair<std::string, int32_t>> by_id;
  for (const auto& [text, id] : m["vocab"].items()) by_id[id.get<int64_t>()] = {text, kNormal};
  if (t.contains("added_tokens")) {
    for (const json& a : t["added_tokens"]) {
      by_id[a["id"].get<int64_t>()] = {a["content"].get<std::string>(),
                                       a.value("special", false) ? kControl : kUserDefined};
    }
  }
  if (m.contains("merges")) {
    for (const json& mg : m["merges"]) {
      v.merges.push_back(mg.is_string()
                             ? mg.get<std::string>()
                             : mg[0].get<std::string>() + " " + mg[1].get<std::string>());
    }
  }
  // sentencepiece-style: a token's score is its merge's priority (earlier merges score higher),
  // which is the order llama.cpp's SPM tokenizer applies them in.
  std::map<std::string, float> merged_score;
  for (size_t r = 0; r < v.merges.size(); ++r) {
    const std::string& mg = v.merges[r];
    const size_t sp = mg.find(' ');
    merged_score.emplace(mg.substr(0, sp) + mg.substr(sp + 1), -static_cast<float>(r));
  }
  const int64_t n =
      std::max<int64_t>(config.vocab_size, by_id.empty() ? 0 : by_id.rbegin()->first + 1);
  for (int64_t id = 0; id < n; ++id) {
    auto it = by_id.find(id);
    if (it == by_id.end()) {  // as llama.cpp's converter fills the embedding's spare rows
      v.tokens.push_back(fmt::format("[PAD{}]", id));
      v.types.push_back(kUnused);
      if (byte_fallback) v.scores.push_back(-1e9f);
      continue;
    }
    const std::string& text = it->second.first;
    int32_t type = it->second.second;
    if (byte_fallback && type == kNormal && text.size() == 6 && text.rfind("<0x", 0) == 0) {
      type = kByte;
    }
    if (byte_fallback && (text == "<unk>")) type = kUnknown;
    v.tokens.push_back(text);
    v.types.push_back(type);
    if (byte_fallback) {
      auto s = merged_score.find(text);
      v.scores.push_back(s != merged_score.end() ? s->second : 0.0f);
    }
  }
  if (byte_fallback) v.merges.clear();  // the "llama" vocabulary merges by score
  return v;
}

// Hugging Face's q/k rows (per head: the first halves of the rotary pairs, then the second) in
// llama.cpp's interleaved order, as convert_hf_to_gguf.py's LlamaModel.permute does.
std::vector<uint8_t> permute_rows(std::span<const uint8_t> data, int64_t rows, int64_t heads,
                                  size_t row_bytes) {
  std::vector<uint8_t> out(data.size());
  const int64_t per_head = rows / heads, half = per_head / 2;
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t part = 0; part < 2; ++part) {
      for (int64_t j = 0; j < half; ++j) {
        const int64_t from = h * per_head + part * half + j, to = h * per_head + j * 2 + part;
        std::memcpy(out.data() + to * row_bytes, data.data() + from * row_bytes, row_bytes);
      }
    }
  }
  return out;
}

uint64_t padded(uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

}  // namespace

GgufExportResult export_gguf(const fs::path& dir, const fs::path& out) {
  const ModelConfig c = load_model_config(dir / "config.json");
  const std::string arch = architecture_of(c);
  const WeightFiles weights = WeightFiles::open(dir);
  const Vocab vocab = read_vocab(dir, c, arch);

  Metadata md;
  md.str("general.architecture", arch);
  md.str("general.name", dir.filename().string());
  md.u32("general.alignment", kAlignment);
  md.u32(arch + ".context_length", static_cast<uint32_t>(c.max_position_embeddings));
  md.u32(arch + ".embedding_length", static_cast<uint32_t>(c.hidden_size));
  md.u32(arch + ".block_count", static_cast<uint32_t>(c.num_hidden_layers));
  md.u32(arch + ".feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  md.u32(arch + ".attention.head_count", static_cast<uint32_t>(c.num_attention_heads));
  md.u32(arch + ".attention.head_count_kv", static_cast<uint32_t>(c.num_key_value_heads));
  md.u32(arch + ".attention.key_length", static_cast<uint32_t>(c.head_dim));
  md.u32(arch + ".attention.value_length", static_cast<uint32_t>(c.head_dim));
  md.f32(arch + ".attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  md.f32(arch + ".rope.freq_base", static_cast<float>(c.rope_theta));
  md.u32(arch + ".vocab_size", static_cast<uint32_t>(vocab.tokens.size()));
  if (arch == "llama") md.u32(arch + ".rope.dimension_count", static_cast<uint32_t>(c.head_dim));
  md.str("tokenizer.ggml.model", vocab.model);
  if (!vocab.pre.empty()) md.str("tokenizer.ggml.pre", vocab.pre);
  md.strings("tokenizer.ggml.tokens", vocab.tokens);
  md.i32s("tokenizer.ggml.token_type", vocab.types);
  if (!vocab.scores.empty()) md.f32s("tokenizer.ggml.scores", vocab.scores);
  if (!vocab.merges.empty()) md.strings("tokenizer.ggml.merges", vocab.merges);
  if (c.bos_token_id >= 0)
    md.u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(c.bos_token_id));
  if (c.eos_token_id >= 0)
    md.u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(c.eos_token_id));

  // Tensor infos: every tensor llama.cpp has a name for, in the checkpoint's order.
  struct Item {
    std::string name;
    const TensorInfo* info;
    GgmlType type;
    uint64_t offset, bytes;
    bool permute;
    int64_t heads;
  };
  std::vector<Item> items;
  uint64_t offset = 0;
  for (const ExpectedTensor& e : expected_tensors(c)) {
    const std::string name = gguf_name(e.name);
    if (name.empty()) fail("{}: no GGUF name for tensor '{}'", dir.string(), e.name);
    const TensorInfo* info = weights.find(e.name);
    if (info == nullptr) fail("{}: tensor '{}' is missing", dir.string(), e.name);
    const bool vector = info->shape.size() == 1;
    const GgmlType type = vector || info->dtype == DType::kF32 ? kGgmlF32
                          : info->dtype == DType::kBF16        ? kGgmlBF16
                          : info->dtype == DType::kF16         ? kGgmlF16
                                                               : kGgmlF32;
    const uint64_t bytes = static_cast<uint64_t>(info->numel()) * (type == kGgmlF32 ? 4 : 2);
    const bool q = e.name.ends_with("q_proj.weight"), k = e.name.ends_with("k_proj.weight");
    items.push_back({name, info, type, offset, bytes, arch == "llama" && (q || k),
                     q ? c.num_attention_heads : c.num_key_value_heads});
    offset = padded(offset + bytes);
  }

  Buffer header;
  header.raw("GGUF", 4);
  header.u32(3);
  header.u64(items.size());
  header.u64(static_cast<uint64_t>(md.count()));
  header.raw(md.bytes().data(), md.bytes().size());
  for (const Item& it : items) {
    header.str(it.name);
    header.u32(static_cast<uint32_t>(it.info->shape.size()));
    for (auto d = it.info->shape.rbegin(); d != it.info->shape.rend(); ++d) header.u64(*d);
    header.u32(it.type);
    header.u64(it.offset);
  }
  header.bytes.resize(padded(header.bytes.size()), 0);

  AtomicFile file(out);
  file.write(header.bytes);
  const std::vector<uint8_t> zeros(kAlignment, 0);
  uint64_t written = 0;
  for (const Item& it : items) {
    const TensorView view = weights.view(it.info->name);
    std::vector<uint8_t> converted;
    std::span<const uint8_t> data = view.bytes();
    const bool same = (it.type == kGgmlF32 && view.dtype() == DType::kF32) ||
                      (it.type == kGgmlBF16 && view.dtype() == DType::kBF16) ||
                      (it.type == kGgmlF16 && view.dtype() == DType::kF16);
    if (!same) {  // vectors (norms, biases) as F32
      const std::vector<float> f = view.to_f32();
      converted.resize(f.size() * 4);
      std::memcpy(converted.data(), f.data(), converted.size());
      data = converted;
    }
    std::vector<uint8_t> permuted;
    if (it.permute) {
      const int64_t rows = it.info->shape[0];
      permuted = permute_rows(data, rows, it.heads, data.size() / static_cast<size_t>(rows));
      data = permuted;
    }
    if (written < it.offset) file.write({zeros.data(), static_cast<size_t>(it.offset - written)});
    file.write(data);
    written = it.offset + data.size();
  }
  file.commit();

  GgufExportResult r;
  r.architecture = arch;
  r.tokenizer_model = vocab.model;
  r.tensors = static_cast<int64_t>(items.size());
  r.metadata = md.count();
  r.vocab = static_cast<int64_t>(vocab.tokens.size());
  r.bytes = fs::file_size(out);
  return r;
}

}  // namespace bitdelta
