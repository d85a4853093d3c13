// AVX-512 VNNI kernels. vpdpbusd multiplies unsigned by signed bytes, so activations are biased to
// unsigned (x ^ 0x80 == x + 128) and the bias is removed with the weight row sums:
// sum (x + 128) * w = sum x * w + 128 * row_sum.
// Compiled twice (kernels/CMakeLists.txt): as "avx512_vnni", and with VBMI (vpermb) as
// "avx512_vbmi" when DCOMP_AVX512_VBMI is defined, which looks non-uniform levels up in one
// byte permute instead of sign, absolute value and 16-entry shuffles. Everything else is the same.
#include <immintrin.h>

#include <cstring>

#include "kernels/internal.h"

namespace dcomp::kernels {
namespace {

inline __m512i LoadBiased(const int8_t* p, __m512i bias) {
  return _mm512_xor_si512(_mm512_loadu_si512(p), bias);
}

void GemvQ8Avx512Vnni(const Q8MatrixView& w, const int8_t* x, float x_scale, float* y, size_t r0,
                      size_t r1) {
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  const size_t stride = w.stride;
  size_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const int8_t* w0 = w.q + r * stride;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t k = 0; k < stride; k += 64) {
      const __m512i xv = LoadBiased(x + k, bias);
      a0 = _mm512_dpbusd_epi32(a0, xv, _mm512_loadu_si512(w0 + k));
      a1 = _mm512_dpbusd_epi32(a1, xv, _mm512_loadu_si512(w0 + stride + k));
      a2 = _mm512_dpbusd_epi32(a2, xv, _mm512_loadu_si512(w0 + 2 * stride + k));
      a3 = _mm512_dpbusd_epi32(a3, xv, _mm512_loadu_si512(w0 + 3 * stride + k));
    }
    const int32_t s0 = _mm512_reduce_add_epi32(a0) - 128 * w.row_sum[r];
    const int32_t s1 = _mm512_reduce_add_epi32(a1) - 128 * w.row_sum[r + 1];
    const int32_t s2 = _mm512_reduce_add_epi32(a2) - 128 * w.row_sum[r + 2];
    const int32_t s3 = _mm512_reduce_add_epi32(a3) - 128 * w.row_sum[r + 3];
    y[r] = static_cast<float>(s0) * (x_scale * w.scale[r]);
    y[r + 1] = static_cast<float>(s1) * (x_scale * w.scale[r + 1]);
    y[r + 2] = static_cast<float>(s2) * (x_scale * w.scale[r + 2]);
    y[r + 3] = static_cast<float>(s3) * (x_scale * w.scale[r + 3]);
  }
  for (; r < r1; ++r) {
    const int8_t* wr = w.q + r * stride;
    __m512i acc = _mm512_setzero_si512();
    for (size_t k = 0; k < stride; k += 64) {
      acc = _mm512_dpbusd_epi32(acc, LoadBiased(x + k, bias), _mm512_loadu_si512(wr + k));
    }
    const int32_t s = _mm512_reduce_add_epi32(acc) - 128 * w.row_sum[r];
    y[r] = static_cast<float>(s) * (x_scale * w.scale[r]);
  }
}

