#include "packer/quantize.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "base/packed_codes.h"
#include "base/row_scales.h"
#include "kernels/kernels.h"

namespace dcomp::packer {

GptqFactor MakeGptqFactor(std::span<const double> xtx, size_t n, size_t cols,
                          std::span<const float> col_scale, double damp) {
  GptqFactor f;
  if (n == 0 || cols == 0 || xtx.size() != cols * cols) return f;
  auto s = [&](size_t j) { return col_scale.empty() ? 1.0 : static_cast<double>(col_scale[j]); };
  const double inv_n = 1.0 / static_cast<double>(n);
  std::vector<double> diag(cols);
  double mean = 0;
  for (size_t j = 0; j < cols; ++j) {
    diag[j] = xtx[j * cols + j] * inv_n / (s(j) * s(j));
    mean += diag[j];
  }
  mean /= static_cast<double>(cols);
  if (!(mean > 0) || !std::isfinite(mean)) return f;
  std::vector<uint32_t> order(cols);
  for (size_t j = 0; j < cols; ++j) order[j] = static_cast<uint32_t>(j);
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return diag[a] > diag[b]; });
  // a = the damped, permuted H; then its lower Cholesky factor L in place (a = L L^T).
  std::vector<double> a(cols * cols);
  for (size_t i = 0; i < cols; ++i) {
    for (size_t j = 0; j < cols; ++j) {
      const size_t oi = order[i], oj = order[j];
      a[i * cols + j] = xtx[oi * cols + oj] * inv_n / (s(oi) * s(oj));
    }
    a[i * cols + i] += damp * mean;
  }
  auto cholesky_lower = [cols](std::vector<double>& m) {
    for (size_t j = 0; j < cols; ++j) {
      double d = m[j * cols + j];
      for (size_t k = 0; k < j; ++k) d -= m[j * cols + k] * m[j * cols + k];
      if (!(d > 0)) return false;
      const double ljj = std::sqrt(d);
      m[j * cols + j] = ljj;
      for (size_t i = j + 1; i < cols; ++i) {
        double v = m[i * cols + j];
        for (size_t k = 0; k < j; ++k) v -= m[i * cols + k] * m[j * cols + k];
        m[i * cols + j] = v / ljj;
      }
      for (size_t k = j + 1; k < cols; ++k) m[j * cols + k] = 0;  // upper part cleared
    }
    return true;
  };
  if (!cholesky_lower(a)) return f;
  // li = L^-1 (lower), by forward substitution, column by column.
  std::vector<double> li(cols * cols, 0.0);
  for (size_t c = 0; c < cols; ++c) {
    li[c * cols + c] = 1.0 / a[c * cols + c];
    for (size_t i = c + 1; i < cols; ++i) {
      double v = 0;
      for (size_t k = c; k < i; ++k) v -= a[i * cols + k] * li[k * cols + c];
      li[i * cols + c] = v / a[i * cols + i];
    }
  }
  // hinv = L^-T L^-1; then its upper factor U (hinv = U^T U) = the transpose of its lower one.
  std::vector<double>& hinv = a;
  for (size_t i = 0; i < cols; ++i) {
    for (size_t j = 0; j <= i; ++j) {
      double v = 0;
      for (size_t k = i; k < cols; ++k) v += li[k * cols + i] * li[k * cols + j];
      hinv[i * cols + j] = hinv[j * cols + i] = v;
    }
  }
  if (!cholesky_lower(hinv)) return f;
  f.u.assign(cols * cols, 0.0);
  for (size_t i = 0; i < cols; ++i) {
    for (size_t j = i; j < cols; ++j) f.u[i * cols + j] = hinv[j * cols + i];
  }
  f.cols = cols;
  f.order = std::move(order);
  return f;
}

bool UsesLevels(int bits, double level_shape) {
  return bits >= kMinPackedBits && bits <= kMaxLevelBits && level_shape > 0;
}

std::vector<uint8_t> PackerLevels(int bits, double level_shape, float prune) {
  return LevelTable(bits, level_shape, /*zero_level=*/prune > 0);
}

