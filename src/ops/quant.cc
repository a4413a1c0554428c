// Quantization to Q8_0 / Q4_0 (scalar, at load) and the Highway kernels that multiply F32
// activations by quantized weights (compiled per SIMD target, dispatched at run time).
//
// The activations stay F32 (llama.cpp quantizes them to 8 bits as well): each block's codes are
// widened to F32 vectors, multiplied with the block's 32 activations, and the block's sum is
// scaled by its d into one vector accumulator per output: acc += d_b · (Σ_i w_i · x_i), blocks in
// order, then the lanes summed. Every kernel below computes an output exactly that way whatever
// the number of tokens, so the forward pass stays batch-invariant on a quantized base too.
#include "ops/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/matmul.h"
#include "util/error.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/quant.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace bitdelta::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;

// The 32 weights of one block, as F32 vectors (32 / lanes of them), without the block's scale.
template <Quant Q>
HWY_INLINE void widen_block(const uint8_t* codes, hn::Vec<DF>* w) {
  const DF df;
  constexpr int64_t L = static_cast<int64_t>(hn::MaxLanes(df));
  const hn::Rebind<int32_t, DF> di;
  if constexpr (Q == Quant::kQ8_0) {
    const hn::Rebind<int8_t, DF> d8;
    for (int64_t i = 0; i < kQuantBlock / L; ++i) {
      w[i] = hn::ConvertTo(
          df, hn::PromoteTo(di, hn::LoadU(d8, reinterpret_cast<const int8_t*>(codes) + i * L)));
    }
  } else {
    const hn::Rebind<uint8_t, DF> d8;
    const auto eight = hn::Set(di, 8);
    for (int64_t i = 0; i < kQuantBlock / L; ++i) {
      const int64_t first = i * L;  // weights first .. first + L − 1 of the block
      const auto bytes = hn::BitCast(
          di, hn::PromoteTo(hn::Rebind<uint32_t, DF>(), hn::LoadU(d8, codes + first % 16)));
      const auto q = first < 16 ? hn::And(bytes, hn::Set(di, 15)) : hn::ShiftRight<4>(bytes);
      w[i] = hn::ConvertTo(df, hn::Sub(q, eight));
    }
  }
}

// The row's block scales as F32 (F16 to F32 is exact, so any conversion gives the same values).
HWY_INLINE void widen_scales(const uint16_t* s, int64_t nb, float* out) {
  const DF df;
  const hn::Rebind<hwy::float16_t, DF> dh;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  int64_t b = 0;
  for (; b + L <= nb; b += L) {
    hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(s + b))), df,
               out + b);
  }
  for (; b < nb; ++b) out[b] = f16_to_f32(s[b]);
}

// Row n against C tokens (x padded to whole blocks, stride xs): y[c·N + n].
// (`codes` is the row's first step, `step_stride` the bytes from one of its steps to the next.)
template <Quant Q, int C>
HWY_INLINE void row_tokens(const uint8_t* codes, int64_t step_stride, const float* d, int64_t nb,
                           const float* x, int64_t xs, float* y, int64_t N) {
  const DF df;
  constexpr int64_t L = static_cast<int64_t>(hn::MaxLanes(df));
  constexpr int64_t kVectors = kQuantBlock / L;
  constexpr int64_t kCodeBytes = Q == Quant::kQ8_0 ? 32 : 16;
  hn::Vec<DF> acc[C];
  for (int c = 0; c < C; ++c) acc[c] = hn::Zero(df);
  for (int64_t b = 0; b < nb; ++b) {
    hn::Vec<DF> w[kVectors];
    widen_block<Q>(codes + b / 2 * step_stride + b % 2 * kCodeBytes, w);
    const auto scale = hn::Set(df, d[b]);
    for (int c = 0; c < C; ++c) {
      const float* xb = x + c * xs + b * kQuantBlock;
      auto p = hn::Mul(w[0], hn::LoadU(df, xb));
      for (int64_t i = 1; i < kVectors; ++i) p = hn::MulAdd(w[i], hn::LoadU(df, xb + i * L), p);
      acc[c] = hn::MulAdd(scale, p, acc[c]);
    }
  }
  for (int c = 0; c < C; ++c) y[c * N] = hn::GetLane(hn::SumOfLanes(df, acc[c]));
}

template <Quant Q>
void rows_kernel(const float* x, int64_t T, int64_t xs, const uint16_t* scales,
                 const uint8_t* codes, int64_t N, int64_t K, int64_t n_begin, int64_t n_end,
                 float* y) {
  const int64_t nb = quant_blocks(K);
  const int64_t step = 2 * (Q == Quant::kQ8_0 ? 32 : 16);
  thread_local std::vector<float> d;
  d.resize(static_cast<size_t>(nb));
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* row = codes + quant_step_offset(Q, N, K, n, 0);
    const int64_t first = n / kQuantRowGroup * kQuantRowGroup;
    const int64_t stride = std::min(kQuantRowGroup, N - first) * step;
    widen_scales(scales + n * nb, nb, d.data());
    // Tokens four at a time share each block's widened weights.
    int64_t t = 0;
    for (; t + 4 <= T; t += 4) {
      row_tokens<Q, 4>(row, stride, d.data(), nb, x + t * xs, xs, y + t * N + n, N);
    }
    switch (T - t) {
      case 3:
        row_tokens<Q, 3>(row, stride, d.data(), nb, x + t * xs, xs, y + t * N + n, N);
        break;
      case 2:
        row_tokens<Q, 2>(row, stride, d.data(), nb, x + t * xs, xs, y + t * N + n, N);
        break;
      case 1:
        row_tokens<Q, 1>(row, stride, d.data(), nb, x + t * xs, xs, y + t * N + n, N);
        break;
      default:
        break;
    }
  }
}

