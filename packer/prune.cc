// Pack stage 4: pruning and INT8 quantization at step 1. Every matrix is quantized with its column
// scale and importance (from scaling and calibration) and its prune ratio (--prune): per row, the
// fraction `prune` of entries with the smallest |W'[r][j]| * max|x'_j| is zeroed (QuantizeMatrix,
// packer/quantize.h). The runnable INT8 copy of the model is built for the stages that run it.

#include <memory>
#include <string>

#include "engine/layer_schema.h"
#include "packer/internal/pack_state.h"
#include "packer/internal/pack_util.h"

namespace dcomp::packer::internal {

Status QuantizeAndPrune(PackState& s) {
  // ----- quantize at step 1 ----------------------------------------------------------------------
  std::vector<Matrix>& mats = s.mats;
  for (size_t i = 0; i < mats.size(); ++i) {
    // A synthetic model keeps the width `dcomp synth` drew its codes at (no rate allocation runs
    // on synthetic weights), so that it packs as a real model of that shape would.
    if (s.cfg.synthetic) {
      auto it = s.cfg.synthetic_bits.find(std::string(MatrixRole(mats[i].name)));
      if (it != s.cfg.synthetic_bits.end()) mats[i].bits = it->second;
    }
    Quantize(mats[i]);
    s.Progress("quantize", static_cast<double>(i + 1) / static_cast<double>(mats.size()));
  }
  s.qw = std::make_unique<PackWeights>(s.cfg, true);
  if (s.need_calib) LoadWeights(*s.qw, mats, s.vecs, true);
  return Status::Ok();
}

}  // namespace dcomp::packer::internal
