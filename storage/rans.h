// dcomp's rANS codec: static order-0 range-variant ANS over byte symbols (Duda 2013; the byte-wise
// and interleaved formulation of Giesen's rans_byte/rans_word), laid out for SIMD decoding.
//
//  - 12-bit normalised frequencies (sum 4096), one table per stream, stored as Elias-gamma codes
//    of each symbol's difference to the one before it (layouts 1 and 2) or, for the sparse
//    alphabets of non-uniform levels, one bit per absent symbol and the difference to the previous
//    present symbol (layout 3);
//  - interleaved 32-bit states (64 in layouts 2 and 3, written by the encoder; 32 in layout 1,
//    which older files hold and every decoder still reads): symbol i belongs to state i % lanes;
//    states live in [2^16, 2^32) and renormalise by whole 16-bit words, so each symbol reads at
//    most one word;
//  - one shared word stream, consumed in symbol order (the encoder runs backwards);
//  - layouts 2 and 3: each state's last two symbols are not coded but held in the encoder's initial
//    state (2^16 + the two bytes), which the decoder finds as its final state; this pays for the
//    extra states, so that layout 2 is no larger than layout 1 while its 64 independent states
//    keep twice as many table lookups in flight.
// The exact byte layout is in docs/format.md. Decoding checks everything it reads: a table that
// does not sum to 4096, a truncated stream, trailing words or states that do not end where the
// encoder began all give DATA_LOSS, never a crash or an out-of-bounds access.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace dcomp {
struct CodeLevels;  // base/packed_codes.h
}  // namespace dcomp

namespace dcomp::storage {

inline constexpr int kRansMaxLanes = 64;
inline constexpr int kRansProbBits = 12;
// What RansEncodeLayout takes besides 1, 2 and 3: layout 2 or 3, whichever codes the frequency
// table in fewer bytes (what RansEncode writes).
inline constexpr int kRansLayoutSmallestTable = 0;

// Writes the rANS stream of `in` to `out` (cleared first): layout 2 or 3, whichever is smaller.
void RansEncode(std::span<const uint8_t> in, std::vector<uint8_t>* out);
// In layout 1, 2 or 3 (tests and benchmarks compare them), or kRansLayoutSmallestTable.
void RansEncodeLayout(std::span<const uint8_t> in, int layout, std::vector<uint8_t>* out);

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

// Whether each of the n INT8 values q[i] is one of `levels`' values (sign(c) T[|c|]): the check of
// a decoded block of codes with non-uniform levels (format 5). The decoders' instruction sets do
// it with byte shuffles over a 128-bit map of the magnitudes (27-50 GB/s against 2.5-3.5 GB/s for
// the portable table lookup: codec_bench's "level check"); ValuesAreLevels uses the selected
// decoder's, ValuesAreLevelsWith a given one (tests, benchmarks).
bool ValuesAreLevels(const int8_t* q, size_t n, const CodeLevels& levels);
bool ValuesAreLevelsWith(RansDecoder d, const int8_t* q, size_t n, const CodeLevels& levels);

// Order-0 entropy of `data` in bits per byte (what an ideal static coder reaches).
double Order0EntropyBits(std::span<const uint8_t> data);

}  // namespace dcomp::storage