// GCC 12 reports the undefined pass-through operand inside _mm512_reduce_add_epi32 (its own header)
// as uninitialized once the reduction is inlined into a template; the value is never used.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
// 4 rows x NT tokens register tile (NT <= 4): each weight load is reused NT times, each
// activation load 4 times. Results are those of the GEMV (integer sums, the same final multiply).
template <int NT>
inline void TileQ8Avx512(const Q8MatrixView& w, const int8_t* x, size_t x_stride,
                         const float* x_scale, float* y, size_t y_stride, size_t r, __m512i bias) {
  const size_t stride = w.stride;
  const int8_t* w0 = w.q + r * stride;
  __m512i acc[4][NT];
  for (auto& row : acc)
    for (auto& a : row) a = _mm512_setzero_si512();
  for (size_t k = 0; k < stride; k += 64) {
    __m512i xv[NT];
    for (int j = 0; j < NT; ++j) xv[j] = LoadBiased(x + j * x_stride + k, bias);
    for (int i = 0; i < 4; ++i) {
      const __m512i wv = _mm512_loadu_si512(w0 + i * stride + k);
      for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], xv[j], wv);
    }
  }
  for (int i = 0; i < 4; ++i) {
    const int32_t corr = 128 * w.row_sum[r + i];
    for (int j = 0; j < NT; ++j) {
      const int32_t s = _mm512_reduce_add_epi32(acc[i][j]) - corr;
      y[j * y_stride + r + i] = static_cast<float>(s) * (x_scale[j] * w.scale[r + i]);
    }
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// Row tiles outside, tokens inside: the weights stream from memory once whatever the number of
// tokens (a batch of decode tokens is as cheap to read as one), the tile's rows stay in L1.
void GemmQ8Avx512Vnni(const Q8MatrixView& w, const int8_t* x, size_t x_stride, const float* x_scale,
                      size_t n_tok, float* y, size_t y_stride, size_t r0, size_t r1) {
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  size_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    size_t t = 0;
    for (; t + 4 <= n_tok; t += 4) {
      TileQ8Avx512<4>(w, x + t * x_stride, x_stride, x_scale + t, y + t * y_stride, y_stride, r,
                      bias);
    }
    const int8_t* xt = x + t * x_stride;
    float* yt = y + t * y_stride;
    switch (n_tok - t) {
      case 3: TileQ8Avx512<3>(w, xt, x_stride, x_scale + t, yt, y_stride, r, bias); break;
      case 2: TileQ8Avx512<2>(w, xt, x_stride, x_scale + t, yt, y_stride, r, bias); break;
      case 1: TileQ8Avx512<1>(w, xt, x_stride, x_scale + t, yt, y_stride, r, bias); break;
      default: break;
    }
  }
  if (r < r1) {
    for (size_t t = 0; t < n_tok; ++t) {
      GemvQ8Avx512Vnni(w, x + t * x_stride, x_scale[t], y + t * y_stride, r, r1);
    }
  }
}

void GemmF32Avx512(const F32MatrixView& w, const float* x, size_t x_stride, size_t n_tok, float* y,
                   size_t y_stride, size_t r0, size_t r1) {
  const size_t cols = w.cols;
  const size_t tail = cols % 16;
  const __mmask16 tail_mask = static_cast<__mmask16>((1u << tail) - 1u);
  for (size_t r = r0; r < r1; ++r) {
    const float* wr = w.w + r * w.stride;
    for (size_t t = 0; t < n_tok; ++t) {
      const float* xt = x + t * x_stride;
      __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
      size_t c = 0;
      for (; c + 32 <= cols; c += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + c), _mm512_loadu_ps(xt + c), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + c + 16), _mm512_loadu_ps(xt + c + 16), acc1);
      }
      for (; c + 16 <= cols; c += 16) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(wr + c), _mm512_loadu_ps(xt + c), acc0);
      }
      if (tail != 0) {
        acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail_mask, wr + c),
                               _mm512_maskz_loadu_ps(tail_mask, xt + c), acc1);
      }
      y[t * y_stride + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    }
  }
}

// Sums of signed bytes as sums of (q ^ 0x80) (unsigned, via SAD against zero) minus 128 each.
bool RowSumsQ8Avx512(const int8_t* q, size_t rows, size_t stride, int32_t* row_sum) {
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i zero = _mm512_setzero_si512();
  __mmask64 bad = 0;
  for (size_t r = 0; r < rows; ++r) {
    const int8_t* row = q + r * stride;
    __m512i acc = zero;
    for (size_t c = 0; c < stride; c += 64) {
      const __m512i v = _mm512_loadu_si512(row + c);
      bad |= _mm512_cmpeq_epi8_mask(v, bias);
      acc = _mm512_add_epi64(acc, _mm512_sad_epu8(_mm512_xor_si512(v, bias), zero));
    }
    row_sum[r] =
        static_cast<int32_t>(_mm512_reduce_add_epi64(acc) - 128 * static_cast<int64_t>(stride));
  }
  return bad == 0;
}

// ----- packed codes (layout in kernels.h): one chunk of 64 codes is one vector ------------------

// ternarylogic immediates: A | (B & C), and C ? A : B.
constexpr int kOrAnd = 0xF8;

