#include "runtime/unit_layout.h"

#include <algorithm>
#include <limits>

#include "base/packed_codes.h"
#include "base/page_buffer.h"
#include "engine/layer_schema.h"
#include "kernels/kernels.h"

namespace dcomp::runtime {

namespace pb = storage::pb;

namespace {

// Builds a ModelLayout from the manifest, one tensor at a time.
class LayoutBuilder {
 public:
  LayoutBuilder(const DcmModelFile& file, ModelLayout* out)
      : file_(file), r_(file.reader()), path_(r_.path()), m_(*out) {}

  // Tensor `name`, which must exist and be Q8_ROW (a matrix) or F32 (a vector).
  Result<int> Find(const std::string& name, bool q8) const {
    const int t = r_.FindTensor(name);
    if (t < 0) return NotFoundError(path_ + ": no tensor '" + name + "'");
    const bool is_q8 = r_.manifest().tensors(t).type() == pb::TENSOR_Q8_ROW;
    if (is_q8 != q8) {
      return InvalidArgumentError(path_ + ": tensor '" + name + "' is " +
                                  (is_q8 ? "Q8_ROW" : "F32") + ", expected " +
                                  (q8 ? "Q8_ROW (pack the model with dcomp pack)" : "F32"));
    }
    return t;
  }

  // Vector `name`, read and kept in the layout.
  Result<const float*> ReadVector(const std::string& name) {
    RETURN_IF_ERROR(Find(name, false).status());
    ASSIGN_OR_RETURN(std::vector<float> v, file_.ReadF32(name));
    m_.vectors.push_back(std::move(v));
    return m_.vectors.back().data();
  }

  // The row scales of Q8 tensor t (its block 0, checked by the reader), held as RowScales.
  Result<RowScales> ReadScales(int t) {
    ASSIGN_OR_RETURN(const std::vector<float> sc, r_.ReadRowScales(t, &scale_decoder_));
    return MakeRowScales(sc);
  }

  void NoteBlockSizes(const pb::Block& b) {
    m_.max_raw_block = std::max<size_t>(m_.max_raw_block, b.raw_size());
    m_.max_stored_block = std::max<size_t>(m_.max_stored_block, b.stored_size());
  }

  // Adds tensor t to unit u: its decoded layout, its blocks and its row scales (checked).
  Status AddTensor(int u, int t) {
    UnitLayout& U = m_.units[static_cast<size_t>(u)];
    const pb::Tensor& T = r_.manifest().tensors(t);
    if (T.row_order_size() > 0 && u != m_.n_layers) {
      return InvalidArgumentError(path_ + ": tensor '" + T.name() +
                                  "' has a row_order; only the token matrices (embedding, "
                                  "output) may be stored out of order");
    }
    TensorLayout L;
    L.tensor = t;
    L.rows = static_cast<size_t>(T.rows());
    L.cols = static_cast<size_t>(T.cols());
    L.stride = kernels::PaddedCols(L.cols);
    L.q_off = U.decoded_size;
    U.decoded_size += (L.rows * L.stride + 63) / 64 * 64;
    L.scale_off = U.decoded_size;
    U.decoded_size += (L.rows * 4 + 63) / 64 * 64;
    L.rowsum_off = U.decoded_size;
    U.decoded_size += (L.rows * 4 + 63) / 64 * 64;
    L.bits = IsPackedBits(T.bits()) ? T.bits() : 8;
    L.block_bits.assign(T.block_bits().begin(), T.block_bits().end());  // checked by the reader
    for (int b = kMinPackedBits; b <= kMaxPackedBits; ++b) {
      L.levels[static_cast<size_t>(b)] = r_.Levels(t, b);
    }
    const size_t rpb = static_cast<size_t>(T.rows_per_block());
    L.first_block = T.first_block();
    L.rows_per_block = rpb;
    L.row_blocks = T.num_blocks() - 1;
    L.p_off = U.packed_size;
    size_t packed_bytes = 0;
    for (size_t k = 0; k < L.row_blocks; ++k) {
      L.p_block_off.push_back(packed_bytes);
      packed_bytes += L.BlockRows(k) * L.BlockRowBytes(k);
    }
    U.packed_size += (packed_bytes + 63) / 64 * 64;
    if (L.bits == 8) {  // the INT8 products' f32 scales and row sums (the packed GEMM takes its
                        // tiles' own row sums)
      L.p_scale_off = U.packed_size;
      U.packed_size += (L.rows * 4 + 63) / 64 * 64;
      L.p_rowsum_off = U.packed_size;
      U.packed_size += (L.rows * 4 + 63) / 64 * 64;
    }
    m_.max_padded_block = std::max(m_.max_padded_block, rpb * L.stride);
    m_.max_block_rows = std::max(m_.max_block_rows, rpb);
    const int ti = static_cast<int>(U.tensors.size());
    U.tensors.push_back(L);
    // The row scales, held for decoding inline and read by the packed tier (read and checked here
    // once).
    ASSIGN_OR_RETURN(U.scales.emplace_back(), ReadScales(t));
    U.work.push_back({T.first_block(), ti, true, 0, L.rows});
    for (uint32_t k = 1; k < T.num_blocks(); ++k) {
      const size_t row0 = (k - 1) * rpb;
      U.work.push_back({T.first_block() + k, ti, false, row0, std::min(rpb, L.rows - row0)});
    }
    TensorLayout& added = U.tensors.back();
    for (uint32_t k = 0; k < T.num_blocks(); ++k) {
      const pb::Block& b = r_.block(T.first_block() + k);
      added.raw_bytes += r_.Int8RawSize(T.first_block() + k);  // what decoding produces
      if (b.codec() == pb::CODEC_PACKED) added.packed_raw_bytes += b.raw_size();
      NoteBlockSizes(b);
    }
    m_.infos[static_cast<size_t>(u)].raw_bytes += added.raw_bytes;
    m_.infos[static_cast<size_t>(u)].packed_raw_bytes += added.packed_raw_bytes;
    return Status::Ok();
  }

