// The AMX tile instructions the kernels use (internal to ops): configuration, load, store and the
// two multiplications, as inline assembly. GCC's intrinsics (_tile_loadd, _tile_dpbf16ps...) are
// macros that paste the tile number into the instruction text and so cannot take a template
// parameter; the kernels' blockings need tile numbers as compile-time functions of the block
// shape. Nothing here needs a target attribute (the assembler knows the instructions); callers
// run them only after cpu_supported() says the CPU has them and the kernel granted the state.
#pragma once

#include <cstdint>
#include <utility>

namespace bitdelta::amx {

// True when this CPU has AMX-TILE, AMX-BF16 and AMX-INT8 and Linux granted this process the tile
// data state (arch_prctl ARCH_REQ_XCOMP_PERM, Linux 5.16+). Asks for it on the first call.
bool cpu_supported();

// The tile configuration (palette 1): every tile 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Every one of the eight tiles 16 rows × 64 bytes. Per thread; release_tiles() when done.
inline void configure_tiles() {
  TileConfig config;
  for (int i = 0; i < 8; ++i) {
    config.colsb[i] = 64;
    config.rows[i] = 16;
  }
  asm volatile("ldtilecfg %0" ::"m"(config));
}

inline void release_tiles() { asm volatile("tilerelease" ::); }

template <int Tile>
inline void tile_zero() {
  asm volatile("tilezero %%tmm%c0" ::"n"(Tile));
}

template <int Tile>
inline void tile_load(const void* base, int64_t stride) {
  asm volatile("tileloadd (%0,%1,1), %%tmm%c2" ::"r"(base), "r"(stride), "n"(Tile) : "memory");
}

template <int Tile>
inline void tile_store(void* base, int64_t stride) {
  asm volatile("tilestored %%tmm%c2, (%0,%1,1)" ::"r"(base), "r"(stride), "n"(Tile) : "memory");
}

// C[Dst] += A[Src1] · B[Src2] over BF16 pairs into F32 (TDPBF16PS).
template <int Dst, int Src1, int Src2>
inline void tile_dot_bf16() {
  asm volatile("tdpbf16ps %%tmm%c2, %%tmm%c1, %%tmm%c0" ::"n"(Dst), "n"(Src1), "n"(Src2));
}

// C[Dst] += A[Src1] · B[Src2] over signed int8 quads into int32 (TDPBSSD): exact.
template <int Dst, int Src1, int Src2>
inline void tile_dot_int8() {
  asm volatile("tdpbssd %%tmm%c2, %%tmm%c1, %%tmm%c0" ::"n"(Dst), "n"(Src1), "n"(Src2));
}

// f(std::integral_constant<int, i>) for i < N, unrolled at compile time.
template <int N, typename F>
inline void static_for(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) { (f(std::integral_constant<int, I>{}), ...); }
  (std::make_integer_sequence<int, N>{});
}

// The right-hand operand's layout, shared by both multiplications: a matrix of 32-bit elements
// (BF16 pairs or int8 quads along k) [T, row_stride], whose first `steps` · 16 elements per row
// are used, re-laid out per block of 16 tokens and step of 16 elements as a 16×16 block whose row
// p holds element 16s + p of each token of the block (tokens past T zero). `out`: blocks(T) ·
// steps · 256 elements, 64-byte aligned.
void transpose_blocks(const uint32_t* src, int64_t row_stride, int64_t T, int64_t steps,
                      uint32_t* out);

}  // namespace bitdelta::amx
