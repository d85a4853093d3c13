// Pack stage 2: calibration tokens (--calib text or self-generated), the f32 NLL on them and the
// statistics of every linear input, from one f32 pass.

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "base/file.h"
#include "engine/layer_schema.h"
#include "engine/sampler.h"
#include "kernels/ops.h"
#include "packer/internal/pack_state.h"
#include "packer/internal/pack_util.h"

namespace dcomp::packer::internal {
namespace {

Result<std::vector<std::vector<int32_t>>> CalibrationTokens(const PackOptions& o,
                                                            const ModelFile& file,
                                                            const Tokenizer& tok, WeightSource* f32,
                                                            ThreadPool* pool, int32_t seq_len,
                                                            std::string* what) {
  std::vector<std::vector<int32_t>> seqs;
  const size_t want = static_cast<size_t>(std::max(o.calib_tokens, seq_len));
  if (!o.calib_path.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(o.calib_path));
    if (text.empty()) return InvalidArgumentError("--calib " + o.calib_path + ": file is empty");
    std::vector<int32_t> ids = tok.Encode(text, true);
    for (size_t i = 0; i + 2 <= ids.size() && seqs.size() * seq_len < want; i += seq_len) {
      seqs.emplace_back(ids.begin() + static_cast<ptrdiff_t>(i),
                        ids.begin() + static_cast<ptrdiff_t>(std::min(ids.size(), i + seq_len)));
    }
    *what = o.calib_path + " (" + std::to_string(ids.size()) + " tokens, first " +
            std::to_string(std::min(ids.size(), want)) + " used)";
    return seqs;
  }
  // Self-generated: temperature-1 samples from BOS with a fixed seed (--calib-seed).
  ASSIGN_OR_RETURN(auto tf, Transformer::Create(f32, pool, seq_len));
  SamplingParams sp;
  sp.temperature = 1.0f;
  sp.seed = o.calib_seed;
  Sampler sampler(sp);
  const int32_t start = tok.bos_id() >= 0 ? tok.bos_id() : 0;
  std::vector<float> logits;
  while (seqs.size() * static_cast<size_t>(seq_len) < want) {
    std::vector<int32_t> s = {start};
    tf->Reset();
    while (static_cast<int32_t>(s.size()) < seq_len) {
      RETURN_IF_ERROR(tf->Forward(std::span<const int32_t>(&s.back(), 1), false, &logits));
      int32_t next = sampler.Sample(logits, s);
      if (next == tok.eos_id() || next == tok.bos_id()) next = start;  // begin a new story
      s.push_back(next);
    }
    seqs.push_back(std::move(s));
    if (o.on_progress)
      o.on_progress("calibration text", static_cast<double>(seqs.size() * seq_len) / want);
  }
  *what = "self-generated (" + std::to_string(seqs.size()) + " x " + std::to_string(seq_len) +
          " tokens sampled at temperature 1, seed " + std::to_string(o.calib_seed) + ", from " +
          file.path() + ")";
  return seqs;
}

// Calibration inputs of every matrix (the tied embedding is the output matrix's input).
void AttachInputStats(PackState& s) {
  const ModelConfig& cfg = s.cfg;
  for (Matrix& m : s.mats) {
    const LayerMatrix* lm = FindLayerMatrix(m.name);
    LinearInput which = lm != nullptr ? lm->input : LinearInput::kAttnIn;
    int layer = m.layer;
    if (m.layer < 0 || m.layer == cfg.n_layers) {
      which = LinearInput::kHeadIn;
      layer = cfg.n_layers;
      if (m.layer < 0 && !cfg.tied_output) continue;  // a pure lookup table
    }
    if (const InputStats* st = s.observer->Find(layer, which)) {
      m.stats = st;
      m.importance = st->max_abs;
    }
  }
}

// The squared error of x's 8-bit quantization as the engine quantizes matrix inputs (one scale per
// row, kernels::QuantizeHeadQ8), over the n rows of `cols` of x; with `hadamard`, of the
// Hadamard-transformed rows, divided by the block (the transform's squared gain) so that it is
// the error the untransformed input sees.
double Q8Error(const float* x, size_t n, size_t cols, bool hadamard) {
  std::vector<float> r(cols);
  std::vector<int8_t> q(cols);
  double err = 0;
  for (size_t t = 0; t < n; ++t) {
    std::copy_n(x + t * cols, cols, r.begin());
    if (hadamard) kernels::HadamardTransform(r.data(), cols);
    const float scale = kernels::QuantizeHeadQ8(r.data(), cols, q.data());
    double e = 0;
    for (size_t c = 0; c < cols; ++c) {
      const double d = static_cast<double>(q[c]) * scale - r[c];
      e += d * d;
    }
    err += hadamard ? e / static_cast<double>(kernels::HadamardBlock(cols)) : e;
  }
  return err;
}

// Chooses the Hadamard-transformed inputs: per kind of input, when the transform lowers the summed
// 8-bit quantization error of the calibration samples over every layer (the output's input only
// when the output is not the embedding, which the lookup reads untransformed). The matrices
// reading a chosen kind are rotated (W * H / block), and the f32 copy reloaded.
void ChooseHadamardInputs(PackState& s) {
  ModelConfig& cfg = s.cfg;
  uint32_t mask = 0;
  for (LinearInput in : {LinearInput::kAttnIn, LinearInput::kAttnOut, LinearInput::kFfnIn,
                         LinearInput::kFfnHidden, LinearInput::kHeadIn}) {
    if (in == LinearInput::kHeadIn && cfg.tied_output) continue;
    double plain = 0, transformed = 0;
    size_t cols = 0;
    for (const auto& [key, st] : s.observer->stats) {
      if (key.second != in || st.sample_rows() == 0) continue;
      cols = st.cols;
      plain += Q8Error(st.sample.data(), st.sample_rows(), st.cols, false);
      transformed += Q8Error(st.sample.data(), st.sample_rows(), st.cols, true);
    }
    if (cols == 0 || kernels::HadamardBlock(cols) < 2) continue;
    const bool take = transformed < plain;
    s.Log("hadamard: " + std::string(LinearInputName(in)) + " (blocks of " +
          std::to_string(kernels::HadamardBlock(cols)) + "): 8-bit input error " +
          Fmt("%.4g", plain) + " plain, " + Fmt("%.4g", transformed) + " transformed" +
          (take ? ": transformed" : ": plain"));
    if (take) mask |= 1u << static_cast<int>(in);
  }
  if (mask == 0) return;
  cfg.hadamard_inputs = mask;
  for (Matrix& m : s.mats) {
    const LayerMatrix* lm = FindLayerMatrix(m.name);
    const LinearInput in = lm != nullptr ? lm->input : LinearInput::kHeadIn;
    if (m.layer < 0 || !HadamardInput(cfg, in)) continue;  // the embedding is a lookup table
    const float inv = 1.0f / static_cast<float>(kernels::HadamardBlock(m.cols));  // a power of 2
    for (size_t r = 0; r < m.rows; ++r) {
      float* row = m.w.data() + r * m.cols;
      kernels::HadamardTransform(row, m.cols);  // (W H)[r] = H W[r]: H is symmetric
      for (size_t c = 0; c < m.cols; ++c) row[c] *= inv;
    }
  }
  s.f32w = std::make_unique<PackWeights>(cfg, false);
  LoadWeights(*s.f32w, s.mats, s.vecs, false);
}

// One f32 pass over the calibration tokens: the f32 NLL and, in a new observer, the statistics of
// every linear input (with their second moments when `second_moment`).
Status ObservePass(PackState& s, bool second_moment) {
  s.observer = std::make_unique<StatsObserver>(
      std::max<size_t>(1, static_cast<size_t>(s.rep.calib_tokens) / kSampleRows), second_moment);
  ASSIGN_OR_RETURN(s.rep.f32_nll,
                   MeanNll(s.f32w.get(), s.pool.get(), s.calib, s.seq_len, s.observer.get()));
  return Status::Ok();
}

}  // namespace

