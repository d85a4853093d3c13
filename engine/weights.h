// Weights as the transformer sees them: non-owning views of one layer at a time, handed out by a
// WeightSource. The in-memory source below owns every tensor; the streaming runtime (daemon/) is
// another WeightSource that decodes compressed layers on demand. The transformer holds at most one
// layer at a time: AcquireLayer(l), compute, ReleaseLayer(l); then the output matrix the same way.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "engine/model_config.h"
#include "engine/model_file.h"
#include "kernels/kernels.h"

namespace dcomp {

enum class WeightFormat {
  kF32,   // f32 weights, f32 activations (the accuracy reference)
  kW8A8,  // int8 per-row weights, int8 per-token activations
};
Result<WeightFormat> ParseWeightFormat(const std::string& s);  // "f32" | "w8a8"
const char* WeightFormatName(WeightFormat f);

// An INT8 matrix that is not held decoded: its rows are produced a block at a time while it is
// multiplied (the streaming runtime's compressed units). The transformer decodes each block of
// rows into the calling thread's scratch and multiplies it straight away, so a decoded copy of the
// whole matrix never exists and the decoded rows are read from cache, not DRAM.
class RowBlockSource {
 public:
  virtual ~RowBlockSource() = default;
  virtual size_t num_blocks() const = 0;
  virtual size_t rows_per_block() const = 0;  // every block but the last has this many rows
  // Writes the rows of block k, padded to the matrix stride with zeros, to `q` and their row sums
  // to `row_sum`. Called concurrently from the compute threads; fails with DATA_LOSS naming the
  // block when its bytes are damaged.
  virtual Status DecodeRows(size_t k, int8_t* q, int32_t* row_sum) const = 0;
  // The matrix's row scales (f32 or coded, base/row_scales.h).
  virtual kernels::RowScaleView Scales() const = 0;
  // When block k is stored packed (the layout the kernels read), its rows in place, checked (CRC),
  // instead of DecodeRows: *rows gets the view's data, row_bytes and bits (the caller sets the
  // scales and shape). Returns false when block k must be decoded; fails like DecodeRows.
  virtual Result<bool> PackedRows(size_t /*k*/, kernels::PackedMatrixView* /*rows*/) const {
    return false;
  }
};

// One linear map y = W x (+ b). Exactly one of q8/f32 is set, per `quantized`. With `blocks` set
// (INT8 only), q8 gives the shape; q8.q and q8.row_sum are null, q8.scale is null when the scales
// are held coded (base/row_scales.h), and the rows and their scales come from `blocks`. With
// `packed.data` set (the packed tier), q8 gives the shape, packed.scale the row scales (q8.scale
// as with `blocks`), q8.q is null and the kernels read the packed codes; when its blocks of rows
// have
// different widths (format 4, Tensor.block_bits), `packed` gives the shape and the widest width and
// `packed_blocks` one view per block of `packed_block_rows` rows (the last one fewer).
struct LinearWeights {
  bool quantized = false;
  kernels::Q8MatrixView q8;
  kernels::PackedMatrixView packed;
  std::vector<kernels::PackedMatrixView> packed_blocks;
  size_t packed_block_rows = 0;
  // Rows stored out of order (format 4, Tensor.row_order: the token matrices): row i of the views
  // computes output row_order[i]. Null: in order.
  const uint32_t* row_order = nullptr;
  kernels::F32MatrixView f32;
  const RowBlockSource* blocks = nullptr;
  const float* bias = nullptr;
  size_t rows() const { return quantized ? q8.rows : f32.rows; }
  size_t cols() const { return quantized ? q8.cols : f32.cols; }
};

struct LayerWeights {
  const float* attn_norm = nullptr;
  const float* ffn_norm = nullptr;
  const float* q_norm = nullptr;          // [head_dim], qwen3: applied to every q head
  const float* k_norm = nullptr;          // [head_dim], qwen3: applied to every k head
  const float* attn_post_norm = nullptr;  // [dim], gemma3: attention output, before the residual
  const float* ffn_post_norm = nullptr;   // [dim], gemma3: FFN output, before the residual
  LinearWeights wq, wk, wv, wo;
  LinearWeights w_gate, w_down, w_up;
};

struct GlobalWeights {
  LinearWeights embedding;  // [vocab][dim]; rows are looked up (dequantized when int8)
  const float* final_norm = nullptr;
  LinearWeights output;  // [vocab][dim]; may view the embedding (tied)
};

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const ModelConfig& config() const = 0;
  virtual const GlobalWeights& globals() const = 0;
  // Layer `layer`'s weights, valid until ReleaseLayer(layer). May block while the layer is
  // fetched and decoded; fails with the error of the fetch (e.g. DATA_LOSS naming a block).
  virtual Result<const LayerWeights*> AcquireLayer(int layer) = 0;
  virtual void ReleaseLayer(int layer) = 0;
  // Writes the embedding of `token` (config().dim floats) to `out`. Default: from
  // globals().embedding.
  virtual Status EmbedToken(int32_t token, float* out);
  // The output matrix, valid until ReleaseOutput(); acquired after the last layer when logits are
  // needed. Default: globals().output.
  virtual Result<const LinearWeights*> AcquireOutput() { return &globals().output; }
  // Called before each forward pass over `tokens` tokens (a streaming source re-plans and
  // measures here).
  virtual Status BeginPass(size_t /*tokens*/) { return Status::Ok(); }
  virtual void ReleaseOutput() {}
};