template <int kBits>
inline __m512i UnpackChunk(const uint8_t* c) {
  // Nibbles: the 32 bytes in both halves, the upper half shifted right by 4.
  const __m512i n = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)));
  __m512i u = _mm512_and_si512(_mm512_srlv_epi64(n, _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4)),
                               _mm512_set1_epi8(15));
  if constexpr (kBits >= 6) {
    // 16-byte lane k holds bits 2k, 2k + 1 of each byte: rotate them to bits 4-5.
    const __m512i p =
        _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 32)));
    const __m512i rot =
        _mm512_rolv_epi32(p, _mm512_setr_epi32(4, 4, 4, 4, 2, 2, 2, 2, 0, 0, 0, 0, 30, 30, 30, 30));
    u = _mm512_ternarylogic_epi32(u, rot, _mm512_set1_epi8(0x30), kOrAnd);
  }
  if constexpr (kBits % 2 == 1) {
    // 8-byte lane L holds bit L of each byte: rotate it to the top position.
    constexpr int kTop = kBits == 5 ? 4 : 6;
    int64_t t;
    std::memcpy(&t, c + 8 * kBits - 8, 8);
    const __m512i rot =
        _mm512_rolv_epi64(_mm512_set1_epi64(t),
                          _mm512_setr_epi64(kTop, kTop - 1, kTop - 2, kTop - 3, kTop - 4,
                                            (kTop + 59) % 64, (kTop + 58) % 64, (kTop + 57) % 64));
    u = _mm512_ternarylogic_epi32(u, rot, _mm512_set1_epi8(1 << kTop), kOrAnd);
  }
  return u;
}

// A width's level magnitudes (CodeLevels::mag) as the 16-entry tables of vpshufb, each in all
// four lanes: table t holds T[16t .. 16t + 15].
template <int kBits>
struct LevelTables {
  __m512i t[kBits == 7 ? 4 : kBits == 6 ? 2 : 1];
  LevelTables() {
    for (__m512i& v : t) v = _mm512_setzero_si512();
  }
  explicit LevelTables(const CodeLevels& l) {
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); ++i) {
      // (maskz: GCC 12 warns that the unmasked form reads an undefined vector)
      t[i] = _mm512_maskz_broadcast_i32x4(
          0xFFFF, _mm_loadu_si128(reinterpret_cast<const __m128i*>(l.mag + 16 * i)));
    }
  }
  // T[a] for a <= 2^(kBits-1) (|c| of offset codes, the magnitude bits in sign and magnitude):
  // vpshufb reads the low nibble, bits 4 and 5 choose the table (masked by a test of the bit).
  // a = 2^(kBits-1) (offset codes) lands on T[0] = 0, or for 4 bits on a zero entry past the table.
  __m512i Lookup(__m512i a) const {
    const __m512i r0 = _mm512_shuffle_epi8(t[0], a);
    if constexpr (kBits <= 5) {
      return r0;
    } else {
      const __mmask64 b4 = _mm512_test_epi8_mask(a, _mm512_set1_epi8(16));
      const __m512i r01 = _mm512_mask_shuffle_epi8(r0, b4, t[1], a);
      if constexpr (kBits == 6) {
        return r01;
      } else {
        const __m512i r23 = _mm512_mask_shuffle_epi8(_mm512_shuffle_epi8(t[2], a), b4, t[3], a);
        return _mm512_mask_blend_epi8(_mm512_test_epi8_mask(a, _mm512_set1_epi8(32)), r01, r23);
      }
    }
  }
};

// T(k) = k + max(0, k - a) + max(0, k - b) of a three-slope table (CodeLevels::knot), k <= 63.
struct ThreeSlope {
  __m512i a = _mm512_setzero_si512(), b = _mm512_setzero_si512();
  ThreeSlope() = default;
  explicit ThreeSlope(const CodeLevels& l)
      : a(_mm512_set1_epi8(static_cast<char>(l.knot[0]))),
        b(_mm512_set1_epi8(static_cast<char>(l.knot[1]))) {}
  __m512i Of(__m512i k) const {
    return _mm512_add_epi8(_mm512_add_epi8(k, _mm512_subs_epu8(k, a)), _mm512_subs_epu8(k, b));
  }
};

// A code's magnitude and sign (mask: negative) with levels, without vpermb: T[|c|] of c = u -
// 2^(kBits-1) for offset codes; in sign and magnitude, bit kBits - 1 and T[u & (2^(kBits-1) - 1)]
// (computed when T is three-slope).
template <int kBits, int kLevels, bool kThreeSlope>
struct LevelMagnitudes {
  LevelTables<kBits> lt;
  ThreeSlope ts;
  LevelMagnitudes() = default;
  explicit LevelMagnitudes(const CodeLevels& l) {
    if constexpr (kThreeSlope) {
      ts = ThreeSlope(l);
    } else {
      lt = LevelTables<kBits>(l);
    }
  }
  __m512i Of(__m512i u, __mmask64* negative) const {
    if constexpr (kLevels == internal::kSignMagnitudeLevels) {
      constexpr int kTop = 1 << (kBits - 1);
      *negative = _mm512_test_epi8_mask(u, _mm512_set1_epi8(static_cast<char>(kTop)));
      const __m512i k = _mm512_and_si512(u, _mm512_set1_epi8(kTop - 1));
      if constexpr (kThreeSlope) {
        return ts.Of(k);
      } else {
        return lt.Lookup(k);
      }
    } else {
      const __m512i c = _mm512_sub_epi8(u, _mm512_set1_epi8(static_cast<char>(1 << (kBits - 1))));
      *negative = _mm512_movepi8_mask(c);
      return lt.Lookup(_mm512_abs_epi8(c));
    }
  }
};

