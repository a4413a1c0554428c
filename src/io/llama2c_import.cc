#include "io/llama2c_import.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <tuple>
#include <unordered_map>

#include "io/hf_layout.h"
#include "io/safetensors.h"
#include "util/error.h"
#include "util/files.h"
#include "util/mapped_file.h"

namespace bitdelta {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

struct Llama2cHeader {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};

bool is_byte_piece(const std::string& piece) {
  return piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 && piece[5] == '>' &&
         std::isxdigit(static_cast<unsigned char>(piece[3])) &&
         std::isxdigit(static_cast<unsigned char>(piece[4]));
}

std::string to_sentencepiece(const std::string& piece) {
  std::string out;
  for (char c : piece) {
    if (c == ' ') {
      out += "\xe2\x96\x81";  // ▁
    } else {
      out += c;
    }
  }
  return out;
}

size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xe) return 3;
  if ((lead >> 3) == 0x1e) return 4;
  return 1;
}

// Hugging Face tokenizer.json for a sentencepiece-style BPE vocabulary with byte fallback, the
// layout transformers writes for Llama-2 (legacy normalizer Prepend + Replace, no
// pre-tokenizer). Merges are every split of a piece into two pieces, ranked by the piece's score
// (higher first): BPE over them picks the same merges as llama2.c's greedy highest-score loop.
ordered_json build_tokenizer_json(const Llama2cVocab& vocab, size_t* merge_count) {
  const size_t n = vocab.pieces.size();
  std::vector<std::string> hf(n);
  std::vector<bool> mergeable(n, false);
  for (size_t id = 0; id < n; ++id) {
    const std::string& p = vocab.pieces[id];
    if (id == 0) {
      hf[id] = "<unk>";
    } else if (id == 1) {
      hf[id] = "<s>";
    } else if (id == 2) {
      hf[id] = "</s>";
    } else if (is_byte_piece(p)) {
      hf[id] = p;
    } else {
      hf[id] = to_sentencepiece(p);
      mergeable[id] = true;
    }
  }
  std::unordered_map<std::string, size_t> id_of;
  for (size_t id = 0; id < n; ++id) {
    if (!id_of.emplace(hf[id], id).second) {
      fail("the llama2.c tokenizer has the token '{}' twice (ids {} and {})", hf[id],
           id_of[hf[id]], id);
    }
  }
  struct Merge {
    float score;
    size_t merged, left, right;
  };
  std::vector<Merge> merges;
  for (size_t id = 0; id < n; ++id) {
    if (!mergeable[id]) continue;
    const std::string& p = hf[id];
    for (size_t k = utf8_length(static_cast<unsigned char>(p[0])); k < p.size();
         k += utf8_length(static_cast<unsigned char>(p[k]))) {
      auto l = id_of.find(p.substr(0, k));
      auto r = id_of.find(p.substr(k));
      if (l != id_of.end() && r != id_of.end() && mergeable[l->second] && mergeable[r->second]) {
        merges.push_back({vocab.scores[id], id, l->second, r->second});
      }
    }
  }
  std::sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    return std::tie(b.score, a.merged, a.left, a.right) <
           std::tie(a.score, b.merged, b.left, b.right);
  });
  *merge_count = merges.size();

  ordered_json vocab_json = ordered_json::object();
  for (size_t id = 0; id < n; ++id) vocab_json[hf[id]] = id;
  ordered_json merges_json = ordered_json::array();
  for (const auto& m : merges) merges_json.push_back({hf[m.left], hf[m.right]});
  ordered_json added = ordered_json::array();
  for (size_t id = 0; id < 3; ++id) {
    added.push_back({{"id", id},
                     {"content", hf[id]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  const std::string space = "\xe2\x96\x81";
  ordered_json t;
  t["version"] = "1.0";
  t["truncation"] = nullptr;
  t["padding"] = nullptr;
  t["added_tokens"] = added;
  t["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", space}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", space}}}}};
  t["pre_tokenizer"] = nullptr;
  t["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"pair",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
        {{"SpecialToken", {{"id", "<s>"}, {"type_id", 1}}}},
        {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  t["decoder"] = {
      {"type", "Sequence"},
      {"decoders",
       {{{"type", "Replace"}, {"pattern", {{"String", space}}}, {"content", " "}},
        {{"type", "ByteFallback"}},
        {{"type", "Fuse"}},
        {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  t["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", "<unk>"},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", true},
                {"byte_fallback", true},
                {"ignore_merges", false},
                {"vocab", vocab_json},
                {"merges", merges_json}};
  return t;
}

}  // namespace

Llama2cVocab read_llama2c_tokenizer(const fs::path& tokenizer_bin, int64_t vocab_size) {
  const std::string what = tokenizer_bin.string();
  MappedFile file = MappedFile::open(tokenizer_bin);
  const uint8_t* p = file.data();
  const uint8_t* end = p + file.size();
  auto take = [&](void* dst, size_t bytes, const char* item) {
    if (static_cast<size_t>(end - p) < bytes) {
      fail("{}: truncated while reading {}; is this a llama2.c tokenizer.bin for a {}-token "
           "model?",
           what, item, vocab_size);
    }
    std::memcpy(dst, p, bytes);
    p += bytes;
  };
  int32_t max_len = 0;
  take(&max_len, 4, "the header");
  if (max_len <= 0 || max_len > 1024) fail("{}: implausible max token length {}", what, max_len);
  Llama2cVocab vocab;
  for (int64_t i = 0; i < vocab_size; ++i) {
    float score;
    int32_t len;
    take(&score, 4, "a token score");
    take(&len, 4, "a token length");
    if (len < 0 || len > max_len) {
      fail("{}: token {} has length {} (the header says at most {})", what, i, len, max_len);
    }
    std::string piece(static_cast<size_t>(len), '\0');
    take(piece.data(), piece.size(), "token bytes");
    vocab.pieces.push_back(std::move(piece));
    vocab.scores.push_back(score);
  }
  if (p != end) {
    fail("{}: {} bytes left after {} tokens; the tokenizer does not match the model's vocabulary",
         what, end - p, vocab_size);
  }
  return vocab;
}

Llama2cImportResult import_llama2c(const fs::path& model_bin, const fs::path& tokenizer_bin,
                                   const fs::path& out_dir) {
  const std::string what = model_bin.string();
  MappedFile file = MappedFile::open(model_bin);
  Llama2cHeader h{};
  if (file.size() < sizeof h) fail("{}: too short for a llama2.c checkpoint header", what);
  std::memcpy(&h, file.data(), sizeof h);
  const bool shared_classifier = h.vocab_size > 0;
  const int64_t vocab = shared_classifier ? h.vocab_size : -int64_t{h.vocab_size};
  if (h.dim <= 0 || h.hidden_dim <= 0 || h.n_layers <= 0 || h.n_heads <= 0 || h.n_kv_heads <= 0 ||
      vocab <= 0 || h.seq_len <= 0 || h.dim % h.n_heads != 0 || h.n_heads % h.n_kv_heads != 0 ||
      (h.dim / h.n_heads) % 2 != 0) {
    fail("{}: not a valid llama2.c legacy checkpoint (header dim={} hidden_dim={} n_layers={} "
         "n_heads={} n_kv_heads={} vocab_size={} seq_len={})",
         what, h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, h.seq_len);
  }
  ModelConfig c;
  c.family = ModelFamily::kLlama;
  c.model_type = "llama";
  c.hidden_size = h.dim;
  c.intermediate_size = h.hidden_dim;
  c.num_hidden_layers = h.n_layers;
  c.num_attention_heads = h.n_heads;
  c.num_key_value_heads = h.n_kv_heads;
  c.head_dim = h.dim / h.n_heads;
  c.vocab_size = vocab;
  c.max_position_embeddings = h.seq_len;
  c.rms_norm_eps = 1e-5;  // llama2.c's rmsnorm
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = shared_classifier;
  c.torch_dtype = "float32";
  c.bos_token_id = 1;
  c.eos_token_id = 2;

  const int64_t dim = c.hidden_size, hd = c.head_dim, kv_dim = c.kv_dim(), L = c.num_hidden_layers;
  const int64_t ff = c.intermediate_size;
  // Sizes, in floats, of the arrays in the order llama2.c writes them.
  const int64_t rope_table = static_cast<int64_t>(h.seq_len) * hd / 2;
  const int64_t expected_floats = vocab * dim + L * dim + L * dim * dim + 2 * L * kv_dim * dim +
                                  L * dim * dim + L * dim + 3 * L * ff * dim + dim +
                                  2 * rope_table + (shared_classifier ? 0 : vocab * dim);
  const uint64_t expected_bytes = sizeof h + static_cast<uint64_t>(expected_floats) * 4;
  if (file.size() != expected_bytes) {
    fail("{}: {} bytes, but a llama2.c legacy checkpoint with this header needs {} bytes; the "
         "file is truncated or not in the legacy (version 0) format",
         what, file.size(), expected_bytes);
  }
  Llama2cVocab tokens = read_llama2c_tokenizer(tokenizer_bin, vocab);

  const float* w = reinterpret_cast<const float*>(file.data() + sizeof h);
  auto next = [&](int64_t count) {
    const float* start = w;
    w += count;
    return start;
  };
  auto as_bytes = [](const float* f, int64_t count) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(f),
                                    static_cast<size_t>(count) * 4);
  };
  // Interleaved-pair RoPE rows → rotate-half rows, per head.
  auto permute_heads = [&](const float* src, int64_t heads) {
    std::vector<uint8_t> out(static_cast<size_t>(heads * hd * dim) * 4);
    auto* dst = reinterpret_cast<float*>(out.data());
    for (int64_t head = 0; head < heads; ++head) {
      for (int64_t i = 0; i < hd / 2; ++i) {
        for (int64_t j = 0; j < 2; ++j) {
          const float* row = src + (head * hd + 2 * i + j) * dim;
          std::memcpy(dst + (head * hd + j * (hd / 2) + i) * dim, row, dim * 4);
        }
      }
    }
    return out;
  };

  const float* embed = next(vocab * dim);
  const float* rms_att = next(L * dim);
  const float* wq = next(L * dim * dim);
  const float* wk = next(L * kv_dim * dim);
  const float* wv = next(L * kv_dim * dim);
  const float* wo = next(L * dim * dim);
  const float* rms_ffn = next(L * dim);
  const float* w1 = next(L * ff * dim);
  const float* w2 = next(L * dim * ff);
  const float* w3 = next(L * ff * dim);
  const float* rms_final = next(dim);
  next(2 * rope_table);  // precomputed RoPE tables: recomputed from rope_theta instead
  const float* wcls = shared_classifier ? nullptr : next(vocab * dim);

  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  writer.add("model.embed_tokens.weight", DType::kF32, {vocab, dim}, as_bytes(embed, vocab * dim));
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = layer_prefix(l);
    writer.add(p + "input_layernorm.weight", DType::kF32, {dim}, as_bytes(rms_att + l * dim, dim));
    writer.add_owned(p + "self_attn.q_proj.weight", DType::kF32, {dim, dim},
                     permute_heads(wq + l * dim * dim, c.num_attention_heads));
    writer.add_owned(p + "self_attn.k_proj.weight", DType::kF32, {kv_dim, dim},
                     permute_heads(wk + l * kv_dim * dim, c.num_key_value_heads));
    writer.add(p + "self_attn.v_proj.weight", DType::kF32, {kv_dim, dim},
               as_bytes(wv + l * kv_dim * dim, kv_dim * dim));
    writer.add(p + "self_attn.o_proj.weight", DType::kF32, {dim, dim},
               as_bytes(wo + l * dim * dim, dim * dim));
    writer.add(p + "post_attention_layernorm.weight", DType::kF32, {dim},
               as_bytes(rms_ffn + l * dim, dim));
    writer.add(p + "mlp.gate_proj.weight", DType::kF32, {ff, dim},
               as_bytes(w1 + l * ff * dim, ff * dim));
    writer.add(p + "mlp.up_proj.weight", DType::kF32, {ff, dim},
               as_bytes(w3 + l * ff * dim, ff * dim));
    writer.add(p + "mlp.down_proj.weight", DType::kF32, {dim, ff},
               as_bytes(w2 + l * dim * ff, dim * ff));
  }
  writer.add("model.norm.weight", DType::kF32, {dim}, as_bytes(rms_final, dim));
  if (wcls != nullptr) {
    writer.add("lm_head.weight", DType::kF32, {vocab, dim}, as_bytes(wcls, vocab * dim));
  }

  Llama2cImportResult result;
  result.config = c;
  result.parameters = expected_parameter_count(c);
  result.vocab_size = vocab;
  ordered_json tokenizer = build_tokenizer_json(tokens, &result.merges);
  ordered_json tokenizer_config = {
      {"add_bos_token", true},
      {"add_eos_token", false},
      {"bos_token", "<s>"},
      {"eos_token", "</s>"},
      {"unk_token", "<unk>"},
      {"pad_token", nullptr},
      {"legacy", true},
      {"clean_up_tokenization_spaces", false},
      {"model_max_length", h.seq_len},
      {"tokenizer_class", "LlamaTokenizer"},
  };
  ordered_json generation_config = {{"bos_token_id", 1}, {"eos_token_id", 2}};

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) fail("cannot create output folder '{}': {}", out_dir.string(), ec.message());
  writer.write(out_dir / "model.safetensors");
  write_file_atomic(out_dir / "config.json", model_config_to_json(c).dump(2) + "\n");
  write_file_atomic(out_dir / "generation_config.json", generation_config.dump(2) + "\n");
  write_file_atomic(out_dir / "tokenizer.json", tokenizer.dump(2) + "\n");
  write_file_atomic(out_dir / "tokenizer_config.json", tokenizer_config.dump(2) + "\n");
  return result;
}

}  // namespace bitdelta
