// dcomp's rANS codec: static order-0 range-variant ANS over byte symbols (Duda 2013; the byte-wise
// and interleaved formulation of Giesen's rans_byte/rans_word), laid out for SIMD decoding.
//
//  - 12-bit normalised frequencies (sum 4096), one table per stream, stored as Elias-gamma codes;
//  - 32 interleaved 32-bit states: symbol i belongs to state i % 32; states live in [2^16, 2^32)
//    and renormalise by whole 16-bit words, so each symbol reads at most one word;
//  - one shared word stream, consumed in symbol order (the encoder runs backwards).
// The exact byte layout is in docs/format.md. Decoding checks everything it reads: a table that
// does not sum to 4096, a truncated stream, trailing words or states that do not end where the
// encoder began all give DATA_LOSS, never a crash or an out-of-bounds access.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace dcomp::storage {

inline constexpr int kRansLanes = 32;
inline constexpr int kRansProbBits = 12;

// Appends the rANS stream of `in` to `out` (cleared first).
void RansEncode(std::span<const uint8_t> in, std::vector<uint8_t>* out);

// The decoders, by instruction set; all decode the same format to the same bytes and verdicts.
enum class RansDecoder { kPortable, kAvx2, kAvx512Vbmi2, kNeon };
const char* RansDecoderName(RansDecoder d);  // "portable", "avx2", "avx512_vbmi2", "neon"
// This build's decoders that this CPU runs (base/'s CPU features), slowest first.
std::vector<RansDecoder> AvailableRansDecoders();
// The one RansDecode uses, chosen once per process: the fastest available; DCOMP_RANS=NAME
// forces one, DCOMP_KERNELS=ref forces the portable decoder. The note names it, why, and the CPU
// features (tools log it).
RansDecoder SelectedRansDecoder();
std::string RansDecoderNote();
const char* RansDecoderName();  // the selected one's

// Decodes a stream into exactly out.size() bytes with the selected decoder.
Status RansDecode(std::span<const uint8_t> in, std::span<uint8_t> out);
// With decoder `d` (FAILED_PRECONDITION if this CPU lacks it): tests and benchmarks.
Status RansDecodeWith(RansDecoder d, std::span<const uint8_t> in, std::span<uint8_t> out);
// The portable decoder (tests check the fast ones against it).
Status RansDecodePortable(std::span<const uint8_t> in, std::span<uint8_t> out);

// Order-0 entropy of `data` in bits per byte (what an ideal static coder reaches).
double Order0EntropyBits(std::span<const uint8_t> data);

}  // namespace dcomp::storage
