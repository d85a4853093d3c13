// Pack stage 5: rate allocation. The INT8 model's NLL is measured; then every matrix alone is tried
// at narrower code widths (7, 6, 5, 4 bits, each with its best clip), and per-matrix widths are
// chosen under the --max-ppl-increase budget so as to minimise the packed (RAM) size.

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "base/packed_codes.h"
#include "engine/generate.h"
#include "packer/internal/pack_state.h"
#include "packer/internal/pack_util.h"

namespace dcomp::packer::internal {
namespace {

// Clip candidates per width (chosen per matrix by the activation-weighted weight error).
constexpr float kClipCandidates[] = {1.0f, 0.95f, 0.9f, 0.85f, 0.8f, 0.75f, 0.7f, 0.65f, 0.6f};

// Mean KL(f32 || model) over every position of the sequences, from stored f32 log-probabilities.
class KlEvaluator {
 public:
  static Result<KlEvaluator> Create(WeightSource* f32, ThreadPool* pool,
                                    std::vector<std::vector<int32_t>> seqs, int32_t ctx) {
    KlEvaluator k;
    k.seqs_ = std::move(seqs);
    k.pool_ = pool;
    k.ctx_ = ctx;
    k.vocab_ = static_cast<size_t>(f32->config().vocab_size);
    ASSIGN_OR_RETURN(auto tf, Transformer::Create(f32, pool, ctx));
    std::vector<float> logits;
    for (const auto& s : k.seqs_) {
      tf->Reset();
      RETURN_IF_ERROR(tf->Forward(s, true, &logits));
      for (size_t t = 0; t < s.size(); ++t) {
        k.ref_.insert(k.ref_.end(), logits.begin() + static_cast<ptrdiff_t>(t * k.vocab_),
                      logits.begin() + static_cast<ptrdiff_t>((t + 1) * k.vocab_));
        LogSoftmax(k.ref_.data() + k.ref_.size() - k.vocab_, k.vocab_);
      }
    }
    return k;
  }
  Result<double> Kl(WeightSource* w) const {
    ASSIGN_OR_RETURN(auto tf, Transformer::Create(w, pool_, ctx_));
    std::vector<float> logits;
    double sum = 0;
    size_t pos = 0, count = 0;
    for (const auto& s : seqs_) {
      tf->Reset();
      RETURN_IF_ERROR(tf->Forward(s, true, &logits));
      for (size_t t = 0; t < s.size(); ++t, ++pos, ++count) {
        float* q = logits.data() + t * vocab_;
        LogSoftmax(q, vocab_);
        const float* p = ref_.data() + pos * vocab_;
        double kl = 0;
        for (size_t v = 0; v < vocab_; ++v)
          kl += std::exp(static_cast<double>(p[v])) * (p[v] - q[v]);
        sum += kl;
      }
    }
    return count ? sum / static_cast<double>(count) : 0.0;
  }