  // The unit's page-aligned range over its blocks, and over the blocks of each tail of its
  // tensors.
  void SetRange(UnitLayout& U) const {
    const size_t n = U.tensors.size();
    U.tail_begin.assign(n, std::numeric_limits<uint64_t>::max());
    U.tail_end.assign(n, 0);
    U.first_block = std::numeric_limits<uint32_t>::max();
    for (const WorkBlock& w : U.work) {
      const pb::Block& b = r_.block(w.block);
      for (size_t k = 0; k <= static_cast<size_t>(w.t); ++k) {
        U.tail_begin[k] = std::min<uint64_t>(U.tail_begin[k], b.offset());
        U.tail_end[k] = std::max<uint64_t>(U.tail_end[k], b.offset() + b.stored_size());
      }
      U.first_block = std::min(U.first_block, w.block);
      U.last_block = std::max(U.last_block, w.block);
    }
    for (size_t k = 0; k < n; ++k) {
      U.tail_begin[k] = U.tail_begin[k] / kPageSize * kPageSize;
      U.tail_end[k] = std::min<uint64_t>(RoundUpToPage(U.tail_end[k]), r_.header().file_size);
    }
    U.range_begin = U.tail_begin[0];
    U.range_end = U.tail_end[0];
  }

  Status AddLayer(int l, const ModelConfig& config) {
    UnitLayout& U = m_.units[static_cast<size_t>(l)];
    for (const LayerMatrix& M : kLayerMatrices) {
      ASSIGN_OR_RETURN(int t, Find(LayerTensorName(l, M.name), true));
      RETURN_IF_ERROR(AddTensor(l, t));
    }
    SetRange(U);
    for (const LayerVector& V : kLayerNorms) {
      if (!HasLayerVector(V, config)) continue;
      ASSIGN_OR_RETURN(U.pinned.*V.field, ReadVector(LayerTensorName(l, V.name)));
    }
    if (config.qkv_bias) {
      for (const LayerMatrix& M : kLayerMatrices) {
        if (M.bias == nullptr) continue;
        ASSIGN_OR_RETURN((U.pinned.*M.field).bias, ReadVector(LayerTensorName(l, M.bias)));
      }
    }
    m_.infos[static_cast<size_t>(l)].name = "layer " + std::to_string(l);
    return Status::Ok();
  }

