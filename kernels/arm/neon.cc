// NEON kernels for aarch64. Built twice: baseline Armv8-A (vmull_s8 + pairwise accumulate) as
// "neon", and with the dot-product extension (sdot) as "neon_dotprod" when DCOMP_NEON_DOTPROD is
// set.
#include <arm_neon.h>

#include "kernels/internal.h"

namespace dcomp::kernels {
namespace {

inline int32x4_t Dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(DCOMP_NEON_DOTPROD)
  return vdotq_s32(acc, a, b);
#else
  const int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
  const int16x8_t hi = vmull_high_s8(a, b);
  return vpadalq_s16(vpadalq_s16(acc, lo), hi);
#endif
}

void GemvQ8Neon(const Q8MatrixView& w, const int8_t* x, float x_scale, float* y, size_t r0,
                size_t r1) {
  const size_t stride = w.stride;
  size_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const int8_t* w0 = w.q + r * stride;
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;
    for (size_t k = 0; k < stride; k += 16) {
      const int8x16_t xv = vld1q_s8(x + k);
      a0 = Dot16(a0, xv, vld1q_s8(w0 + k));
      a1 = Dot16(a1, xv, vld1q_s8(w0 + stride + k));
      a2 = Dot16(a2, xv, vld1q_s8(w0 + 2 * stride + k));
      a3 = Dot16(a3, xv, vld1q_s8(w0 + 3 * stride + k));
    }
    y[r] = static_cast<float>(vaddvq_s32(a0)) * (x_scale * w.scale[r]);
    y[r + 1] = static_cast<float>(vaddvq_s32(a1)) * (x_scale * w.scale[r + 1]);
    y[r + 2] = static_cast<float>(vaddvq_s32(a2)) * (x_scale * w.scale[r + 2]);
    y[r + 3] = static_cast<float>(vaddvq_s32(a3)) * (x_scale * w.scale[r + 3]);
  }
  for (; r < r1; ++r) {
    const int8_t* wr = w.q + r * stride;
    int32x4_t acc = vdupq_n_s32(0);
    for (size_t k = 0; k < stride; k += 16) acc = Dot16(acc, vld1q_s8(x + k), vld1q_s8(wr + k));
    y[r] = static_cast<float>(vaddvq_s32(acc)) * (x_scale * w.scale[r]);
  }
}

void GemmQ8Neon(const Q8MatrixView& w, const int8_t* x, size_t x_stride, const float* x_scale,
                size_t n_tok, float* y, size_t y_stride, size_t r0, size_t r1) {
  constexpr size_t kRowBlock = 16;
  for (size_t rb = r0; rb < r1; rb += kRowBlock) {
    const size_t re = rb + kRowBlock < r1 ? rb + kRowBlock : r1;
    for (size_t t = 0; t < n_tok; ++t) {
      GemvQ8Neon(w, x + t * x_stride, x_scale[t], y + t * y_stride, rb, re);
    }
  }
}

void GemmF32Neon(const F32MatrixView& w, const float* x, size_t x_stride, size_t n_tok, float* y,
                 size_t y_stride, size_t r0, size_t r1) {
  const size_t cols = w.cols;
  for (size_t r = r0; r < r1; ++r) {
    const float* wr = w.w + r * w.stride;
    for (size_t t = 0; t < n_tok; ++t) {
      const float* xt = x + t * x_stride;
      float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
      size_t c = 0;
      for (; c + 8 <= cols; c += 8) {
        acc0 = vfmaq_f32(acc0, vld1q_f32(wr + c), vld1q_f32(xt + c));
        acc1 = vfmaq_f32(acc1, vld1q_f32(wr + c + 4), vld1q_f32(xt + c + 4));
      }
      float s = vaddvq_f32(vaddq_f32(acc0, acc1));
      for (; c < cols; ++c) s += wr[c] * xt[c];
      y[t * y_stride + r] = s;
    }
  }
}

bool RowSumsQ8Neon(const int8_t* q, size_t rows, size_t stride, int32_t* row_sum) {
  int8x16_t lowest = vdupq_n_s8(0);
  for (size_t r = 0; r < rows; ++r) {
    const int8_t* row = q + r * stride;
    int32x4_t acc = vdupq_n_s32(0);
    for (size_t c = 0; c < stride; c += 16) {
      const int8x16_t v = vld1q_s8(row + c);
      lowest = vminq_s8(lowest, v);
      acc = vpadalq_s16(acc, vpaddlq_s8(v));
    }
    row_sum[r] = vaddvq_s32(acc);
  }
  return vminvq_s8(lowest) != -128;
}

// ----- packed codes (layout in kernels.h): a chunk of 64 codes is four vectors ------------------

