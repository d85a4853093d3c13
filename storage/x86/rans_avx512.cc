// AVX-512 rANS decoder: the 32 or 64 states (layout 1 or 2) in two or four registers of 16 lanes.
// Per register and group: gather the table entries of the 16 slots, write the 16 symbols, advance
// the states, and refill the states that fell below 2^16 from the shared word stream with one
// masked expand-load (VBMI2), which hands consecutive words to the lanes that need them in lane
// order: exactly the portable decoder's order.
#include <immintrin.h>

#include <cstring>

#include "storage/internal/rans_impl.h"

namespace dcomp::storage::internal {

namespace {

template <int kLanes>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt"))) size_t DecodeGroups(
    const RansStream& s, std::span<uint8_t> out, uint32_t* states, size_t* words_read) {
  const size_t groups = out.size() / kLanes;
  const auto* table = reinterpret_cast<const int*>(s.table.data());
  const auto* words = reinterpret_cast<const uint16_t*>(s.words_bytes);
  size_t w = *words_read;
  const size_t num_words = s.num_words;  // a local: the byte stores below may alias `s`
  constexpr int kRegs = kLanes / 16;
  __m512i x[kRegs];
#pragma GCC unroll 16
  for (int r = 0; r < kRegs; ++r) x[r] = _mm512_loadu_si512(states + 16 * r);
  const __m512i slot_mask = _mm512_set1_epi32(kProbScale - 1);
  const __m512i bias_mask = _mm512_set1_epi32(0xFFF);
  const __m512i lower = _mm512_set1_epi32(static_cast<int>(kRansL));
  uint8_t* o = out.data();
  size_t g = 0;
  // A group reads at most kLanes words; stop while a full group is still guaranteed in bounds.
  for (; g < groups && num_words - w >= kLanes; ++g, o += kLanes) {
    __m512i e[kRegs];
#pragma GCC unroll 16
    for (int r = 0; r < kRegs; ++r) {
      e[r] = _mm512_i32gather_epi32(_mm512_and_si512(x[r], slot_mask), table, 4);
    }
#pragma GCC unroll 16
    for (int r = 0; r < kRegs; ++r) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 16 * r), _mm512_cvtepi32_epi8(e[r]));
      x[r] = _mm512_add_epi32(
          _mm512_mullo_epi32(_mm512_srli_epi32(e[r], 20), _mm512_srli_epi32(x[r], 12)),
          _mm512_and_si512(_mm512_srli_epi32(e[r], 8), bias_mask));
    }
#pragma GCC unroll 16
    for (int r = 0; r < kRegs; ++r) {
      const __mmask16 m = _mm512_cmplt_epu32_mask(x[r], lower);
      const __m256i v = _mm256_maskz_expandloadu_epi16(m, words + w);
      w += static_cast<size_t>(__builtin_popcount(m));
      x[r] = _mm512_mask_or_epi32(x[r], m, _mm512_slli_epi32(x[r], 16), _mm512_cvtepu16_epi32(v));
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < kRegs; ++r) _mm512_storeu_si512(states + 16 * r, x[r]);
  *words_read = w;
  return g * kLanes;
}

}  // namespace

size_t RansDecodeGroupsAvx512(const RansStream& s, std::span<uint8_t> out, uint32_t* states,
                              size_t* words_read) {
  return ForRansLanes(s, [&](auto lanes) {
    return DecodeGroups<decltype(lanes)::value>(s, out, states, words_read);
  });
}

__attribute__((target("avx512f,avx512bw"))) bool ValuesAreLevelsAvx512(const int8_t* q, size_t n,
                                                                       const uint8_t map[16]) {
  const __m512i m =
      _mm512_maskz_broadcast_i32x4(0xFFFF, _mm_loadu_si128(reinterpret_cast<const __m128i*>(map)));
  const __m512i bit = _mm512_maskz_broadcast_i32x4(
      0xFFFF, _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128));
  const __m512i min = _mm512_set1_epi8(-128);
  __mmask64 bad = 0;
  for (size_t i = 0; i < n; i += 64) {
    // The tail's missing bytes load as 0 (not a level of a midrise table): masked out below.
    const __mmask64 k = n - i >= 64 ? ~__mmask64{0} : (__mmask64{1} << (n - i)) - 1;
    const __m512i v = _mm512_maskz_loadu_epi8(k, q + i);
    const __m512i a = _mm512_abs_epi8(v);  // -128 stays 0x80: caught below
    const __m512i byte =
        _mm512_shuffle_epi8(m, _mm512_and_si512(_mm512_srli_epi16(a, 3), _mm512_set1_epi8(15)));
    const __m512i sel = _mm512_shuffle_epi8(bit, _mm512_and_si512(a, _mm512_set1_epi8(7)));
    bad |= (_mm512_testn_epi8_mask(byte, sel) | _mm512_cmpeq_epi8_mask(v, min)) & k;
  }
  return bad == 0;
}

}  // namespace dcomp::storage::internal
