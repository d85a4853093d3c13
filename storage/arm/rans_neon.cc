// NEON rANS decoder (AArch64 baseline, no optional extension): the 32 or 64 states (layout 1 or
// 2) in eight or sixteen registers of 4 lanes. Per register and group: the 4 table entries are
// loaded one by one (NEON has no gather), the states advance in vector arithmetic, and the states
// that fell below 2^16 refill from the shared word stream: the lanes that need a word take
// consecutive words in lane order (the portable decoder's order), distributed by a byte shuffle
// looked up from the 4-bit lane mask.
#include <arm_neon.h>

#include <array>
#include <cstring>

#include "storage/internal/rans_impl.h"

namespace dcomp::storage::internal {
namespace {

// For each 4-bit mask of lanes that refill: the bytes of the 32-bit lanes of the next words'
// vector that lane i takes (word number popcount(mask & (2^i - 1))).
struct RefillShuffles {
  std::array<std::array<uint8_t, 16>, 16> idx{};
  constexpr RefillShuffles() {
    for (int m = 0; m < 16; ++m) {
      int k = 0;
      for (int i = 0; i < 4; ++i) {
        const int word = (m >> i) & 1 ? k++ : 0;
        for (int b = 0; b < 4; ++b) idx[m][4 * i + b] = static_cast<uint8_t>(4 * word + b);
      }
    }
  }
};
constexpr RefillShuffles kRefill;

template <int kLanes>
size_t DecodeGroups(const RansStream& s, std::span<uint8_t> out, uint32_t* states,
                    size_t* words_read) {
  const size_t groups = out.size() / kLanes;
  const uint32_t* table = s.table.data();
  const uint8_t* words = s.words_bytes;
  size_t w = *words_read;
  const size_t num_words = s.num_words;  // a local: the byte stores below may alias `s`
  constexpr int kRegs = kLanes / 4;
  uint32x4_t x[kRegs];
#pragma GCC unroll 16
  for (int r = 0; r < kRegs; ++r) x[r] = vld1q_u32(states + 4 * r);
  const uint32x4_t bias_mask = vdupq_n_u32(0xFFF);
  const uint32x4_t lower = vdupq_n_u32(kRansL);
  const uint32x4_t bit = {1, 2, 4, 8};
  uint8_t* o = out.data();
  size_t g = 0;
  // A group reads at most kLanes words; stop while a full group is still guaranteed in bounds
  // (each register's load of 4 words stays within the group's worst case).
  for (; g < groups && num_words - w >= kLanes; ++g, o += kLanes) {
    uint16x4_t sym[kRegs];
#pragma GCC unroll 16
    for (int r = 0; r < kRegs; ++r) {
      uint32_t slot[4];
      vst1q_u32(slot, vandq_u32(x[r], bias_mask));  // the slot is the low 12 bits
      uint32_t ent[4] = {table[slot[0]], table[slot[1]], table[slot[2]], table[slot[3]]};
      const uint32x4_t e = vld1q_u32(ent);
      sym[r] = vmovn_u32(e);  // the symbol is the low byte (narrowed again below)
      x[r] = vaddq_u32(vmulq_u32(vshrq_n_u32(e, 20), vshrq_n_u32(x[r], 12)),
                       vandq_u32(vshrq_n_u32(e, 8), bias_mask));
    }
#pragma GCC unroll 16
    for (int r = 0; r < kRegs; r += 2) {
      vst1_u8(o + 4 * r, vmovn_u16(vcombine_u16(sym[r], sym[r + 1])));
    }
#pragma GCC unroll 16
    for (int r = 0; r < kRegs; ++r) {
      const uint32x4_t need = vcltq_u32(x[r], lower);
      const unsigned m = vaddvq_u32(vandq_u32(need, bit));
      uint16_t next4[4];
      std::memcpy(next4, words + 2 * w, sizeof next4);
      const uint8x16_t next = vreinterpretq_u8_u32(vmovl_u16(vld1_u16(next4)));
      const uint32x4_t v = vreinterpretq_u32_u8(vqtbl1q_u8(next, vld1q_u8(kRefill.idx[m].data())));
      x[r] = vbslq_u32(need, vorrq_u32(vshlq_n_u32(x[r], 16), v), x[r]);
      w += static_cast<size_t>(__builtin_popcount(m));
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < kRegs; ++r) vst1q_u32(states + 4 * r, x[r]);
  *words_read = w;
  return g * kLanes;
}

}  // namespace

size_t RansDecodeGroupsNeon(const RansStream& s, std::span<uint8_t> out, uint32_t* states,
                            size_t* words_read) {
  return ForRansLanes(s, [&](auto lanes) {
    return DecodeGroups<decltype(lanes)::value>(s, out, states, words_read);
  });
}

bool ValuesAreLevelsNeon(const int8_t* q, size_t n, const uint8_t map[16]) {
  static const uint8_t kBit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t m = vld1q_u8(map), bit = vld1q_u8(kBit), seven = vdupq_n_u8(7);
  uint8x16_t ok = vdupq_n_u8(0xFF);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    // |-128| stays 0x80, whose index 16 is past the map: tbl reads 0, not a level.
    const uint8x16_t a = vreinterpretq_u8_s8(vabsq_s8(vld1q_s8(q + i)));
    const uint8x16_t byte = vqtbl1q_u8(m, vshrq_n_u8(a, 3));
    ok = vandq_u8(ok, vtstq_u8(byte, vqtbl1q_u8(bit, vandq_u8(a, seven))));
  }
  return vminvq_u8(ok) != 0 && ValuesAreLevelsPortable(q + i, n - i, map);
}

}  // namespace dcomp::storage::internal