// The packed view holding row `row` of w (w.packed.data set), and the row's index in it.
inline std::pair<const kernels::PackedMatrixView*, size_t> PackedRowView(const LinearWeights& w,
                                                                         size_t row) {
  if (w.packed_blocks.empty()) return {&w.packed, row};
  const size_t k = row / w.packed_block_rows;
  return {&w.packed_blocks[k], row - k * w.packed_block_rows};
}

// Rows [r0, r1) of the packed product of w (w.packed.data set) for n_tok tokens, as
// KernelTable::gemm_packed_q8, view by view when its blocks have different widths.
void GemmPacked(const kernels::KernelTable& kt, const LinearWeights& w, const int8_t* x,
                size_t x_stride, const float* x_scale, size_t n_tok, float* y, size_t y_stride,
                size_t r0, size_t r1);

// out[c] = q[c] * scale for c in [0, n): one row of an INT8 matrix (embedding lookups).
inline void DequantizeRow(const int8_t* q, float scale, size_t n, float* out) {
  for (size_t c = 0; c < n; ++c) out[c] = q[c] * scale;
}

// Owning storage of one linear map.
struct LinearStorage {
  std::vector<float> f32;
  std::vector<int8_t> q;
  std::vector<float> scale;
  std::vector<int32_t> row_sum;
  std::vector<float> bias;
  size_t rows = 0, cols = 0;
  bool quantized = false;
  LinearWeights View() const;
  size_t bytes() const;
};

// Builds storage from f32 data: kept as f32, or quantized per row with the reference rounding.
LinearStorage MakeLinear(std::vector<float> w, size_t rows, size_t cols, WeightFormat format);
// Builds INT8 storage from stored codes [rows][cols] (unpadded) and row scales: pads the rows for
// the kernels and computes their row sums.
LinearStorage MakeQ8Linear(std::span<const int8_t> codes, std::vector<float> scale, size_t rows,
                           size_t cols);

// Every tensor resident in memory.
class InMemoryWeights : public WeightSource {
 public:
  static Result<std::unique_ptr<InMemoryWeights>> Load(const ModelFile& file, WeightFormat format);

  const ModelConfig& config() const override { return config_; }
  const GlobalWeights& globals() const override { return globals_; }
  Result<const LayerWeights*> AcquireLayer(int layer) override;
  void ReleaseLayer(int) override {}
  WeightFormat format() const { return format_; }
  size_t bytes() const;  // resident weight bytes

 private:
  struct Layer {
    std::vector<std::vector<float>> norms;  // kLayerNorms' order (absent ones empty)
    LinearStorage wq, wk, wv, wo, w_gate, w_down, w_up;
    LayerWeights view;
  };
  ModelConfig config_;
  WeightFormat format_ = WeightFormat::kF32;
  LinearStorage embedding_, output_;
  std::vector<float> final_norm_;
  std::vector<Layer> layers_;
  GlobalWeights globals_;
};

}  // namespace dcomp
