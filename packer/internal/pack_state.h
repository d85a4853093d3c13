// Internal to packer/: the state the stages of Pack() share, and the stages. Pack() (pack.cc) runs
// them in order over one PackState: Import (import.cc), Calibrate (calibrate.cc), Scale (scale.cc),
// QuantizeAndPrune (prune.cc), AllocateRates (rate_allocate.cc), PrepareEncoding (encode.cc) and
// WriteContainer (write.cc), which has each tensor's blocks entropy-coded (EncodeBlocks, encode.cc)
// as it writes them, so that the coded blocks of one tensor at a time are held in memory.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "engine/model_config.h"
#include "engine/model_file.h"
#include "engine/tokenizer.h"
#include "engine/transformer.h"
#include "engine/weights.h"
#include "packer/pack.h"
#include "packer/quantize.h"
#include "storage/codec.h"
#include "storage/container.h"

namespace dcomp::packer::internal {

inline constexpr size_t kSampleRows = 256;  // calibration input rows kept per linear input

// ----- the model as the packer holds it -------------------------------------------------------

struct Matrix {
  std::string name;
  int layer = 0;
  size_t rows = 0, cols = 0;
  std::vector<float> w;           // f32, scaling folded in as decided
  std::vector<float> col_scale;   // s_j (empty = 1)
  std::vector<float> importance;  // max|x'_j| (empty = unknown)
  float alpha = 0, step = 1, prune = 0;
  int bits = 8;            // code width (rate allocation); the widest group's when groups are set
  double level_shape = 0;  // below 8 bits: the non-uniform levels' shape (PackOptions)
  float clip = 1;          // bits < 8: the quantizer's clip
  // Groups of rows (rate allocation of matrices of many rows, rate_allocate.cc; or the groups a
  // synthetic model records, prune.cc): group g, rows [g * group_rows, (g + 1) * group_rows), has
  // its own width and clip. Empty: `bits` and `clip` hold for every row.
  size_t group_rows = 0;
  std::vector<int> group_bits;
  std::vector<float> group_clip;
  // With groups: the order the rows are stored in (stored row i is row row_order[i]; groups are
  // runs of stored rows), or empty for in order. m.q keeps the rows in order.
  std::vector<uint32_t> row_order;
  size_t groups() const { return group_bits.size(); }
  QuantizedMatrix q;
  double err = -1, entropy = 0;
  // Calibration inputs of this matrix, for the output error (null: none).
  const struct InputStats* stats = nullptr;
};

struct Vector {
  std::string name;
  int layer = 0;
  std::vector<float> v;
};

// Inputs wider than this keep no second moment (GPTQ rounding is then off for their matrices): its
// cols x cols doubles would take more than 32 MiB per input.
inline constexpr size_t kMaxSecondMomentCols = 2048;

// One linear input's calibration statistics.
struct InputStats {
  std::vector<float> max_abs;
  std::vector<float> sample;  // up to kSampleRows rows, spread over the calibration tokens
  // sum_t x_t x_t^T over every calibration token [cols][cols], GPTQ's Hessian once divided by
  // `seen`; empty when GPTQ is off (--rounding nearest) or cols is over kMaxSecondMomentCols.
  std::vector<double> xtx;
  size_t cols = 0, seen = 0;
  size_t sample_rows() const { return cols ? sample.size() / cols : 0; }
};

// Collects every linear input's InputStats during a forward pass (calibrate.cc).
class StatsObserver : public ActivationObserver {
 public:
  // second_moment: accumulate InputStats::xtx (for GPTQ rounding).
  StatsObserver(size_t stride, bool second_moment)
      : stride_(stride), second_moment_(second_moment) {}
  void Observe(int layer, LinearInput which, const float* x, size_t n, size_t cols) override;
  const InputStats* Find(int layer, LinearInput which) const {
    auto it = stats.find({layer, which});
    return it == stats.end() ? nullptr : &it->second;
  }
  std::map<std::pair<int, LinearInput>, InputStats> stats;

 private:
  size_t stride_;
  bool second_moment_;
};

// A WeightSource over the packer's quantized (or f32) matrices; one matrix can be swapped for the
// rate allocator's trial evaluations (pack_util.cc).
class PackWeights : public WeightSource {
 public:
  PackWeights(const ModelConfig& c, bool quantized) : cfg_(c), quantized_(quantized) {
    layers_.resize(static_cast<size_t>(c.n_layers));
  }
  const ModelConfig& config() const override { return cfg_; }
  const GlobalWeights& globals() const override { return globals_; }
  Result<const LayerWeights*> AcquireLayer(int l) override { return &layers_[l].view; }
  void ReleaseLayer(int) override {}

  void SetMatrix(const Matrix& m, const QuantizedMatrix* q);
  void SetVector(const std::string& name, const std::vector<float>& v);
  void SetBias(const std::string& matrix, const std::vector<float>& b);