void StatsObserver::Observe(int layer, LinearInput which, const float* x, size_t n, size_t cols) {
  InputStats& s = stats[{layer, which}];
  if (s.max_abs.empty()) {
    s.max_abs.assign(cols, 0.0f);
    s.cols = cols;
  }
  for (size_t t = 0; t < n; ++t, ++s.seen) {
    const float* r = x + t * cols;
    for (size_t c = 0; c < cols; ++c) s.max_abs[c] = std::max(s.max_abs[c], std::fabs(r[c]));
    if (s.seen % stride_ == 0 && s.sample.size() < kSampleRows * cols) {
      s.sample.insert(s.sample.end(), r, r + cols);
    }
  }
  if (!second_moment_ || cols > kMaxSecondMomentCols) return;
  // The second moment, from the batch transposed so that each entry is one contiguous dot product.
  if (s.xtx.empty()) s.xtx.assign(cols * cols, 0.0);
  std::vector<double> xt(n * cols);
  for (size_t t = 0; t < n; ++t) {
    for (size_t c = 0; c < cols; ++c) xt[c * n + t] = x[t * cols + c];
  }
  for (size_t i = 0; i < cols; ++i) {
    const double* xi = xt.data() + i * n;
    for (size_t j = i; j < cols; ++j) {
      const double* xj = xt.data() + j * n;
      double acc = 0;
      for (size_t t = 0; t < n; ++t) acc += xi[t] * xj[t];
      s.xtx[i * cols + j] += acc;
      if (j != i) s.xtx[j * cols + i] += acc;
    }
  }
}

