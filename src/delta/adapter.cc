#include "delta/adapter.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "io/hf_layout.h"
#include "util/error.h"
#include "util/log.h"

namespace bitdelta {

namespace fs = std::filesystem;

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

std::shared_ptr<Adapter> Adapter::open(const fs::path& path, ThreadPool* pool) {
  std::shared_ptr<Adapter> adapter(new Adapter(SafetensorsFile::open(path)));
  const std::string what = path.string();
  const auto& meta = adapter->file_.metadata();
  auto get = [&](const char* key) -> const std::string& {
    auto it = meta.find(key);
    if (it == meta.end()) {
      fail("{}: not a valid BitDelta adapter: metadata '{}' is missing", what, key);
    }
    return it->second;
  };
  if (meta.count("format") == 0 || meta.at("format") != "bitdelta") {
    fail("{}: not a BitDelta adapter (its safetensors metadata has no format=bitdelta)", what);
  }
  // Damage anywhere (a metadata value included) is reported as damage, before any field is read.
  adapter->checksums_verified_ = adapter->file_.verify_checksums(pool) == ChecksumStatus::kVerified;
  if (get("format_version") != "1") {
    fail("{}: adapter format_version {} is not supported; this build reads format_version 1 "
         "(upgrade bitdelta, or re-create the adapter)",
         what, get("format_version"));
  }
  if (!adapter->checksums_verified_) {
    spdlog::warn(
        "{}: this adapter carries no checksums (written before bitdelta added them), so "
        "damage to its data cannot be detected; re-create it with this version to "
        "add them",
        what);
  }
  const std::string& fingerprint = get("base_fingerprint");
  if (fingerprint.size() != 64 ||
      fingerprint.find_first_not_of("0123456789abcdef") != std::string::npos) {
    fail("{}: base_fingerprint must be 64 lowercase hex digits", what);
  }
  adapter->id_ = AdapterId::parse(get("adapter_id"));
  std::map<std::string, Entry> entries;
  for (const TensorInfo& t : adapter->file_.tensors()) {
    const std::string& n = t.name;
    if (ends_with(n, ".signs")) {
      if (t.dtype != DType::kU8 || t.shape.size() != 2) {
        fail("{}: '{}' must be U8 [rows, ceil(cols/8)]", what, n);
      }
      entries[n.substr(0, n.size() - 6)].signs = &t;
    } else if (ends_with(n, ".scale")) {
      if (t.dtype != DType::kF32 || t.shape.size() != 1) fail("{}: '{}' must be F32 [1] or [rows]", what, n);
      entries[n.substr(0, n.size() - 6)].scale = &t;
    } else if (ends_with(n, ".delta")) {
      if (t.dtype != DType::kF32 && t.dtype != DType::kBF16) {
        fail("{}: '{}' must be F32 or BF16", what, n);
      }
      entries[n.substr(0, n.size() - 6)].delta = &t;
    } else {
      fail("{}: tensor '{}' is not part of the format (names end in .signs, .scale or .delta)",
           what, n);
    }
  }
  for (auto& [name, e] : entries) {
    e.base_name = name;
    if ((e.signs == nullptr) != (e.scale == nullptr)) {
      fail("{}: '{}' needs both .signs and .scale", what, name);
    }
    if (e.signs != nullptr && e.delta != nullptr) {
      fail("{}: '{}' has both a 1-bit and an exact delta", what, name);
    }
    if (e.scale != nullptr) {
      const int64_t n = e.scale->shape[0];
      if (n != 1 && n != e.signs->shape[0]) {
        fail("{}: '{}.scale' has {} values; it needs 1 (per matrix) or {} (per row)", what, name,
             n, e.signs->shape[0]);
      }
      std::vector<float> scales = adapter->file_.view(*e.scale).to_f32();
      for (float s : scales) {
        if (!std::isfinite(s) || s < 0) {
          fail("{}: '{}.scale' holds {}; scales must be finite and ≥ 0 (the file is corrupt)",
               what, name, s);
        }
      }
    }
    if (e.delta != nullptr) {
      std::vector<float> values = adapter->file_.view(*e.delta).to_f32();
      for (float v : values) {
        if (!std::isfinite(v)) fail("{}: '{}.delta' holds a non-finite value", what, name);
      }
    }
    adapter->entries_.push_back(e);
  }
  if (adapter->entries_.empty()) fail("{}: the adapter holds no tensors", what);
  return adapter;
}

SignMatrix Adapter::sign_matrix(const Entry& e, int64_t cols) {
  TensorView bits = file_.view(*e.signs);
  TensorView scale = file_.view(*e.scale);
  const float* scales = reinterpret_cast<const float*>(scale.data);
  // A scale tensor follows its sign bytes in the file, so it is 4-byte aligned only when the
  // bytes before it add up to a multiple of 4; otherwise read it through a small aligned copy.
  if (reinterpret_cast<uintptr_t>(scale.data) % alignof(float) != 0) {
    scale_copies_.push_back(scale.to_f32());
    scales = scale_copies_.back().data();
  }
  return SignMatrix{bits.data, e.signs->shape[0], cols, scales, e.scale->shape[0] > 1};
}

void Adapter::check_base(const WeightFiles& base, BaseFingerprints& fingerprints,
                         ThreadPool& pool) const {
  const std::string what = file_.path().string();
  std::vector<std::string> names;
  for (const Entry& e : entries_) {
    const TensorInfo* b = base.find(e.base_name);
    if (b == nullptr) {
      fail("{}: the adapter changes '{}', which this base model ({}) does not have; it was made "
           "for base '{}'",
           what, e.base_name, base.dir().string(), metadata().count("base_model") ? metadata().at("base_model") : "?");
    }
    names.push_back(e.base_name);
  }
  const std::string actual = fingerprints.fingerprint(names, pool);
  if (actual != base_fingerprint()) {
    fail("{}: this adapter was made for base '{}' (fingerprint {}…), not for the model in {} "
         "(fingerprint {}…); use it with the base it was compressed against",
         what, metadata().count("base_model") ? metadata().at("base_model") : "?",
         base_fingerprint().substr(0, 12), base.dir().string(), actual.substr(0, 12));
  }
  for (const Entry& e : entries_) {
    const TensorInfo* b = base.find(e.base_name);
    if (e.delta != nullptr && e.delta->shape != b->shape) {
      fail("{}: '{}.delta' has shape [{}], the base tensor [{}]", what, e.base_name,
           fmt::join(e.delta->shape, ", "), fmt::join(b->shape, ", "));
    }
    if (e.signs != nullptr) {
      if (b->shape.size() != 2) fail("{}: '{}' is not a matrix; it cannot have signs", what, e.base_name);
      const int64_t rows = b->shape[0], cols = b->shape[1];
      if (e.signs->shape != std::vector<int64_t>{rows, (cols + 7) / 8}) {
        fail("{}: '{}.signs' has shape [{}], but the base [{}, {}] needs [{}, {}]", what,
             e.base_name, fmt::join(e.signs->shape, ", "), rows, cols, rows, (cols + 7) / 8);
      }
      if (cols % 8 != 0) {
        const uint8_t padding = static_cast<uint8_t>(0xff << (cols % 8));
        const uint8_t* bits = file_.view(*e.signs).data;
        for (int64_t r = 0; r < rows; ++r) {
          if (bits[r * ((cols + 7) / 8) + (cols + 7) / 8 - 1] & padding) {
            fail("{}: '{}.signs' has padding bits set in row {} (the file is corrupt)", what,
                 e.base_name, r);
          }
        }
      }
    }
  }
}

void Adapter::bind(const Transformer& model, BaseFingerprints& fingerprints, ThreadPool& pool) {
  check_base(model.files(), fingerprints, pool);
  const ModelConfig& c = model.config();
  const ModelWeights& base = model.weights();
  const std::string what = file_.path().string();
  AdapterWeights w;
  w.layers.resize(static_cast<size_t>(c.num_hidden_layers));

  auto merged = [&](const Entry& e, const std::vector<float>& base_vector) {
    if (e.delta == nullptr) fail("{}: '{}' must be stored exactly (.delta)", what, e.base_name);
    std::vector<float> v = file_.view(*e.delta).to_f32();
    for (size_t i = 0; i < v.size(); ++i) v[i] += base_vector[i];
    return v;
  };
  auto linear_delta = [&](const Entry& e, LinearDelta* d, const WeightMatrix& base_w) {
    if (e.signs != nullptr) {
      d->signs = sign_matrix(e, base_w.cols);
    } else {
      TensorView v = file_.view(*e.delta);
      d->dense = WeightMatrix{v.dtype(), v.data, base_w.rows, base_w.cols};
    }
  };
  for (const Entry& e : entries_) {
    if (e.base_name == "model.embed_tokens.weight") {
      linear_delta(e, &w.embed, base.embed);
      continue;
    }
    if (e.base_name == "lm_head.weight") {
      linear_delta(e, &w.lm_head, base.lm_head);
      continue;
    }
    if (e.base_name == "model.norm.weight") {
      w.final_norm = merged(e, base.final_norm);
      continue;
    }
    auto parsed = parse_layer_name(e.base_name);
    if (!parsed || parsed->layer >= c.num_hidden_layers) {
      fail("{}: the adapter changes '{}', which this engine does not apply", what, e.base_name);
    }
    const int64_t l = parsed->layer;
    const std::string part(parsed->rest);
    const LayerWeights& bl = base.layers[static_cast<size_t>(l)];
    LayerDelta& d = w.layers[static_cast<size_t>(l)];
    struct LinearSlot {
      const char* name;
      LinearDelta LayerDelta::*delta;
      const Linear LayerWeights::*base;
    };
    static const LinearSlot kSlots[] = {
        {"self_attn.q_proj", &LayerDelta::q, &LayerWeights::q},
        {"self_attn.k_proj", &LayerDelta::k, &LayerWeights::k},
        {"self_attn.v_proj", &LayerDelta::v, &LayerWeights::v},
        {"self_attn.o_proj", &LayerDelta::o, &LayerWeights::o},
        {"mlp.gate_proj", &LayerDelta::gate, &LayerWeights::gate},
        {"mlp.up_proj", &LayerDelta::up, &LayerWeights::up},
        {"mlp.down_proj", &LayerDelta::down, &LayerWeights::down}};
    bool placed = false;
    for (const auto& slot : kSlots) {
      if (part == std::string(slot.name) + ".weight") {
        linear_delta(e, &(d.*slot.delta), (bl.*slot.base).weight);
        placed = true;
      } else if (part == std::string(slot.name) + ".bias") {
        if (e.delta == nullptr) fail("{}: bias '{}' must be stored exactly", what, e.base_name);
        (d.*slot.delta).bias = file_.view(*e.delta).to_f32();
        placed = true;
      }
    }
    if (part == "input_layernorm.weight") {
      d.attn_norm = merged(e, bl.attn_norm);
      placed = true;
    } else if (part == "post_attention_layernorm.weight") {
      d.mlp_norm = merged(e, bl.mlp_norm);
      placed = true;
    } else if (part == "self_attn.q_norm.weight") {
      d.q_norm = merged(e, bl.q_norm);
      placed = true;
    } else if (part == "self_attn.k_norm.weight") {
      d.k_norm = merged(e, bl.k_norm);
      placed = true;
    }
    if (!placed) {
      fail("{}: the adapter changes '{}', which this engine does not apply", what, e.base_name);
    }
  }
  if (c.tie_word_embeddings) w.lm_head = w.embed;  // one matrix, one delta
  weights_ = std::move(w);
  bound_ = true;
}

uint64_t Adapter::owned_bytes() const {
  uint64_t bytes = sizeof(*this) + entries_.size() * sizeof(Entry);
  auto vec = [](const std::vector<float>& v) { return v.capacity() * sizeof(float); };
  for (const auto& l : weights_.layers) {
    bytes += sizeof(l) + vec(l.attn_norm) + vec(l.mlp_norm) + vec(l.q_norm) + vec(l.k_norm);
    for (const LinearDelta* d : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) {
      bytes += vec(d->bias);
    }
  }
  for (const auto& copy : scale_copies_) bytes += vec(copy);
  return bytes + vec(weights_.final_norm) + vec(weights_.embed.bias) + vec(weights_.lm_head.bias);
}

std::shared_ptr<Adapter> open_adapter_for(const std::filesystem::path& path,
                                          const Transformer& model, ThreadPool& pool) {
  std::shared_ptr<Adapter> adapter = Adapter::open(path, &pool);
  BaseFingerprints fingerprints(model.files());
  adapter->bind(model, fingerprints, pool);
  return adapter;
}

}  // namespace bitdelta
