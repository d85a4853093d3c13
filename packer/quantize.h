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
// With s = 1, no pruning and m = 1 the codes equal the engine's own W8A8 quantization bit for bit.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/packed_codes.h"

namespace dcomp::packer {

struct QuantParams {
  std::span<const float> col_scale;   // s_j, empty = all 1
  std::span<const float> importance;  // max|x'_j| for pruning, empty = all 1
  float step_multiplier = 1.0f;       // bits == 8 only
  float prune = 0.0f;                 // fraction of each row zeroed, in [0, 1)
  int bits = 8;                       // code width, 4..8
  float clip = 1.0f;                  // bits < 8: fraction of max|row| the largest code stands for
};

struct QuantizedMatrix {
  size_t rows = 0, cols = 0;
  std::vector<int8_t> codes;  // [rows][cols], unpadded, in [-127, 127]
  std::vector<float> scale;   // per row
  int max_code = 127;
  int bits() const { return BitsForMaxCode(max_code); }  // every code fits this width
};

QuantizedMatrix QuantizeMatrix(std::span<const float> w, size_t rows, size_t cols,
                               const QuantParams& p);

// The clip (of `candidates`) with the least activation-weighted squared error of width `bits`:
// sum_r sum_j ms[j] * (W'[r][j] - deq(Q)[r][j])^2, ms[j] the mean square of input j (empty = 1),
// the diagonal of the output error's Hessian. O(rows * cols) per candidate.
float ChooseClip(std::span<const float> w, size_t rows, size_t cols, QuantParams p,
                 std::span<const float> ms, std::span<const float> candidates);

// Order-0 entropy of the codes in bits per weight.
double CodeEntropyBits(const QuantizedMatrix& q);

// Relative output error on calibration inputs X [n][cols] of the W8A8 product:
// || X W^T - deq(quant_token(X / s)) deq(Q)^T ||_F / || X W^T ||_F, where quant_token is the
// engine's per-token INT8 activation quantization and s the column scale Q was made with.
double RelativeOutputError(std::span<const float> x, size_t n, std::span<const float> w,
                           const QuantizedMatrix& q, std::span<const float> col_scale);

}  // namespace dcomp::packer
