// Decoding a unit's blocks into the form the kernels read, and the views the transformer is handed:
//  - whole units (DecodeWork per block) into a decoded buffer: the decoded tier and the decode
//    pool's slots; views over that buffer (BuildViews);
//  - inline: InlineViews whose matrices are RowBlockSources over the unit's stored range in RAM
//    (the compressed tier or a staging buffer); the transformer's compute threads decode each block
//    of rows into their own scratch as they multiply it.
// A block that fails its CRC or holds code -128 fails with DATA_LOSS naming the block.
//
// Thread-safe: every method is const; decoding inline counts bytes and time in atomics, which the
// controller takes at token boundaries (TakeInlineCounters).
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <vector>

#include "engine/weights.h"
#include "runtime/unit_layout.h"
#include "storage/block_reader.h"
#include "storage/container.h"

namespace dcomp::runtime {

class UnitDecoder;

// One matrix of a unit, decoded inline from the unit's stored range wherever it is in RAM.
// `crc_checked`: the range's CRCs were checked when it was read (CheckRange), so its blocks are
// not checked again on every token.
class InlineMatrix : public RowBlockSource {
 public:
  InlineMatrix(const UnitDecoder* d, const TensorLayout* t, const RowScales* scales,
               uint64_t range_begin, const uint8_t* range, bool crc_checked)
      : d_(d),
        t_(t),
        scales_(scales),
        range_begin_(range_begin),
        range_(range),
        crc_checked_(crc_checked) {}
  size_t num_blocks() const override { return t_->row_blocks; }
  size_t rows_per_block() const override { return t_->rows_per_block; }
  Status DecodeRows(size_t k, int8_t* q, int32_t* row_sum) const override;
  Result<bool> PackedRows(size_t k, kernels::PackedMatrixView* rows) const override;
  kernels::RowScaleView Scales() const override { return kernels::RowScaleView(*scales_); }

 private:
  const UnitDecoder* d_;
  const TensorLayout* t_;
  const RowScales* scales_;
  uint64_t range_begin_;
  const uint8_t* range_;
  bool crc_checked_;
};

// Views of a unit decoded inline (the matrices must not move while the views exist).
struct InlineViews {
  std::vector<InlineMatrix> mats;
  LayerWeights layer;
  LinearWeights head;
};

class UnitDecoder {
 public:
  UnitDecoder(const storage::ContainerReader* reader, const ModelLayout* layout)
      : reader_(reader), layout_(layout) {}

  const storage::ContainerReader& reader() const { return *reader_; }
  const ModelLayout& layout() const { return *layout_; }
  const UnitLayout& unit(int u) const { return layout_->units[static_cast<size_t>(u)]; }

  // Block i of tensor T (`rows` rows of codes, stored bytes at `stored_range` + its offset from
  // `range_begin`) into q, rows padded to the stride with zeros, and their row sums. `scratch`
  // takes rows * cols bytes when rows need padding.
  Status DecodeRowBlock(const TensorLayout& T, uint32_t i, uint64_t range_begin,
                        const uint8_t* stored_range, size_t rows, int8_t* q, int32_t* row_sum,
                        storage::BlockDecoder* dec, uint8_t* scratch,
                        bool crc_checked = false) const;
  // One work item of a unit into its decoded layout at dst. Scales come from the copy decoded
  // and checked at open. `crc_checked` as for DecodeRowBlock (the range was checked when read).
  Status DecodeWork(const UnitLayout& U, const WorkBlock& w, const uint8_t* stored_range,
                    uint8_t* dst, storage::BlockDecoder* dec, uint8_t* scratch,
                    bool crc_checked = false) const;
  // The same into the unit's packed layout at dst: a block stored packed is checked (CRC) and
  // copied; any other is decoded (checked) into `q` (rows_per_block x stride bytes, its row sums
  // into `sums`, rows_per_block entries, unless the tensor keeps them), then packed to the
  // tensor's width (copied at 8 bits).
  Status DecodeWorkPacked(const UnitLayout& U, const WorkBlock& w, const uint8_t* stored_range,
                          uint8_t* dst, storage::BlockDecoder* dec, uint8_t* scratch, int8_t* q,
                          int32_t* sums) const;
  // Block k of tensor T's rows when it is stored packed: a view into the range, its CRC checked
  // unless `crc_checked` (false when the block is entropy-coded).
  Result<bool> PackedInline(const TensorLayout& T, uint64_t range_begin, const uint8_t* range,
                            size_t k, kernels::PackedMatrixView* rows, bool crc_checked) const;
  // Block k of tensor T's rows, from the unit's stored range in RAM (any compute thread).
  Status DecodeInline(const TensorLayout& T, uint64_t range_begin, const uint8_t* range, size_t k,
                      int8_t* q, int32_t* row_sum, bool crc_checked) const;
  // Checks the CRC of every block of unit u's row codes in its stored range at `range`
  // (DATA_LOSS naming the first that fails).
  Status CheckRange(int u, const uint8_t* range) const;

  // Unit u's views over its decoded layout at `base`: the output matrix into *head, or a layer's
  // matrices into *layer with its pinned norms and biases.
  void BuildViews(int u, const uint8_t* base, LayerWeights* layer, LinearWeights* head) const;
  // The same over its packed layout at `base`.
  void BuildPackedViews(int u, const uint8_t* base, LayerWeights* layer, LinearWeights* head) const;
  // Views of unit u decoded inline from its stored range at `range` (crc_checked: as for
  // InlineMatrix). With head > 0, its first `head` matrices are held packed at `head_base` (the
  // start of the unit's packed layout) and `range` holds only the rest: U.tail_begin[head] ..
  // U.tail_end[head] of the file.
  void BuildInlineViews(int u, const uint8_t* range, InlineViews* v, bool crc_checked,
                        size_t head = 0, const uint8_t* head_base = nullptr) const;

  // A read or decode failure of unit U, as DATA_LOSS naming its blocks (other codes kept).
  Status BlockError(const UnitLayout& U, const Status& s) const;

  // Raw bytes decoded inline and the thread-seconds it took since the last call.
  void TakeInlineCounters(uint64_t* bytes, double* seconds) const;

 private:
  // The stored bytes of block i in a unit range held in RAM from file offset `range_begin`.
  std::span<const uint8_t> StoredIn(uint32_t i, uint64_t range_begin, const uint8_t* range) const;
  // Tensor T's packed view over a unit's packed layout at `base`, with the tensor's row scales.
  static LinearWeights PackedView(const TensorLayout& T, const RowScales& scales,
                                  const uint8_t* base);
  template <typename ViewFn>
  void AssembleViews(int u, ViewFn view, LayerWeights* layer, LinearWeights* head) const;

  const storage::ContainerReader* reader_;
  const ModelLayout* layout_;
  mutable std::atomic<uint64_t> inline_bytes_{0}, inline_ns_{0};
};

}  // namespace dcomp::runtime
