// AVX2 + FMA kernels. int8 products use the sign trick: |x| (unsigned) times sign(x)*w (signed)
// with vpmaddubsw, which cannot saturate because codes lie in [-127, 127] (2*127*127 < 32767).
#include <immintrin.h>

#include <cstring>

#include "kernels/internal.h"

namespace dcomp::kernels {
namespace {

inline int32_t HsumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

inline float HsumF32(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256i DotStep(__m256i acc, __m256i abs_x, __m256i x, __m256i w, __m256i ones) {
  const __m256i p16 = _mm256_maddubs_epi16(abs_x, _mm256_sign_epi8(w, x));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, ones));
}

void GemvQ8Avx2(const Q8MatrixView& w, const int8_t* x, float x_scale, float* y, size_t r0,
                size_t r1) {
  const __m256i ones = _mm256_set1_epi16(1);
  const size_t stride = w.stride;
  size_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const int8_t* w0 = w.q + r * stride;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t k = 0; k < stride; k += 32) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
      const __m256i ax = _mm256_sign_epi8(xv, xv);
      a0 = DotStep(a0, ax, xv, _mm256_loadu_si256((const __m256i*)(w0 + k)), ones);
      a1 = DotStep(a1, ax, xv, _mm256_loadu_si256((const __m256i*)(w0 + stride + k)), ones);
      a2 = DotStep(a2, ax, xv, _mm256_loadu_si256((const __m256i*)(w0 + 2 * stride + k)), ones);
      a3 = DotStep(a3, ax, xv, _mm256_loadu_si256((const __m256i*)(w0 + 3 * stride + k)), ones);
    }
    y[r] = static_cast<float>(HsumI32(a0)) * (x_scale * w.scale[r]);
    y[r + 1] = static_cast<float>(HsumI32(a1)) * (x_scale * w.scale[r + 1]);
    y[r + 2] = static_cast<float>(HsumI32(a2)) * (x_scale * w.scale[r + 2]);
    y[r + 3] = static_cast<float>(HsumI32(a3)) * (x_scale * w.scale[r + 3]);
  }
  for (; r < r1; ++r) {
    const int8_t* wr = w.q + r * stride;
    __m256i acc = _mm256_setzero_si256();
    for (size_t k = 0; k < stride; k += 32) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
      acc = DotStep(acc, _mm256_sign_epi8(xv, xv), xv,
                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + k)), ones);
    }
    y[r] = static_cast<float>(HsumI32(acc)) * (x_scale * w.scale[r]);
  }
}

void GemmQ8Avx2(const Q8MatrixView& w, const int8_t* x, size_t x_stride, const float* x_scale,
                size_t n_tok, float* y, size_t y_stride, size_t r0, size_t r1) {
  // Row blocks outside, tokens inside: a block of weight rows stays in L1 across the tokens.
  constexpr size_t kRowBlock = 16;
  for (size_t rb = r0; rb < r1; rb += kRowBlock) {
    const size_t re = rb + kRowBlock < r1 ? rb + kRowBlock : r1;
    for (size_t t = 0; t < n_tok; ++t) {
      GemvQ8Avx2(w, x + t * x_stride, x_scale[t], y + t * y_stride, rb, re);
    }
  }
}

void GemmF32Avx2(const F32MatrixView& w, const float* x, size_t x_stride, size_t n_tok, float* y,
                 size_t y_stride, size_t r0, size_t r1) {
  const size_t cols = w.cols;
  const size_t vec_end = cols / 8 * 8;
  for (size_t r = r0; r < r1; ++r) {
    const float* wr = w.w + r * w.stride;
    for (size_t t = 0; t < n_tok; ++t) {
      const float* xt = x + t * x_stride;
      __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
      size_t c = 0;
      for (; c + 16 <= vec_end; c += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + c), _mm256_loadu_ps(xt + c), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + c + 8), _mm256_loadu_ps(xt + c + 8), acc1);
      }
      for (; c < vec_end; c += 8) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + c), _mm256_loadu_ps(xt + c), acc0);
      }
      float s = HsumF32(_mm256_add_ps(acc0, acc1));
      for (; c < cols; ++c) s += wr[c] * xt[c];
      y[t * y_stride + r] = s;
    }
  }
}

