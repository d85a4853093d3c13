// The unit layout of a .dcm model for the streaming runtime. A unit is one transformer layer's
// seven matrices (in LayerWeights order), or the output matrix (the last unit). For each unit: its
// tensors' blocks (a row-scale block, then blocks of whole rows), its page-aligned range on flash,
// and where each tensor sits in the unit's decoded form (codes padded to the kernels' stride, row
// scales, row sums) and in its packed form (codes at their width; 8-bit tensors also f32 scales
// and row sums). Also what is always held: norms, biases, every matrix's row scales (checked once
// at open; one byte a row on the scale grid, base/row_scales.h) and the embedding's row scales;
// and the planner's view of each unit (UnitInfo).
//
// Built once at open and immutable afterwards; safe to read from any thread.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "base/packed_codes.h"
#include "base/row_scales.h"
#include "base/status.h"
#include "engine/dcm_model.h"
#include "engine/weights.h"
#include "runtime/planner.h"

namespace dcomp::runtime {

// One matrix of a unit.
struct TensorLayout {
  int tensor = -1;  // in the manifest
  size_t rows = 0, cols = 0, stride = 0;
  size_t q_off = 0, scale_off = 0, rowsum_off = 0;  // in the unit's decoded layout
  int bits = 8;  // the codes' width (manifest; the widest block's when blocks differ)
  // Per block of codes when they differ (Tensor.block_bits), else empty: see BlockBits.
  std::vector<int> block_bits;
  // In the unit's packed layout. Scales and row sums: 8-bit tensors only (the INT8 products
  // read f32 scales); packed tensors read the unit's RowScales (UnitLayout::scales).
  size_t p_off = 0, p_scale_off = 0, p_rowsum_off = 0;
  uint32_t first_block = 0;  // the scale block; rows follow
  size_t rows_per_block = 0, row_blocks = 0;
  std::vector<size_t> p_block_off;  // per block of codes: where its rows start, from p_off
  uint64_t raw_bytes = 0, packed_raw_bytes = 0;  // of its blocks (as UnitInfo's)
  // Per width, its non-uniform levels (Tensor.levels; the reader's, valid for its life) or null.
  std::array<const CodeLevels*, kMaxPackedBits + 1> levels{};

  // The width of block k of codes (k = 0 is the block after the scales), and the bytes of one of
  // its rows in the packed layout (PackedRowBytes, or the stride at 8 bits).
  int BlockBits(size_t k) const { return block_bits.empty() ? bits : block_bits[k]; }
  const CodeLevels* BlockLevels(size_t k) const {
    const int b = BlockBits(k);
    return IsPackedBits(b) ? levels[static_cast<size_t>(b)] : nullptr;
  }
  size_t BlockRows(size_t k) const { return std::min(rows_per_block, rows - k * rows_per_block); }
  size_t BlockRowBytes(size_t k) const {
    return bits == 8 ? stride : PackedRowBytes(cols, BlockBits(k));
  }
};

// One block of a unit to decode: the scale block or a block of rows.
struct WorkBlock {
  uint32_t block = 0;
  int t = 0;  // index into the unit's tensors
  bool scale = false;
  size_t row0 = 0, rows = 0;
};

struct UnitLayout {
  std::vector<TensorLayout> tensors;  // layer: LayerWeights order; output: one
  std::vector<WorkBlock> work;
  uint64_t range_begin = 0, range_end = 0;  // page-aligned, in the file
  // Per k < tensors.size(): the page-aligned file range of the blocks of tensors k.. (k = 0: the
  // whole range). A flash unit that holds its first k matrices packed (Plan::flash_head) reads
  // only that.
  std::vector<uint64_t> tail_begin, tail_end;
  uint32_t first_block = 0, last_block = 0;  // of the range
  size_t decoded_size = 0;
  size_t packed_size = 0;
  // Per tensor, always held (checked at open): for decoding inline and for the packed tier,
  // which reads them where they are; one byte per row when they are on the scale grid.
  std::vector<RowScales> scales;
  LayerWeights pinned;  // a layer's norms and biases (matrices are set per tier)
};

struct ModelLayout {
  int n_layers = 0;
  bool tied = false;              // the output matrix is the embedding
  std::vector<UnitLayout> units;  // n_layers + 1
  std::vector<UnitInfo> infos;    // the planner's view, per unit
  uint64_t int8_bytes = 0;        // every matrix decoded (the reference of percentage budgets)
  std::vector<std::vector<float>> vectors;  // norms and biases
  const float* final_norm = nullptr;        // in `vectors`
  int embd_tensor = -1;
  RowScales embd_scales;  // per stored row
  // Token matrices stored out of order (Tensor.row_order), else empty: the output's stored row i
  // computes token output_row_order[i]; token t's embedding is stored row embd_row[t].
  std::vector<uint32_t> output_row_order;
  std::vector<uint32_t> embd_row;
  size_t max_raw_block = 0, max_stored_block = 0, max_padded_block = 0, max_block_rows = 0;

  // Bytes of the vectors, row scales and embedding scales held decoded.
  uint64_t vector_bytes() const;
};

// Reads the manifest and the always-decoded parts of `file`; fails naming the file and tensor
// when one is missing, has the wrong type or carries invalid row scales.
Result<ModelLayout> BuildModelLayout(const DcmModelFile& file, const ModelConfig& config);

}  // namespace dcomp::runtime
