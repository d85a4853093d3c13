// The quantizer's GPTQ rounding: its factor is the Cholesky factor of the damped inverse Hessian
// (the sum of its step losses equals the error's full quadratic form), a diagonal Hessian gives
// round-to-nearest exactly, correlated inputs get a smaller output error than rounding to nearest,
// codes stay within their width, pruned entries stay zero, and a row's own clip is no worse than
// the best clip shared by every row. The rate allocation's helpers: a row's relative error in the
// model's domain, the input share charged for tokens the trials never saw.
#include "packer/quantize.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "base/packed_codes.h"
#include "base/row_scales.h"
#include "engine/generate.h"
#include "packer/internal/pack_util.h"

namespace dcomp::packer {
namespace {

struct Problem {
  size_t rows = 0, cols = 0, n = 0;
  std::vector<float> w, x;  // w [rows][cols], x [n][cols]
  std::vector<double> xtx;  // sum_t x_t x_t^T
};

// Inputs mixed from fewer sources than columns (strongly correlated), with a few loud channels.
Problem MakeProblem(size_t rows, size_t cols, size_t n, uint32_t seed) {
  Problem p{rows,
            cols,
            n,
            std::vector<float>(rows * cols),
            std::vector<float>(n * cols),
            std::vector<double>(cols * cols, 0.0)};
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (float& v : p.w) v = nd(rng) * 0.05f;
  const size_t src = cols / 2;
  std::vector<float> mix(src * cols), z(src);
  for (float& v : mix) v = nd(rng);
  for (size_t t = 0; t < n; ++t) {
    for (float& v : z) v = nd(rng);
    for (size_t c = 0; c < cols; ++c) {
      float acc = 0.1f * nd(rng);
      for (size_t k = 0; k < src; ++k) acc += z[k] * mix[k * cols + c];
      p.x[t * cols + c] = acc * (c % 7 == 0 ? 4.0f : 1.0f);
    }
  }
  for (size_t t = 0; t < n; ++t) {
    for (size_t i = 0; i < cols; ++i) {
      for (size_t j = 0; j < cols; ++j) {
        p.xtx[i * cols + j] += static_cast<double>(p.x[t * cols + i]) * p.x[t * cols + j];
      }
    }
  }
  return p;
}

// || X (W s - deq(Q))^T ||_F^2 with x' = x / s (so X' W'^T = X W^T).
double OutputError(const Problem& p, const QuantizedMatrix& q, const std::vector<float>& s) {
  double err = 0;
  for (size_t t = 0; t < p.n; ++t) {
    for (size_t r = 0; r < p.rows; ++r) {
      double d = 0;
      for (size_t c = 0; c < p.cols; ++c) {
        const double sc = s.empty() ? 1.0 : s[c];
        const double dw = p.w[r * p.cols + c] * sc - q.codes[r * p.cols + c] * double{q.scale[r]};
        d += dw * (p.x[t * p.cols + c] / sc);
      }
      err += d * d;
    }
  }
  return err;
}

TEST(GptqTest, StepLossesSumToTheDampedQuadraticForm) {
  const Problem p = MakeProblem(24, 40, 300, 1);
  std::vector<float> s(p.cols);
  for (size_t c = 0; c < p.cols; ++c) s[c] = 0.5f + 0.05f * static_cast<float>(c % 11);
  const double damp = 0.01;
  const GptqFactor f = MakeGptqFactor(p.xtx, p.n, p.cols, s, damp);
  ASSERT_EQ(f.cols, p.cols);
  for (int bits : {4, 6, 8}) {
    QuantParams qp;
    qp.col_scale = s;
    qp.bits = bits;
    qp.clip = 0.9f;
    qp.gptq = &f;
    double losses = 0;
    const QuantizedMatrix q = QuantizeMatrix(p.w, p.rows, p.cols, qp, &losses);
    // sum_r d_r (H' + damp * mean(diag H') I) d_r^T, H' = xtx / n / (s_i s_j).
    double mean = 0;
    for (size_t j = 0; j < p.cols; ++j) mean += p.xtx[j * p.cols + j] / p.n / (s[j] * s[j]);
    mean /= static_cast<double>(p.cols);
    double form = 0;
    std::vector<double> d(p.cols);
    for (size_t r = 0; r < p.rows; ++r) {
      for (size_t c = 0; c < p.cols; ++c) {
        d[c] = static_cast<double>(p.w[r * p.cols + c] * s[c]) -
               q.codes[r * p.cols + c] * double{q.scale[r]};
      }
      for (size_t i = 0; i < p.cols; ++i) {
        for (size_t j = 0; j < p.cols; ++j) {
          const double h =
              p.xtx[i * p.cols + j] / p.n / (double{s[i]} * s[j]) + (i == j ? damp * mean : 0.0);
          form += d[i] * h * d[j];
        }
      }
    }
    EXPECT_NEAR(losses, form, 1e-6 * form) << bits << " bits";
  }
}

TEST(GptqTest, DiagonalSecondMomentRoundsToNearest) {
  const Problem p = MakeProblem(16, 48, 10, 2);
  std::vector<double> diag(p.cols * p.cols, 0.0);
  for (size_t j = 0; j < p.cols; ++j) diag[j * p.cols + j] = 1.0 + static_cast<double>(j % 5);
  const GptqFactor f = MakeGptqFactor(diag, 1, p.cols, {});
  ASSERT_EQ(f.cols, p.cols);
  for (int bits = kMinPackedBits; bits <= 8; ++bits) {
    QuantParams qp;
    qp.bits = bits;
    qp.clip = bits < 8 ? 0.85f : 1.0f;
    qp.prune = 0.1f;
    const QuantizedMatrix nearest = QuantizeMatrix(p.w, p.rows, p.cols, qp);
    qp.gptq = &f;
    const QuantizedMatrix gptq = QuantizeMatrix(p.w, p.rows, p.cols, qp);
    EXPECT_EQ(gptq.codes, nearest.codes) << bits << " bits";
    EXPECT_EQ(gptq.scale, nearest.scale) << bits << " bits";
  }
}

TEST(GptqTest, CorrelatedInputsGetASmallerOutputErrorWithinTheWidth) {
  const Problem p = MakeProblem(32, 64, 400, 3);
  const GptqFactor f = MakeGptqFactor(p.xtx, p.n, p.cols, {});
  ASSERT_EQ(f.cols, p.cols);
  for (int bits = kMinPackedBits; bits <= 7; ++bits) {
    QuantParams qp;
    qp.bits = bits;
    qp.prune = 0.2f;
    const QuantizedMatrix nearest = QuantizeMatrix(p.w, p.rows, p.cols, qp);
    qp.gptq = &f;
    const QuantizedMatrix gptq = QuantizeMatrix(p.w, p.rows, p.cols, qp);
    const double e_nearest = OutputError(p, nearest, {}), e_gptq = OutputError(p, gptq, {});
    EXPECT_LT(e_gptq, 0.7 * e_nearest) << bits << " bits";
    EXPECT_EQ(gptq.bits(), bits);
    for (size_t i = 0; i < gptq.codes.size(); ++i) {
      ASSERT_LE(std::abs(gptq.codes[i]), MaxCode(bits)) << i;
    }
  }
}

TEST(GptqTest, RowClipsAreNoWorseThanAnyOneClip) {
  const Problem p = MakeProblem(32, 48, 300, 5);
  const GptqFactor f = MakeGptqFactor(p.xtx, p.n, p.cols, {});
  for (int bits : {4, 5, 7}) {
    QuantParams qp;
    qp.bits = bits;
    qp.gptq = &f;
    double best_single = -1;
    for (float clip : kClipCandidates) {
      qp.clip = clip;
      double loss = 0;
      QuantizeMatrix(p.w, p.rows, p.cols, qp, &loss);
      if (best_single < 0 || loss < best_single) best_single = loss;
    }
    qp.row_clips = kClipCandidates;
    double per_row = 0;
    const QuantizedMatrix q = QuantizeMatrix(p.w, p.rows, p.cols, qp, &per_row);
    EXPECT_LE(per_row, best_single) << bits << " bits";
    for (size_t r = 0; r < p.rows; ++r) {  // every row's step is a candidate's, on the grid
      float amax = 0;
      for (size_t c = 0; c < p.cols; ++c) amax = std::max(amax, std::fabs(p.w[r * p.cols + c]));
      bool found = false;
      for (float clip : kClipCandidates) {
        found |= q.scale[r] == RoundScaleToGrid(amax * clip / static_cast<float>(MaxCode(bits)));
      }
      EXPECT_TRUE(found) << "row " << r;
    }
  }
}

TEST(GptqTest, PrunedEntriesStayZero) {
  const Problem p = MakeProblem(8, 32, 200, 4);
  const GptqFactor f = MakeGptqFactor(p.xtx, p.n, p.cols, {});
  QuantParams qp;
  qp.bits = 5;
  qp.prune = 0.25f;
  qp.gptq = &f;
  const QuantizedMatrix q = QuantizeMatrix(p.w, p.rows, p.cols, qp);
  for (size_t r = 0; r < p.rows; ++r) {
    // The pruned entries are the 8 smallest |w| of the row (importance 1).
    std::vector<float> mag(p.cols);
    for (size_t c = 0; c < p.cols; ++c) mag[c] = std::fabs(p.w[r * p.cols + c]);
    std::vector<float> sorted = mag;
    std::nth_element(sorted.begin(), sorted.begin() + 7, sorted.end());
    const float cut = sorted[7];
    for (size_t c = 0; c < p.cols; ++c) {
      if (mag[c] < cut) {
        EXPECT_EQ(q.codes[r * p.cols + c], 0) << r << "," << c;
      }
    }
  }
}

TEST(GptqTest, InputsWithoutEnergyGiveNoFactor) {
  std::vector<double> zero(16 * 16, 0.0);
  EXPECT_EQ(MakeGptqFactor(zero, 100, 16, {}).cols, 0u);
  EXPECT_EQ(MakeGptqFactor(zero, 0, 16, {}).cols, 0u);
  std::vector<double> wrong(10, 1.0);
  EXPECT_EQ(MakeGptqFactor(wrong, 100, 16, {}).cols, 0u);
}

// The rate allocation's per-position KL gives the same double whether the reference
// probabilities were computed ahead (they fit) or in the sum (a vocabulary too large to keep
// them): packs must not depend on which.
TEST(KlTermTest, ProbabilitiesComputedAheadGiveTheSameDouble) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.f, 3.f);
  // Random log-probabilities, normalised as the rate allocation normalises logits.
  auto log_probabilities = [&](size_t vocab) {
    std::vector<float> x(vocab);
    for (float& v : x) v = n(rng);
    const float lz = static_cast<float>(LogSumExp(x));
    for (float& v : x) v -= lz;
    return x;
  };
  for (size_t vocab : {size_t{1}, size_t{5}, size_t{512}, size_t{4096}}) {
    const std::vector<float> lp = log_probabilities(vocab), lq = log_probabilities(vocab);
    std::vector<double> p(vocab);
    for (size_t v = 0; v < vocab; ++v) p[v] = std::exp(static_cast<double>(lp[v]));
    const double ahead = internal::KlTerm(lp.data(), p.data(), lq.data(), vocab);
    EXPECT_EQ(ahead, internal::KlTerm(lp.data(), nullptr, lq.data(), vocab)) << vocab;
    EXPECT_EQ(internal::KlTerm(lp.data(), p.data(), lp.data(), vocab), 0.0) << vocab;
    if (vocab > 1) {
      EXPECT_GT(ahead, 0.0) << vocab;  // the KL of two different distributions
    }
  }
}

