#include "base/packed_codes.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace dcomp {
namespace {

constexpr size_t kChunk = kPackedChunk;

}  // namespace

std::string CodeLevelsProblem(int bits, std::span<const uint8_t> mag, bool zero_level) {
  if (!IsPackedBits(bits)) {
    return "a level table for " + std::to_string(bits) + " bits (expected " +
           std::to_string(kMinPackedBits) + ".." + std::to_string(kMaxPackedBits) + ")";
  }
  const size_t n = size_t{1} << (bits - 1);
  if (mag.size() != n) {
    return std::to_string(mag.size()) + " levels for " + std::to_string(bits) + " bits (expected " +
           std::to_string(n) + ")";
  }
  if (zero_level && mag[0] != 0) return "level 0 is " + std::to_string(mag[0]) + " (expected 0)";
  if (mag[0] > 127) return "level 0 is " + std::to_string(mag[0]) + " (expected at most 127)";
  for (size_t k = 1; k < n; ++k) {
    if (mag[k] <= mag[k - 1] || mag[k] > 127) {
      return "level " + std::to_string(k) + " is " + std::to_string(mag[k]) + " after " +
             std::to_string(mag[k - 1]) + " (expected strictly increasing, at most 127)";
    }
  }
  return "";
}

CodeLevels MakeCodeLevels(int bits, std::span<const uint8_t> mag, bool sign_magnitude) {
  CodeLevels l;
  l.bits = bits;
  l.sign_magnitude = sign_magnitude;
  const int half = 1 << (bits - 1);
  std::copy(mag.begin(), mag.end(), l.mag);
  std::fill(std::begin(l.u_of), std::end(l.u_of), int16_t{-1});
  for (int u = 0; u < 2 * half; ++u) {
    // The code's sign and magnitude; "-0" (u = 2^(bits-1) in sign and magnitude with T[0] = 0,
    // u = 0 of offset codes) stands for 0.
    const bool negative = sign_magnitude ? u >= half : u < half;
    const int k = sign_magnitude ? u & (half - 1) : std::abs(u - half);
    const bool minus_zero = negative && (k == half || mag[static_cast<size_t>(k)] == 0);
    const int v = minus_zero ? 0 : (negative ? -1 : 1) * mag[static_cast<size_t>(k)];
    l.value[u] = static_cast<int8_t>(v);
    if (!minus_zero) l.u_of[static_cast<uint8_t>(v)] = static_cast<int16_t>(u);
  }
  // The knots of a three-slope table: T(k) = k up to the first, then steps of 2, then of 3.
  int a = 0;
  while (a + 1 < half && mag[static_cast<size_t>(a) + 1] == a + 1) ++a;
  int b = a + 1;
  while (b + 1 < half && mag[static_cast<size_t>(b) + 1] == mag[static_cast<size_t>(b)] + 2) ++b;
  if (a > 0 && b + 1 < half && std::ranges::equal(mag, ThreeSlopeLevels(bits, a, b))) {
    l.knot[0] = static_cast<uint8_t>(a);
    l.knot[1] = static_cast<uint8_t>(b);
  }
  return l;
}

std::vector<uint8_t> SinhLevels(int bits, double a, bool zero_level) {
  const int k_max = (1 << (bits - 1)) - 1;
  const double h = zero_level ? 0.0 : 0.5;
  std::vector<uint8_t> t(static_cast<size_t>(k_max) + 1);
  for (int k = 0; k <= k_max; ++k) {
    t[static_cast<size_t>(k)] = static_cast<uint8_t>(
        std::lround(127.0 * std::sinh(a * (k + h) / (k_max + h)) / std::sinh(a)));
  }
  return t;
}

std::vector<uint8_t> ThreeSlopeLevels(int bits, int a, int b) {
  const int n = 1 << (bits - 1);
  std::vector<uint8_t> t(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) {
    t[static_cast<size_t>(k)] =
        static_cast<uint8_t>(std::min(255, k + std::max(0, k - a) + std::max(0, k - b)));
  }
  return t;
}

std::vector<uint8_t> LevelTable(int bits, double level_shape, bool zero_level) {
  if (bits == 7) {
    const int k_max = MaxCode(bits);
    return ThreeSlopeLevels(bits, k_max / 3, 2 * k_max / 3);
  }
  return SinhLevels(bits, level_shape, zero_level);
}

size_t FirstMisfit(const int8_t* q, size_t n, int bits, const CodeLevels* levels) {
  for (size_t i = 0; i < n; ++i) {
    if (levels != nullptr ? levels->u_of[static_cast<uint8_t>(q[i])] < 0
                          : q[i] < MinCode(bits) || q[i] > MaxCode(bits)) {
      return i;
    }
  }
  return n;
}

