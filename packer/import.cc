// Pack stage 1: open the model and the output, import every tensor as f32.

#include <utility>

#include "packer/internal/pack_state.h"

namespace dcomp::packer::internal {

Status Import(PackState& s) {
  const PackOptions& o = s.o;
  ASSIGN_OR_RETURN(s.file, OpenModelFile(o.input, o.tokenizer_path));
  // Fail on an unwritable output before the expensive stages.
  ASSIGN_OR_RETURN(s.writer, storage::ContainerWriter::Create(o.output));
  s.cfg = s.file->config();
  const ModelConfig& cfg = s.cfg;
  ASSIGN_OR_RETURN(s.tok, Tokenizer::Create(s.file->tokenizer()));
  s.Log("model: " + cfg.Summary() + " [" + s.file->format() + "]");

  // Import every tensor as f32, in execution order (the order they are written in).
  s.order = CanonicalTensors(cfg);
  for (const CanonicalTensor& t : s.order) {
    ASSIGN_OR_RETURN(std::vector<float> data, s.file->ReadF32(t.name));
    if (t.rows == 1) {
      s.vecs[t.name] = {t.name, t.layer, std::move(data)};
      continue;
    }
    Matrix m;
    m.name = t.name;
    m.layer = t.layer;
    m.rows = static_cast<size_t>(t.rows);
    m.cols = static_cast<size_t>(t.cols);
    m.prune = static_cast<float>(o.prune);
    m.level_shape = o.level_shape;
    m.w = std::move(data);
    s.mat_index[t.name] = s.mats.size();
    s.mats.push_back(std::move(m));
  }
  s.Progress("import", 1.0);
  s.rep.synthetic = cfg.synthetic;
  return Status::Ok();
}

}  // namespace dcomp::packer::internal