// A row's relative error is measured in the model's domain: the quantizer scaled column c by
// col_scale[c], so code * scale / col_scale[c] is what the model reads.
TEST(RateAllocationTest, RowRelativeErrorInTheModelsDomain) {
  internal::Matrix m;
  m.rows = 2;
  m.cols = 2;
  m.w = {3.f, 4.f, 0.f, 0.f};
  m.q.rows = 2;
  m.q.cols = 2;
  m.q.codes = {3, 5, 0, 0};
  m.q.scale = {1.f, 1.f};
  EXPECT_DOUBLE_EQ(internal::RowRelativeError(m, 0), 1.0 / 25.0);  // (5 - 4)^2 / (3^2 + 4^2)
  EXPECT_EQ(internal::RowRelativeError(m, 1), 0.0);                // an all-zero row
  m.col_scale = {2.f, 1.f};
  m.q.codes = {6, 4, 0, 0};  // column 0 scaled by 2 before rounding: exact
  EXPECT_EQ(internal::RowRelativeError(m, 0), 0.0);
}

// Tokens the trials saw as input are measured, not charged; a token they never saw takes the
// larger of the model's mean probability and Zipf's share for its rank in the order of use; with
// nothing seen and no probability, the shares are Zipf's law itself and sum to 1.
TEST(RateAllocationTest, MissedInputShareIsZipfOverTheOrderOfUse) {
  internal::Matrix m;
  m.rows = 4;
  m.row_order = {2, 0, 3, 1};  // row 2 most used, row 1 least
  const std::vector<double> freq = {0.5, 0.0, 0.5, 0.0}, prob = {0.3, 0.001, 0.6, 0.2};
  const double h4 = 1.0 + 1.0 / 2 + 1.0 / 3 + 1.0 / 4;
  const std::vector<double> got = internal::MissedInputShare(m, freq, prob);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0], 0.0);
  EXPECT_EQ(got[2], 0.0);
  EXPECT_DOUBLE_EQ(got[3], 0.2);               // rank 3: Zipf 0.16 < p 0.2
  EXPECT_DOUBLE_EQ(got[1], 1.0 / (4.0 * h4));  // rank 4: Zipf 0.12 > p 0.001
  m.rows = 1000;
  m.row_order.clear();
  const std::vector<double> zipf =
      internal::MissedInputShare(m, std::vector<double>(1000, 0.0), std::vector<double>(1000, 0.0));
  double sum = 0;
  for (size_t r = 0; r < zipf.size(); ++r) {
    sum += zipf[r];
    if (r > 0) {
      EXPECT_LT(zipf[r], zipf[r - 1]) << r;
    }
  }
  EXPECT_NEAR(sum, 1.0, 1e-12);
}

}  // namespace
}  // namespace dcomp::packer
