// matmul()'s integer path for quantized weights on CPUs with AVX512_VNNI (internal to ops): the
// activations are quantized per block of 32 to int8 with an F32 scale (Q8_0, as llama.cpp does)
// and each pair of blocks meets the weights' codes in one VPDPBUSD (64 multiply-adds into 16
// int32 lanes). VPDPBUSD multiplies unsigned by signed bytes, so the weights go in unsigned (Q8_0
// codes + 128, Q4_0 codes as they are) and the lanes start from −offset · Σx instead of zero,
// which makes every lane's integer sum exact. The lanes are then scaled by d_w · d_x and added,
// in block order, into F32 lanes; the lanes are summed in a fixed tree at the end. Every kernel
// computes an output that way whatever the number of tokens (batch-invariant).
#pragma once

#include <cstdint>
#include <vector>

#include "ops/quant.h"

namespace bitdelta::qvnni {

// True when this CPU (and OS) runs AVX512F/BW/VL/DQ and AVX512_VNNI.
bool cpu_supported();

// The activations of T tokens prepared for weights in format `q` with K columns: per token and
// per 64-byte step (two blocks), 64 int8 codes in the weights' byte order, 16 F32 block scales
// and 16 int32 starting values (one per lane).
struct Activations {
  Quant quant = Quant::kNone;
  int64_t tokens = 0, steps = 0;  // steps per token: ceil(blocks / 2)
  std::vector<int8_t> codes;      // [tokens, steps, 64]
  std::vector<float> scales;      // [tokens, steps, 16]
  std::vector<int32_t> starts;    // [tokens, steps, 16]
};
void prepare(Quant q, const float* x, int64_t T, int64_t K, Activations& out);
// The same, one code at a time (the definition prepare() is tested against, bit for bit).
void prepare_reference(Quant q, const float* x, int64_t T, int64_t K, Activations& out);

// y[t, n] for n in [n_begin, n_end) (y: [T, N]).
void rows(const Activations& a, const uint16_t* scales, const uint8_t* codes, int64_t N, int64_t K,
          int64_t n_begin, int64_t n_end, float* y);

}  // namespace bitdelta::qvnni
