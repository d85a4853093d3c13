#include "storage/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include "base/cpu_features.h"

namespace dcomp::storage {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;

struct Tables {
  std::array<std::array<uint32_t, 256>, 8> t{};
  constexpr Tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (size_t s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
    }
  }
};
constexpr Tables kTables;

// The linear map "append n zero bytes" on the CRC register (reflected, before the final
// inversion), as four byte-indexed tables: Shift(c) = t[0][c & 255] ^ ... ^ t[3][c >> 24]. It joins
// registers computed over consecutive pieces: over A then B, starting from s, the register is
// Shift_|B|(register over A from s) ^ (register over B from 0), the CRC being linear in both.
struct ZeroShift {
  std::array<std::array<uint32_t, 256>, 4> t{};
  constexpr explicit ZeroShift(size_t n) {
    // basis[i] is the image of register bit i. One zero byte is a table step; n of them come from
    // composing by binary powers (log n compositions of 32x32 bit matrices), which keeps the
    // compile-time evaluation small for any n.
    std::array<uint32_t, 32> basis{}, power{};
    for (size_t i = 0; i < 32; ++i) {
      basis[i] = 1u << i;
      power[i] = ((1u << i) >> 8) ^ kTables.t[0][(1u << i) & 0xFF];
    }
    for (; n > 0; n >>= 1) {
      if (n & 1) basis = Compose(power, basis);
      power = Compose(power, power);
    }
    for (size_t k = 0; k < 4; ++k) {
      for (uint32_t b = 0; b < 256; ++b) {
        uint32_t v = 0;
        for (size_t j = 0; j < 8; ++j) {
          if ((b >> j) & 1) v ^= basis[8 * k + j];
        }
        t[k][b] = v;
      }
    }
  }
  // The matrix "g after f", both given by the images of the 32 register bits.
  static constexpr std::array<uint32_t, 32> Compose(const std::array<uint32_t, 32>& g,
                                                    const std::array<uint32_t, 32>& f) {
    std::array<uint32_t, 32> r{};
    for (size_t i = 0; i < 32; ++i) {
      for (size_t j = 0; j < 32; ++j) {
        if ((f[i] >> j) & 1) r[i] ^= g[j];
      }
    }
    return r;
  }
  uint32_t operator()(uint32_t c) const {
    return t[0][c & 0xFF] ^ t[1][(c >> 8) & 0xFF] ^ t[2][(c >> 16) & 0xFF] ^ t[3][c >> 24];
  }
};

// The CRC instruction's result takes 2-3 cycles (3 on x86, 2 on the Cortex-A76 of a Raspberry Pi 5)
// while one can start every cycle, so a single dependent chain leaves the unit idle most of the
// time: three chains over the three thirds of a piece, joined with ZeroShift, keep it busy.
// Long pieces for the bulk of a block, short ones for what remains, one chain for the tail.
constexpr size_t kLongLane = 4096;
constexpr size_t kShortLane = 256;
constexpr ZeroShift kLongShift(kLongLane);
constexpr ZeroShift kShortShift(kShortLane);

#if defined(__x86_64__)
#define DCOMP_CRC_TARGET __attribute__((target("sse4.2")))
DCOMP_CRC_TARGET inline uint32_t CrcWord(uint32_t c, uint64_t v) {
  return static_cast<uint32_t>(_mm_crc32_u64(c, v));
}
DCOMP_CRC_TARGET inline uint32_t CrcByte(uint32_t c, uint8_t v) { return _mm_crc32_u8(c, v); }
bool HaveHw() { return Cpu().sse42; }
#elif defined(__aarch64__)
#define DCOMP_CRC_TARGET __attribute__((target("+crc")))
DCOMP_CRC_TARGET inline uint32_t CrcWord(uint32_t c, uint64_t v) {
  return __builtin_aarch64_crc32cx(c, v);
}
DCOMP_CRC_TARGET inline uint32_t CrcByte(uint32_t c, uint8_t v) {
  return __builtin_aarch64_crc32cb(c, v);
}
bool HaveHw() { return Cpu().crc32; }
#endif

#if defined(DCOMP_CRC_TARGET)
inline uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Three chains over p[0, lane), p[lane, 2 lane), p[2 lane, 3 lane), joined.
template <size_t kLane>
DCOMP_CRC_TARGET inline uint32_t ThreeChains(const uint8_t* p, uint32_t c, const ZeroShift& shift) {
  uint32_t a = c, b = 0, d = 0;
  for (size_t i = 0; i < kLane; i += 8) {
    a = CrcWord(a, Load64(p + i));
    b = CrcWord(b, Load64(p + kLane + i));
    d = CrcWord(d, Load64(p + 2 * kLane + i));
  }
  return shift(shift(a) ^ b) ^ d;
}

DCOMP_CRC_TARGET uint32_t Crc32cHw(const uint8_t* p, size_t n, uint32_t crc) {
  uint32_t c = ~crc;
  for (; n >= 3 * kLongLane; n -= 3 * kLongLane, p += 3 * kLongLane) {
    c = ThreeChains<kLongLane>(p, c, kLongShift);
  }
  for (; n >= 3 * kShortLane; n -= 3 * kShortLane, p += 3 * kShortLane) {
    c = ThreeChains<kShortLane>(p, c, kShortShift);
  }
  for (; n >= 8; n -= 8, p += 8) c = CrcWord(c, Load64(p));
  for (; n > 0; --n, ++p) c = CrcByte(c, *p);
  return ~c;
}
#endif

}  // namespace

uint32_t Crc32cPortable(const void* data, size_t n, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  const auto& t = kTables.t;
  uint32_t c = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= c;
    c = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
        t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
  }
  for (; n > 0; --n, ++p) c = (c >> 8) ^ t[0][(c ^ *p) & 0xFF];
  return ~c;
}

uint32_t Crc32c(const void* data, size_t n, uint32_t crc) {
#if defined(DCOMP_CRC_TARGET)
  static const bool hw = HaveHw();
  if (hw) return Crc32cHw(static_cast<const uint8_t*>(data), n, crc);
#endif
  return Crc32cPortable(data, n, crc);
}

}  // namespace dcomp::storage