Status Calibrate(PackState& s) {
  const PackOptions& o = s.o;
  const ModelConfig& cfg = s.cfg;
  PackReport& rep = s.rep;
  s.pool = std::make_unique<ThreadPool>(std::max(1, o.threads));
  s.need_calib = !cfg.synthetic && (o.scaling || o.rate_alloc || o.prune > 0);
  if (!o.hadamard) s.cfg.hadamard_inputs = 0;  // a synthetic model's recorded transforms
  s.seq_len = std::min<int32_t>(256, cfg.context_length);
  // Runnable copies of the model (f32 here, INT8 after quantization) exist only for the stages
  // that run it.
  s.f32w = std::make_unique<PackWeights>(cfg, false);
  if (s.need_calib) {
    LoadWeights(*s.f32w, s.mats, s.vecs, false);
    ASSIGN_OR_RETURN(s.calib, CalibrationTokens(o, *s.file, *s.tok, s.f32w.get(), s.pool.get(),
                                                s.seq_len, &rep.calibration));
    for (const auto& seq : s.calib) rep.calib_tokens += static_cast<int64_t>(seq.size());
  }
  // One f32 pass over the calibration tokens gives both the statistics and the f32 NLL. Choosing
  // the transformed inputs needs only the samples: that pass leaves out GPTQ's second moments (the
  // costly part), which a second pass collects from the inputs as the packed model computes them.
  s.observer = std::make_unique<StatsObserver>(1, false);
  if (s.need_calib) {
    RETURN_IF_ERROR(ObservePass(s, o.gptq && !o.hadamard));
    s.Log("calibration: " + rep.calibration + "; f32 mean NLL " + Fmt("%.5f", rep.f32_nll));
    if (o.hadamard) {
      ChooseHadamardInputs(s);
      if (cfg.hadamard_inputs != 0 || o.gptq) RETURN_IF_ERROR(ObservePass(s, o.gptq));
      if (cfg.hadamard_inputs != 0) {
        s.Log("hadamard: f32 mean NLL with the transformed inputs " + Fmt("%.5f", rep.f32_nll));
      }
    }
    s.Progress("calibration", 1.0);
  } else {
    rep.calibration = cfg.synthetic ? "none (synthetic weights)" : "none (all stages off)";
  }
  AttachInputStats(s);
  return Status::Ok();
}

}  // namespace dcomp::packer::internal