template <int kBits>
inline void UnpackChunk(const uint8_t* c, int8x16_t u[4]) {
  const uint8x16_t m4 = vdupq_n_u8(15);
  const uint8x16_t n0 = vld1q_u8(c), n1 = vld1q_u8(c + 16);
  uint8x16_t e0 = vandq_u8(n0, m4), e1 = vandq_u8(n1, m4);
  uint8x16_t e2 = vshrq_n_u8(n0, 4), e3 = vshrq_n_u8(n1, 4);
  if constexpr (kBits >= 6) {
    const uint8x16_t m3 = vdupq_n_u8(3);
    const uint8x16_t p = vld1q_u8(c + 32);
    e0 = vorrq_u8(e0, vshlq_n_u8(vandq_u8(p, m3), 4));
    e1 = vorrq_u8(e1, vshlq_n_u8(vandq_u8(vshrq_n_u8(p, 2), m3), 4));
    e2 = vorrq_u8(e2, vshlq_n_u8(vandq_u8(vshrq_n_u8(p, 4), m3), 4));
    e3 = vorrq_u8(e3, vshlq_n_u8(vshrq_n_u8(p, 6), 4));
  }
  if constexpr (kBits % 2 == 1) {
    // Code j + 8k holds bit k of byte j: lanes 16m + i test bit 2m + i / 8 of byte i % 8.
    static const uint8_t kBit[64] = {1,  1,  1,  1,  1,   1,   1,   1,   2,   2,   2,   2,  2,
                                     2,  2,  2,  4,  4,   4,   4,   4,   4,   4,   4,   8,  8,
                                     8,  8,  8,  8,  8,   8,   16,  16,  16,  16,  16,  16, 16,
                                     16, 32, 32, 32, 32,  32,  32,  32,  32,  64,  64,  64, 64,
                                     64, 64, 64, 64, 128, 128, 128, 128, 128, 128, 128, 128};
    const uint8x8_t t8 = vld1_u8(c + 8 * kBits - 8);
    const uint8x16_t t = vcombine_u8(t8, t8);
    const uint8x16_t top = vdupq_n_u8(kBits == 5 ? 0x10 : 0x40);
    e0 = vorrq_u8(e0, vandq_u8(vtstq_u8(t, vld1q_u8(kBit)), top));
    e1 = vorrq_u8(e1, vandq_u8(vtstq_u8(t, vld1q_u8(kBit + 16)), top));
    e2 = vorrq_u8(e2, vandq_u8(vtstq_u8(t, vld1q_u8(kBit + 32)), top));
    e3 = vorrq_u8(e3, vandq_u8(vtstq_u8(t, vld1q_u8(kBit + 48)), top));
  }
  u[0] = vreinterpretq_s8_u8(e0);  // codes <= 127: the same bytes as signed
  u[1] = vreinterpretq_s8_u8(e1);
  u[2] = vreinterpretq_s8_u8(e2);
  u[3] = vreinterpretq_s8_u8(e3);
}

// A width's level magnitudes (CodeLevels::mag) as the table of one tbl instruction: 16 entries
// (vqtbl1q) up to 5 bits, 32 (vqtbl2q) at 6, 64 (vqtbl4q) at 7. An index past the table reads 0:
// a = 2^(kBits-1) (the code -2^(kBits-1)) gives 0, as does a zero entry past a 4-bit table. One
// tbl over four registers is cheap on NEON: a three-slope T is looked up like any other.
template <int kBits>
struct LevelTables {
  uint8x16x4_t t;
  LevelTables() {
    for (int i = 0; i < 4; ++i) t.val[i] = vdupq_n_u8(0);
  }
  explicit LevelTables(const CodeLevels& l) {
    for (int i = 0; i < 4; ++i) t.val[i] = vld1q_u8(l.mag + 16 * i);
  }
  // The signed value of each unsigned code u, by kind of level codes (internal::kOffsetLevels
  // ...): sign(c) * T[|c|] of c = u - 2^(kBits-1) for offset codes; in sign and magnitude, bit
  // kBits - 1 negates T[u & (2^(kBits-1) - 1)].
  template <int kLevels>
  int8x16_t Value(int8x16_t u) const {
    uint8x16_t a, negative;
    if constexpr (kLevels == internal::kSignMagnitudeLevels) {
      constexpr uint8_t kTop = 1 << (kBits - 1);
      a = vandq_u8(vreinterpretq_u8_s8(u), vdupq_n_u8(kTop - 1));
      negative = vtstq_u8(vreinterpretq_u8_s8(u), vdupq_n_u8(kTop));
    } else {
      const int8x16_t c = vsubq_s8(u, vdupq_n_s8(static_cast<int8_t>(1 << (kBits - 1))));
      a = vreinterpretq_u8_s8(vabsq_s8(c));
      negative = vcltzq_s8(c);
    }
    uint8x16_t m;
    if constexpr (kBits <= 5) {
      m = vqtbl1q_u8(t.val[0], a);
    } else if constexpr (kBits == 6) {
      m = vqtbl2q_u8(uint8x16x2_t{{t.val[0], t.val[1]}}, a);
    } else {
      m = vqtbl4q_u8(t, a);
    }
    const int8x16_t v = vreinterpretq_s8_u8(m);  // <= 127
    return vbslq_s8(negative, vnegq_s8(v), v);
  }
};

