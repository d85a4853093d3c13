// Pack stage 6: entropy coding. Every block is coded with each candidate codec, decoded and
// compared, and stored in the smallest coding (raw if none is smaller). Blocks of a tensor with
// codes narrower than 8 bits are stored packed (the packed tier reads them as they are, with no
// decoding) unless entropy coding saves at least --min-coding-gain of their size. With --codec auto
// the candidates are the codecs fast enough on every target by the decode-speed model
// (packer/codec_model.h), so the choice does not depend on the CPU that packs.

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "base/packed_codes.h"
#include "packer/codec_model.h"
#include "packer/internal/pack_state.h"

namespace dcomp::packer::internal {
namespace {

// The codecs to try besides raw, and why (recorded in the manifest).
Result<std::vector<storage::Codec>> CodecCandidates(const PackOptions& o, std::string* why) {
  if (o.codec == "auto") return AutoCodecs(o.min_decode_mbps, why);
  ASSIGN_OR_RETURN(storage::Codec c, storage::ParseCodecName(o.codec));
  if (c == storage::Codec::kPacked) {
    return InvalidArgumentError(
        "--codec packed: packed is not a byte codec; blocks of narrow codes are stored packed "
        "unless entropy coding saves --min-coding-gain (use --min-coding-gain 0.99 to pack all)");
  }
  *why = "--codec " + o.codec +
         (c == storage::Codec::kRaw ? " (narrow codes packed)" : " (raw where it is not smaller)");
  if (c == storage::Codec::kRaw) return std::vector<storage::Codec>{};
  return std::vector<storage::Codec>{c};
}

// The smallest coding of `raw` among the candidates (raw if none is smaller). Lossless by
// construction, and checked: every candidate is decoded and compared.
Result<Encoded> EncodeBest(std::span<const uint8_t> raw, std::span<const storage::Codec> cands,
                           const PackOptions& o, storage::BlockDecoder* dec) {
  Encoded best;
  best.bytes.assign(raw.begin(), raw.end());
  std::vector<uint8_t> enc, check(raw.size());
  for (storage::Codec c : cands) {
    RETURN_IF_ERROR(storage::EncodeBlock(c, raw, o.zstd_level, &enc));
    RETURN_IF_ERROR(dec->Decode(c, enc, check));
    if (std::memcmp(check.data(), raw.data(), raw.size()) != 0) {
      return InternalError(std::string(storage::CodecName(c)) + " round trip mismatch");
    }
    if (enc.size() < best.bytes.size()) {
      best.codec = c;
      best.bytes = enc;
    }
  }
  return best;
}

}  // namespace

Status PrepareEncoding(PackState& s) {
  ASSIGN_OR_RETURN(s.codec_candidates, CodecCandidates(s.o, &s.codec_choice));
  for (const Matrix& m : s.mats) s.total_bytes += m.rows * m.cols;
  return Status::Ok();
}

EncodedBlocks EncodeBlocks(PackState& s, std::span<const uint8_t> data, size_t row_bytes,
                           size_t rows_per_block, std::span<const int> block_bits,
                           const WidthLevels& levels) {
  const size_t nblocks = (data.size() / row_bytes + rows_per_block - 1) / rows_per_block;
  EncodedBlocks out;
  std::vector<Encoded>& enc = out.enc;
  std::vector<Status>& st = out.st;
  enc.resize(nblocks);
  st.resize(nblocks);
  const std::vector<storage::Codec>& cands = s.codec_candidates;
  const PackOptions& o = s.o;
  s.pool->ParallelFor(static_cast<int64_t>(nblocks), [&](int64_t b0, int64_t b1) {
    storage::BlockDecoder d;
    for (int64_t b = b0; b < b1; ++b) {
      const size_t off = static_cast<size_t>(b) * rows_per_block * row_bytes;
      const size_t len = std::min(data.size() - off, rows_per_block * row_bytes);
      Result<Encoded> e = EncodeBest(data.subspan(off, len), cands, o, &d);
      const int packed_bits = block_bits.empty() ? 0 : block_bits[static_cast<size_t>(b)];
      if (e.ok() && IsPackedBits(packed_bits)) {
        Encoded packed;
        packed.codec = storage::Codec::kPacked;
        packed.bytes.resize(len / row_bytes * PackedRowBytes(row_bytes, packed_bits));
        const size_t rows = len / row_bytes;
        if (PackRows(reinterpret_cast<const int8_t*>(data.data() + off), rows, row_bytes, row_bytes,
                     packed_bits, packed.bytes.data(),
                     levels[static_cast<size_t>(packed_bits)]) != rows) {
          e = InternalError("codes that do not fit " + std::to_string(packed_bits) +
                            " bits or their levels");
        } else if (e->codec == storage::Codec::kRaw ||
                   static_cast<double>(e->bytes.size()) >
                       (1.0 - o.min_coding_gain) * static_cast<double>(packed.bytes.size())) {
          e = std::move(packed);
        }
      }
      if (e.ok()) {
        enc[b] = std::move(*e);
      } else {
        st[b] = e.status();
      }
    }
  });
  return out;
}

}  // namespace dcomp::packer::internal
