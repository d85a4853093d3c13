// Shared between the rANS encoder, the portable decoder and the SIMD decoders (storage/ only).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <type_traits>

#include "base/status.h"
#include "storage/rans.h"

namespace dcomp::storage::internal {

inline constexpr uint32_t kRansL = 1u << 16;  // lower bound of a normalised state
inline constexpr uint32_t kProbScale = 1u << kRansProbBits;
// The layouts (the stream's first byte): 1 = 32 states, 2 = 64 states whose last two symbols each
// are held in the final state, 3 = layout 2 with its frequency table coded for sparse alphabets.
inline constexpr int kRansTailPerLane = 2;  // layouts 2 and 3
inline int RansLanesOf(int layout) { return layout == 1 ? 32 : 64; }
// How many of a stream's n symbols are coded; the rest (layouts 2 and 3) are held in the final
// states.
inline size_t RansCodedSymbols(int layout, size_t n) {
  return layout == 1 ? n : n - std::min<size_t>(n, kRansTailPerLane * kRansMaxLanes);
}

// A parsed stream: the decode table and where the states and words are.
struct RansStream {
  int lanes = 0;
  // Symbols [coded, n) are held in the final states (layout 2): symbol coded + 64 j + k (k < 64)
  // is byte j of lane (coded + k) % 64's final state, which is 2^16 + those bytes.
  size_t coded = 0;
  // Per slot: symbol | (slot - start) << 8 | freq << 20 (freq < 4096: a single-symbol stream is
  // flagged instead).
  std::array<uint32_t, kProbScale> table;
  bool single_symbol = false;
  uint8_t symbol = 0;
  std::array<uint32_t, kRansMaxLanes> states;
  const uint8_t* words_bytes = nullptr;
  size_t num_words = 0;
};

// Calls f with std::integral_constant<int, N> for the stream's state count N (32 or 64): the SIMD
// decoders are templates on it, so that their loops over registers unroll.
template <typename F>
size_t ForRansLanes(const RansStream& s, F&& f) {
  return s.lanes == 32 ? f(std::integral_constant<int, 32>{})
                       : f(std::integral_constant<int, 64>{});
}

// Parses the header, frequency table and states of a stream of `n` symbols; validates them.
Status ParseRansStream(std::span<const uint8_t> in, size_t n, RansStream* s);

// Checks that a stream was consumed exactly (every word read) and that each final state is where
// the encoder began: 2^16 plus, in layout 2, the symbols [s.coded, out.size()) it holds, which it
// writes to `out`.
Status FinishRansDecode(const RansStream& s, size_t words_read, const uint32_t* states,
                        std::span<uint8_t> out);

// Decodes symbols [begin, s.coded) with the portable loop, continuing from `states` and word
// position `*words_read`.
Status RansDecodeTail(const RansStream& s, size_t begin, std::span<uint8_t> out, uint32_t* states,
                      size_t* words_read);

// ValuesAreLevels per instruction set: `map` holds bit m & 7 of byte m >> 3 for each level
// magnitude m (0..127); a value v is a level when v != -128 and |v|'s bit is set.
bool ValuesAreLevelsPortable(const int8_t* q, size_t n, const uint8_t map[16]);
#if defined(__x86_64__)
bool ValuesAreLevelsAvx512(const int8_t* q, size_t n, const uint8_t map[16]);
bool ValuesAreLevelsAvx2(const int8_t* q, size_t n, const uint8_t map[16]);
#endif
#if defined(__aarch64__)
bool ValuesAreLevelsNeon(const int8_t* q, size_t n, const uint8_t map[16]);
#endif

// The SIMD decoders of whole groups of s.lanes symbols of out (out.size() = s.coded), continuing
// from `states` and word position `*words_read`; each returns the symbols decoded (the portable
// loop decodes the rest).
#if defined(__x86_64__)
// AVX-512 (F, BW, VBMI2): storage/x86/rans_avx512.cc.
size_t RansDecodeGroupsAvx512(const RansStream& s, std::span<uint8_t> out, uint32_t* states,
                              size_t* words_read);
// AVX2: storage/x86/rans_avx2.cc.
size_t RansDecodeGroupsAvx2(const RansStream& s, std::span<uint8_t> out, uint32_t* states,
                            size_t* words_read);
#endif
#if defined(__aarch64__)
// NEON (AArch64 baseline): storage/arm/rans_neon.cc.
size_t RansDecodeGroupsNeon(const RansStream& s, std::span<uint8_t> out, uint32_t* states,
                            size_t* words_read);
#endif

}  // namespace dcomp::storage::internal
