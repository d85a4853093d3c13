// libFuzzer: every block decoder. Byte 0 picks the codec (raw, zstd, rans), bytes 1..3 the output
// size (up to 16 MiB); the rest is the stored block. For rANS every decoder this CPU has (AVX2,
// AVX-512 VBMI2, NEON) must agree with the portable one on the verdict and on the bytes (a
// differential check).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "storage/codec.h"
#include "storage/rans.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dcomp::storage;
  if (size < 4) return 0;
  // The byte codecs (packed blocks are unpacked by the container reader: fuzz_container).
  const int codec = data[0] % static_cast<int>(Codec::kPacked);
  const size_t out_size = (static_cast<size_t>(data[1]) | static_cast<size_t>(data[2]) << 8 |
                           static_cast<size_t>(data[3]) << 16);
  std::span<const uint8_t> stored(data + 4, size - 4);
  std::vector<uint8_t> a(out_size), b(out_size);
  BlockDecoder dec;
  dcomp::Status sa = dec.Decode(static_cast<Codec>(codec), stored, a);
  if (codec == static_cast<int>(Codec::kRans)) {
    dcomp::Status sb = RansDecodePortable(stored, b);
    if (sa.ok() != sb.ok()) std::abort();
    if (sa.ok() && a != b) std::abort();
    for (RansDecoder d : AvailableRansDecoders()) {
      std::vector<uint8_t> c(out_size);
      dcomp::Status sc = RansDecodeWith(d, stored, c);
      if (sc.ok() != sb.ok()) std::abort();
      if (sc.ok() && c != b) std::abort();
    }
  }
  return 0;
}
