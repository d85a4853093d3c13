// Block codecs: raw, zstd (libzstd) and dcomp's rANS (storage/rans.h). Encoding is stateless;
// decoding goes through a BlockDecoder, one per thread, which owns its zstd context. Decode errors
// are DATA_LOSS with the codec's reason; callers add the block and tensor.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace dcomp::storage {

enum class Codec : int {
  kRaw = 0,
  kZstd = 1,
  kRans = 2,
  // Rows of codes packed to their tensor's width (base/packed_codes.h). Not a byte codec: the
  // container reader unpacks it with the tensor's shape (ContainerReader::DecodeBlock), the packer
  // packs it; EncodeBlock and BlockDecoder refuse it.
  kPacked = 3,
};
inline constexpr int kNumCodecs = 4;
const char* CodecName(Codec c);  // "raw", "zstd", "rans", "packed"
Result<Codec> ParseCodecName(const std::string& s);
bool IsKnownCodec(int id);

// Encodes `raw` into `out` (replaced). `zstd_level` is for kZstd (1..22).
Status EncodeBlock(Codec codec, std::span<const uint8_t> raw, int zstd_level,
                   std::vector<uint8_t>* out);

class BlockDecoder {
 public:
  BlockDecoder();
  ~BlockDecoder();
  BlockDecoder(const BlockDecoder&) = delete;
  BlockDecoder& operator=(const BlockDecoder&) = delete;
  // Decodes `stored` into exactly out.size() bytes; DATA_LOSS if the stream is corrupt or does not
  // decode to exactly that many bytes.
  Status Decode(Codec codec, std::span<const uint8_t> stored, std::span<uint8_t> out);

 private:
  struct Zstd;
  std::unique_ptr<Zstd> zstd_;
};

}  // namespace dcomp::storage