  Status AddOutputAndEmbedding() {
    ASSIGN_OR_RETURN(m_.embd_tensor, Find("token_embd.weight", true));
    ASSIGN_OR_RETURN(int t, m_.tied ? Result<int>(m_.embd_tensor) : Find("output.weight", true));
    RETURN_IF_ERROR(AddTensor(m_.n_layers, t));
    SetRange(m_.units.back());
    m_.infos.back().name = m_.tied ? "output (tied embedding)" : "output";
    ASSIGN_OR_RETURN(m_.final_norm, ReadVector("output_norm.weight"));
    const pb::Tensor& E = r_.manifest().tensors(m_.embd_tensor);
    ASSIGN_OR_RETURN(m_.embd_scales, ReadScales(m_.embd_tensor));
    for (uint32_t i = 1; i < E.num_blocks(); ++i) NoteBlockSizes(r_.block(E.first_block() + i));
    const pb::Tensor& O = r_.manifest().tensors(t);
    m_.output_row_order.assign(O.row_order().begin(), O.row_order().end());
    if (E.row_order_size() > 0) {  // a permutation (checked at open): its inverse
      m_.embd_row.resize(static_cast<size_t>(E.rows()));
      for (int i = 0; i < E.row_order_size(); ++i)
        m_.embd_row[E.row_order(i)] = static_cast<uint32_t>(i);
    }
    return Status::Ok();
  }

  // The planner's figures per unit and the INT8 size of the model.
  void Summarise() {
    for (size_t u = 0; u < m_.units.size(); ++u) {
      const UnitLayout& U = m_.units[u];
      UnitInfo& I = m_.infos[u];
      I.decoded_bytes = RoundUpToPage(U.decoded_size);
      I.packed_bytes = RoundUpToPage(U.packed_size);
      I.compressed_bytes = U.range_end - U.range_begin;
      for (const TensorLayout& T : U.tensors) I.macs_per_token += T.rows * T.cols;
      // A layer on flash may hold its first k matrices packed and read the rest.
      for (size_t k = 1; u + 1 < m_.units.size() && k < U.tensors.size(); ++k) {
        HeadSplit h;
        h.head_packed_bytes = RoundUpToPage(U.tensors[k].p_off);
        h.tail_compressed_bytes = U.tail_end[k] - U.tail_begin[k];
        for (size_t t = 0; t < U.tensors.size(); ++t) {
          const TensorLayout& T = U.tensors[t];
          if (t < k) {
            h.head_macs += T.rows * T.cols;
          } else {
            h.tail_raw_bytes += T.raw_bytes;
            h.tail_packed_raw_bytes += T.packed_raw_bytes;
          }
        }
        I.heads.push_back(h);
      }
      m_.int8_bytes += I.decoded_bytes;
    }
    if (!m_.tied) {
      const pb::Tensor& E = r_.manifest().tensors(m_.embd_tensor);
      m_.int8_bytes += static_cast<uint64_t>(E.rows() * E.cols());
    }
  }

 private:
  const DcmModelFile& file_;
  const storage::ContainerReader& r_;
  const std::string& path_;
  ModelLayout& m_;
  storage::BlockDecoder scale_decoder_;  // the row-scale blocks read at open
};

}  // namespace

uint64_t ModelLayout::vector_bytes() const {
  uint64_t n = 0;
  for (const auto& v : vectors) n += v.capacity() * sizeof(float);
  for (const UnitLayout& U : units) {
    for (const RowScales& v : U.scales) n += v.bytes();
  }
  return n + embd_scales.bytes() +
         (output_row_order.capacity() + embd_row.capacity()) * sizeof(uint32_t);
}

Result<ModelLayout> BuildModelLayout(const DcmModelFile& file, const ModelConfig& config) {
  ModelLayout m;
  m.n_layers = config.n_layers;
  m.tied = config.tied_output;
  const size_t n_units = static_cast<size_t>(config.n_layers) + 1;
  m.units.resize(n_units);
  m.infos.resize(n_units);
  m.vectors.reserve(static_cast<size_t>(config.n_layers) * 5 + 2);
  LayoutBuilder b(file, &m);
  for (int l = 0; l < config.n_layers; ++l) RETURN_IF_ERROR(b.AddLayer(l, config));
  RETURN_IF_ERROR(b.AddOutputAndEmbedding());
  b.Summarise();
  return m;
}

}  // namespace dcomp::runtime
