// The packer's quantizer: per-row symmetric INT8 with the three compression-aware knobs of
// docs/architecture.md, applied to one matrix W [rows][cols] (row = output, col = input):
//   - a per-input-channel scale s_j (compression-aware scaling): W'[r][j] = W[r][j] * s_j, the
//     activations being divided by s_j upstream (folded into the preceding norm or rows);
//   - pruning: per row, the fraction `prune` of entries with the smallest |W'[r][j]| * max|x'_j|
//     is set to zero;
//   - a step multiplier m >= 1 (rate allocation): step = m * max|W'[r]| / 127, so codes span
//     [-127/m, 127/m] and carry about log2(m) fewer bits.
// With s = 1, no pruning and m = 1 the codes equal the engine's own W8A8 quantization bit for bit.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace dcomp::packer {

struct QuantParams {
  std::span<const float> col_scale;   // s_j, empty = all 1
  std::span<const float> importance;  // max|x'_j| for pruning, empty = all 1
  float step_multiplier = 1.0f;
  float prune = 0.0f;  // fraction of each row zeroed, in [0, 1)
};

struct QuantizedMatrix {
  size_t rows = 0, cols = 0;
  std::vector<int8_t> codes;  // [rows][cols], unpadded, in [-127, 127]
  std::vector<float> scale;   // per row
  int max_code = 127;
};

QuantizedMatrix QuantizeMatrix(std::span<const float> w, size_t rows, size_t cols,
                               const QuantParams& p);

// Order-0 entropy of the codes in bits per weight.
double CodeEntropyBits(const QuantizedMatrix& q);

// Relative output error on calibration inputs X [n][cols] of the W8A8 product:
// || X W^T - deq(quant_token(X / s)) deq(Q)^T ||_F / || X W^T ||_F, where quant_token is the
// engine's per-token INT8 activation quantization and s the column scale Q was made with.
double RelativeOutputError(std::span<const float> x, size_t n, std::span<const float> w,
                           const QuantizedMatrix& q, std::span<const float> col_scale);

}  // namespace dcomp::packer
