#include "base/packed_codes.h"

#include <algorithm>
#include <cstring>

namespace dcomp {
namespace {

constexpr size_t kChunk = kPackedChunk;

}  // namespace

bool CodesFit(const int8_t* q, size_t n, int bits) {
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

size_t PackRows(const int8_t* q, size_t rows, size_t cols, size_t q_stride, int bits,
                uint8_t* out) {
  const size_t stride = PaddedCols(cols), row_bytes = PackedRowBytes(cols, bits);
  const int off = 1 << (bits - 1);
  uint8_t u[kChunk];
  for (size_t r = 0; r < rows; ++r) {
    const int8_t* row = q + r * q_stride;
    if (!CodesFit(row, cols, bits)) return r;
    for (size_t k = 0; k < stride; k += kChunk) {
      for (size_t i = 0; i < kChunk; ++i) {
        u[i] = static_cast<uint8_t>((k + i < cols ? row[k + i] : 0) + off);
      }
      PackChunk(u, bits, out + r * row_bytes + k / kChunk * 8 * static_cast<size_t>(bits));
    }
  }
  return rows;
}

void UnpackRows(const uint8_t* packed, size_t rows, size_t cols, int bits, int8_t* q,
                size_t q_stride) {
  const size_t stride = PaddedCols(cols), row_bytes = PackedRowBytes(cols, bits);
  const int off = 1 << (bits - 1);
  uint8_t u[kChunk];
  for (size_t r = 0; r < rows; ++r) {
    for (size_t k = 0; k < stride; k += kChunk) {
      UnpackPackedChunk(packed + r * row_bytes + k / kChunk * 8 * static_cast<size_t>(bits), bits,
                        u);
      const size_t n = std::min(kChunk, cols - k);
      for (size_t i = 0; i < n; ++i) q[r * q_stride + k + i] = static_cast<int8_t>(u[i] - off);
    }
  }
}

}  // namespace dcomp