// Sums of signed bytes as sums of (q ^ 0x80) (unsigned, via SAD against zero) minus 128 each.
bool RowSumsQ8Avx2(const int8_t* q, size_t rows, size_t stride, int32_t* row_sum) {
  const __m256i bias = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i zero = _mm256_setzero_si256();
  __m256i bad = zero;
  for (size_t r = 0; r < rows; ++r) {
    const int8_t* row = q + r * stride;
    __m256i acc = zero;
    for (size_t c = 0; c < stride; c += 32) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c));
      bad = _mm256_or_si256(bad, _mm256_cmpeq_epi8(v, bias));
      acc = _mm256_add_epi64(acc, _mm256_sad_epu8(_mm256_xor_si256(v, bias), zero));
    }
    alignas(32) int64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
    row_sum[r] = static_cast<int32_t>(lanes[0] + lanes[1] + lanes[2] + lanes[3] -
                                      128 * static_cast<int64_t>(stride));
  }
  return _mm256_testz_si256(bad, bad) != 0;
}

// ----- packed codes (layout in kernels.h) -----------------------------------------------------

// The bits below the top-bit plane of one 64-code chunk: codes 0-31 in *a, 32-63 in *b.
template <int kBits>
inline void UnpackPlanes(const uint8_t* c, __m256i* a, __m256i* b) {
  const __m256i m4 = _mm256_set1_epi8(15);
  const __m256i n = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c));
  __m256i lo = _mm256_and_si256(n, m4), hi = _mm256_and_si256(_mm256_srli_epi16(n, 4), m4);
  if constexpr (kBits >= 6) {
    // Codes 16k + j hold bits 2k, 2k + 1 of byte j. The plane in lane 0 and, shifted right by 2,
    // in lane 1 puts the fields of codes 0-15 and 16-31 at bits 0-1 (shifted up to bits 4-5) and
    // those of codes 32-47 and 48-63 at bits 4-5; the masks drop what crossed from other bytes.
    const __m256i m30 = _mm256_set1_epi8(0x30);
    const __m256i p =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 32)));
    const __m256i s = _mm256_blend_epi32(p, _mm256_srli_epi32(p, 2), 0xf0);
    lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi32(s, 4), m30));
    hi = _mm256_or_si256(hi, _mm256_and_si256(s, m30));
  }
  *a = lo;
  *b = hi;
}

// The top-bit plane of an odd width's chunk as byte masks (-1 where the bit is set). Code j + 8k
// holds bit k of byte j. The 8 bytes go to every 64-bit lane; lane L of *a tests bit L of each
// byte, lane L of *b bit 4 + L.
template <int kBits>
inline void UnpackTopMasks(const uint8_t* c, __m256i* a, __m256i* b) {
  const __m256i sel_a = _mm256_setr_epi64x(0x0101010101010101, 0x0202020202020202,
                                           0x0404040404040404, 0x0808080808080808);
  const __m256i sel_b = _mm256_slli_epi64(sel_a, 4);
  int64_t t;
  std::memcpy(&t, c + 8 * kBits - 8, 8);
  const __m256i v = _mm256_set1_epi64x(t);
  *a = _mm256_cmpeq_epi8(_mm256_and_si256(v, sel_a), sel_a);
  *b = _mm256_cmpeq_epi8(_mm256_and_si256(v, sel_b), sel_b);
}

// The unsigned codes of one 64-code chunk: codes 0-31 in *a, 32-63 in *b. Only shifts by an
// immediate: on cores that split 256-bit operations (AMD Zen 1) a variable shift costs twice an
// immediate one and about six logical operations, and the four variable shifts of the first
// version bound the 7-bit product there (BENCHMARKS.md, session 27).
template <int kBits>
inline void UnpackChunk(const uint8_t* c, __m256i* a, __m256i* b) {
  UnpackPlanes<kBits>(c, a, b);
  if constexpr (kBits % 2 == 1) {
    const __m256i top = _mm256_set1_epi8(static_cast<char>(1 << (kBits - 1)));
    __m256i ta, tb;
    UnpackTopMasks<kBits>(c, &ta, &tb);
    *a = _mm256_or_si256(*a, _mm256_and_si256(ta, top));
    *b = _mm256_or_si256(*b, _mm256_and_si256(tb, top));
  }
}