 private:
  static void LogSoftmax(float* x, size_t n) {
    const float lz = static_cast<float>(LogSumExp({x, n}));
    for (size_t i = 0; i < n; ++i) x[i] -= lz;
  }
  std::vector<std::vector<int32_t>> seqs_;
  std::vector<float> ref_;
  ThreadPool* pool_ = nullptr;
  int32_t ctx_ = 0;
  size_t vocab_ = 0;
};

// One code width of one matrix: its packed bits (the objective), the order-0 entropy of its codes
// (what entropy coding stores; reported) and the KL increase it costs alone.
struct Option {
  int bits;
  float clip;
  double packed_bits, entropy_bits, dkl;
};
using Options = std::vector<std::vector<Option>>;  // per matrix, 8 bits first

// Mean square of each input column of `m` in its scaled domain (x_j / s_j), from the calibration
// sample; empty without one.
std::vector<float> InputMeanSquare(const Matrix& m) {
  std::vector<float> ms;
  if (m.stats == nullptr || m.stats->sample_rows() == 0) return ms;
  const size_t n = m.stats->sample_rows(), cols = m.cols;
  std::vector<double> acc(cols, 0.0);
  for (size_t t = 0; t < n; ++t) {
    for (size_t c = 0; c < cols; ++c) {
      const double x = m.stats->sample[t * cols + c] / (m.col_scale.empty() ? 1.0 : m.col_scale[c]);
      acc[c] += x * x;
    }
  }
  ms.resize(cols);
  for (size_t c = 0; c < cols; ++c) ms[c] = static_cast<float>(acc[c] / static_cast<double>(n));
  return ms;
}

// Every matrix alone at each narrower width (until one costs more than the budget), the others
// at their current codes.
Result<Options> WidthOptions(PackState& s, const KlEvaluator& kl, double kl_base, double budget) {
  std::vector<Matrix>& mats = s.mats;
  PackWeights& qw = *s.qw;
  Options opts(mats.size());
  for (size_t i = 0; i < mats.size(); ++i) {
    Matrix& m = mats[i];
    const double n = static_cast<double>(m.rows * m.cols);
    opts[i].push_back({8, 1.0f, 8 * n, m.entropy * n, 0.0});
    const std::vector<float> ms = InputMeanSquare(m);
    for (int bits = 7; bits >= kMinPackedBits; --bits) {
      QuantParams p = ParamsOf(m);
      p.bits = bits;
      p.clip = ChooseClip(m.w, m.rows, m.cols, p, ms, kClipCandidates);
      QuantizedMatrix q = QuantizeMatrix(m.w, m.rows, m.cols, p);
      qw.SetMatrix(m, &q);
      ASSIGN_OR_RETURN(double d, kl.Kl(&qw));
      opts[i].push_back(
          {bits, p.clip, bits * n, CodeEntropyBits(q) * n, std::max(0.0, d - kl_base)});
      if (d - kl_base > budget) break;  // narrower widths only cost more
    }
    qw.SetMatrix(m, &m.q);
    s.Progress("rate allocation", static_cast<double>(i + 1) / static_cast<double>(mats.size()));
  }
  return opts;
}

// Per matrix, the option of least bits + lambda * KL increase, into *c; returns the sum of the
// chosen options' KL increases.
double Choose(const Options& opts, double lambda, std::vector<size_t>* c) {
  double total = 0;
  for (size_t i = 0; i < opts.size(); ++i) {
    size_t best = 0;
    double best_cost = 1e300;
    for (size_t k = 0; k < opts[i].size(); ++k) {
      const double cost = opts[i][k].packed_bits + lambda * opts[i][k].dkl;
      if (cost < best_cost) best_cost = cost, best = k;
    }
    (*c)[i] = best;
    total += opts[i][best].dkl;
  }
  return total;
}

// Applies the Lagrangian choice whose predicted KL increase fits the budget, measures the
// combination, and tightens the target until the measured KL fits the limit (at most 8 attempts).
// Returns whether it fits.
Result<bool> ApplyChoice(PackState& s, const KlEvaluator& kl, const Options& opts, double kl_base,
                         double limit, double budget) {
  std::vector<Matrix>& mats = s.mats;
  double target = budget;
  bool fits = false;
  for (int attempt = 0; attempt < 8 && !fits; ++attempt) {
    // The smallest lambda (most bits saved) whose predicted KL increase fits the target.
    double lo = 1e-3, hi = 1e18;
    std::vector<size_t> choice(mats.size());
    for (int it = 0; it < 200 && hi / lo > 1.0001; ++it) {
      const double mid = std::sqrt(lo * hi);
      if (Choose(opts, mid, &choice) <= target) {
        hi = mid;
      } else {
        lo = mid;
      }
    }
    Choose(opts, hi, &choice);
    for (size_t i = 0; i < mats.size(); ++i) {
      const Option& o = opts[i][choice[i]];
      if (mats[i].bits != o.bits || mats[i].clip != o.clip) {
        mats[i].bits = o.bits;
        mats[i].clip = o.clip;
        Quantize(mats[i]);
        s.qw->SetMatrix(mats[i], &mats[i].q);
      }
    }
    ASSIGN_OR_RETURN(double measured, kl.Kl(s.qw.get()));
    fits = measured <= limit;
    s.Log("rate allocation: predicted KL +" + Fmt("%.5f", target) + ", measured total " +
          Fmt("%.5f", measured) + (fits ? " (fits)" : " (over the limit, tightening)"));
    target *= 0.8 * budget / std::max(measured - kl_base, 1e-12);
  }
  return fits;
}

}  // namespace

// Every matrix alone is tried at narrower widths; its cost is the increase of KL(f32 || packed) on
// (a subset of) the calibration tokens, its gain the packed bits it saves. A Lagrangian choice
// spends the budget ln(1 + pct/100) - KL(INT8) where it buys the most bits; the combination is
// then measured, and tightened until the measured KL fits.
Status AllocateRates(PackState& s) {
  const PackOptions& o = s.o;
  PackReport& rep = s.rep;
  const std::vector<std::vector<int32_t>>& calib = s.calib;
  if (s.need_calib) {
    ASSIGN_OR_RETURN(rep.plain_int8_nll, MeanNll(s.qw.get(), s.pool.get(), calib, s.seq_len));
    rep.packed_nll = rep.plain_int8_nll;
    s.Log("INT8 (after scaling/pruning) mean NLL " + Fmt("%.5f", rep.plain_int8_nll) + " (+" +
          Fmt("%.3f", 100 * (std::exp(rep.plain_int8_nll - rep.f32_nll) - 1)) + "% ppl over f32)");
  }
  if (!s.need_calib || !o.rate_alloc) return Status::Ok();
  std::vector<std::vector<int32_t>> trial_seqs(
      calib.begin(), calib.begin() + static_cast<ptrdiff_t>(std::min<size_t>(calib.size(), 8)));
  ASSIGN_OR_RETURN(KlEvaluator kl,
                   KlEvaluator::Create(s.f32w.get(), s.pool.get(), trial_seqs, s.seq_len));
  ASSIGN_OR_RETURN(const double kl_base, kl.Kl(s.qw.get()));
  const double limit = std::log1p(o.max_ppl_increase / 100);
  const double budget = limit - kl_base;
  s.Log("rate allocation: KL(f32 || INT8) " + Fmt("%.5f", kl_base) + " nats, limit " +
        Fmt("%.5f", limit));
  if (!(budget > 0)) {  // a NaN budget included
    s.Log("rate allocation: INT8 alone uses the budget; every matrix left at 8 bits");
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(const Options opts, WidthOptions(s, kl, kl_base, budget));
  ASSIGN_OR_RETURN(const bool fits, ApplyChoice(s, kl, opts, kl_base, limit, budget));
  if (!fits) {
    for (Matrix& m : s.mats) {
      m.bits = 8;
      m.clip = 1;
      Quantize(m);
      s.qw->SetMatrix(m, &m.q);
    }
    s.Log("rate allocation: budget not met; every matrix left at 8 bits");
  }
  ASSIGN_OR_RETURN(rep.packed_nll, MeanNll(s.qw.get(), s.pool.get(), calib, s.seq_len));
  return Status::Ok();
}

}  // namespace dcomp::packer::internal
