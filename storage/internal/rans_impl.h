// Shared between the rANS encoder, the portable decoder and the SIMD decoders (storage/ only).
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "base/status.h"
#include "storage/rans.h"

namespace dcomp::storage::internal {

inline constexpr uint32_t kRansL = 1u << 16;  // lower bound of a normalised state
inline constexpr uint32_t kProbScale = 1u << kRansProbBits;
inline constexpr uint8_t kRansStreamTag = 0x01;  // layout version: 32 lanes, 12-bit frequencies

// A parsed stream: the decode table and where the states and words are.
struct RansStream {
  // Per slot: symbol | (slot - start) << 8 | freq << 20 (freq < 4096: a single-symbol stream is
  // flagged instead).
  std::array<uint32_t, kProbScale> table;
  bool single_symbol = false;
  uint8_t symbol = 0;
  std::array<uint32_t, kRansLanes> states;
  const uint8_t* words_bytes = nullptr;
  size_t num_words = 0;
};

// Parses the header, frequency table and states; validates them.
Status ParseRansStream(std::span<const uint8_t> in, RansStream* s);

// Checks that a stream was consumed exactly: every word read and every state back at kRansL.
Status CheckRansEnd(const RansStream& s, size_t words_read, const uint32_t* states);

// Decodes symbols [begin, out.size()) with the portable loop, continuing from `states` and word
// position `*words_read`.
Status RansDecodeTail(const RansStream& s, size_t begin, std::span<uint8_t> out, uint32_t* states,
                      size_t* words_read);

// The SIMD decoders of whole 32-symbol groups, continuing from `states` and word position
// `*words_read`; each returns the symbols decoded (the portable loop decodes the rest).
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