bool CodesFit(const int8_t* q, size_t n, int bits, const CodeLevels* levels) {
  if (levels != nullptr) {
    // One table load per value (levels->u_of holds -1, i.e. the top bit, for a non-level).
    uint16_t bad = 0;
    for (size_t i = 0; i < n; ++i)
      bad |= static_cast<uint16_t>(levels->u_of[static_cast<uint8_t>(q[i])]);
    return (bad & 0x8000) == 0;
  }
  // code - MinCode in [0, MaxCode - MinCode] as an unsigned byte: one add and one compare.
  const uint8_t off = static_cast<uint8_t>(-MinCode(bits));
  const uint8_t span = static_cast<uint8_t>(MaxCode(bits) - MinCode(bits));
  uint8_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    bad |= static_cast<uint8_t>(static_cast<uint8_t>(static_cast<uint8_t>(q[i]) + off) > span);
  }
  return bad == 0;
}

void UnpackPackedChunk(const uint8_t* c, int bits, uint8_t* u) {
  for (size_t j = 0; j < 32; ++j) {
    u[j] = c[j] & 15;
    u[j + 32] = c[j] >> 4;
  }
  if (bits >= 6) {
    for (size_t j = 0; j < 16; ++j) {
      for (size_t k = 0; k < 4; ++k) u[j + 16 * k] |= ((c[32 + j] >> (2 * k)) & 3) << 4;
    }
  }
  if (bits & 1) {
    const uint8_t* t = c + 8 * static_cast<size_t>(bits) - 8;
    const int shift = bits == 5 ? 4 : 6;
    for (size_t i = 0; i < kChunk; ++i) u[i] |= ((t[i % 8] >> (i / 8)) & 1) << shift;
  }
}

namespace {

void PackChunk(const uint8_t* u, int bits, uint8_t* c) {
  std::memset(c, 0, 8 * static_cast<size_t>(bits));
  for (size_t j = 0; j < 32; ++j) c[j] = (u[j] & 15) | (u[j + 32] & 15) << 4;
  if (bits >= 6) {
    for (size_t j = 0; j < 16; ++j) {
      for (size_t k = 0; k < 4; ++k) c[32 + j] |= ((u[j + 16 * k] >> 4) & 3) << (2 * k);
    }
  }
  if (bits & 1) {
    uint8_t* t = c + 8 * static_cast<size_t>(bits) - 8;
    const int shift = bits == 5 ? 4 : 6;
    for (size_t i = 0; i < kChunk; ++i) t[i % 8] |= ((u[i] >> shift) & 1) << (i / 8);
  }
}

}  // namespace

size_t PackRows(const int8_t* q, size_t rows, size_t cols, size_t q_stride, int bits, uint8_t* out,
                const CodeLevels* levels) {
  const size_t stride = PaddedCols(cols), row_bytes = PackedRowBytes(cols, bits);
  const int off = 1 << (bits - 1);
  // Padding: code 0, or u = 0 in sign and magnitude (T[0], which may not be 0: readers ignore it).
  const uint8_t pad = levels != nullptr && levels->sign_magnitude ? 0 : static_cast<uint8_t>(off);
  uint8_t u[kChunk];
  for (size_t r = 0; r < rows; ++r) {
    const int8_t* row = q + r * q_stride;
    if (!CodesFit(row, cols, bits, levels)) return r;
    for (size_t k = 0; k < stride; k += kChunk) {
      for (size_t i = 0; i < kChunk; ++i) {
        u[i] = k + i >= cols ? pad
               : levels != nullptr
                   ? static_cast<uint8_t>(levels->u_of[static_cast<uint8_t>(row[k + i])])
                   : static_cast<uint8_t>(row[k + i] + off);
      }
      PackChunk(u, bits, out + r * row_bytes + k / kChunk * 8 * static_cast<size_t>(bits));
    }
  }
  return rows;
}

void UnpackRows(const uint8_t* packed, size_t rows, size_t cols, int bits, int8_t* q,
                size_t q_stride, const CodeLevels* levels) {
  const size_t stride = PaddedCols(cols), row_bytes = PackedRowBytes(cols, bits);
  const int off = 1 << (bits - 1);
  uint8_t u[kChunk];
  for (size_t r = 0; r < rows; ++r) {
    for (size_t k = 0; k < stride; k += kChunk) {
      UnpackPackedChunk(packed + r * row_bytes + k / kChunk * 8 * static_cast<size_t>(bits), bits,
                        u);
      const size_t n = std::min(kChunk, cols - k);
      for (size_t i = 0; i < n; ++i) {
        q[r * q_stride + k + i] =
            levels != nullptr ? levels->value[u[i]] : static_cast<int8_t>(u[i] - off);
      }
    }
  }
}

}  // namespace dcomp
