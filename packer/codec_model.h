// The decode-speed model behind `dcomp pack --codec auto`: how fast each codec decodes weight codes
// on each CPU that dcomp ships for (one thread, GB/s of decoded codes). The choice of a block's
// codec uses this table, never the packing machine's own timing, so a file packed on any machine is
// coded the same and decodes at full speed on every target. A codec is a candidate when its
// slowest target meets the floor (--min-decode-speed); among candidates each block takes the
// smallest coding (raw if none is smaller). Where each figure comes from is in the table.
#pragma once

#include <string>
#include <vector>

#include "storage/codec.h"

namespace dcomp::packer {

struct TargetDecodeSpeed {
  const char* target;  // "x86-64 AVX2", ...
  double rans_gbps;
  double zstd_gbps;
  const char* source;  // measured (command) or estimated (how)
};
const std::vector<TargetDecodeSpeed>& DecodeSpeedModel();

// The slowest target's modeled decode speed of `codec`, MB/s (raw: unbounded).
double SlowestDecodeMbps(storage::Codec codec);

// The codecs `auto` may choose among at this floor, and one line saying why (for the manifest's
// pack info and `dcomp inspect`).
std::vector<storage::Codec> AutoCodecs(double min_decode_mbps, std::string* why);

}  // namespace dcomp::packer
