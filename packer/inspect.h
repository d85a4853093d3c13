// `dcomp inspect`: what a .dcm file holds (header, model, pack info, per-layer sizes and codecs)
// and, with verify, every block CRC-checked and decoded.
#pragma once

#include <span>
#include <string>

#include "base/status.h"
#include "storage/container.h"

namespace dcomp::packer {

// Bytes of a TENSOR_Q8_ROW tensor as the packed tier holds it: its codes packed at each block's
// width (INT8 codes one byte each) and its row `scales` (one byte each when a reader holds them
// coded, base/row_scales.h; f32 for 8-bit tensors, whose INT8 products read f32).
uint64_t PackedTierBytes(const storage::pb::Tensor& T, std::span<const float> scales);

// Text (or one JSON object) describing the file. The 4-7-bit tensors' row-scale blocks are read (to
// count the packed tier's scales), so a corrupt one fails the call with DATA_LOSS naming the block
// and tensor; with `verify`, any corrupt block does.
Result<std::string> Inspect(const std::string& path, bool verify, bool json);

}  // namespace dcomp::packer
