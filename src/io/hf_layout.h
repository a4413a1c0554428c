// The tensor names and shapes a Hugging Face checkpoint of a given configuration holds
// (Hugging Face layout: linear weights are [out, in]).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/model_config.h"

namespace bitdelta {

struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};

std::string layer_prefix(int64_t layer);  // "model.layers.{layer}."

// Splits "model.layers.{N}.{rest}" into N and rest; nullopt for any other name.
struct LayerTensorName {
  int64_t layer;
  std::string_view rest;  // e.g. "self_attn.q_proj.weight"
};
std::optional<LayerTensorName> parse_layer_name(std::string_view name);

// Every tensor of the model, in the order Hugging Face writes them (embedding, layers, norm,
// lm_head when untied).
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& config);

// Parameters the checkpoint holds (the embedding counted once when tied).
int64_t expected_parameter_count(const ModelConfig& config);

}  // namespace bitdelta
