// Pack stage 5: rate allocation. The INT8 model's NLL is measured; then every matrix alone is tried
// at wider steps, and per-matrix steps are chosen under the --max-ppl-increase budget.

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "engine/generate.h"
#include "packer/internal/pack_state.h"
#include "packer/internal/pack_util.h"

namespace dcomp::packer::internal {
namespace {

constexpr float kStepCandidates[] = {1.0f, 1.25f, 1.5f, 1.75f, 2.0f, 2.5f, 3.0f, 4.0f};

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

// One step multiplier of one matrix: the bits of its codes and the KL increase it costs alone.
struct Option {
  float step;
  double bits, dkl;
};
using Options = std::vector<std::vector<Option>>;  // per matrix, step 1 first

// Every matrix alone at each wider step (until one costs more than the budget), the others at
// their current codes.
Result<Options> StepOptions(PackState& s, const KlEvaluator& kl, double kl_base, double budget) {
  std::vector<Matrix>& mats = s.mats;
  PackWeights& qw = *s.qw;
  Options opts(mats.size());
  for (size_t i = 0; i < mats.size(); ++i) {
    Matrix& m = mats[i];
    opts[i].push_back({1.0f, m.entropy * static_cast<double>(m.rows * m.cols), 0.0});
    for (float step : kStepCandidates) {
      if (step == 1.0f) continue;
      QuantParams p = ParamsOf(m);
      p.step_multiplier = step;
      QuantizedMatrix q = QuantizeMatrix(m.w, m.rows, m.cols, p);
      qw.SetMatrix(m, &q);
      ASSIGN_OR_RETURN(double d, kl.Kl(&qw));
      opts[i].push_back({step, CodeEntropyBits(q) * static_cast<double>(m.rows * m.cols),
                         std::max(0.0, d - kl_base)});
      if (d - kl_base > budget) break;  // wider steps only cost more
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
      const double cost = opts[i][k].bits + lambda * opts[i][k].dkl;
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
      if (mats[i].step != opts[i][choice[i]].step) {
        mats[i].step = opts[i][choice[i]].step;
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

// Every matrix alone is tried at wider steps; its cost is the increase of KL(f32 || packed) on
// (a subset of) the calibration tokens, its gain the entropy of its codes. A Lagrangian choice
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
    s.Log("rate allocation: INT8 alone uses the budget; every step left at 1");
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(const Options opts, StepOptions(s, kl, kl_base, budget));
  ASSIGN_OR_RETURN(const bool fits, ApplyChoice(s, kl, opts, kl_base, limit, budget));
  if (!fits) {
    for (Matrix& m : s.mats) {
      m.step = 1;
      Quantize(m);
      s.qw->SetMatrix(m, &m.q);
    }
    s.Log("rate allocation: budget not met; every step left at 1");
  }
  ASSIGN_OR_RETURN(rep.packed_nll, MeanNll(s.qw.get(), s.pool.get(), calib, s.seq_len));
  return Status::Ok();
}

}  // namespace dcomp::packer::internal