// u (unsigned, <= 127) times x (signed): vpmaddubsw cannot saturate (2 * 127 * 127 < 32767).
inline __m256i DotU(__m256i acc, __m256i u, __m256i x, __m256i ones) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), ones));
}

// A width's level magnitudes (CodeLevels::mag) as the 16-entry tables of vpshufb, each in both
// lanes: table t holds T[16t .. 16t + 15].
template <int kBits>
struct LevelTables {
  __m256i t[kBits == 7 ? 4 : kBits == 6 ? 2 : 1];
  LevelTables() {
    for (__m256i& v : t) v = _mm256_setzero_si256();
  }
  explicit LevelTables(const CodeLevels& l) {
    if constexpr (kBits == 4) {  // T[0..7] twice: entry a and a + 8 agree
      int64_t t8;
      std::memcpy(&t8, l.mag, 8);
      t[0] = _mm256_set1_epi64x(t8);
      return;
    }
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); ++i) {
      t[i] = _mm256_broadcastsi128_si256(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(l.mag + 16 * i)));
    }
  }
  // T[a & (2^(kBits-1) - 1)] for a < 2^kBits, or T[0] for a = 2^(kBits-1): vpshufb reads the low
  // nibble, bits 4 and 5 choose the table (blends on the byte's top bit after a shift), and the
  // sign bit of a sign-and-magnitude u is ignored (4 bits: the table repeats; 5 and 7: not
  // unpacked; 6: bit 5 is not looked at). For offset codes a = |c| <= 2^(kBits-1), and
  // a = 2^(kBits-1) (the code -2^(kBits-1)) lands on T[0] = 0. Measured against two shuffles whose
  // saturated indices zero the other table (no shift, no blend): 8% slower for 6 bits on Zen 1
  // (BENCHMARKS.md, session 27).
  __m256i Lookup(__m256i a) const {
    const __m256i r0 = _mm256_shuffle_epi8(t[0], a);
    if constexpr (kBits <= 5) {
      return r0;
    } else {
      const __m256i b4 = _mm256_slli_epi16(a, 3);
      const __m256i r01 = _mm256_blendv_epi8(r0, _mm256_shuffle_epi8(t[1], a), b4);
      if constexpr (kBits == 6) {
        return r01;
      } else {
        const __m256i r23 =
            _mm256_blendv_epi8(_mm256_shuffle_epi8(t[2], a), _mm256_shuffle_epi8(t[3], a), b4);
        return _mm256_blendv_epi8(r01, r23, _mm256_slli_epi16(a, 2));
      }
    }
  }
};

// T(k) = k + max(0, k - a) + max(0, k - b) of a three-slope table (CodeLevels::knot) for k <= 63.
struct ThreeSlope {
  __m256i a, b;
  ThreeSlope() : a(_mm256_setzero_si256()), b(a) {}
  explicit ThreeSlope(const CodeLevels& l)
      : a(_mm256_set1_epi8(static_cast<char>(l.knot[0]))),
        b(_mm256_set1_epi8(static_cast<char>(l.knot[1]))) {}
  __m256i Of(__m256i k) const {
    return _mm256_add_epi8(_mm256_add_epi8(k, _mm256_subs_epu8(k, a)), _mm256_subs_epu8(k, b));
  }
};

// The sign masks of a sign-and-magnitude chunk, the byte's top bit set where the code is
// negative: the top-bit plane at odd widths; at even ones the sign bit of u itself shifted up to
// the byte's top (what crosses from the byte below lands under it).
template <int kBits>
inline void UnpackSignMasks(const uint8_t* c, __m256i ua, __m256i ub, __m256i* sa, __m256i* sb) {
  if constexpr (kBits % 2 == 1) {
    UnpackTopMasks<kBits>(c, sa, sb);
  } else {
    *sa = _mm256_slli_epi16(ua, 8 - kBits);
    *sb = _mm256_slli_epi16(ub, 8 - kBits);
  }
}

