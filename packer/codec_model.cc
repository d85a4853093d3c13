#include "packer/codec_model.h"

#include <algorithm>
#include <cstdio>
#include <limits>

namespace dcomp::packer {

const std::vector<TargetDecodeSpeed>& DecodeSpeedModel() {
  // x86-64 rows: bench/codec_bench on stories3M's default-pack codes (BENCHMARKS.md "Entropy
  // decoders"), one thread, the slower of the two x86 machines measured (2.1 GHz EPYC figures for
  // zstd from the decoders issue). aarch64: no hardware here; estimated from the NEON decoder's
  // instruction count per symbol (about 8 per byte, no gather) at IPC 3 and 2.4 GHz (Raspberry Pi
  // 5, Cortex-A76), and zstd at 0.6 of its x86 speed per clock.
  static const std::vector<TargetDecodeSpeed> kModel = {
      {"x86-64 AVX2", 1.1, 0.67, "measured: codec_bench (dcomp rans avx2 layout 2, zstd -19)"},
      {"x86-64 AVX-512 VBMI2", 1.6, 0.67,
       "measured: codec_bench (dcomp rans avx512_vbmi2 layout 2)"},
      {"aarch64 NEON (Cortex-A76)", 0.8, 0.45, "estimated (no aarch64 hardware measured)"},
  };
  return kModel;
}

double SlowestDecodeMbps(storage::Codec codec) {
  if (codec == storage::Codec::kRaw) return std::numeric_limits<double>::infinity();
  double slowest = std::numeric_limits<double>::infinity();
  for (const TargetDecodeSpeed& t : DecodeSpeedModel()) {
    slowest = std::min(slowest, 1e3 * (codec == storage::Codec::kRans ? t.rans_gbps : t.zstd_gbps));
  }
  return slowest;
}

std::vector<storage::Codec> AutoCodecs(double min_decode_mbps, std::string* why) {
  std::vector<storage::Codec> cands;
  std::string in, out;
  for (storage::Codec c : {storage::Codec::kRans, storage::Codec::kZstd}) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s %.0f MB/s", storage::CodecName(c), SlowestDecodeMbps(c));
    if (SlowestDecodeMbps(c) >= min_decode_mbps) {
      cands.push_back(c);
      in += (in.empty() ? "" : ", ") + std::string(buf);
    } else {
      out += (out.empty() ? "" : ", ") + std::string(buf);
    }
  }
  char floor[64];
  std::snprintf(floor, sizeof floor, "%.0f MB/s", min_decode_mbps);
  *why = "auto: the smallest coding of each block among codecs whose slowest target decodes at " +
         std::string(floor) + " or more (decode-speed model, not the packing machine): " +
         (in.empty() ? "none (raw)" : in) + (out.empty() ? "" : "; below the floor: " + out);
  return cands;
}

}  // namespace dcomp::packer
