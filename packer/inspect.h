// `dcomp inspect`: what a .dcm file holds (header, model, pack info, per-layer sizes and codecs)
// and, with verify, every block CRC-checked and decoded.
#pragma once

#include <string>

#include "base/status.h"

namespace dcomp::packer {

// Text (or one JSON object) describing the file. With `verify`, a corrupt block fails the call
// with DATA_LOSS naming the block and tensor.
Result<std::string> Inspect(const std::string& path, bool verify, bool json);

}  // namespace dcomp::packer
