// AVX2 rANS decoder: the 32 or 64 states (layout 1 or 2) in four or eight registers of 8 lanes. Per
// register and group: gather the table entries of the 8 slots, advance the states, and refill the
// states that fell below 2^16 from the shared word stream: the lanes that need a word take
// consecutive words in lane order (exactly the portable decoder's order), distributed by a
// permutation looked up from the 8-bit mask of those lanes. Each 32 symbols of a group are packed
// from four registers' low bytes. The loops over registers are unrolled so that the states stay in
// registers (GCC otherwise keeps them on the stack, which cost a quarter of the speed); with 64
// states the table gathers of eight independent registers overlap.
#include <immintrin.h>

#include <array>
#include <cstring>

#include "storage/internal/rans_impl.h"

namespace dcomp::storage::internal {
namespace {

// For each 8-bit mask of lanes that refill: lane i takes word number popcount(mask & (2^i - 1)).
struct RefillPermutations {
  alignas(32) std::array<std::array<int32_t, 8>, 256> idx{};
  constexpr RefillPermutations() {
    for (int m = 0; m < 256; ++m) {
      int k = 0;
      for (int i = 0; i < 8; ++i) {
        idx[m][i] = (m >> i) & 1 ? k++ : 0;
      }
    }
  }
};
constexpr RefillPermutations kRefill;

template <int kLanes>
__attribute__((target("avx2,popcnt"))) size_t DecodeGroups(const RansStream& s,
                                                           std::span<uint8_t> out, uint32_t* states,
                                                           size_t* words_read) {
  const size_t groups = out.size() / kLanes;
  const auto* table = reinterpret_cast<const int*>(s.table.data());
  const uint8_t* words = s.words_bytes;
  size_t w = *words_read;
  const size_t num_words = s.num_words;  // a local: the byte stores below may alias `s`
  constexpr int kRegs = kLanes / 8;
  __m256i x[kRegs];
#pragma GCC unroll 16
  for (int r = 0; r < kRegs; ++r) {
    x[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(states + 8 * r));
  }
  const __m256i slot_mask = _mm256_set1_epi32(kProbScale - 1);
  const __m256i bias_mask = _mm256_set1_epi32(0xFFF);
  const __m256i byte_mask = _mm256_set1_epi32(0xFF);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  uint8_t* o = out.data();
  size_t g = 0;
  // A group reads at most kLanes words; stop while a full group is still guaranteed in bounds
  // (each register's load of 8 words stays within the group's worst case).
  for (; g < groups && num_words - w >= kLanes; ++g, o += kLanes) {
    __m256i e[kRegs];
#pragma GCC unroll 16
    for (int r = 0; r < kRegs; ++r) {
      e[r] = _mm256_i32gather_epi32(table, _mm256_and_si256(x[r], slot_mask), 4);
      x[r] = _mm256_add_epi32(
          _mm256_mullo_epi32(_mm256_srli_epi32(e[r], 20), _mm256_srli_epi32(x[r], 12)),
          _mm256_and_si256(_mm256_srli_epi32(e[r], 8), bias_mask));
    }
    // Symbols: low bytes of four registers, packed with saturation (they are < 256), then the
    // 32-bit groups put back in lane order.
#pragma GCC unroll 16
    for (int r = 0; r < kRegs; r += 4) {
      const __m256i ab = _mm256_packus_epi32(_mm256_and_si256(e[r], byte_mask),
                                             _mm256_and_si256(e[r + 1], byte_mask));
      const __m256i cd = _mm256_packus_epi32(_mm256_and_si256(e[r + 2], byte_mask),
                                             _mm256_and_si256(e[r + 3], byte_mask));
      const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 8 * r), bytes);
    }
#pragma GCC unroll 16
    for (int r = 0; r < kRegs; ++r) {
      // x < 2^16 exactly when its high half is zero.
      const __m256i need = _mm256_cmpeq_epi32(_mm256_srli_epi32(x[r], 16), zero);
      const int m = _mm256_movemask_ps(_mm256_castsi256_ps(need));
      const __m256i next =
          _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(words + 2 * w)));
      const __m256i perm =
          _mm256_load_si256(reinterpret_cast<const __m256i*>(kRefill.idx[m].data()));
      const __m256i v = _mm256_permutevar8x32_epi32(next, perm);
      x[r] = _mm256_blendv_epi8(x[r], _mm256_or_si256(_mm256_slli_epi32(x[r], 16), v), need);
      w += static_cast<size_t>(__builtin_popcount(static_cast<unsigned>(m)));
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < kRegs; ++r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(states + 8 * r), x[r]);
  }
  *words_read = w;
  return g * kLanes;
}

}  // namespace

size_t RansDecodeGroupsAvx2(const RansStream& s, std::span<uint8_t> out, uint32_t* states,
                            size_t* words_read) {
  return ForRansLanes(s, [&](auto lanes) {
    return DecodeGroups<decltype(lanes)::value>(s, out, states, words_read);
  });
}

__attribute__((target("avx2"))) bool ValuesAreLevelsAvx2(const int8_t* q, size_t n,
                                                         const uint8_t map[16]) {
  const __m256i m =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(map)));
  const __m256i bit = _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128,
                                       1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
  const __m256i zero = _mm256_setzero_si256(), min = _mm256_set1_epi8(-128);
  __m256i bad = zero;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + i));
    const __m256i a = _mm256_abs_epi8(v);  // -128 stays 0x80: caught below
    const __m256i byte =
        _mm256_shuffle_epi8(m, _mm256_and_si256(_mm256_srli_epi16(a, 3), _mm256_set1_epi8(15)));
    const __m256i sel = _mm256_shuffle_epi8(bit, _mm256_and_si256(a, _mm256_set1_epi8(7)));
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi8(_mm256_and_si256(byte, sel), zero));
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi8(v, min));
  }
  return _mm256_testz_si256(bad, bad) != 0 && ValuesAreLevelsPortable(q + i, n - i, map);
}

}  // namespace dcomp::storage::internal
