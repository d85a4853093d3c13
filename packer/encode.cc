// Pack stage 6: entropy coding. Every block is coded with each candidate codec, decoded and
// compared, and stored in the smallest coding that decodes fast enough (raw if none is smaller).

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "packer/internal/pack_state.h"

namespace dcomp::packer::internal {
namespace {

// The codecs to try besides raw.
Result<std::vector<storage::Codec>> CodecCandidates(const PackOptions& o) {
  if (o.codec == "auto")
    return std::vector<storage::Codec>{storage::Codec::kRans, storage::Codec::kZstd};
  ASSIGN_OR_RETURN(storage::Codec c, storage::ParseCodecName(o.codec));
  if (c == storage::Codec::kRaw) return std::vector<storage::Codec>{};
  return std::vector<storage::Codec>{c};
}

Result<Encoded> EncodeBest(std::span<const uint8_t> raw, std::span<const storage::Codec> cands,
                           const PackOptions& o, storage::BlockDecoder* dec) {
  Encoded best;
  best.bytes.assign(raw.begin(), raw.end());
  std::vector<uint8_t> enc, check(raw.size());
  for (storage::Codec c : cands) {
    RETURN_IF_ERROR(storage::EncodeBlock(c, raw, o.zstd_level, &enc));
    // Lossless by construction, and checked: every candidate is decoded and compared.
    double best_s = 1e30;
    for (int rep = 0; rep < (o.codec == "auto" && o.min_decode_mbps > 0 ? 2 : 1); ++rep) {
      auto t0 = Clock::now();
      RETURN_IF_ERROR(dec->Decode(c, enc, check));
      best_s = std::min(best_s, std::chrono::duration<double>(Clock::now() - t0).count());
    }
    if (std::memcmp(check.data(), raw.data(), raw.size()) != 0) {
      return InternalError(std::string(storage::CodecName(c)) + " round trip mismatch");
    }
    const double mbps = static_cast<double>(raw.size()) / 1e6 / std::max(best_s, 1e-9);
    // Below 32 KiB a decode takes microseconds and its timing is dominated by per-call setup, so
    // the floor (a throughput) applies to larger blocks only.
    const bool fast_enough =
        o.codec != "auto" || mbps >= o.min_decode_mbps || raw.size() < (32u << 10);
    if (fast_enough && enc.size() < best.bytes.size()) {
      best.codec = c;
      best.bytes = enc;
    }
  }
  return best;
}

}  // namespace

Status PrepareEncoding(PackState& s) {
  ASSIGN_OR_RETURN(s.codec_candidates, CodecCandidates(s.o));
  for (const Matrix& m : s.mats) s.total_bytes += m.rows * m.cols;
  return Status::Ok();
}

EncodedBlocks EncodeBlocks(PackState& s, std::span<const uint8_t> data, size_t row_bytes,
                           size_t rows_per_block) {
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