// x, negated where the sign mask s (UnpackSignMasks) is negative: one vpsignb, s made odd first so
// that no byte is 0. Out of cache, against the offset codes of format 8, a blend with -x (as the
// 7-bit product had since format 7) ran the 6-bit product at 0.90-1.01x and the 4-bit one at
// 0.96-1.09x, vpsignb at 1.00-1.24x and 1.13-1.30x; at 7 bits vpsignb runs 1.09-1.13x of the
// blend in cache, 1.02-1.07x out of it (BENCHMARKS.md, session 40).
inline __m256i Signed(__m256i x, __m256i s) {
  return _mm256_sign_epi8(x, _mm256_or_si256(s, _mm256_set1_epi8(1)));
}

// How one row's 64-code chunk meets the activations, by kind of codes (internal::kLinearCodes
// ...): linear (u times x, the offset's sum subtracted once per row), offset levels up to 6 bits
// (c = u - 2^(kBits-1), T[|c|] times x carrying c's sign), and sign-and-magnitude levels (T of the
// magnitude bits times x negated where the sign bit is set). vpmaddubsw cannot saturate:
// T <= 127.
template <int kBits, int kLevels, bool kThreeSlope>
struct ChunkCodes {
  static constexpr bool kSignMagnitude = kLevels == internal::kSignMagnitudeLevels;
  [[maybe_unused]] LevelTables<kBits> lt;
  [[maybe_unused]] ThreeSlope ts;
  explicit ChunkCodes(const CodeLevels* l) {
    if constexpr (kThreeSlope) {
      ts = ThreeSlope(*l);
    } else if constexpr (kLevels) {
      lt = LevelTables<kBits>(*l);
    }
  }
  __m256i Magnitude(__m256i k) const {
    if constexpr (kThreeSlope) {
      return ts.Of(k);
    } else {
      return lt.Lookup(k);
    }
  }
  // acc_a, acc_b += the chunk at c times x (codes 0-31 by xa, 32-63 by xb).
  void Dot(const uint8_t* c, __m256i xa, __m256i xb, __m256i* acc_a, __m256i* acc_b) const {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i ua, ub;
    if constexpr (kSignMagnitude) {
      __m256i sa, sb;
      UnpackPlanes<kBits>(c, &ua, &ub);
      UnpackSignMasks<kBits>(c, ua, ub, &sa, &sb);
      *acc_a = DotU(*acc_a, Magnitude(ua), Signed(xa, sa), ones);
      *acc_b = DotU(*acc_b, Magnitude(ub), Signed(xb, sb), ones);
      return;
    }
    UnpackChunk<kBits>(c, &ua, &ub);
    if constexpr (kLevels) {
      const __m256i off = _mm256_set1_epi8(static_cast<char>(1 << (kBits - 1)));
      const __m256i ca = _mm256_sub_epi8(ua, off), cb = _mm256_sub_epi8(ub, off);
      *acc_a = DotU(*acc_a, lt.Lookup(_mm256_abs_epi8(ca)), _mm256_sign_epi8(xa, ca), ones);
      *acc_b = DotU(*acc_b, lt.Lookup(_mm256_abs_epi8(cb)), _mm256_sign_epi8(xb, cb), ones);
    } else {
      *acc_a = DotU(*acc_a, ua, xa, ones);
      *acc_b = DotU(*acc_b, ub, xb, ones);
    }
  }
  // The signed values of the chunk at c: codes 0-31 to *a, 32-63 to *b.
  void Values(const uint8_t* c, __m256i* a, __m256i* b) const {
    if constexpr (kSignMagnitude) {
      __m256i sa, sb;
      UnpackPlanes<kBits>(c, a, b);
      UnpackSignMasks<kBits>(c, *a, *b, &sa, &sb);
      const __m256i ta = Magnitude(*a), tb = Magnitude(*b);
      *a = Signed(ta, sa);
      *b = Signed(tb, sb);
      return;
    }
    UnpackChunk<kBits>(c, a, b);
    const __m256i off = _mm256_set1_epi8(static_cast<char>(1 << (kBits - 1)));
    *a = _mm256_sub_epi8(*a, off);
    *b = _mm256_sub_epi8(*b, off);
    if constexpr (kLevels) {
      *a = _mm256_sign_epi8(lt.Lookup(_mm256_abs_epi8(*a)), *a);
      *b = _mm256_sign_epi8(lt.Lookup(_mm256_abs_epi8(*b)), *b);
    }
  }
};