// Linear codes: u times x, the offset's sum subtracted once per row. Levels: the value of each
// code looked up (LevelTables::Value), times x.
template <int kBits, int kLevels>
void GemvPackedNeonT(const PackedMatrixView& w, const int8_t* x, float x_scale, float* y, size_t r0,
                     size_t r1) {
  const size_t stride = PaddedCols(w.cols);
  const int32_t corr = kLevels ? 0 : (1 << (kBits - 1)) * internal::SumCodes(x, stride);
  constexpr size_t kChunkBytes = 8 * kBits;
  [[maybe_unused]] const LevelTables<kBits> lt =
      kLevels ? LevelTables<kBits>(*w.levels) : LevelTables<kBits>();
  auto unpack = [&](const uint8_t* p, int8x16_t u[4]) {
    UnpackChunk<kBits>(p, u);
    if constexpr (kLevels) {
      for (int i = 0; i < 4; ++i) u[i] = lt.template Value<kLevels>(u[i]);
    }
  };
  const size_t dist = internal::PackedPrefetchDistance(w.row_bytes, 2);
  size_t r = r0;
  for (; r + 2 <= r1; r += 2) {
    const uint8_t* p0 = w.data + r * w.row_bytes;
    const uint8_t* p1 = p0 + w.row_bytes;
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0;
    for (size_t k = 0; k < stride; k += 64, p0 += kChunkBytes, p1 += kChunkBytes) {
      __builtin_prefetch(p0 + dist);
      __builtin_prefetch(p1 + dist);
      int8x16_t u[4], v[4];
      unpack(p0, u);
      unpack(p1, v);
      for (int i = 0; i < 4; ++i) {
        const int8x16_t xv = vld1q_s8(x + k + 16 * i);
        a0 = Dot16(a0, u[i], xv);
        a1 = Dot16(a1, v[i], xv);
      }
    }
    y[r] = static_cast<float>(vaddvq_s32(a0) - corr) * (x_scale * w.scale[r]);
    y[r + 1] = static_cast<float>(vaddvq_s32(a1) - corr) * (x_scale * w.scale[r + 1]);
  }
  for (; r < r1; ++r) {
    const uint8_t* p = w.data + r * w.row_bytes;
    int32x4_t acc = vdupq_n_s32(0);
    for (size_t k = 0; k < stride; k += 64, p += kChunkBytes) {
      int8x16_t u[4];
      unpack(p, u);
      for (int i = 0; i < 4; ++i) acc = Dot16(acc, u[i], vld1q_s8(x + k + 16 * i));
    }
    y[r] = static_cast<float>(vaddvq_s32(acc) - corr) * (x_scale * w.scale[r]);
  }
}

void GemvPackedNeon(const PackedMatrixView& w, const int8_t* x, float x_scale, float* y, size_t r0,
                    size_t r1) {
  internal::ForPackedView(w, [&](auto b, auto lv) {
    GemvPackedNeonT<decltype(b)::value, decltype(lv)::value>(w, x, x_scale, y, r0, r1);
  });
}

template <int kBits, int kLevels>
void UnpackRowsNeonT(const PackedMatrixView& w, size_t r0, size_t r1, int8_t* out) {
  const size_t stride = PaddedCols(w.cols);
  const int8x16_t off = vdupq_n_s8(static_cast<int8_t>(1 << (kBits - 1)));
  [[maybe_unused]] const LevelTables<kBits> lt =
      kLevels ? LevelTables<kBits>(*w.levels) : LevelTables<kBits>();
  for (size_t r = r0; r < r1; ++r, out += stride) {
    const uint8_t* p = w.data + r * w.row_bytes;
    for (size_t k = 0; k < stride; k += 64, p += 8 * kBits) {
      int8x16_t u[4];
      UnpackChunk<kBits>(p, u);
      for (int i = 0; i < 4; ++i) {
        if constexpr (kLevels) {
          vst1q_s8(out + k + 16 * i, lt.template Value<kLevels>(u[i]));
        } else {
          vst1q_s8(out + k + 16 * i, vsubq_s8(u[i], off));
        }
      }
    }
  }
}

void UnpackRowsNeon(const PackedMatrixView& w, size_t r0, size_t r1, int8_t* out) {
  internal::ForPackedView(w, [&](auto b, auto lv) {
    UnpackRowsNeonT<decltype(b)::value, decltype(lv)::value>(w, r0, r1, out);
  });
}

}  // namespace

namespace internal {
#if defined(DCOMP_NEON_DOTPROD)
const KernelTable kNeonDotprodTable = {
    "neon_dotprod", QuantizeRowQ8Ref,
    GemvQ8Neon,     GemmQ8Neon,
    GemmF32Neon,    RowSumsQ8Neon,
    GemvPackedNeon, GemmPackedVia<UnpackRowsNeon, GemvPackedNeon, GemmQ8Neon, RowSumsQ8Neon>};
#else
const KernelTable kNeonTable = {
    "neon",         QuantizeRowQ8Ref,
    GemvQ8Neon,     GemmQ8Neon,
    GemmF32Neon,    RowSumsQ8Neon,
    GemvPackedNeon, GemmPackedVia<UnpackRowsNeon, GemvPackedNeon, GemmQ8Neon, RowSumsQ8Neon>};
#endif
}  // namespace internal
}  // namespace dcomp::kernels
