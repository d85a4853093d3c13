// The packed low-bit layout of weight codes: what the packed tier holds in RAM, what a `.dcm`
// stores in its packed (raw) blocks (docs/format.md), and what the kernels' packed products read.
//
// Codes of `bits` bits (4..7) are held as u = code + 2^(bits-1) in [0, 2^bits - 1], so a code is
// in [-2^(bits-1), 2^(bits-1) - 1]; every byte pattern is a valid packed row, so the kernels can
// read packed blocks straight from a file once their CRC matches. (The quantizer uses the
// symmetric range, |code| <= 2^(bits-1) - 1.) A row is PaddedCols(cols) codes (the packer writes
// padding codes 0; readers ignore them: they multiply zero activations), in chunks of 64 codes,
// each chunk 8 * bits bytes:
//   bytes [0, 32)   low nibbles: byte j = (u[j] & 15) | (u[j + 32] & 15) << 4
//   bytes [32, 48)  when bits >= 6, bits 4-5: byte j = sum_k ((u[j + 16k] >> 4) & 3) << 2k
//   last 8 bytes    when bits is odd, the top bit (bit 4 for 5 bits, bit 6 for 7): byte j holds
//                   it for codes j, j + 8, ..., j + 56 (code j + 8k at bit k)
// so every ISA unpacks a chunk with per-lane shifts (or rotates) and masks, no tables: the
// nibble and 2-bit planes repeat across 16-byte lanes, the top-bit plane across 8-byte lanes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dcomp {

inline constexpr size_t kPackedChunk = 64;
inline constexpr int kMinPackedBits = 4;
inline constexpr int kMaxPackedBits = 7;

inline constexpr bool IsPackedBits(int bits) {
  return bits >= kMinPackedBits && bits <= kMaxPackedBits;
}
// Row length in codes as the kernels hold it (a multiple of 64).
inline constexpr size_t PaddedCols(size_t cols) {
  return (cols + kPackedChunk - 1) / kPackedChunk * kPackedChunk;
}
// The largest code a width holds (127 for 8 bits); the smallest is -MaxCode(bits) - 1 below 8
// bits, -MaxCode(bits) for INT8 (whose kernels exclude -128).
inline constexpr int MaxCode(int bits) { return (1 << (bits - 1)) - 1; }
inline constexpr int MinCode(int bits) { return bits < 8 ? -(1 << (bits - 1)) : -127; }
// The smallest width whose codes hold |code| <= max_code (8 above 63).
inline constexpr int BitsForMaxCode(int max_code) {
  int b = kMinPackedBits;
  while (b < 8 && MaxCode(b) < max_code) ++b;
  return b;
}
// Bytes of one packed row (a multiple of 32).
inline constexpr size_t PackedRowBytes(size_t cols, int bits) {
  return PaddedCols(cols) / kPackedChunk * 8 * static_cast<size_t>(bits);
}
// Bytes of a rows x cols matrix's codes as the packed tier holds them: packed rows below 8 bits,
// one byte per code (unpadded) at 8.
inline constexpr uint64_t PackedCodeBytes(uint64_t rows, size_t cols, int bits) {
  return IsPackedBits(bits) ? rows * PackedRowBytes(cols, bits) : rows * cols;
}

// Whether every one of n INT8 codes lies in [MinCode(bits), MaxCode(bits)] (vectorised: it runs
// over every byte a reader decodes).
bool CodesFit(const int8_t* q, size_t n, int bits);

// The 64 unsigned codes u of the chunk at c.
void UnpackPackedChunk(const uint8_t* c, int bits, uint8_t* u);

// Packs `rows` rows of INT8 codes (row r at q + r * q_stride, cols codes; q_stride >= cols) to
// `bits` (kMinPackedBits..kMaxPackedBits) into out (rows x PackedRowBytes(cols, bits)). Returns
// the index of the first row holding a code outside [MinCode(bits), MaxCode(bits)] (nothing is
// written for it or after it), or `rows` when every row fits.
size_t PackRows(const int8_t* q, size_t rows, size_t cols, size_t q_stride, int bits, uint8_t* out);
// The inverse: row r's cols codes to q + r * q_stride (q_stride >= cols; bytes past cols are
// left alone).
void UnpackRows(const uint8_t* packed, size_t rows, size_t cols, int bits, int8_t* q,
                size_t q_stride);

}  // namespace dcomp
