// Pack stage 7: the container. Every tensor is written in execution order, its blocks coded as it
// is written (EncodeBlocks, encode.cc), then the manifest; the report gets a row per tensor and
// the totals.

#include <algorithm>
#include <set>
#include <span>
#include <string>

#include "base/packed_codes.h"
#include "base/row_scales.h"
#include "engine/dcm_model.h"
#include "packer/inspect.h"
#include "packer/internal/pack_state.h"
#include "packer/internal/pack_util.h"

namespace dcomp::packer::internal {
namespace {

namespace pb = storage::pb;

// Encodes `data` (whole rows) in blocks of rows_per_block rows, in parallel, and appends them.
Status WriteBlocks(PackState& s, TensorReport& tr, std::set<std::string>& used,
                   std::span<const uint8_t> data, size_t row_bytes, size_t rows_per_block,
                   std::span<const int> packed_bits = {}, const WidthLevels& levels = {}) {
  const EncodedBlocks e = EncodeBlocks(s, data, row_bytes, rows_per_block, packed_bits, levels);
  for (size_t b = 0; b < e.enc.size(); ++b) {
    RETURN_IF_ERROR(e.st[b]);
    const size_t off = b * rows_per_block * row_bytes;
    const size_t len = std::min(data.size() - off, rows_per_block * row_bytes);
    RETURN_IF_ERROR(s.writer->AddBlock(e.enc[b].codec, len, e.enc[b].bytes));
    tr.stored_bytes += e.enc[b].bytes.size();
    used.insert(storage::CodecName(e.enc[b].codec));
  }
  return Status::Ok();
}

std::string Join(const std::set<std::string>& used) {
  std::string s;
  for (const std::string& c : used) s += (s.empty() ? "" : "+") + c;
  return s;
}

Status WriteVector(PackState& s, const Vector& v) {
  pb::Tensor t;
  t.set_name(v.name);
  t.set_type(pb::TENSOR_F32);
  t.set_rows(1);
  t.set_cols(static_cast<int64_t>(v.v.size()));
  t.set_layer(v.layer);
  t.set_rows_per_block(1);
  s.writer->BeginTensor(t);
  TensorReport tr;
  tr.name = v.name;
  tr.layer = v.layer;
  tr.params = static_cast<int64_t>(v.v.size());
  tr.int8_bytes = v.v.size() * 4;
  tr.ram_bytes = tr.int8_bytes;
  std::set<std::string> used;
  RETURN_IF_ERROR(WriteBlocks(s, tr, used,
                              {reinterpret_cast<const uint8_t*>(v.v.data()), v.v.size() * 4},
                              v.v.size() * 4, 1));
  tr.codecs = Join(used);
  s.rep.tensors.push_back(tr);
  return Status::Ok();
}

Status WriteMatrix(PackState& s, const Matrix& m) {
  pb::Tensor t;
  t.set_name(m.name);
  t.set_type(pb::TENSOR_Q8_ROW);
  t.set_rows(static_cast<int64_t>(m.rows));
  t.set_cols(static_cast<int64_t>(m.cols));
  t.set_layer(m.layer);
  size_t rpb = std::clamp<size_t>(s.o.block_bytes / m.cols, 1, m.rows);
  if (m.groups() > 0) {  // blocks within groups of rows: each group's width is its blocks'
    rpb = m.group_rows / ((m.group_rows + rpb - 1) / rpb);
    while (m.group_rows % rpb != 0) --rpb;
  }
  t.set_rows_per_block(static_cast<int64_t>(rpb));
  t.set_bits(m.q.bits());
  const size_t nblocks = (m.rows + rpb - 1) / rpb;
  std::vector<int> block_bits(nblocks, IsPackedBits(m.q.bits()) ? m.q.bits() : 0);
  if (m.groups() > 0) {
    for (size_t k = 0; k < nblocks; ++k) block_bits[k] = m.group_bits[k * rpb / m.group_rows];
    if (std::any_of(block_bits.begin(), block_bits.end(),
                    [&](int b) { return b != block_bits[0]; })) {
      for (int b : block_bits) t.add_block_bits(b);
    }
  }
  // Non-uniform levels: one table per width the blocks use (format 5).
  std::vector<CodeLevels> level_store;
  WidthLevels levels{};
  if (m.level_shape > 0 && IsPackedBits(m.q.bits())) {
    std::set<int> widths(block_bits.begin(), block_bits.end());
    level_store.reserve(widths.size());
    for (int b : widths) {
      if (!UsesLevels(b, m.level_shape)) continue;
      const std::vector<uint8_t> mag = PackerLevels(b, m.level_shape, m.prune);
      pb::CodeLevels* L = t.add_levels();
      L->set_bits(b);
      L->set_magnitudes(std::string(mag.begin(), mag.end()));
      level_store.push_back(MakeCodeLevels(b, mag));
      levels[static_cast<size_t>(b)] = &level_store.back();
    }
  }
  // Rows stored in m.row_order (token matrices by use: the blocks of one width are contiguous).
  std::vector<int8_t> codes;
  std::vector<float> scale;
  const std::vector<int8_t>* stored_codes = &m.q.codes;
  const std::vector<float>* stored_scale = &m.q.scale;
  if (!m.row_order.empty()) {
    codes = StoredRows(m, m.q.codes, m.cols, 0, m.rows);
    scale = StoredRows(m, m.q.scale, 1, 0, m.rows);
    t.mutable_row_order()->Add(m.row_order.begin(), m.row_order.end());
    stored_codes = &codes;
    stored_scale = &scale;
  }
  // Row scales in one byte per row when all are on the grid (format 6), else f32.
  const RowScales rs = MakeRowScales(*stored_scale);
  if (rs.coded()) t.set_scale_grid_base(rs.n0);
  const std::span<const uint8_t> scale_bytes =
      rs.coded() ? std::span<const uint8_t>(rs.code)
                 : std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(stored_scale->data()),
                                            m.rows * 4);
  pb::QuantInfo* qi = t.mutable_quant();
  qi->set_alpha(m.alpha);
  qi->set_step_multiplier(m.step);
  qi->set_prune_ratio(m.prune);
  qi->set_max_code(m.q.max_code);
  qi->set_output_rel_error(m.err);
  qi->set_code_entropy_bits(m.entropy);
  s.writer->BeginTensor(t);
  TensorReport tr;
  tr.name = m.name;
  tr.layer = m.layer;
  tr.params = static_cast<int64_t>(m.rows * m.cols);
  tr.quantized = true;
  tr.int8_bytes = m.rows * m.cols + m.rows * 4;
  tr.bits = m.q.bits();
  tr.ram_bytes = PackedTierBytes(t, m.q.scale);
  tr.alpha = m.alpha;
  tr.step_multiplier = m.step;
  tr.prune = m.prune;
  tr.output_rel_error = m.err;
  tr.entropy_bits = m.entropy;
  if (m.groups() > 0) {
    tr.rows = static_cast<int64_t>(m.rows);
    tr.group_rows = static_cast<int64_t>(m.group_rows);
    tr.group_bits = m.group_bits;
    for (size_t g = 0; g < m.groups(); ++g)
      tr.group_entropy_bits.push_back(CodeEntropyBits(GroupRows(m, m.q.codes, g)));
  }
  std::set<std::string> used;
  RETURN_IF_ERROR(WriteBlocks(s, tr, used, scale_bytes, scale_bytes.size(), 1));
  RETURN_IF_ERROR(WriteBlocks(
      s, tr, used, {reinterpret_cast<const uint8_t*>(stored_codes->data()), stored_codes->size()},
      m.cols, rpb, block_bits, levels));
  tr.codecs = Join(used);
  s.rep.tensors.push_back(tr);
  s.done_bytes += m.rows * m.cols;
  s.Progress("entropy coding",
             static_cast<double>(s.done_bytes) / static_cast<double>(s.total_bytes));
  return Status::Ok();
}

Status WriteManifest(PackState& s) {
  const PackOptions& o = s.o;
  const PackReport& rep = s.rep;
  pb::Manifest man;
  *man.mutable_config() = ModelConfigToProto(s.cfg);
  *man.mutable_tokenizer() = TokenizerToProto(s.file->tokenizer());
  pb::PackInfo* pi = man.mutable_pack_info();
  pi->set_source(o.input);
  pi->set_source_format(s.file->format());
  pi->set_tool_version(DCOMP_VERSION);
  pi->set_options(o.command_line);
  pi->set_calibration(rep.calibration);
  pi->set_f32_nll(rep.f32_nll);
  pi->set_packed_nll(rep.packed_nll);
  pi->set_codec_choice(s.codec_choice);
  return s.writer->Finish(man);
}

}  // namespace

Status WriteContainer(PackState& s) {
  for (const CanonicalTensor& t : s.order) {
    RETURN_IF_ERROR(t.rows == 1 ? WriteVector(s, s.vecs.at(t.name))
                                : WriteMatrix(s, s.Find(t.name)));
  }
  RETURN_IF_ERROR(WriteManifest(s));

  PackReport& rep = s.rep;
  for (const TensorReport& t : rep.tensors) {
    rep.f32_bytes += static_cast<uint64_t>(t.params) * 4;
    rep.int8_bytes += t.int8_bytes;
    rep.ram_bytes += t.ram_bytes;
    rep.params += t.params;
    rep.stored_bytes += t.stored_bytes;
  }
  rep.file_bytes = s.writer->file_bytes();
  return Status::Ok();
}

}  // namespace dcomp::packer::internal
