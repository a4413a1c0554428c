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

enum class Dot { kBf16, kInt8 };

// RB × CB output tiles, tile (r, j) at c + (r·CB + j) KiB (16 × 16 F32 or int32), += the sum over
// steps [s_begin, s_end) of A_r(s) · B_j(s): A_r(s) the 16 × 64-byte tile at a[r] + 64·s (row
// stride a_stride[r] bytes), B_j(s) the 1 KiB right-hand block at b + j·b_next + 1 KiB·s (bytes).
// The outputs start from zero when `first`, else from c. Tiles: C 0..RB·CB−1, then A, then B. A
// tile keeps its elements exactly through a store and a load, so splitting the steps changes no
// bit of the sums.
template <Dot D, int RB, int CB>
inline void multiply_blocks(const uint8_t* const* a, const int64_t* a_stride, const uint8_t* b,
                            int64_t b_next, int64_t s_begin, int64_t s_end, bool first, void* c) {
  static_assert(RB * CB + RB + CB <= 8, "AMX has eight tiles");
  constexpr int64_t kRowStep = 64, kBlockBytes = 1024;
  auto* out = static_cast<uint8_t*>(c);
  static_for<RB * CB>([&](auto i) {
    constexpr int I = decltype(i)::value;
    if (first) {
      tile_zero<I>();
    } else {
      tile_load<I>(out + I * kBlockBytes, 64);
    }
  });
  for (int64_t s = s_begin; s < s_end; ++s) {
    static_for<RB>([&](auto r) {
      constexpr int R = decltype(r)::value;
      tile_load<RB * CB + R>(a[R] + s * kRowStep, a_stride[R]);
    });
    static_for<CB>([&](auto j) {
      constexpr int J = decltype(j)::value;
      tile_load<RB * CB + RB + J>(b + J * b_next + s * kBlockBytes, 64);
    });
    static_for<RB>([&](auto r) {
      constexpr int R = decltype(r)::value;
      static_for<CB>([&](auto j) {
        constexpr int J = decltype(j)::value;
        if constexpr (D == Dot::kBf16) {
          tile_dot_bf16<R * CB + J, RB * CB + R, RB * CB + RB + J>();
        } else {
          tile_dot_int8<R * CB + J, RB * CB + R, RB * CB + RB + J>();
        }
      });
    });
  }
  static_for<RB * CB>([&](auto i) {
    constexpr int I = decltype(i)::value;
    tile_store<I>(out + I * kBlockBytes, 64);
  });
}

// The right-hand operand's layout, shared by both multiplications: a matrix of 32-bit elements
// (BF16 pairs or int8 quads along k) [T, row_stride], whose first `steps` · 16 elements per row
// are used, re-laid out per block of 16 tokens and step of 16 elements as a 16×16 block whose row
// p holds element 16s + p of each token of the block (tokens past T zero). `out`: blocks(T) ·
// steps · 256 elements, 64-byte aligned.
void transpose_blocks(const uint32_t* src, int64_t row_stride, int64_t T, int64_t steps,
                      uint32_t* out);

}  // namespace bitdelta::amx
