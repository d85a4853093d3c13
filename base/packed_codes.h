// The packed low-bit layout of weight codes: what the packed tier holds in RAM, what a `.dcm`
// stores in its packed (raw) blocks (docs/format.md), and what the kernels' packed products read.
//
// Codes of `bits` bits (4..7) are held as u = code + 2^(bits-1) in [0, 2^bits - 1], so a code is
// in [-2^(bits-1), 2^(bits-1) - 1] (codes of non-uniform levels are sign and magnitude instead:
// CodeLevels); every byte pattern is a valid packed row, so the kernels can
// read packed blocks straight from a file once their CRC matches. (The quantizer uses the
// symmetric range, |code| <= 2^(bits-1) - 1.) A row is PaddedCols(cols) codes (the packer writes
// padding codes 0, u = 0 with sign-and-magnitude levels; readers ignore them: they multiply zero
// activations), in chunks of 64 codes,
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
#include <span>
#include <string>
#include <vector>

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

// Non-uniform code levels (format 5, docs/format.md). A width's table holds 2^(bits-1) magnitudes
// T[0] < T[1] < ... < T[2^(bits-1) - 1] <= 127. Since format 9 a code is sign and magnitude at
// every width: the top bit of u (bit bits - 1) is the sign and the bits below it index T, so u
// stands for the INT8 value +-T[u & (2^(bits-1) - 1)]. T[0] may be above 0: then every one of the
// 2^bits codes is a distinct value and no value is 0 (a midrise table, as the packer gives 4 to 6
// bits); with T[0] = 0, "-0" (u = 2^(bits-1)) stands for 0 too. The sign is a mask that the
// unpacking yields directly, and no subtraction or absolute value comes before the lookup
// (BENCHMARKS.md, sessions 35 and 40). Files of format 5 to 8 hold 4-6-bit level codes as offset
// codes instead (c = u - 2^(bits-1) stands for sign(c) * T[|c|], T[0] = 0, and c = -2^(bits-1) for
// 0; CodeLevels::sign_magnitude false), and 7-bit ones in sign and magnitude with T[0] = 0 (format
// 7). Every packed byte pattern stays valid. The INT8 tiers and the entropy-coded blocks hold the
// values themselves; without a table (linear levels) the value is the code, as before format 5.
struct CodeLevels {
  int bits = 0;
  bool sign_magnitude = true;  // false: offset codes (4-6 bits, files of format 5 to 8)
  uint8_t mag[64] = {};        // T, zero past 2^(bits-1): the kernels' lookup tables
  int8_t value[128] = {};      // the value of each u < 2^bits
  int16_t u_of[256] = {};      // the u of an INT8 value (indexed by its byte), -1 when not a level
  // When T is ThreeSlopeLevels(bits, knot[0], knot[1]): the knots (else 0, 0), so that a kernel
  // may compute T(k) = k + max(0, k - knot[0]) + max(0, k - knot[1]) instead of looking it up.
  uint8_t knot[2] = {};
};
// Whether a width's level codes are sign and magnitude in a file of format `version_major`: every
// width from format 9, 7 bits from format 7, offset codes otherwise.
inline constexpr bool SignMagnitudeLevels(int bits, int version_major) {
  return version_major >= 9 || (bits == 7 && version_major >= 7);
}
// The widest codes the packer (and dcomp synth) give non-uniform levels: every packed width.
inline constexpr int kMaxLevelBits = 7;
// What is wrong with `mag` as the table of a `bits`-bit width, or "" when nothing is. T[0] must be
// 0 when `zero_level` (offset codes, and every table of a file before format 9).
std::string CodeLevelsProblem(int bits, std::span<const uint8_t> mag, bool zero_level = false);
// The levels of a table that CodeLevelsProblem accepts, its codes sign and magnitude or (4-6 bits
// of a file before format 9) offset.
CodeLevels MakeCodeLevels(int bits, std::span<const uint8_t> mag, bool sign_magnitude = true);
// The table round(127 * sinh(a * k' / K') / sinh(a)), k = 0..K = 2^(bits-1) - 1, a > 0: finer
// steps near zero, where a row's weights crowd, coarser ones at the tails. Midrise (the default):
// k' = k + 1/2, K' = K + 1/2, so T[0] > 0 and the 2^bits codes are 2^bits levels, none of them 0
// (the optimal fixed-rate quantizer of a symmetric density has no zero level; against the zero
// level's 2^bits - 1 levels: 0.06 bits/weight smaller at --max-ppl-increase 4 on stories3M,
// BENCHMARKS.md, session 40); with `zero_level`, k' = k and K' = K (T[0] = 0). Strictly increasing
// while its smallest step exceeds one (a <= 2 at every width, about 3.3 up to 6 bits);
// CodeLevelsProblem says.
std::vector<uint8_t> SinhLevels(int bits, double a, bool zero_level = false);

// The table T(k) = k + max(0, k - a) + max(0, k - b), k = 0..2^(bits-1) - 1, 0 < a < b: slopes 1,
// 2 and 3, unit steps near zero and steps of 3 at the tails. T stays within 127 while
// 3 K - a - b <= 127 (K = 2^(bits-1) - 1); CodeLevelsProblem says.
std::vector<uint8_t> ThreeSlopeLevels(int bits, int a, int b);
// The table the packer and dcomp synth give a width with levels of shape `level_shape` > 0:
// SinhLevels(bits, level_shape, zero_level) up to 6 bits (`zero_level` where some codes must be 0:
// pruned weights); at 7 bits ThreeSlopeLevels(7, 21, 42), knots at a
// third and two thirds of the codes (T(63) = 126), which the kernels compute where a lookup in a
// 64-entry table costs AVX2 four shuffles. Measured on stories3M against uniform 7-bit codes:
// -0.17 bits/weight packed at a lower perplexity (BENCHMARKS.md, session 34).
std::vector<uint8_t> LevelTable(int bits, double level_shape, bool zero_level = false);

// Whether every one of n INT8 codes lies in [MinCode(bits), MaxCode(bits)] (vectorised: it runs
// over every byte a reader decodes), or with `levels` is one of its values.
bool CodesFit(const int8_t* q, size_t n, int bits, const CodeLevels* levels = nullptr);
// The index of the first of n codes that does not fit (n when all do).
size_t FirstMisfit(const int8_t* q, size_t n, int bits, const CodeLevels* levels = nullptr);

// The 64 unsigned codes u of the chunk at c.
void UnpackPackedChunk(const uint8_t* c, int bits, uint8_t* u);

// Packs `rows` rows of INT8 codes (row r at q + r * q_stride, cols codes; q_stride >= cols) to
// `bits` (kMinPackedBits..kMaxPackedBits) into out (rows x PackedRowBytes(cols, bits)); with
// `levels` (of that width) the INT8 values are levels, packed as their codes. Returns the index
// of the first row holding a value that does not fit (CodesFit; nothing is written for it or
// after it), or `rows` when every row fits.
size_t PackRows(const int8_t* q, size_t rows, size_t cols, size_t q_stride, int bits, uint8_t* out,
                const CodeLevels* levels = nullptr);
// The inverse: row r's cols values to q + r * q_stride (q_stride >= cols; bytes past cols are
// left alone).
void UnpackRows(const uint8_t* packed, size_t rows, size_t cols, int bits, int8_t* q,
                size_t q_stride, const CodeLevels* levels = nullptr);

}  // namespace dcomp