QuantizedMatrix QuantizeMatrix(std::span<const float> w, size_t rows, size_t cols,
                               const QuantParams& p, double* hessian_error) {
  if (hessian_error != nullptr) *hessian_error = 0;
  QuantizedMatrix q;
  q.rows = rows;
  q.cols = cols;
  q.codes.resize(rows * cols);
  q.scale.resize(rows);
  const bool narrow = p.bits < 8;
  const float m = narrow ? 1.0f : std::max(1.0f, p.step_multiplier);
  q.max_code = narrow ? MaxCode(p.bits) : static_cast<int>(std::floor(127.0f / m));
  // Non-uniform levels: values in units of the step are rounded to the nearest level (the
  // midpoints between consecutive magnitudes decide).
  std::vector<float> mid;
  if (UsesLevels(p.bits, p.level_shape)) {
    q.levels = PackerLevels(p.bits, p.level_shape, p.prune);
    for (size_t k = 1; k < q.levels.size(); ++k) {
      mid.push_back(0.5f * static_cast<float>(q.levels[k - 1] + q.levels[k]));
    }
  }
  const float lim =
      q.levels.empty() ? static_cast<float>(q.max_code) : static_cast<float>(q.levels.back());
  auto round_code = [&](float t) {
    t = std::clamp(t, -lim, lim);
    if (mid.empty()) return std::nearbyint(t);
    const size_t k =
        static_cast<size_t>(std::upper_bound(mid.begin(), mid.end(), std::fabs(t)) - mid.begin());
    const float v = static_cast<float>(q.levels[k]);
    return t < 0 ? -v : v;
  };
  const GptqFactor* g = p.gptq != nullptr && p.gptq->cols == cols ? p.gptq : nullptr;
  const bool plain = p.col_scale.empty() && p.prune <= 0 && m == 1.0f && !narrow && g == nullptr;
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
  std::vector<float> row(cols), score(cols), target(g ? cols : 0);
  std::vector<size_t> idx(cols);
  std::vector<double> rest(g ? cols : 0);  // GPTQ: the row still to round, in g->order
  std::vector<int8_t> trial(g ? cols : 0);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      row[c] = w[r * cols + c] * (p.col_scale.empty() ? 1.0f : p.col_scale[c]);
    }
    if (g) std::copy(row.begin(), row.end(), target.begin());  // before pruning
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
    if (g != nullptr && amax > 0) {
      // GPTQ at each clip (the row's own choice among p.row_clips, else p.clip); pruned entries
      // (zero in `row`) are held at code 0 and their error spread too.
      int8_t* out = q.codes.data() + r * cols;
      double best = -1;
      const std::span<const float> clips =
          narrow && !p.row_clips.empty() ? p.row_clips : std::span<const float>(&p.clip, 1);
      for (float clip : clips) {
        const float scale = RoundScaleToGrid(narrow ? amax * clip / lim : amax * m / 127.0f);
        const float inv = 1.0f / scale;
        double loss = 0;
        for (size_t k = 0; k < cols; ++k) rest[k] = target[g->order[k]];
        for (size_t k = 0; k < cols; ++k) {
          const size_t c = g->order[k];
          const double code = row[c] == 0.0f && target[c] != 0.0f
                                  ? 0.0
                                  : round_code(static_cast<float>(rest[k]) * inv);
          trial[c] = static_cast<int8_t>(code);
          const double* uk = g->u.data() + k * cols;
          const double e = (rest[k] - code * static_cast<double>(scale)) / uk[k];
          loss += e * e;
          for (size_t l = k + 1; l < cols; ++l) rest[l] -= e * uk[l];
        }
        if (best < 0 || loss < best) {
          best = loss;
          q.scale[r] = scale;
          std::copy(trial.begin(), trial.end(), out);
        }
      }
      if (hessian_error != nullptr) *hessian_error += best;
      continue;
    }
    const float scale = RoundScaleToGrid(amax <= 0 ? 0.0f
                                         : narrow  ? amax * p.clip / lim
                                                   : amax * m / 127.0f);
    const float inv = scale > 0 ? 1.0f / scale : 0.0f;
    q.scale[r] = scale;
    for (size_t c = 0; c < cols; ++c) {
      q.codes[r * cols + c] = static_cast<int8_t>(round_code(row[c] * inv));
    }
  }
  return q;
}

float ChooseClip(std::span<const float> w, size_t rows, size_t cols, QuantParams p,
                 std::span<const float> ms, std::span<const float> candidates) {
  p.gptq = nullptr;  // rounding to nearest only: with GPTQ each row picks its clip (row_clips)
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

double CodeEntropyBits(const QuantizedMatrix& q) { return CodeEntropyBits(q.codes); }

double CodeEntropyBits(std::span<const int8_t> codes) {
  std::array<uint64_t, 256> c{};
  for (int8_t v : codes) ++c[static_cast<uint8_t>(v)];
  const double n = static_cast<double>(codes.size());
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