// Two rows at a time.
template <int kBits, int kLevels, bool kThreeSlope>
void GemvPackedAvx2T(const PackedMatrixView& w, const int8_t* x, float x_scale, float* y, size_t r0,
                     size_t r1) {
  const size_t stride = PaddedCols(w.cols);
  const int32_t corr = kLevels ? 0 : (1 << (kBits - 1)) * internal::SumCodes(x, stride);
  constexpr size_t kChunkBytes = 8 * kBits;
  const ChunkCodes<kBits, kLevels, kThreeSlope> codes(w.levels);
  const size_t dist = internal::PackedPrefetchDistance(w.row_bytes, 2);
  size_t r = r0;
  for (; r + 2 <= r1; r += 2) {
    const uint8_t* p0 = w.data + r * w.row_bytes;
    const uint8_t* p1 = p0 + w.row_bytes;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, b0 = a0, b1 = a0;
    for (size_t k = 0; k < stride; k += 64, p0 += kChunkBytes, p1 += kChunkBytes) {
      _mm_prefetch(reinterpret_cast<const char*>(p0 + dist), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p1 + dist), _MM_HINT_T0);
      const __m256i xa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
      const __m256i xb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k + 32));
      codes.Dot(p0, xa, xb, &a0, &b0);
      codes.Dot(p1, xa, xb, &a1, &b1);
    }
    y[r] = static_cast<float>(HsumI32(_mm256_add_epi32(a0, b0)) - corr) * (x_scale * w.scale[r]);
    y[r + 1] =
        static_cast<float>(HsumI32(_mm256_add_epi32(a1, b1)) - corr) * (x_scale * w.scale[r + 1]);
  }
  for (; r < r1; ++r) {
    const uint8_t* p = w.data + r * w.row_bytes;
    __m256i a = _mm256_setzero_si256(), b = a;
    for (size_t k = 0; k < stride; k += 64, p += kChunkBytes) {
      const __m256i xa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
      const __m256i xb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k + 32));
      codes.Dot(p, xa, xb, &a, &b);
    }
    y[r] = static_cast<float>(HsumI32(_mm256_add_epi32(a, b)) - corr) * (x_scale * w.scale[r]);
  }
}

void GemvPackedAvx2(const PackedMatrixView& w, const int8_t* x, float x_scale, float* y, size_t r0,
                    size_t r1) {
  internal::ForPackedViewThreeSlope(w, [&](auto b, auto lv, auto ts) {
    GemvPackedAvx2T<decltype(b)::value, decltype(lv)::value, decltype(ts)::value>(w, x, x_scale, y,
                                                                                  r0, r1);
  });
}

template <int kBits, int kLevels, bool kThreeSlope>
void UnpackRowsAvx2T(const PackedMatrixView& w, size_t r0, size_t r1, int8_t* out) {
  const size_t stride = PaddedCols(w.cols);
  const ChunkCodes<kBits, kLevels, kThreeSlope> codes(w.levels);
  for (size_t r = r0; r < r1; ++r, out += stride) {
    const uint8_t* p = w.data + r * w.row_bytes;
    for (size_t k = 0; k < stride; k += 64, p += 8 * kBits) {
      __m256i a, b;
      codes.Values(p, &a, &b);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), a);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k + 32), b);
    }
  }
}

void UnpackRowsAvx2(const PackedMatrixView& w, size_t r0, size_t r1, int8_t* out) {
  internal::ForPackedViewThreeSlope(w, [&](auto b, auto lv, auto ts) {
    UnpackRowsAvx2T<decltype(b)::value, decltype(lv)::value, decltype(ts)::value>(w, r0, r1, out);
  });
}

}  // namespace

namespace internal {
const KernelTable kAvx2Table = {
    "avx2",         QuantizeRowQ8Ref,
    GemvQ8Avx2,     GemmQ8Avx2,
    GemmF32Avx2,    RowSumsQ8Avx2,
    GemvPackedAvx2, GemmPackedVia<UnpackRowsAvx2, GemvPackedAvx2, GemmQ8Avx2, RowSumsQ8Avx2>};
}  // namespace internal
}  // namespace dcomp::kernels
