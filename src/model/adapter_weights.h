// What a user's adapter changes in a model, as views the forward pass applies on the fly: 1-bit
// sign matrices with scales for the big matrices (never merged into dense per-user copies), and
// small exact deltas (norms, biases) kept as F32 vectors. Built by delta/ from a .bdelta file;
// the model only reads it. Everything here stays valid as long as the adapter it came from.
#pragma once

#include <optional>
#include <vector>

#include "ops/matmul.h"
#include "ops/sign_matmul.h"

namespace bitdelta {

// The delta of one linear layer y = W·x + b.
struct LinearDelta {
  std::optional<SignMatrix> signs;        // α ⊙ S, the BitDelta part
  std::optional<WeightMatrix> dense;      // an exact dense delta (F32/BF16), when kept exactly
  std::vector<float> bias;                // exact bias delta; empty when unchanged
  bool empty() const { return !signs && !dense && bias.empty(); }
};

struct LayerDelta {
  LinearDelta q, k, v, o, gate, up, down;
  // Norm weights with the delta applied (base + delta, C or D floats); empty when unchanged.
  std::vector<float> attn_norm, mlp_norm, q_norm, k_norm;
};

struct AdapterWeights {
  std::vector<LayerDelta> layers;
  // Embedding rows: base row + α_v ⊙ s_v (per-row scales) or + an exact dense row.
  LinearDelta embed;
  LinearDelta lm_head;            // for tied models, the same as `embed`
  std::vector<float> final_norm;  // merged, or empty
};

// Picks one linear's delta out of a layer (so one code path can walk all seven).
using LinearDeltaMember = LinearDelta LayerDelta::*;

}  // namespace bitdelta