#if defined(DCOMP_AVX512_VBMI)
// The value of every packed code u < 2^kBits (CodeLevels::value) plus `bias`, as the byte tables
// of vpermb (up to 6 bits: 64 entries, one vector) or vpermi2b (7 bits: two vectors).
template <int kBits>
struct LevelValues {
  __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
  LevelValues() = default;
  LevelValues(const CodeLevels& l, uint8_t bias) {
    alignas(64) uint8_t v[128] = {};
    for (size_t u = 0; u < (size_t{1} << kBits); ++u) {
      v[u] = static_cast<uint8_t>(static_cast<uint8_t>(l.value[u]) + bias);
    }
    lo = _mm512_load_si512(v);
    hi = _mm512_load_si512(v + 64);
  }
  __m512i Lookup(__m512i u) const {
    if constexpr (kBits <= 6) {
      return _mm512_permutexvar_epi8(u, lo);
    } else {
      return _mm512_permutex2var_epi8(lo, u, hi);
    }
  }
};
#endif

// vpdpbusd multiplies the unsigned codes by the signed activations directly (the offset's sum
// subtracted once per row); with levels, each code's magnitude T by the activation carrying its
// sign (LevelMagnitudes), or with VBMI its value + 128 (LevelValues).
template <int kBits, int kLevels, bool kThreeSlope>
void GemvPackedAvx512T(const PackedMatrixView& w, const int8_t* x, float x_scale, float* y,
                       size_t r0, size_t r1) {
  const size_t stride = PaddedCols(w.cols);
  constexpr size_t kChunkBytes = 8 * kBits;
#if defined(DCOMP_AVX512_VBMI)
  // With levels, vpermb gives each code's value + 128: 128 x sum(x) is removed once per row.
  constexpr int32_t kOffset = kLevels ? 128 : 1 << (kBits - 1);
  [[maybe_unused]] const LevelValues<kBits> lv =
      kLevels ? LevelValues<kBits>(*w.levels, 128) : LevelValues<kBits>();
#else
  constexpr int32_t kOffset = kLevels ? 0 : 1 << (kBits - 1);
  [[maybe_unused]] const LevelMagnitudes<kBits, kLevels, kThreeSlope> lm =
      kLevels ? LevelMagnitudes<kBits, kLevels, kThreeSlope>(*w.levels)
              : LevelMagnitudes<kBits, kLevels, kThreeSlope>();
#endif
  const int32_t corr = kOffset == 0 ? 0 : kOffset * internal::SumCodes(x, stride);
  auto dot = [&](__m512i acc, const uint8_t* p, __m512i xv) {
    const __m512i u = UnpackChunk<kBits>(p);
    if constexpr (!kLevels) {
      return _mm512_dpbusd_epi32(acc, u, xv);
    } else {
#if defined(DCOMP_AVX512_VBMI)
      return _mm512_dpbusd_epi32(acc, lv.Lookup(u), xv);
#else
      __mmask64 negative;
      const __m512i t = lm.Of(u, &negative);
      const __m512i xs = _mm512_mask_sub_epi8(xv, negative, _mm512_setzero_si512(), xv);
      return _mm512_dpbusd_epi32(acc, t, xs);
#endif
    }
  };
  const size_t rb = w.row_bytes, dist = internal::PackedPrefetchDistance(rb, 4);
  size_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const uint8_t* p = w.data + r * rb;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t k = 0; k < stride; k += 64, p += kChunkBytes) {
      // T0, as the AVX2 kernels. The non-temporal hint ran 1.06x, 0.98x and 1.00x of T0's speed
      // end to end on AMD EPYC machines (sessions 23, 29, 33), but read rows out of cache at
      // 0.46x of T0's rate on an Intel Xeon (session 39; BENCHMARKS.md).
      _mm_prefetch(reinterpret_cast<const char*>(p + dist), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p + rb + dist), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p + 2 * rb + dist), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p + 3 * rb + dist), _MM_HINT_T0);
      const __m512i xv = _mm512_loadu_si512(x + k);
      a0 = dot(a0, p, xv);
      a1 = dot(a1, p + rb, xv);
      a2 = dot(a2, p + 2 * rb, xv);
      a3 = dot(a3, p + 3 * rb, xv);
    }
    y[r] = static_cast<float>(_mm512_reduce_add_epi32(a0) - corr) * (x_scale * w.scale[r]);
    y[r + 1] = static_cast<float>(_mm512_reduce_add_epi32(a1) - corr) * (x_scale * w.scale[r + 1]);
    y[r + 2] = static_cast<float>(_mm512_reduce_add_epi32(a2) - corr) * (x_scale * w.scale[r + 2]);
    y[r + 3] = static_cast<float>(_mm512_reduce_add_epi32(a3) - corr) * (x_scale * w.scale[r + 3]);
  }
  for (; r < r1; ++r) {
    const uint8_t* p = w.data + r * w.row_bytes;
    __m512i acc = _mm512_setzero_si512();
    for (size_t k = 0; k < stride; k += 64, p += kChunkBytes) {
      acc = dot(acc, p, _mm512_loadu_si512(x + k));
    }
    y[r] = static_cast<float>(_mm512_reduce_add_epi32(acc) - corr) * (x_scale * w.scale[r]);
  }
}

