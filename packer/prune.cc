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
      Matrix& m = mats[i];
      const std::string role(MatrixRole(m.name));
      auto it = s.cfg.synthetic_bits.find(role);
      if (it != s.cfg.synthetic_bits.end()) m.bits = it->second;
      auto l = s.cfg.synthetic_layer_bits.find(role);
      if (l != s.cfg.synthetic_layer_bits.end() && m.layer >= 0 &&
          static_cast<size_t>(m.layer) < l->second.size()) {
        m.bits = l->second[static_cast<size_t>(m.layer)];
      }
      m.level_shape = s.cfg.synthetic_level_shape;  // the levels synth drew on
      // Groups of rows as rate allocation would split the matrix (RowsPerGroup), in order.
      auto g = s.cfg.synthetic_group_bits.find(role);
      if (g != s.cfg.synthetic_group_bits.end()) {
        const size_t n = g->second.size(), rows = RowsPerGroup(m.rows, n);
        if (const size_t made = GroupCount(m.rows, rows); made != n) {
          return InvalidArgumentError(s.o.input + ": dcomp.synthetic.group_bits." + role + " has " +
                                      std::to_string(n) + " widths, but " + m.name + "'s " +
                                      std::to_string(m.rows) + " rows make " +
                                      std::to_string(made) + " groups of " + std::to_string(rows));
        }
        m.group_rows = rows;
        m.group_bits = g->second;
        m.group_clip.assign(n, m.clip);
      }
    }
    Quantize(mats[i]);
    s.Progress("quantize", static_cast<double>(i + 1) / static_cast<double>(mats.size()));
  }
  s.qw = std::make_unique<PackWeights>(s.cfg, true);
  if (s.need_calib) LoadWeights(*s.qw, mats, s.vecs, true);
  return Status::Ok();
}

}  // namespace dcomp::packer::internal