 private:
  void Rebind();
  struct Layer {
    LayerWeights view;
  };
  ModelConfig cfg_;
  bool quantized_;
  std::map<std::string, LinearStorage> storage_;
  std::map<std::string, std::vector<float>> vectors_, bias_;
  std::vector<Layer> layers_;
  GlobalWeights globals_;
};

// ----- the pack state ---------------------------------------------------------------------------

// Everything the stages share. Members are declared in the order the stages create them (and are
// destroyed in reverse): the writer outlives everything but the model file, the observer's
// statistics (Matrix::stats points into them) outlive the matrices' last use.
struct PackState {
  explicit PackState(const PackOptions& options) : o(options) {}
  PackState(const PackState&) = delete;
  PackState& operator=(const PackState&) = delete;

  // Log lines for stage results and progress (a stage name and a fraction in [0, 1]), through
  // the options' callbacks when set.
  void Log(const std::string& line) const {
    if (o.on_log) o.on_log(line);
  }
  void Progress(const std::string& stage, double fraction) const {
    if (o.on_progress) o.on_progress(stage, fraction);
  }
  // The imported matrix named `name`, which must exist.
  Matrix& Find(const std::string& name) { return mats[mat_index.at(name)]; }

  const PackOptions& o;
  float fixed_alpha = -1;  // --alpha as a number (checked by Pack); -1: auto

  // Import.
  std::unique_ptr<ModelFile> file;
  std::unique_ptr<storage::ContainerWriter> writer;
  ModelConfig cfg;
  std::unique_ptr<Tokenizer> tok;
  std::vector<CanonicalTensor> order;  // every tensor, in execution order (the writing order)
  std::vector<Matrix> mats;
  std::map<std::string, size_t> mat_index;  // name -> index in mats
  std::map<std::string, Vector> vecs;

  PackReport rep;

  // Calibration.
  std::unique_ptr<ThreadPool> pool;
  bool need_calib = false;                  // some stage runs the model on calibration tokens
  std::vector<std::vector<int32_t>> calib;  // calibration sequences (empty: none)
  int32_t seq_len = 0;
  std::unique_ptr<PackWeights> f32w;        // runnable f32 copy (loaded when need_calib)
  std::unique_ptr<StatsObserver> observer;  // per linear input statistics (empty: none)

  // Quantization.
  std::unique_ptr<PackWeights> qw;  // runnable INT8 copy (loaded when need_calib)

  // Entropy coding.
  std::vector<storage::Codec> codec_candidates;  // the codecs tried besides raw
  std::string codec_choice;                      // why those (PackInfo.codec_choice)
  uint64_t done_bytes = 0, total_bytes = 0;      // matrix codes coded so far, of all
};

// ----- the stages, in order ---------------------------------------------------------------------

// Opens the model and the output, imports every tensor as f32.
Status Import(PackState& s);
// Calibration tokens, the f32 NLL and every linear input's statistics (when a stage needs them).
Status Calibrate(PackState& s);
// Compression-aware scaling, per group of matrices sharing an input.
Status Scale(PackState& s);
// Quantizes every matrix at step 1, pruning each row as the matrix's prune ratio says.
Status QuantizeAndPrune(PackState& s);
// Measures the INT8 model and, with --rate-alloc, widens per-matrix steps within the budget.
Status AllocateRates(PackState& s);
// Entropy coding: the codec candidates, and the bytes to code for progress.
Status PrepareEncoding(PackState& s);
// Writes every tensor (blocks coded by EncodeBlocks) and the manifest; completes the report.
Status WriteContainer(PackState& s);

// ----- entropy coding of blocks (encode.cc) ---------------------------------------------------

struct Encoded {
  storage::Codec codec = storage::Codec::kRaw;
  std::vector<uint8_t> bytes;
};

// The coded blocks of one span, in order; st[b] is the error of a block that could not be coded.
struct EncodedBlocks {
  std::vector<Encoded> enc;
  std::vector<Status> st;
};

// Encodes `data` (whole rows of `row_bytes`) in blocks of rows_per_block rows, in parallel, each
// with the smallest of raw and s.codec_candidates. Where `packed_bits` (one width per block, or
// empty) gives block b a width of 4..7 (data = INT8 codes, row_bytes = cols), the block is stored
// packed unless entropy coding its codes saves at least --min-coding-gain of the packed size.
// `levels[b]`: the non-uniform levels of width b (the codes are then their values), or null.
using WidthLevels = std::array<const CodeLevels*, kMaxPackedBits + 1>;
EncodedBlocks EncodeBlocks(PackState& s, std::span<const uint8_t> data, size_t row_bytes,
                           size_t rows_per_block, std::span<const int> packed_bits = {},
                           const WidthLevels& levels = {});

}  // namespace dcomp::packer::internal