void GemvPackedAvx512(const PackedMatrixView& w, const int8_t* x, float x_scale, float* y,
                      size_t r0, size_t r1) {
  internal::ForPackedViewThreeSlope(w, [&](auto b, auto lv, auto ts) {
    GemvPackedAvx512T<decltype(b)::value, decltype(lv)::value, decltype(ts)::value>(w, x, x_scale,
                                                                                    y, r0, r1);
  });
}

template <int kBits, int kLevels, bool kThreeSlope>
void UnpackRowsAvx512T(const PackedMatrixView& w, size_t r0, size_t r1, int8_t* out) {
  const size_t stride = PaddedCols(w.cols);
  const __m512i off = _mm512_set1_epi8(static_cast<char>(1 << (kBits - 1)));
#if defined(DCOMP_AVX512_VBMI)
  [[maybe_unused]] const LevelValues<kBits> lv =
      kLevels ? LevelValues<kBits>(*w.levels, 0) : LevelValues<kBits>();
#else
  [[maybe_unused]] const LevelMagnitudes<kBits, kLevels, kThreeSlope> lm =
      kLevels ? LevelMagnitudes<kBits, kLevels, kThreeSlope>(*w.levels)
              : LevelMagnitudes<kBits, kLevels, kThreeSlope>();
#endif
  for (size_t r = r0; r < r1; ++r, out += stride) {
    const uint8_t* p = w.data + r * w.row_bytes;
    for (size_t k = 0; k < stride; k += 64, p += 8 * kBits) {
      const __m512i u = UnpackChunk<kBits>(p);
      if constexpr (!kLevels) {
        _mm512_storeu_si512(out + k, _mm512_sub_epi8(u, off));
      } else {
#if defined(DCOMP_AVX512_VBMI)
        _mm512_storeu_si512(out + k, lv.Lookup(u));
#else
        __mmask64 negative;
        const __m512i m = lm.Of(u, &negative);
        _mm512_storeu_si512(out + k, _mm512_mask_sub_epi8(m, negative, _mm512_setzero_si512(), m));
#endif
      }
    }
  }
}

void UnpackRowsAvx512(const PackedMatrixView& w, size_t r0, size_t r1, int8_t* out) {
  internal::ForPackedViewThreeSlope(w, [&](auto b, auto lv, auto ts) {
    UnpackRowsAvx512T<decltype(b)::value, decltype(lv)::value, decltype(ts)::value>(w, r0, r1, out);
  });
}

}  // namespace

namespace internal {
#if defined(DCOMP_AVX512_VBMI)
const KernelTable kAvx512VbmiTable = {
    "avx512_vbmi",
#else
const KernelTable kAvx512VnniTable = {
    "avx512_vnni",
#endif
    QuantizeRowQ8Ref,
    GemvQ8Avx512Vnni,
    GemmQ8Avx512Vnni,
    GemmF32Avx512,
    RowSumsQ8Avx512,
    GemvPackedAvx512,
    GemmPackedVia<UnpackRowsAvx512, GemvPackedAvx512, GemmQ8Avx512Vnni, RowSumsQ8Avx512>};
}  // namespace internal
}  // namespace dcomp::kernels
