#include "packer/quantize.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "base/packed_codes.h"
#include "kernels/kernels.h"

namespace dcomp::packer {

QuantizedMatrix QuantizeMatrix(std::span<const float> w, size_t rows, size_t cols,
                               const QuantParams& p) {
  QuantizedMatrix q;
  q.rows = rows;
  q.cols = cols;
  q.codes.resize(rows * cols);
  q.scale.resize(rows);
  const bool narrow = p.bits < 8;
  const float m = narrow ? 1.0f : std::max(1.0f, p.step_multiplier);
  q.max_code = narrow ? MaxCode(p.bits) : static_cast<int>(std::floor(127.0f / m));
  const bool plain = p.col_scale.empty() && p.prune <= 0 && m == 1.0f && !narrow;
  if (plain) {  // exactly the engine's quantizer
    const size_t pc = kernels::PaddedCols(cols);
    std::vector<int8_t> padded(rows * pc);
    std::vector<int32_t> sums(rows);
    kernels::QuantizeMatrixQ8(w.data(), rows, cols, padded.data(), q.scale.data(), sums.data());
    for (size_t r = 0; r < rows; ++r) {
      std::copy_n(padded.data() + r * pc, cols, q.codes.data() + r * cols);
    }
    return q;
  }
  std::vector<float> row(cols), score(cols);
  std::vector<size_t> idx(cols);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      row[c] = w[r * cols + c] * (p.col_scale.empty() ? 1.0f : p.col_scale[c]);
    }
    if (p.prune > 0) {
      const size_t k = static_cast<size_t>(std::floor(p.prune * static_cast<float>(cols)));
      if (k > 0) {
        for (size_t c = 0; c < cols; ++c) {
          idx[c] = c;
          score[c] = std::fabs(row[c]) * (p.importance.empty() ? 1.0f : p.importance[c]);
        }
        std::nth_element(idx.begin(), idx.begin() + static_cast<ptrdiff_t>(k - 1), idx.end(),
                         [&](size_t a, size_t b) {
                           return score[a] < score[b] || (score[a] == score[b] && a < b);
                         });
        for (size_t i = 0; i < k; ++i) row[idx[i]] = 0.0f;
      }
    }
    float amax = 0;
    for (float v : row) amax = std::max(amax, std::fabs(v));
    const float scale = amax <= 0 ? 0.0f
                        : narrow  ? amax * p.clip / static_cast<float>(q.max_code)
                                  : amax * m / 127.0f;
    const float inv = scale > 0 ? 1.0f / scale : 0.0f;
    q.scale[r] = scale;
    const float lim = static_cast<float>(q.max_code);
    for (size_t c = 0; c < cols; ++c) {
      q.codes[r * cols + c] =
          static_cast<int8_t>(std::nearbyint(std::clamp(row[c] * inv, -lim, lim)));
    }
  }
  return q;
}

float ChooseClip(std::span<const float> w, size_t rows, size_t cols, QuantParams p,
                 std::span<const float> ms, std::span<const float> candidates) {
  float best = 1.0f;
  double best_err = -1;
  for (float clip : candidates) {
    p.clip = clip;
    const QuantizedMatrix q = QuantizeMatrix(w, rows, cols, p);
    double err = 0;
    for (size_t r = 0; r < rows; ++r) {
      for (size_t c = 0; c < cols; ++c) {
        const double ws = static_cast<double>(w[r * cols + c]) *
                          (p.col_scale.empty() ? 1.0 : static_cast<double>(p.col_scale[c]));
        const double d = ws - static_cast<double>(q.codes[r * cols + c]) * q.scale[r];
        err += d * d * (ms.empty() ? 1.0 : static_cast<double>(ms[c]));
      }
    }
    if (best_err < 0 || err < best_err) best_err = err, best = clip;
  }
  return best;
}

double CodeEntropyBits(const QuantizedMatrix& q) {
  std::array<uint64_t, 256> c{};
  for (int8_t v : q.codes) ++c[static_cast<uint8_t>(v)];
  const double n = static_cast<double>(q.codes.size());
  double h = 0;
  for (uint64_t k : c) {
    if (k) h -= static_cast<double>(k) / n * std::log2(static_cast<double>(k) / n);
  }
  return h;
}

double RelativeOutputError(std::span<const float> x, size_t n, std::span<const float> w,
                           const QuantizedMatrix& q, std::span<const float> col_scale) {
  const size_t rows = q.rows, cols = q.cols;
  std::vector<float> xs(cols), xq(cols);
  double num = 0, den = 0;
  for (size_t t = 0; t < n; ++t) {
    const float* xt = x.data() + t * cols;
    float amax = 0;
    for (size_t c = 0; c < cols; ++c) {
      xs[c] = xt[c] / (col_scale.empty() ? 1.0f : col_scale[c]);
      amax = std::max(amax, std::fabs(xs[c]));
    }
    const float as = amax > 0 ? amax / 127.0f : 1.0f;
    for (size_t c = 0; c < cols; ++c) xq[c] = std::nearbyint(xs[c] / as) * as;
    for (size_t r = 0; r < rows; ++r) {
      const float* wr = w.data() + r * cols;
      const int8_t* qr = q.codes.data() + r * cols;
      double ref = 0, got = 0;
      for (size_t c = 0; c < cols; ++c) {
        ref += static_cast<double>(wr[c]) * xt[c];
        got += static_cast<double>(qr[c]) * xq[c];
      }
      got *= q.scale[r];
      num += (ref - got) * (ref - got);
      den += ref * ref;
    }
  }
  return den > 0 ? std::sqrt(num / den) : 0.0;
}

}  // namespace dcomp::packer