void QuantRows(Quant q, const float* x, int64_t T, int64_t xs, const uint16_t* scales,
               const uint8_t* codes, int64_t N, int64_t K, int64_t n_begin, int64_t n_end,
               float* y) {
  if (q == Quant::kQ8_0) {
    rows_kernel<Quant::kQ8_0>(x, T, xs, scales, codes, N, K, n_begin, n_end, y);
  } else {
    rows_kernel<Quant::kQ4_0>(x, T, xs, scales, codes, N, K, n_begin, n_end, y);
  }
}

}  // namespace bitdelta::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bitdelta {

HWY_EXPORT(QuantRows);

std::string_view quant_name(Quant q) {
  switch (q) {
    case Quant::kNone:
      return "none";
    case Quant::kQ8_0:
      return "q8_0";
    case Quant::kQ4_0:
      return "q4_0";
  }
  return "?";
}

std::optional<Quant> parse_quant(std::string_view name) {
  std::string lower(name);
  for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  for (Quant q : {Quant::kNone, Quant::kQ8_0, Quant::kQ4_0}) {
    if (lower == quant_name(q)) return q;
  }
  return std::nullopt;
}

int64_t quant_code_bytes(Quant q) {
  BD_CHECK(q != Quant::kNone);
  return q == Quant::kQ8_0 ? 32 : 16;
}

uint64_t quant_code_bytes_total(Quant q, int64_t rows, int64_t cols) {
  return static_cast<uint64_t>(rows * quant_steps(cols) * 2 * quant_code_bytes(q));
}

uint64_t quant_matrix_bytes(Quant q, int64_t rows, int64_t cols) {
  return static_cast<uint64_t>(rows * quant_blocks(cols) * 2) +
         quant_code_bytes_total(q, rows, cols);
}

namespace {

void quantize_block(Quant q, const float* w, uint16_t* scale, uint8_t* codes) {
  if (q == Quant::kQ8_0) {
    float amax = 0;
    for (int64_t i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(w[i]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    *scale = f32_to_f16(d);
    for (int64_t i = 0; i < kQuantBlock; ++i) {
      codes[i] = static_cast<uint8_t>(static_cast<int8_t>(std::lround(w[i] * id)));
    }
    return;
  }
  float amax = 0, max = 0;
  for (int64_t i = 0; i < kQuantBlock; ++i) {
    if (std::fabs(w[i]) > amax) {
      amax = std::fabs(w[i]);
      max = w[i];
    }
  }
  const float d = max / -8.0f;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  *scale = f32_to_f16(d);
  for (int64_t j = 0; j < kQuantBlock / 2; ++j) {
    const auto code = [&](float v) {
      return static_cast<uint8_t>(
          std::min(15, static_cast<int>(static_cast<int8_t>(v * id + 8.5f))));
    };
    codes[j] = static_cast<uint8_t>(code(w[j]) | (code(w[j + 16]) << 4));
  }
}

}  // namespace

void quantize_matrix(Quant q, DType src_dtype, const uint8_t* src, int64_t rows, int64_t cols,
                     uint16_t* scales, uint8_t* codes, ThreadPool& pool) {
  const int64_t nb = quant_blocks(cols);
  const int64_t code_bytes = quant_code_bytes(q);
  const size_t row_bytes = static_cast<size_t>(cols) * dtype_size(src_dtype);
  pool.parallel_for(
      rows,
      [&](int64_t begin, int64_t end) {
        std::vector<float> row(static_cast<size_t>(nb * kQuantBlock), 0.0f);
        for (int64_t r = begin; r < end; ++r) {
          convert_to_f32(src_dtype, src + r * row_bytes, row.data(), static_cast<size_t>(cols));
          for (int64_t b = 0; b < nb; ++b) {
            quantize_block(q, row.data() + b * kQuantBlock, scales + r * nb + b,
                           codes + quant_step_offset(q, rows, cols, r, b / 2) + b % 2 * code_bytes);
          }
          if (nb % 2 == 1) {  // the last step's missing block: zero codes
            std::memset(codes + quant_step_offset(q, rows, cols, r, nb / 2) + code_bytes, 0,
                        static_cast<size_t>(code_bytes));
          }
        }
      },
      /*grain=*/16);
}

void dequantize_row(Quant q, const uint16_t* scales, const uint8_t* codes, int64_t rows,
                    int64_t row, int64_t cols, float* out) {
  const int64_t nb = quant_blocks(cols);
  const int64_t code_bytes = quant_code_bytes(q);
  for (int64_t b = 0; b < nb; ++b) {
    const float d = f16_to_f32(scales[row * nb + b]);
    const uint8_t* c = codes + quant_step_offset(q, rows, cols, row, b / 2) + b % 2 * code_bytes;
    for (int64_t i = 0; i < kQuantBlock && b * kQuantBlock + i < cols; ++i) {
      int v;
      if (q == Quant::kQ8_0) {
        v = static_cast<int8_t>(c[i]);
      } else {
        v = (i < 16 ? c[i] & 15 : c[i - 16] >> 4) - 8;
      }
      out[b * kQuantBlock + i] = d * static_cast<float>(v);
    }
  }
}

namespace detail {

void quant_rows(Quant q, const float* x, int64_t T, int64_t xs, const uint16_t* scales,
                const uint8_t* codes, int64_t N, int64_t K, int64_t n_begin, int64_t n_end,
                float* y) {
  HWY_DYNAMIC_DISPATCH(QuantRows)(q, x, T, xs, scales, codes, N, K, n_begin, n_end, y);
}

}  // namespace detail
}  // namespace bitdelta
#endif  // HWY_ONCE
