// Internal to packer/: helpers shared by the stages of Pack() (internal/pack_state.h): number
// formatting for log lines, the mean NLL of a model on token sequences, quantization of one matrix
// with its current parameters, and loading the packer's model into a runnable PackWeights.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "engine/transformer.h"
#include "engine/weights.h"
#include "packer/internal/pack_state.h"
#include "packer/quantize.h"

namespace dcomp::packer::internal {

// printf-formats one number (`f` has a single double conversion).
std::string Fmt(const char* f, double v);

// Mean NLL of next-token prediction over the sequences; `observer` (optional) sees the pass.
Result<double> MeanNll(WeightSource* w, ThreadPool* pool,
                       const std::vector<std::vector<int32_t>>& seqs, int32_t ctx,
                       ActivationObserver* observer = nullptr);

// The probability of a log-probability, in double: the one definition the rate allocation's KL
// sums use, so probabilities computed ahead and in the sum are the same doubles.
inline double ProbabilityOf(float log_p) { return std::exp(static_cast<double>(log_p)); }

// KL(p || q) of one position from log-probabilities: sum_v e^log_p[v] (log_p[v] - log_q[v]),
// summed in order. `p` (null: computed here) holds ProbabilityOf(log_p[v]) computed ahead; the
// result is the same double either way.
double KlTerm(const float* log_p, const double* p, const float* log_q, size_t n);

// The quantizer's parameters of `m` as it stands (column scale, importance, step, prune ratio).
QuantParams ParamsOf(const Matrix& m);

// The GPTQ factor of `m`'s input in its scaled domain; empty (cols == 0) without a second moment
// (GPTQ off, no calibration, a wide input) or when it has no energy.
GptqFactor GptqFactorOf(const Matrix& m);

// Makes `p` round by GPTQ with `g`, each row with its own clip (kClipCandidates), when g is a
// factor (cols != 0); leaves it alone otherwise.
void UseGptq(const GptqFactor& g, QuantParams* p);

// Quantizes `m` with ParamsOf(m) (and UseGptq(GptqFactorOf(m))) into m.q and measures m.entropy
// and m.err (the latter when it has calibration inputs). With groups, each group's rows at the
// group's width and clip (m.bits becomes the widest).
void Quantize(Matrix& m);

// Re-quantizes the rows of group g of `m` (m.q already holds every row) at the group's width and
// clip, with GPTQ factor `f` (GptqFactorOf(m)); returns the largest |code| the group's width
// allows. m.q.max_code, m.entropy and m.err are not updated.
int QuantizeGroup(Matrix& m, size_t g, const GptqFactor& f);

// Rows per group when `rows` rows are split into `groups` groups of rows, rounded up to a multiple
// of a power of two (up to 64) so that the blocks the writer fits inside each group stay large
// whatever the number of rows (rate allocation's groups, and a synthetic model's).
size_t RowsPerGroup(size_t rows, size_t groups);
// The number of groups of `group_rows` rows (the last one may be shorter) that `rows` rows make.
inline size_t GroupCount(size_t rows, size_t group_rows) {
  return group_rows > 0 ? (rows + group_rows - 1) / group_rows : 0;
}

// Row i of group g of `m` (groups are runs of stored rows: m.row_order applies), and the number
// of rows of group g.
size_t GroupRow(const Matrix& m, size_t g, size_t i);
size_t GroupSize(const Matrix& m, size_t g);

// Stored rows [first, first + count) of `src` (rows of `width` elements: m.w, m.q.codes, or
// m.q.scale with width 1), stored row i being row m.row_order[i] (i when it is empty).
template <class T>
std::vector<T> StoredRows(const Matrix& m, const std::vector<T>& src, size_t width, size_t first,
                          size_t count) {
  std::vector<T> out(count * width);
  for (size_t i = 0; i < count; ++i) {
    const size_t r = m.row_order.empty() ? first + i : m.row_order[first + i];
    std::copy_n(src.begin() + static_cast<ptrdiff_t>(r * width), width,
                out.begin() + static_cast<ptrdiff_t>(i * width));
  }
  return out;
}

// The rows of group g of `src` (m.w or m.q.codes), in stored order.
template <class T>
std::vector<T> GroupRows(const Matrix& m, const std::vector<T>& src, size_t g) {
  return StoredRows(m, src, m.cols, g * m.group_rows, GroupSize(m, g));
}

// The relative squared error of row r's codes in m.q, in the model's domain: sum_c (deq_c -
// w_c)^2 / sum_c w_c^2, deq_c = code * row scale / col_scale[c] (the quantizer scaled column c).
double RowRelativeError(const Matrix& m, size_t r);

// Per row of token matrix `m` (m.row_order: most used first, or empty for in order), the share
// of the input of other text its token is expected to take where the calibration trials never
// saw it as input (freq[r] == 0; 0 where they did): the larger of prob[r], the f32 model's mean
// probability of the token, and Zipf's law over the order of use, 1 / (rank H_V) (H_V the V-th
// harmonic number, V = m.rows). Self-generated calibration text holds few rare tokens and the
// model gives them little probability, while text people bring holds many; Zipf's law, the
// rank-frequency law of natural text, is what the order of use says of them.
std::vector<double> MissedInputShare(const Matrix& m, const std::vector<double>& freq,
                                     const std::vector<double>& prob);

// Hands every matrix (quantized or f32) and vector of the packer's model to a PackWeights.
void LoadWeights(PackWeights& w, const std::vector<Matrix>& mats,
                 const std::map<std::string, Vector>& vecs, bool quantized);

}  // namespace dcomp::packer::internal
