// The packer's quantizer: per-row symmetric INT8 with the three compression-aware knobs of
// docs/architecture.md, applied to one matrix W [rows][cols] (row = output, col = input):
//   - a per-input-channel scale s_j (compression-aware scaling): W'[r][j] = W[r][j] * s_j, the
//     activations being divided by s_j upstream (folded into the preceding norm or rows);
//   - pruning: per row, the fraction `prune` of entries with the smallest |W'[r][j]| * max|x'_j|
//     is set to zero;
//   - a code width b (rate allocation): with b < 8 every code fits b bits (|code| <= 2^(b-1) - 1,
//     the packed tier's layout, base/packed_codes.h) and step = clip * max|W'[r]| / (2^(b-1) - 1),
//     clip <= 1 trading the largest weights of a row (clamped) for a finer step everywhere else;
//   - (b = 8) a step multiplier m >= 1: step = m * max|W'[r]| / 127, codes in [-127/m, 127/m].
// Every row scale but the plain quantization's is rounded to the scale grid (base/row_scales.h)
// before the row's codes are chosen, so that readers hold it in one byte.
// With s = 1, no pruning and m = 1 the codes equal the engine's own W8A8 quantization bit for bit.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/packed_codes.h"

namespace dcomp::packer {

// GPTQ's rounding of one matrix input (Frantar et al., "GPTQ: Accurate Post-Training Quantization
// for Generative Pre-trained Transformers", 2022): the weights of a row are rounded one input
// column at a time, in order of decreasing input energy, and each rounding error is spread over the
// columns not yet rounded so as to minimise the row's output error (w - q) H (w - q)^T on the
// calibration inputs, H = E[x' x'^T] in the scaled domain x'_j = x_j / s_j. The factor is the
// upper Cholesky factor U of (H + damp * mean(diag H) * I)^-1 in that column order, shared by
// every row and every width of the matrices reading that input.
struct GptqFactor {
  size_t cols = 0;
  std::vector<uint32_t> order;  // order[k] = the input column rounded k-th
  std::vector<double> u;        // [cols][cols], upper triangle, in `order`'s order
};

// The factor of the second moment `xtx` (sum over `n` inputs of x x^T, [cols][cols]) for the
// column scales `col_scale` (empty = 1). An empty result (cols == 0) when the damped matrix is not
// positive definite (no input energy at all): the caller rounds to nearest instead.
GptqFactor MakeGptqFactor(std::span<const double> xtx, size_t n, size_t cols,
                          std::span<const float> col_scale, double damp = 0.01);

// The clips tried for codes below 8 bits (per matrix, or per row with GPTQ).
inline constexpr float kClipCandidates[] = {1.0f,  0.95f, 0.9f,  0.85f, 0.8f,
                                            0.75f, 0.7f,  0.65f, 0.6f};

struct QuantParams {
  std::span<const float> col_scale;   // s_j, empty = all 1
  std::span<const float> importance;  // max|x'_j| for pruning, empty = all 1
  float step_multiplier = 1.0f;       // bits == 8 only
  float prune = 0.0f;                 // fraction of each row zeroed, in [0, 1)
  int bits = 8;                       // code width, 4..8
  float clip = 1.0f;                  // bits < 8: fraction of max|row| the largest code stands for
  const GptqFactor* gptq = nullptr;   // GPTQ rounding with this factor (null = nearest)
  // bits < 8 with gptq: each row takes the clip of these whose GPTQ rounding has the least output
  // error (w - q) H (w - q)^T (empty = `clip` for every row).
  std::span<const float> row_clips;
  // bits < 8: > 0 rounds to the width's non-uniform levels LevelTable(bits, level_shape) where
  // UsesLevels says (the codes then hold the level values, |value| <= 127, and the step maps 127
  // to clip * max|row|; with `prune`, tables with a zero level); 0 keeps the uniform (linear)
  // levels.
  double level_shape = 0;
};

// Whether codes of `bits` bits are rounded to non-uniform levels of shape `level_shape`
// (4..kMaxLevelBits bits, level_shape > 0).
bool UsesLevels(int bits, double level_shape);
// The level magnitudes the packer gives such a width: LevelTable(bits, level_shape), with a zero
// level when rows are pruned (`prune` > 0: pruned weights are held at 0).
std::vector<uint8_t> PackerLevels(int bits, double level_shape, float prune);

struct QuantizedMatrix {
  size_t rows = 0, cols = 0;
  std::vector<int8_t> codes;  // [rows][cols], unpadded, in [-127, 127]
  std::vector<float> scale;   // per row
  // The largest code (below 8 bits: the largest code index |c|, whose value is a level when
  // `levels` is set).
  int max_code = 127;
  std::vector<uint8_t> levels;  // the width's level magnitudes (QuantParams::level_shape) or empty
  int bits() const { return BitsForMaxCode(max_code); }  // every code fits this width
};

// With `hessian_error`: the sum over rows of GPTQ's step losses (0 when rounded to nearest).
QuantizedMatrix QuantizeMatrix(std::span<const float> w, size_t rows, size_t cols,
                               const QuantParams& p, double* hessian_error = nullptr);

// The clip (of `candidates`) with the least activation-weighted squared error of width `bits`,
// rounded to nearest (p.gptq is ignored: with GPTQ each row picks its own clip, p.row_clips):
// sum_r sum_j ms[j] * (W'[r][j] - deq(Q)[r][j])^2, ms[j] the mean square of input j (empty = 1),
// the diagonal of the output error's Hessian. O(rows * cols) per candidate.
float ChooseClip(std::span<const float> w, size_t rows, size_t cols, QuantParams p,
                 std::span<const float> ms, std::span<const float> candidates);

// Order-0 entropy of the codes in bits per weight.
double CodeEntropyBits(const QuantizedMatrix& q);
double CodeEntropyBits(std::span<const int8_t> codes);

// Relative output error on calibration inputs X [n][cols] of the W8A8 product:
// || X W^T - deq(quant_token(X / s)) deq(Q)^T ||_F / || X W^T ||_F, where quant_token is the
// engine's per-token INT8 activation quantization and s the column scale Q was made with.
double RelativeOutputError(std::span<const float> x, size_t n, std::span<const float> w,
                           const QuantizedMatrix& q, std::span<const float> col_scale);

}  // namespace dcomp::packer
