// Internal to kernels/: the per-ISA tables, each defined in its own translation unit compiled with
// that ISA's flags. Only dispatch.cc and the kernel tests see these.
#pragma once

#include <algorithm>
#include <type_traits>
#include <vector>

#include "kernels/kernels.h"

namespace dcomp::kernels::internal {

extern const KernelTable kRefTable;
#if defined(__x86_64__)
extern const KernelTable kAvx2Table;
extern const KernelTable kAvx512VnniTable;
extern const KernelTable kAvx512VbmiTable;  // avx512_vnni with VBMI's byte permutes
#endif
#if defined(__aarch64__)
extern const KernelTable kNeonTable;
extern const KernelTable kNeonDotprodTable;
#endif

bool RowSumsQ8Ref(const int8_t* q, size_t rows, size_t stride, int32_t* row_sum);

// The reference quantizer, shared by every table (O(n) per token; the products dominate).
void QuantizeRowQ8Ref(const float* x, size_t n, size_t n_padded, int8_t* q, float* scale);

// Reference rounding shared by every quantize_row_q8 variant: scale and its inverse.
inline void Q8Scale(float amax, float* scale, float* inv) {
  *scale = amax / 127.0f;
  *inv = amax > 0.0f ? 127.0f / amax : 0.0f;
}

// The packed reference kernels (ref/packed.cc) and the reference unpacker of rows [r0, r1) of a
// packed matrix into signed codes, PaddedCols(cols) per row.
void GemvPackedRef(const PackedMatrixView& w, const int8_t* x, float x_scale, float* y, size_t r0,
                   size_t r1);
void GemmPackedRef(const PackedMatrixView& w, const int8_t* x, size_t x_stride,
                   const float* x_scale, size_t n_tok, float* y, size_t y_stride, size_t r0,
                   size_t r1);

// Sum of n activation codes (n a multiple of 64; the packed products subtract 2^(bits-1) times it).
inline int32_t SumCodes(const int8_t* x, size_t n) {
  int32_t s = 0;
#pragma GCC unroll 8
  for (size_t i = 0; i < n; ++i) s += x[i];
  return s;
}

// How far ahead the packed GEMVs prefetch. The unpacking keeps too few loads in flight for the
// hardware prefetchers alone. Measured, not derived: under AVX2, 512 bytes (the first choice) and
// 1 KiB ahead held 7-bit codes out of cache to 6.4-6.5 Gw/s, 8 KiB reaches 10.0-10.8
// (BENCHMARKS.md, "Packed products at memory speed").
inline constexpr size_t kPackedPrefetch = 8192;

// The prefetch distance of a packed GEMV that multiplies `rows` rows per iteration: the same
// position in the rows that a later iteration reads, m groups of rows on, with m the largest number
// of whole groups that stays within kPackedPrefetch bytes (at least 1). A fixed distance measured
// inside the row breaks down once rows x row_bytes exceeds it. The prefetched bytes then fall in
// rows that this group is already reading, or behind the read position of the next group. On
// AVX-512 this cost ffn_down (5632 columns) a fifth of its speed (BENCHMARKS.md, session 24).
inline size_t PackedPrefetchDistance(size_t row_bytes, size_t rows) {
  const size_t group = row_bytes * rows;
  return group * std::max<size_t>(1, kPackedPrefetch / group);
}

// Calls fn(std::integral_constant<int, bits>{}) for a packed width (4..7): the per-width
// instantiations of every variant's packed kernels, chosen once per call.
template <typename Fn>
inline void ForPackedBits(int bits, Fn&& fn) {
  switch (bits) {
    case 4: return fn(std::integral_constant<int, 4>{});
    case 5: return fn(std::integral_constant<int, 5>{});
    case 6: return fn(std::integral_constant<int, 6>{});
    default: return fn(std::integral_constant<int, 7>{});
  }
}

// The kinds of packed codes a kernel instantiates for: linear (the value is the code), level codes
// of offset form (c = u - 2^(bits-1) stands for sign(c) T[|c|]; 4-6 bits of files of format 5 to
// 8) and level codes in sign and magnitude (every other table; CodeLevels).
inline constexpr int kLinearCodes = 0;
inline constexpr int kOffsetLevels = 1;
inline constexpr int kSignMagnitudeLevels = 2;

// Calls fn(std::integral_constant<int, bits>{}, std::integral_constant<int, kind>{}) for a packed
// view: the instantiations per width and per kind of codes (above). Offset level codes exist at 4
// to 6 bits only.
template <typename Fn>
inline void ForPackedView(const PackedMatrixView& w, Fn&& fn) {
  ForPackedBits(w.bits, [&](auto b) {
    if (w.levels == nullptr) return fn(b, std::integral_constant<int, kLinearCodes>{});
    if constexpr (decltype(b)::value < 7) {
      if (!w.levels->sign_magnitude) return fn(b, std::integral_constant<int, kOffsetLevels>{});
    }
    fn(b, std::integral_constant<int, kSignMagnitudeLevels>{});
  });
}

// ForPackedView with a third constant: std::true_type when the view's levels are 7-bit with a
// three-slope table (CodeLevels::knot), which the x86 kernels compute instead of looking it up in
// four shuffles.
template <typename Fn>
inline void ForPackedViewThreeSlope(const PackedMatrixView& w, Fn&& fn) {
  ForPackedView(w, [&](auto b, auto lv) {
    if constexpr (decltype(lv)::value == kSignMagnitudeLevels && decltype(b)::value == 7) {
      if (w.levels->knot[0] != 0) return fn(b, lv, std::true_type{});
    }
    fn(b, lv, std::false_type{});
  });
}

using UnpackRowsFn = void (*)(const PackedMatrixView& w, size_t r0, size_t r1, int8_t* out);
using GemvPackedFn = void (*)(const PackedMatrixView& w, const int8_t* x, float x_scale, float* y,
                              size_t r0, size_t r1);
using GemmQ8Fn = void (*)(const Q8MatrixView& w, const int8_t* x, size_t x_stride,
                          const float* x_scale, size_t n_tok, float* y, size_t y_stride, size_t r0,
                          size_t r1);
using RowSumsFn = bool (*)(const int8_t* q, size_t rows, size_t stride, int32_t* row_sum);

// The packed GEMM of every variant: below 4 tokens one GEMV per token; otherwise tiles of 16 rows
// are unpacked by the variant's unpacker into the thread's scratch (16 rows, in L1/L2), their row
// sums taken, and the variant's INT8 GEMM runs on them, so each row is unpacked once for all the
// tokens.
template <UnpackRowsFn Unpack, GemvPackedFn Gemv, GemmQ8Fn Gemm, RowSumsFn RowSums>
void GemmPackedVia(const PackedMatrixView& w, const int8_t* x, size_t x_stride,
                   const float* x_scale, size_t n_tok, float* y, size_t y_stride, size_t r0,
                   size_t r1) {
  if (n_tok < 4) {
    for (size_t t = 0; t < n_tok; ++t) {
      Gemv(w, x + t * x_stride, x_scale[t], y + t * y_stride, r0, r1);
    }
    return;
  }
  constexpr size_t kTile = 16;
  const size_t stride = PaddedCols(w.cols);
  thread_local std::vector<int8_t> tile;
  if (tile.size() < kTile * stride) tile.resize(kTile * stride);
  for (size_t rb = r0; rb < r1; rb += kTile) {
    const size_t re = std::min(rb + kTile, r1);
    Unpack(w, rb, re, tile.data());
    int32_t row_sum[kTile];
    RowSums(tile.data(), re - rb, stride, row_sum);  // padding codes included, as in the tile
    float scale[kTile];
    w.scale.Expand(rb, re - rb, scale);
    const Q8MatrixView v{tile.data(), scale, row_sum, re - rb, w.cols, stride};
    Gemm(v, x, x_stride, x_scale, n_tok, y + rb, y_stride, 0, re - rb);
  }
}

}  // namespace dcomp::kernels::internal
