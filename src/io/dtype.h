// Tensor element types as safetensors names them, and the float conversions the engine needs.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace bitdelta {

enum class DType : uint8_t { kF32, kF16, kBF16, kU8, kI8, kI32, kI64, kF64, kBool };

// Bytes per element.
size_t dtype_size(DType dtype);
// The safetensors spelling ("F32", "BF16", ...).
std::string_view dtype_name(DType dtype);
// Parses a safetensors dtype; nullopt for types the project does not read (e.g. F8_E4M3).
std::optional<DType> parse_dtype(std::string_view name);
// True for F32, F16, BF16: the types weights may have.
bool is_float_weight(DType dtype);

inline float bf16_to_f32(uint16_t bits) { return std::bit_cast<float>(uint32_t{bits} << 16); }

// Round to nearest even, NaN stays NaN (as PyTorch does).
inline uint16_t f32_to_bf16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float f16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float value);

// Converts `count` elements of `dtype` at `src` (any alignment) to float.
void convert_to_f32(DType dtype, const void* src, float* dst, size_t count);
// Converts floats to `dtype` (F32, F16 or BF16) at `dst` (any alignment).
void convert_from_f32(DType dtype, const float* src, void* dst, size_t count);

}  // namespace bitdelta
