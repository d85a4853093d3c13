// `dcomp pack`: import a model, calibrate, apply compression-aware scaling, pruning, INT8 per-row
// quantization and rate allocation, entropy-code every block and write a .dcm container.
//
// Calibration tokens come from --calib text, or, without it, from the model itself: sequences
// sampled at temperature 1 from BOS with a fixed seed. On self-generated text the increase of mean
// NLL of the quantized model over the f32 model is an unbiased estimate of KL(f32 || quantized),
// the quantity a perplexity increase on real text approximates, and no evaluation text is seen.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "base/status.h"

namespace dcomp::packer {

inline constexpr uint64_t kDefaultCalibSeed = 20240601;
inline constexpr double kDefaultLevelShape = 2.0;
// The default perplexity budget (percent over f32 on the calibration tokens) and calibration
// tokens: the budget is the largest whose stories3M pack stays within +1.0% on each quarter of
// half A of the dev text for each of six calibration seeds, and of the token counts tried (4,096
// and 8,192) the one whose such budget packs smallest (checked on half B; BENCHMARKS.md, session
// 36: GPTQ's second moments from more tokens generalise better once the budget goes to the
// weights; session 37: 0.95 once rare tokens' rows are charged for their input).
inline constexpr double kDefaultMaxPplIncrease = 0.95;
inline constexpr int kDefaultCalibTokens = 8192;

struct PackOptions {
  std::string input;
  std::string output;
  std::string tokenizer_path;      // llama2.c inputs
  std::string calib_path;          // "" = self-generated calibration
  size_t block_bytes = 128 << 10;  // raw bytes per block (whole rows)
  std::string codec = "auto";      // auto | rans | zstd | raw
  int zstd_level = 19;
  double min_decode_mbps = 500;   // auto: fastest-decoding floor a codec must meet on its block
  double min_coding_gain = 0.02;  // narrow codes: entropy-code a block only if it saves this much
  std::string alpha = "auto";     // auto | a number in [0, 1]
  double prune = 0.0;             // fraction of each row zeroed
  double max_ppl_increase = kDefaultMaxPplIncrease;  // percent over f32 on the calibration tokens
  bool scaling = true;
  bool rate_alloc = true;
  bool gptq = true;  // codes below 8 bits: GPTQ rounding where calibration inputs allow it
  // Hadamard-transformed matrix inputs (ModelConfig::hadamard_inputs) where the calibration inputs
  // say they quantize to 8 bits with less error; false: none.
  bool hadamard = true;
  int calib_tokens = kDefaultCalibTokens;
  // Self-generated calibration: the sampler's seed (another seed, another sample: how much a pack
  // depends on its calibration text; BENCHMARKS.md).
  uint64_t calib_seed = kDefaultCalibSeed;
  // Codes below 8 bits: the shape a of the non-uniform levels round(127 sinh(a k / K) / sinh(a))
  // (format 5; finer steps near zero) for codes of 4..6 bits, 0 for uniform levels at every
  // width; with a > 0, 7-bit codes take the three-slope levels (format 7; LevelTable). Its levels
  // must be distinct at every such width (up to about 3.3; `dcomp pack` checks).
  double level_shape = kDefaultLevelShape;
  int threads = 2;
  std::string command_line;  // recorded in the manifest
  // Progress: a stage name and a fraction in [0, 1]; log lines for stage results.
  std::function<void(const std::string& stage, double fraction)> on_progress;
  std::function<void(const std::string& line)> on_log;
};

struct TensorReport {
  std::string name;
  int layer = 0;
  int64_t params = 0;
  bool quantized = false;
  uint64_t int8_bytes = 0;    // codes + per-row f32 scales (f32 bytes for vectors)
  uint64_t stored_bytes = 0;  // all its blocks as stored
  int bits = 0;               // code width (0: f32)
  uint64_t ram_bytes = 0;     // as the packed tier holds it: packed rows + scales (f32 for vectors)
  std::string codecs;         // "rans", "zstd", "rans+zstd", ...
  float alpha = 0, step_multiplier = 1, prune = 0;
  double output_rel_error = -1;  // -1: not measured (no calibration inputs)
  double entropy_bits = 0;       // order-0 bits per weight of the codes
  // A matrix split into groups of rows (by rate allocation, or as a synthetic model records;
  // else empty): its rows, rows per group, and per group (in stored order) its width and the
  // order-0 entropy of its codes.
  int64_t rows = 0, group_rows = 0;
  std::vector<int> group_bits;
  std::vector<double> group_entropy_bits;
};

struct PackReport {
  std::vector<TensorReport> tensors;
  uint64_t f32_bytes = 0, int8_bytes = 0, ram_bytes = 0, stored_bytes = 0, file_bytes = 0;
  int64_t params = 0;
  std::string calibration;
  int64_t calib_tokens = 0;
  double f32_nll = 0, plain_int8_nll = 0, packed_nll = 0;  // on calibration tokens (0: none)
  double seconds = 0;
  bool synthetic = false;
};

Result<PackReport> Pack(const PackOptions& options);

// The per-tensor table and totals, as printed at the end of `dcomp pack`.
std::string FormatPackReport(const PackReport& r);

}  // namespace dcomp::packer
