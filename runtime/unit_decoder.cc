#include "runtime/unit_decoder.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "base/clock.h"
#include "engine/layer_schema.h"
#include "kernels/kernels.h"

namespace dcomp::runtime {

namespace pb = storage::pb;

namespace {

// An INT8 matrix view over a unit's buffer at `base` (codes, scales, row sums at those offsets).
kernels::Q8MatrixView Q8View(const uint8_t* base, size_t q_off, size_t scale_off, size_t rowsum_off,
                             const TensorLayout& T) {
  return {reinterpret_cast<const int8_t*>(base + q_off),
          reinterpret_cast<const float*>(base + scale_off),
          reinterpret_cast<const int32_t*>(base + rowsum_off),
          T.rows,
          T.cols,
          T.stride};
}

}  // namespace
Status InlineMatrix::DecodeRows(size_t k, int8_t* q, int32_t* row_sum) const {
  return d_->DecodeInline(*t_, range_begin_, range_, k, q, row_sum, crc_checked_);
}

Result<bool> InlineMatrix::PackedRows(size_t k, kernels::PackedMatrixView* rows) const {
  return d_->PackedInline(*t_, range_begin_, range_, k, rows, crc_checked_);
}

std::span<const uint8_t> UnitDecoder::StoredIn(uint32_t i, uint64_t range_begin,
                                               const uint8_t* range) const {
  const pb::Block& b = reader_->block(i);
  return {range + (b.offset() - range_begin), b.stored_size()};
}

Result<bool> UnitDecoder::PackedInline(const TensorLayout& T, uint64_t range_begin,
                                       const uint8_t* range, size_t k,
                                       kernels::PackedMatrixView* rows, bool crc_checked) const {
  const uint32_t i = T.first_block + 1 + static_cast<uint32_t>(k);
  if (reader_->block(i).codec() != pb::CODEC_PACKED) return false;
  const std::span<const uint8_t> stored = StoredIn(i, range_begin, range);
  if (!crc_checked) RETURN_IF_ERROR(reader_->CheckCrc(i, stored));
  rows->data = stored.data();
  rows->row_bytes = T.BlockRowBytes(k);
  rows->bits = T.BlockBits(k);
  rows->levels = T.BlockLevels(k);
  return true;
}

Status UnitDecoder::DecodeRowBlock(const TensorLayout& T, uint32_t i, uint64_t range_begin,
                                   const uint8_t* stored_range, size_t rows, int8_t* q,
                                   int32_t* row_sum, storage::BlockDecoder* dec, uint8_t* scratch,
                                   bool crc_checked) const {
  const std::span<const uint8_t> stored = StoredIn(i, range_begin, stored_range);
  const size_t n = rows * T.cols;
  if (T.stride == T.cols) {
    RETURN_IF_ERROR(reader_->DecodeBlock(
        i, stored, std::span<uint8_t>(reinterpret_cast<uint8_t*>(q), n), dec, crc_checked));
  } else {
    RETURN_IF_ERROR(
        reader_->DecodeBlock(i, stored, std::span<uint8_t>(scratch, n), dec, crc_checked));
    for (size_t r = 0; r < rows; ++r) {
      std::memcpy(q + r * T.stride, scratch + r * T.cols, T.cols);
      std::memset(q + r * T.stride + T.cols, 0, T.stride - T.cols);
    }
  }
  if (!kernels::Kernels().row_sums_q8(q, rows, T.stride, row_sum)) {
    return DataLossError(reader_->path() + ": " + reader_->DescribeBlock(i) +
                         ": code -128 (codes are in [-127, 127])");
  }
  return Status::Ok();
}

Status UnitDecoder::DecodeWork(const UnitLayout& U, const WorkBlock& w, const uint8_t* stored_range,
                               uint8_t* dst, storage::BlockDecoder* dec, uint8_t* scratch,
                               bool crc_checked) const {
  const TensorLayout& T = U.tensors[static_cast<size_t>(w.t)];
  if (w.scale) {
    U.scales[static_cast<size_t>(w.t)].Expand(0, T.rows,
                                              reinterpret_cast<float*>(dst + T.scale_off));
    return Status::Ok();
  }
  return DecodeRowBlock(T, w.block, U.range_begin, stored_range, w.rows,
                        reinterpret_cast<int8_t*>(dst + T.q_off) + w.row0 * T.stride,
                        reinterpret_cast<int32_t*>(dst + T.rowsum_off) + w.row0, dec, scratch,
                        crc_checked);
}

Status UnitDecoder::DecodeWorkPacked(const UnitLayout& U, const WorkBlock& w,
                                     const uint8_t* stored_range, uint8_t* dst,
                                     storage::BlockDecoder* dec, uint8_t* scratch, int8_t* q,
                                     int32_t* sums) const {
  const TensorLayout& T = U.tensors[static_cast<size_t>(w.t)];
  if (w.scale) {  // packed tensors read the unit's scales where they are held
    if (T.bits == 8) {
      U.scales[static_cast<size_t>(w.t)].Expand(0, T.rows,
                                                reinterpret_cast<float*>(dst + T.p_scale_off));
    }
    return Status::Ok();
  }
  const size_t k = w.block - T.first_block - 1;
  const int bits = T.BlockBits(k);
  uint8_t* out = dst + T.p_off + T.p_block_off[k];
  if (reader_->block(w.block).codec() == pb::CODEC_PACKED) {  // stored as held: check and copy
    const std::span<const uint8_t> stored = StoredIn(w.block, U.range_begin, stored_range);
    RETURN_IF_ERROR(reader_->CheckCrc(w.block, stored));
    std::memcpy(out, stored.data(), stored.size());
    return Status::Ok();
  }
  int32_t* row_sum = T.bits == 8 ? reinterpret_cast<int32_t*>(dst + T.p_rowsum_off) + w.row0 : sums;
  RETURN_IF_ERROR(
      DecodeRowBlock(T, w.block, U.range_begin, stored_range, w.rows, q, row_sum, dec, scratch));
  if (T.bits == 8) {
    std::memcpy(out, q, w.rows * T.stride);
  } else if (PackRows(q, w.rows, T.cols, T.stride, bits, out, T.BlockLevels(k)) != w.rows) {
    // The reader checks every code against the declared width and levels; this cannot pass it.
    return DataLossError(reader_->path() + ": " + reader_->DescribeBlock(w.block) +
                         ": a code does not fit the block's " + std::to_string(bits) +
                         "-bit width or levels");
  }
  return Status::Ok();
}

Status UnitDecoder::DecodeInline(const TensorLayout& T, uint64_t range_begin, const uint8_t* range,
                                 size_t k, int8_t* q, int32_t* row_sum, bool crc_checked) const {
  thread_local storage::BlockDecoder dec;
  thread_local std::vector<uint8_t> scratch;
  const auto t0 = Clock::now();
  const uint32_t i = T.first_block + 1 + static_cast<uint32_t>(k);
  const size_t rows = T.BlockRows(k);
  if (T.stride != T.cols && scratch.size() < rows * T.cols) scratch.resize(rows * T.cols);
  RETURN_IF_ERROR(DecodeRowBlock(T, i, range_begin, range, rows, q, row_sum, &dec, scratch.data(),
                                 crc_checked));
  inline_bytes_.fetch_add(reader_->block(i).raw_size(), std::memory_order_relaxed);
  inline_ns_.fetch_add(static_cast<uint64_t>(std::chrono::nanoseconds(Clock::now() - t0).count()),
                       std::memory_order_relaxed);
  return Status::Ok();
}

template <typename ViewFn>
void UnitDecoder::AssembleViews(int u, ViewFn view, LayerWeights* layer,
                                LinearWeights* head) const {
  if (u == layout_->n_layers) {
    *head = view(0);
    if (!layout_->output_row_order.empty()) head->row_order = layout_->output_row_order.data();
    return;
  }
  *layer = unit(u).pinned;
  for (size_t i = 0; i < static_cast<size_t>(kLayerMatrixCount); ++i) {
    LinearWeights& dst = layer->*kLayerMatrices[i].field;
    const float* bias = dst.bias;
    dst = view(i);
    dst.bias = bias;
  }
}

void UnitDecoder::BuildViews(int u, const uint8_t* base, LayerWeights* layer,
                             LinearWeights* head) const {
  const UnitLayout& U = unit(u);
  auto view = [&](size_t t) {
    const TensorLayout& T = U.tensors[t];
    LinearWeights v;
    v.quantized = true;
    v.q8 = Q8View(base, T.q_off, T.scale_off, T.rowsum_off, T);
    return v;
  };
  AssembleViews(u, view, layer, head);
}

LinearWeights UnitDecoder::PackedView(const TensorLayout& T, const RowScales& scales,
                                      const uint8_t* base) {
  LinearWeights v;
  v.quantized = true;
  if (T.bits == 8) {
    v.q8 = Q8View(base, T.p_off, T.p_scale_off, T.p_rowsum_off, T);
  } else {
    const kernels::RowScaleView scale(scales);
    v.q8 = {nullptr, scale.f32, nullptr, T.rows, T.cols, T.stride};
    v.packed = {base + T.p_off,     scale,  T.rows,          T.cols,
                T.BlockRowBytes(0), T.bits, T.BlockLevels(0)};
    if (!T.block_bits.empty()) {  // one view per block, each at its own width
      v.packed.row_bytes = 0;
      v.packed_block_rows = T.rows_per_block;
      for (size_t k = 0; k < T.row_blocks; ++k) {
        const size_t r0 = k * T.rows_per_block;
        v.packed_blocks.push_back({base + T.p_off + T.p_block_off[k], scale + r0, T.BlockRows(k),
                                   T.cols, T.BlockRowBytes(k), T.BlockBits(k), T.BlockLevels(k)});
      }
    }
  }
  return v;
}

void UnitDecoder::BuildPackedViews(int u, const uint8_t* base, LayerWeights* layer,
                                   LinearWeights* head) const {
  const UnitLayout& U = unit(u);
  AssembleViews(
      u, [&](size_t t) { return PackedView(U.tensors[t], U.scales[t], base); }, layer, head);
}

Status UnitDecoder::CheckRange(int u, const uint8_t* range) const {
  const UnitLayout& U = unit(u);
  for (const WorkBlock& w : U.work) {  // scales come from the copy checked at open
    if (!w.scale) {
      RETURN_IF_ERROR(reader_->CheckCrc(w.block, StoredIn(w.block, U.range_begin, range)));
    }
  }
  return Status::Ok();
}

void UnitDecoder::BuildInlineViews(int u, const uint8_t* range, InlineViews* v, bool crc_checked,
                                   size_t head, const uint8_t* head_base) const {
  const UnitLayout& U = unit(u);
  const uint64_t begin = U.tail_begin[head];
  v->mats.clear();
  v->mats.reserve(U.tensors.size() - head);
  for (size_t t = head; t < U.tensors.size(); ++t) {
    v->mats.emplace_back(this, &U.tensors[t], &U.scales[t], begin, range, crc_checked);
  }
  auto view = [&](size_t t) {
    const TensorLayout& T = U.tensors[t];
    if (t < head) return PackedView(T, U.scales[t], head_base);
    LinearWeights w;
    w.quantized = true;
    w.q8 = {nullptr, kernels::RowScaleView(U.scales[t]).f32, nullptr, T.rows, T.cols, T.stride};
    w.blocks = &v->mats[t - head];
    return w;
  };
  AssembleViews(u, view, &v->layer, &v->head);
}

Status UnitDecoder::BlockError(const UnitLayout& U, const Status& s) const {
  return Status(s.code() == StatusCode::kDataLoss || s.code() == StatusCode::kAborted ||
                        s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kInternal
                    ? StatusCode::kDataLoss
                    : s.code(),
                "reading blocks " + std::to_string(U.first_block) + ".." +
                    std::to_string(U.last_block) + " (" + reader_->DescribeBlock(U.first_block) +
                    " ..): " + s.message());
}

void UnitDecoder::TakeInlineCounters(uint64_t* bytes, double* seconds) const {
  *bytes = inline_bytes_.exchange(0, std::memory_order_relaxed);
  *seconds = static_cast<double>(inline_ns_.exchange(0, std::memory_order_relaxed)) * 1e-9;
}

}  // namespace dcomp::runtime
