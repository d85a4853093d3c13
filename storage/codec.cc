#include "storage/codec.h"

#include <zstd.h>

#include <cstring>

#include "storage/rans.h"

namespace dcomp::storage {

const char* CodecName(Codec c) {
  switch (c) {
    case Codec::kRaw: return "raw";
    case Codec::kZstd: return "zstd";
    case Codec::kRans: return "rans";
    case Codec::kPacked: return "packed";
  }
  return "unknown";
}

Result<Codec> ParseCodecName(const std::string& s) {
  for (int i = 0; i < kNumCodecs; ++i) {
    if (s == CodecName(static_cast<Codec>(i))) return static_cast<Codec>(i);
  }
  return InvalidArgumentError("unknown codec '" + s + "' (expected raw, zstd, rans or packed)");
}

bool IsKnownCodec(int id) { return id >= 0 && id < kNumCodecs; }

Status EncodeBlock(Codec codec, std::span<const uint8_t> raw, int zstd_level,
                   std::vector<uint8_t>* out) {
  switch (codec) {
    case Codec::kRaw: out->assign(raw.begin(), raw.end()); return Status::Ok();
    case Codec::kZstd: {
      if (zstd_level < 1 || zstd_level > ZSTD_maxCLevel()) {
        return InvalidArgumentError("zstd level " + std::to_string(zstd_level) +
                                    " out of range 1.." + std::to_string(ZSTD_maxCLevel()));
      }
      out->resize(ZSTD_compressBound(raw.size()));
      size_t n = ZSTD_compress(out->data(), out->size(), raw.data(), raw.size(), zstd_level);
      if (ZSTD_isError(n)) return InternalError(std::string("zstd: ") + ZSTD_getErrorName(n));
      out->resize(n);
      return Status::Ok();
    }
    case Codec::kRans: RansEncode(raw, out); return Status::Ok();
    case Codec::kPacked: break;
  }
  if (codec == Codec::kPacked) {
    return InvalidArgumentError(
        "packed blocks are made from a tensor's rows (PackRows), not bytes");
  }
  return InvalidArgumentError("unknown codec id " + std::to_string(static_cast<int>(codec)));
}

struct BlockDecoder::Zstd {
  ZSTD_DCtx* ctx = ZSTD_createDCtx();
  ~Zstd() { ZSTD_freeDCtx(ctx); }
};

BlockDecoder::BlockDecoder() : zstd_(std::make_unique<Zstd>()) {}
BlockDecoder::~BlockDecoder() = default;

Status BlockDecoder::Decode(Codec codec, std::span<const uint8_t> stored, std::span<uint8_t> out) {
  switch (codec) {
    case Codec::kRaw:
      if (stored.size() != out.size()) {
        return DataLossError("raw block holds " + std::to_string(stored.size()) +
                             " bytes, expected " + std::to_string(out.size()));
      }
      if (!out.empty()) std::memcpy(out.data(), stored.data(), out.size());
      return Status::Ok();
    case Codec::kZstd: {
      if (zstd_->ctx == nullptr) return ResourceExhaustedError("cannot allocate a zstd context");
      // The frame must decode to exactly out.size(): check the declared size first, then decode
      // into the exact buffer (a longer frame fails with "destination too small").
      unsigned long long declared = ZSTD_getFrameContentSize(stored.data(), stored.size());
      if (declared == ZSTD_CONTENTSIZE_ERROR) return DataLossError("zstd frame header is invalid");
      if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared != out.size()) {
        return DataLossError("zstd frame declares " + std::to_string(declared) +
                             " bytes, expected " + std::to_string(out.size()));
      }
      size_t n =
          ZSTD_decompressDCtx(zstd_->ctx, out.data(), out.size(), stored.data(), stored.size());
      if (ZSTD_isError(n)) return DataLossError(std::string("zstd: ") + ZSTD_getErrorName(n));
      if (n != out.size()) {
        return DataLossError("zstd frame decodes to " + std::to_string(n) + " bytes, expected " +
                             std::to_string(out.size()));
      }
      return Status::Ok();
    }
    case Codec::kRans: return RansDecode(stored, out);
    case Codec::kPacked:
      return InternalError("a packed block is decoded with its tensor's shape (ContainerReader)");
  }
  return DataLossError("unknown codec id " + std::to_string(static_cast<int>(codec)));
}

}  // namespace dcomp::storage
