#include "packer/pack.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "base/thread_pool.h"
#include "engine/dcm_model.h"
#include "engine/generate.h"
#include "engine/model_file.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "engine/transformer.h"
#include "engine/weights.h"
#include "packer/quantize.h"
#include "storage/codec.h"
#include "storage/container.h"

namespace dcomp::packer {
namespace {

namespace pb = storage::pb;
using Clock = std::chrono::steady_clock;

constexpr size_t kSampleRows = 256;  // calibration input rows kept per linear input
constexpr float kStepCandidates[] = {1.0f, 1.25f, 1.5f, 1.75f, 2.0f, 2.5f, 3.0f, 4.0f};
constexpr float kAlphaCandidates[] = {0.0f, 0.125f, 0.25f, 0.375f, 0.5f, 0.625f, 0.75f};

std::string Fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof(b), f, v);
  return b;
}

// ----- the model as the packer holds it -------------------------------------------------------

struct Matrix {
  std::string name;
  int layer = 0;
  size_t rows = 0, cols = 0;
  std::vector<float> w;           // f32, scaling folded in as decided
  std::vector<float> col_scale;   // s_j (empty = 1)
  std::vector<float> importance;  // max|x'_j| (empty = unknown)
  float alpha = 0, step = 1, prune = 0;
  QuantizedMatrix q;
  double err = -1, entropy = 0;
  // Calibration inputs of this matrix, for the output error (null: none).
  const struct InputStats* stats = nullptr;
};

struct Vector {
  std::string name;
  int layer = 0;
  std::vector<float> v;
};

// One linear input's calibration statistics.
struct InputStats {
  std::vector<float> max_abs;
  std::vector<float> sample;  // up to kSampleRows rows, spread over the calibration tokens
  size_t cols = 0, seen = 0;
  size_t sample_rows() const { return cols ? sample.size() / cols : 0; }
};

class StatsObserver : public ActivationObserver {
 public:
  explicit StatsObserver(size_t stride) : stride_(stride) {}
  void Observe(int layer, LinearInput which, const float* x, size_t n, size_t cols) override {
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
  }
  const InputStats* Find(int layer, LinearInput which) const {
    auto it = stats.find({layer, which});
    return it == stats.end() ? nullptr : &it->second;
  }
  std::map<std::pair<int, LinearInput>, InputStats> stats;

 private:
  size_t stride_;
};

// A WeightSource over the packer's quantized (or f32) matrices; one matrix can be swapped for the
// rate allocator's trial evaluations.
class PackWeights : public WeightSource {
 public:
  PackWeights(const ModelConfig& c, bool quantized) : cfg_(c), quantized_(quantized) {
    layers_.resize(static_cast<size_t>(c.n_layers));
  }
  const ModelConfig& config() const override { return cfg_; }
  const GlobalWeights& globals() const override { return globals_; }
  Result<const LayerWeights*> AcquireLayer(int l) override { return &layers_[l].view; }
  void ReleaseLayer(int) override {}

  void SetMatrix(const Matrix& m, const QuantizedMatrix* q) {
    LinearStorage& s = storage_[m.name];
    if (quantized_) {
      s = MakeQ8Linear(q->codes, q->scale, m.rows, m.cols);
    } else {
      s = MakeLinear(m.w, m.rows, m.cols, WeightFormat::kF32);
    }
    auto it = bias_.find(m.name);
    if (it != bias_.end()) s.bias = it->second;
    Rebind();
  }
  void SetVector(const std::string& name, const std::vector<float>& v) {
    vectors_[name] = v;
    Rebind();
  }
  void SetBias(const std::string& matrix, const std::vector<float>& b) {
    bias_[matrix] = b;
    auto it = storage_.find(matrix);
    if (it != storage_.end()) it->second.bias = b;
    Rebind();
  }

 private:
  void Rebind() {
    auto lin = [&](const std::string& n) {
      auto it = storage_.find(n);
      return it == storage_.end() ? LinearWeights{} : it->second.View();
    };
    auto vec = [&](const std::string& n) -> const float* {
      auto it = vectors_.find(n);
      return it == vectors_.end() ? nullptr : it->second.data();
    };
    for (int l = 0; l < cfg_.n_layers; ++l) {
      auto n = [l](const char* w) { return LayerTensorName(l, w); };
      layers_[l].view = {
          vec(n("attn_norm.weight")), vec(n("ffn_norm.weight")), lin(n("attn_q.weight")),
          lin(n("attn_k.weight")),    lin(n("attn_v.weight")),   lin(n("attn_output.weight")),
          lin(n("ffn_gate.weight")),  lin(n("ffn_down.weight")), lin(n("ffn_up.weight"))};
    }
    globals_.embedding = lin("token_embd.weight");
    globals_.final_norm = vec("output_norm.weight");
    globals_.output = cfg_.tied_output ? globals_.embedding : lin("output.weight");
  }
  struct Layer {
    LayerWeights view;
  };
  ModelConfig cfg_;
  bool quantized_;
  std::map<std::string, LinearStorage> storage_;
  std::map<std::string, std::vector<float>> vectors_, bias_;
  std::vector<Layer> layers_;
  GlobalWeights globals_;
};

// Mean NLL of next-token prediction over the sequences; `observer` (optional) sees the pass.
Result<double> MeanNll(WeightSource* w, ThreadPool* pool,
                       const std::vector<std::vector<int32_t>>& seqs, int32_t ctx,
                       ActivationObserver* observer = nullptr) {
  ASSIGN_OR_RETURN(auto tf, Transformer::Create(w, pool, ctx));
  tf->set_observer(observer);
  double sum = 0;
  int64_t count = 0;
  std::vector<float> logits;
  const size_t vocab = static_cast<size_t>(w->config().vocab_size);
  for (const auto& s : seqs) {
    tf->Reset();
    RETURN_IF_ERROR(tf->Forward(s, true, &logits));
    for (size_t t = 0; t + 1 < s.size(); ++t) {
      const float* l = logits.data() + t * vocab;
      sum += LogSumExp({l, vocab}) - l[s[t + 1]];
      ++count;
    }
  }
  return count ? sum / static_cast<double>(count) : 0.0;
}

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

// ----- codec choice ------------------------------------------------------------------------------

struct Encoded {
  storage::Codec codec = storage::Codec::kRaw;
  std::vector<uint8_t> bytes;
};

// The codecs to try besides raw.
Result<std::vector<storage::Codec>> CodecCandidates(const PackOptions& o) {
  if (o.codec == "auto")
    return std::vector<storage::Codec>{storage::Codec::kRans, storage::Codec::kZstd};
  ASSIGN_OR_RETURN(storage::Codec c, storage::ParseCodecName(o.codec));
  if (c == storage::Codec::kRaw) return std::vector<storage::Codec>{};
  return std::vector<storage::Codec>{c};
}

Result<Encoded> EncodeBest(std::span<const uint8_t> raw, std::span<const storage::Codec> cands,
                           const PackOptions& o, storage::BlockDecoder* dec) {
  Encoded best;
  best.bytes.assign(raw.begin(), raw.end());
  std::vector<uint8_t> enc, check(raw.size());
  for (storage::Codec c : cands) {
    RETURN_IF_ERROR(storage::EncodeBlock(c, raw, o.zstd_level, &enc));
    // Lossless by construction, and checked: every candidate is decoded and compared.
    double best_s = 1e30;
    for (int rep = 0; rep < (o.codec == "auto" && o.min_decode_mbps > 0 ? 2 : 1); ++rep) {
      auto t0 = Clock::now();
      RETURN_IF_ERROR(dec->Decode(c, enc, check));
      best_s = std::min(best_s, std::chrono::duration<double>(Clock::now() - t0).count());
    }
    if (std::memcmp(check.data(), raw.data(), raw.size()) != 0) {
      return InternalError(std::string(storage::CodecName(c)) + " round trip mismatch");
    }
    const double mbps = static_cast<double>(raw.size()) / 1e6 / std::max(best_s, 1e-9);
    // Below 32 KiB a decode takes microseconds and its timing is dominated by per-call setup, so
    // the floor (a throughput) applies to larger blocks only.
    const bool fast_enough =
        o.codec != "auto" || mbps >= o.min_decode_mbps || raw.size() < (32u << 10);
    if (fast_enough && enc.size() < best.bytes.size()) {
      best.codec = c;
      best.bytes = enc;
    }
  }
  return best;
}

// ----- calibration
// ---------------------------------------------------------------------------------

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
  // Self-generated: temperature-1 samples from BOS with a fixed seed.
  ASSIGN_OR_RETURN(auto tf, Transformer::Create(f32, pool, seq_len));
  SamplingParams sp;
  sp.temperature = 1.0f;
  sp.seed = 20240601;
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
          " tokens sampled at temperature 1 from " + file.path() + ")";
  return seqs;
}

std::vector<float> ScalesFor(const std::vector<float>& max_abs, float alpha) {
  std::vector<float> s(max_abs.size(), 1.0f);
  if (alpha == 0) return s;
  double log_sum = 0;
  for (size_t j = 0; j < s.size(); ++j) {
    s[j] = std::pow(std::max(max_abs[j], 1e-5f), alpha);
    log_sum += std::log(s[j]);
  }
  const float g = static_cast<float>(std::exp(log_sum / static_cast<double>(s.size())));
  for (float& v : s) v /= g;
  return s;
}

std::vector<float> Importance(const std::vector<float>& max_abs, const std::vector<float>& s) {
  std::vector<float> imp(max_abs.size());
  for (size_t j = 0; j < imp.size(); ++j) imp[j] = max_abs[j] / (s.empty() ? 1.0f : s[j]);
  return imp;
}

QuantParams ParamsOf(const Matrix& m) {
  QuantParams p;
  p.col_scale = m.col_scale;
  p.importance = m.importance;
  p.step_multiplier = m.step;
  p.prune = m.prune;
  return p;
}

void Quantize(Matrix& m) {
  m.q = QuantizeMatrix(m.w, m.rows, m.cols, ParamsOf(m));
  m.entropy = CodeEntropyBits(m.q);
  m.err = m.stats
              ? RelativeOutputError(m.stats->sample, m.stats->sample_rows(), m.w, m.q, m.col_scale)
              : -1;
}

// Hands every matrix (quantized or f32) and vector of the packer's model to a PackWeights.
void LoadWeights(PackWeights& w, const std::vector<Matrix>& mats,
                 const std::map<std::string, Vector>& vecs, bool quantized) {
  for (const Matrix& m : mats) w.SetMatrix(m, quantized ? &m.q : nullptr);
  for (const auto& [name, v] : vecs) {
    const size_t bias = name.rfind(".bias");
    if (bias != std::string::npos && bias + 5 == name.size()) {
      w.SetBias(name.substr(0, bias) + ".weight", v.v);
    } else {
      w.SetVector(name, v.v);
    }
  }
}

}  // namespace

Result<PackReport> Pack(const PackOptions& o) {
  const auto t_start = Clock::now();
  auto log = [&](const std::string& s) {
    if (o.on_log) o.on_log(s);
  };
  auto progress = [&](const std::string& s, double f) {
    if (o.on_progress) o.on_progress(s, f);
  };
  if (o.block_bytes < 1024 || o.block_bytes > (64u << 20)) {
    return InvalidArgumentError("--block-size " + std::to_string(o.block_bytes) +
                                ": expected 1 KiB .. 64 MiB");
  }
  if (o.prune < 0 || o.prune >= 0.95) {
    return InvalidArgumentError("--prune " + Fmt("%g", o.prune) +
                                ": expected a ratio in [0, 0.95)");
  }
  if (!(o.max_ppl_increase >= 0) || o.max_ppl_increase > 100) {
    return InvalidArgumentError("--max-ppl-increase: expected a percentage in [0, 100]");
  }
  if (o.codec != "auto") RETURN_IF_ERROR(storage::ParseCodecName(o.codec).status());
  float fixed_alpha = -1;
  if (o.alpha != "auto") {
    char* end = nullptr;
    fixed_alpha = std::strtof(o.alpha.c_str(), &end);
    if (end == o.alpha.c_str() || *end != '\0' || !(fixed_alpha >= 0 && fixed_alpha <= 1)) {
      return InvalidArgumentError("--alpha '" + o.alpha +
                                  "': expected 'auto' or a number in [0, 1]");
    }
  }

  ASSIGN_OR_RETURN(std::unique_ptr<ModelFile> file, OpenModelFile(o.input, o.tokenizer_path));
  // Fail on an unwritable output before the expensive stages.
  ASSIGN_OR_RETURN(auto writer, storage::ContainerWriter::Create(o.output));
  const ModelConfig cfg = file->config();
  ASSIGN_OR_RETURN(auto tok, Tokenizer::Create(file->tokenizer()));
  log("model: " + cfg.Summary() + " [" + file->format() + "]");

  // Import every tensor as f32, in execution order (the order they are written in).
  const std::vector<CanonicalTensor> order = CanonicalTensors(cfg);
  std::vector<Matrix> mats;
  std::map<std::string, size_t> mat_index;
  std::map<std::string, Vector> vecs;
  for (const CanonicalTensor& t : order) {
    ASSIGN_OR_RETURN(std::vector<float> data, file->ReadF32(t.name));
    if (t.rows == 1) {
      vecs[t.name] = {t.name, t.layer, std::move(data)};
      continue;
    }
    Matrix m;
    m.name = t.name;
    m.layer = t.layer;
    m.rows = static_cast<size_t>(t.rows);
    m.cols = static_cast<size_t>(t.cols);
    m.prune = static_cast<float>(o.prune);
    m.w = std::move(data);
    mat_index[t.name] = mats.size();
    mats.push_back(std::move(m));
  }
  auto find = [&](const std::string& name) -> Matrix& { return mats[mat_index.at(name)]; };
  progress("import", 1.0);

  PackReport rep;
  rep.synthetic = cfg.synthetic;
  ThreadPool pool(std::max(1, o.threads));
  const bool need_calib = !cfg.synthetic && (o.scaling || o.rate_alloc || o.prune > 0);
  std::vector<std::vector<int32_t>> calib;
  const int32_t seq_len = std::min<int32_t>(256, cfg.context_length);
  // Runnable copies of the model (f32 here, INT8 below) exist only for the stages that run it.
  PackWeights f32w(cfg, false);
  if (need_calib) {
    LoadWeights(f32w, mats, vecs, false);
    ASSIGN_OR_RETURN(calib,
                     CalibrationTokens(o, *file, *tok, &f32w, &pool, seq_len, &rep.calibration));
    for (const auto& s : calib) rep.calib_tokens += static_cast<int64_t>(s.size());
  }
  // One f32 pass over the calibration tokens gives both the statistics and the f32 NLL.
  StatsObserver observer(std::max<size_t>(1, static_cast<size_t>(rep.calib_tokens) / kSampleRows));
  if (need_calib) {
    ASSIGN_OR_RETURN(rep.f32_nll, MeanNll(&f32w, &pool, calib, seq_len, &observer));
    log("calibration: " + rep.calibration + "; f32 mean NLL " + Fmt("%.5f", rep.f32_nll));
    progress("calibration", 1.0);
  } else {
    rep.calibration = cfg.synthetic ? "none (synthetic weights)" : "none (all stages off)";
  }
  // Calibration inputs of every matrix (the tied embedding is the output matrix's input).
  for (Matrix& m : mats) {
    LinearInput which = LinearInput::kAttnIn;
    int layer = m.layer;
    if (m.name.find("attn_output") != std::string::npos) which = LinearInput::kAttnOut;
    if (m.name.find("ffn_gate") != std::string::npos || m.name.find("ffn_up") != std::string::npos)
      which = LinearInput::kFfnIn;
    if (m.name.find("ffn_down") != std::string::npos) which = LinearInput::kFfnHidden;
    if (m.layer < 0 || m.layer == cfg.n_layers) {
      which = LinearInput::kHeadIn;
      layer = cfg.n_layers;
      if (m.layer < 0 && !cfg.tied_output) continue;  // a pure lookup table
    }
    if (const InputStats* s = observer.Find(layer, which)) {
      m.stats = s;
      m.importance = s->max_abs;
    }
  }

  // ----- compression-aware scaling, per group of matrices sharing an input
  // ------------------------
  if (need_calib && o.scaling) {
    struct Group {
      std::vector<std::string> mats;
      int layer;
      LinearInput input;
    };
    std::vector<Group> groups;
    for (int l = 0; l < cfg.n_layers; ++l) {
      auto n = [l](const char* w) { return LayerTensorName(l, w); };
      groups.push_back(
          {{n("attn_q.weight"), n("attn_k.weight"), n("attn_v.weight")}, l, LinearInput::kAttnIn});
      groups.push_back({{n("attn_output.weight")}, l, LinearInput::kAttnOut});
      groups.push_back({{n("ffn_gate.weight"), n("ffn_up.weight")}, l, LinearInput::kFfnIn});
      groups.push_back({{n("ffn_down.weight")}, l, LinearInput::kFfnHidden});
    }
    if (!cfg.tied_output) groups.push_back({{"output.weight"}, cfg.n_layers, LinearInput::kHeadIn});
    const size_t dim = static_cast<size_t>(cfg.dim), hd = static_cast<size_t>(cfg.head_dim);
    const size_t group_q = static_cast<size_t>(cfg.n_heads / cfg.n_kv_heads);
    size_t done = 0;
    for (const Group& g : groups) {
      const InputStats* st = observer.Find(g.layer, g.input);
      if (st == nullptr) continue;
      std::vector<float> max_abs = st->max_abs;
      if (g.input == LinearInput::kAttnOut) {
        // Folded into wv's rows: channels fed by the same kv channel must share one scale.
        for (size_t j = 0; j < dim; ++j) {
          const size_t kvc = (j / hd) / group_q * hd + j % hd;
          for (size_t h = 0; h < group_q; ++h) {
            const size_t other = ((kvc / hd) * group_q + h) * hd + kvc % hd;
            max_abs[j] = std::max(max_abs[j], st->max_abs[other]);
          }
        }
      }
      auto evaluate = [&](float alpha, double* bits, double* err) {
        std::vector<float> s = ScalesFor(max_abs, alpha);
        double b = 0, e = 0;
        for (const std::string& name : g.mats) {
          Matrix& m = find(name);
          QuantParams p;
          p.col_scale = s;
          std::vector<float> imp = Importance(max_abs, s);
          p.importance = imp;
          p.prune = m.prune;
          QuantizedMatrix q = QuantizeMatrix(m.w, m.rows, m.cols, p);
          b += CodeEntropyBits(q) * static_cast<double>(m.rows * m.cols);
          e += RelativeOutputError(st->sample, st->sample_rows(), m.w, q, s);
        }
        *bits = b;
        *err = e / static_cast<double>(g.mats.size());
      };
      float best_alpha = 0;
      if (fixed_alpha >= 0) {
        best_alpha = fixed_alpha;
      } else {
        double b0, e0;
        evaluate(0.0f, &b0, &e0);
        double best_bits = b0;
        for (float a : kAlphaCandidates) {
          if (a == 0) continue;
          double b, e;
          evaluate(a, &b, &e);
          if (e <= e0 && b < best_bits) best_bits = b, best_alpha = a;
        }
      }
      std::vector<float> s = ScalesFor(max_abs, best_alpha);
      for (const std::string& name : g.mats) {
        Matrix& m = find(name);
        m.alpha = best_alpha;
        if (best_alpha != 0) m.col_scale = s;
        m.importance = Importance(max_abs, s);
      }
      if (best_alpha != 0) {  // fold 1/s upstream
        auto n = [&](const char* w) { return LayerTensorName(g.layer, w); };
        auto div_vec = [&](std::vector<float>& v) {
          for (size_t j = 0; j < v.size(); ++j) v[j] /= s[j];
        };
        if (g.input == LinearInput::kAttnIn) div_vec(vecs[n("attn_norm.weight")].v);
        if (g.input == LinearInput::kFfnIn) div_vec(vecs[n("ffn_norm.weight")].v);
        if (g.input == LinearInput::kHeadIn) div_vec(vecs["output_norm.weight"].v);
        if (g.input == LinearInput::kAttnOut) {
          Matrix& v = find(n("attn_v.weight"));
          for (size_t r = 0; r < v.rows; ++r) {
            const float sr = s[(r / hd) * group_q * hd + r % hd];  // first q head of the group
            for (size_t c = 0; c < v.cols; ++c) v.w[r * v.cols + c] /= sr;
            if (cfg.qkv_bias) vecs[n("attn_v.bias")].v[r] /= sr;
          }
        }
        if (g.input == LinearInput::kFfnHidden) {
          Matrix& u = find(n("ffn_up.weight"));
          for (size_t r = 0; r < u.rows; ++r) {
            for (size_t c = 0; c < u.cols; ++c) u.w[r * u.cols + c] /= s[r];
          }
        }
      }
      progress("scaling", static_cast<double>(++done) / static_cast<double>(groups.size()));
    }
  }
  // m.w stays the (row-folded) f32 matrix: the quantizer applies col_scale itself, and output
  // errors are measured against X W^T, which the folded model computes exactly.

  // ----- quantize at step 1 ----------------------------------------------------------------------
  for (size_t i = 0; i < mats.size(); ++i) {
    Quantize(mats[i]);
    progress("quantize", static_cast<double>(i + 1) / static_cast<double>(mats.size()));
  }
  PackWeights qw(cfg, true);
  if (need_calib) LoadWeights(qw, mats, vecs, true);

  // ----- rate allocation -------------------------------------------------------------------------
  // Every matrix alone is tried at wider steps; its cost is the increase of KL(f32 || packed) on
  // (a subset of) the calibration tokens, its gain the entropy of its codes. A Lagrangian choice
  // spends the budget ln(1 + pct/100) - KL(INT8) where it buys the most bits; the combination is
  // then measured, and tightened until the measured KL fits.
  if (need_calib) {
    ASSIGN_OR_RETURN(rep.plain_int8_nll, MeanNll(&qw, &pool, calib, seq_len));
    rep.packed_nll = rep.plain_int8_nll;
    log("INT8 (after scaling/pruning) mean NLL " + Fmt("%.5f", rep.plain_int8_nll) + " (+" +
        Fmt("%.3f", 100 * (std::exp(rep.plain_int8_nll - rep.f32_nll) - 1)) + "% ppl over f32)");
  }
  if (need_calib && o.rate_alloc) {
    std::vector<std::vector<int32_t>> trial_seqs(
        calib.begin(), calib.begin() + static_cast<ptrdiff_t>(std::min<size_t>(calib.size(), 8)));
    ASSIGN_OR_RETURN(KlEvaluator kl, KlEvaluator::Create(&f32w, &pool, trial_seqs, seq_len));
    ASSIGN_OR_RETURN(const double kl_base, kl.Kl(&qw));
    const double limit = std::log1p(o.max_ppl_increase / 100);
    const double budget = limit - kl_base;
    log("rate allocation: KL(f32 || INT8) " + Fmt("%.5f", kl_base) + " nats, limit " +
        Fmt("%.5f", limit));
    if (budget > 0) {
      struct Option {
        float step;
        double bits, dkl;
      };
      std::vector<std::vector<Option>> opts(mats.size());
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
        progress("rate allocation", static_cast<double>(i + 1) / static_cast<double>(mats.size()));
      }
      auto choose = [&](double lambda, std::vector<size_t>* c) {
        double total = 0;
        for (size_t i = 0; i < mats.size(); ++i) {
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
      };
      double target = budget;
      bool fits = false;
      for (int attempt = 0; attempt < 8 && !fits; ++attempt) {
        // The smallest lambda (most bits saved) whose predicted KL increase fits the target.
        double lo = 1e-3, hi = 1e18;
        std::vector<size_t> choice(mats.size());
        for (int it = 0; it < 200 && hi / lo > 1.0001; ++it) {
          const double mid = std::sqrt(lo * hi);
          if (choose(mid, &choice) <= target) {
            hi = mid;
          } else {
            lo = mid;
          }
        }
        choose(hi, &choice);
        for (size_t i = 0; i < mats.size(); ++i) {
          if (mats[i].step != opts[i][choice[i]].step) {
            mats[i].step = opts[i][choice[i]].step;
            Quantize(mats[i]);
            qw.SetMatrix(mats[i], &mats[i].q);
          }
        }
        ASSIGN_OR_RETURN(double measured, kl.Kl(&qw));
        fits = measured <= limit;
        log("rate allocation: predicted KL +" + Fmt("%.5f", target) + ", measured total " +
            Fmt("%.5f", measured) + (fits ? " (fits)" : " (over the limit, tightening)"));
        target *= 0.8 * budget / std::max(measured - kl_base, 1e-12);
      }
      if (!fits) {
        for (Matrix& m : mats) {
          m.step = 1;
          Quantize(m);
          qw.SetMatrix(m, &m.q);
        }
        log("rate allocation: budget not met; every step left at 1");
      }
      ASSIGN_OR_RETURN(rep.packed_nll, MeanNll(&qw, &pool, calib, seq_len));
    } else {
      log("rate allocation: INT8 alone uses the budget; every step left at 1");
    }
  }

  // ----- entropy coding and the container --------------------------------------------------------
  ASSIGN_OR_RETURN(const std::vector<storage::Codec> cands, CodecCandidates(o));
  uint64_t done_bytes = 0, total_bytes = 0;
  for (const Matrix& m : mats) total_bytes += m.rows * m.cols;
  // Encodes `data` (whole rows) in blocks of rows_per_block rows, in parallel, and appends them.
  auto write_blocks = [&](TensorReport& tr, std::set<std::string>& used,
                          std::span<const uint8_t> data, size_t row_bytes,
                          size_t rows_per_block) -> Status {
    const size_t nblocks = (data.size() / row_bytes + rows_per_block - 1) / rows_per_block;
    std::vector<Encoded> enc(nblocks);
    std::vector<Status> st(nblocks);
    pool.ParallelFor(static_cast<int64_t>(nblocks), [&](int64_t b0, int64_t b1) {
      storage::BlockDecoder d;
      for (int64_t b = b0; b < b1; ++b) {
        const size_t off = static_cast<size_t>(b) * rows_per_block * row_bytes;
        const size_t len = std::min(data.size() - off, rows_per_block * row_bytes);
        Result<Encoded> e = EncodeBest(data.subspan(off, len), cands, o, &d);
        if (e.ok()) {
          enc[b] = std::move(*e);
        } else {
          st[b] = e.status();
        }
      }
    });
    for (size_t b = 0; b < nblocks; ++b) {
      RETURN_IF_ERROR(st[b]);
      const size_t off = b * rows_per_block * row_bytes;
      const size_t len = std::min(data.size() - off, rows_per_block * row_bytes);
      RETURN_IF_ERROR(writer->AddBlock(enc[b].codec, len, enc[b].bytes));
      tr.stored_bytes += enc[b].bytes.size();
      used.insert(storage::CodecName(enc[b].codec));
    }
    return Status::Ok();
  };
  auto join = [](const std::set<std::string>& used) {
    std::string s;
    for (const std::string& c : used) s += (s.empty() ? "" : "+") + c;
    return s;
  };
  auto write_vector = [&](const Vector& v) -> Status {
    pb::Tensor t;
    t.set_name(v.name);
    t.set_type(pb::TENSOR_F32);
    t.set_rows(1);
    t.set_cols(static_cast<int64_t>(v.v.size()));
    t.set_layer(v.layer);
    t.set_rows_per_block(1);
    writer->BeginTensor(t);
    TensorReport tr;
    tr.name = v.name;
    tr.layer = v.layer;
    tr.params = static_cast<int64_t>(v.v.size());
    tr.int8_bytes = v.v.size() * 4;
    std::set<std::string> used;
    RETURN_IF_ERROR(write_blocks(tr, used,
                                 {reinterpret_cast<const uint8_t*>(v.v.data()), v.v.size() * 4},
                                 v.v.size() * 4, 1));
    tr.codecs = join(used);
    rep.tensors.push_back(tr);
    return Status::Ok();
  };
  auto write_matrix = [&](const Matrix& m) -> Status {
    pb::Tensor t;
    t.set_name(m.name);
    t.set_type(pb::TENSOR_Q8_ROW);
    t.set_rows(static_cast<int64_t>(m.rows));
    t.set_cols(static_cast<int64_t>(m.cols));
    t.set_layer(m.layer);
    const size_t rpb = std::clamp<size_t>(o.block_bytes / m.cols, 1, m.rows);
    t.set_rows_per_block(static_cast<int64_t>(rpb));
    pb::QuantInfo* qi = t.mutable_quant();
    qi->set_alpha(m.alpha);
    qi->set_step_multiplier(m.step);
    qi->set_prune_ratio(m.prune);
    qi->set_max_code(m.q.max_code);
    qi->set_output_rel_error(m.err);
    qi->set_code_entropy_bits(m.entropy);
    writer->BeginTensor(t);
    TensorReport tr;
    tr.name = m.name;
    tr.layer = m.layer;
    tr.params = static_cast<int64_t>(m.rows * m.cols);
    tr.quantized = true;
    tr.int8_bytes = m.rows * m.cols + m.rows * 4;
    tr.alpha = m.alpha;
    tr.step_multiplier = m.step;
    tr.prune = m.prune;
    tr.output_rel_error = m.err;
    tr.entropy_bits = m.entropy;
    std::set<std::string> used;
    RETURN_IF_ERROR(write_blocks(tr, used,
                                 {reinterpret_cast<const uint8_t*>(m.q.scale.data()), m.rows * 4},
                                 m.rows * 4, m.rows));
    RETURN_IF_ERROR(write_blocks(
        tr, used, {reinterpret_cast<const uint8_t*>(m.q.codes.data()), m.q.codes.size()}, m.cols,
        rpb));
    tr.codecs = join(used);
    rep.tensors.push_back(tr);
    done_bytes += m.rows * m.cols;
    progress("entropy coding", static_cast<double>(done_bytes) / static_cast<double>(total_bytes));
    return Status::Ok();
  };
  for (const CanonicalTensor& t : order) {
    RETURN_IF_ERROR(t.rows == 1 ? write_vector(vecs.at(t.name)) : write_matrix(find(t.name)));
  }

  pb::Manifest man;
  *man.mutable_config() = ModelConfigToProto(cfg);
  *man.mutable_tokenizer() = TokenizerToProto(file->tokenizer());
  pb::PackInfo* pi = man.mutable_pack_info();
  pi->set_source(o.input);
  pi->set_source_format(file->format());
  pi->set_tool_version(DCOMP_VERSION);
  pi->set_options(o.command_line);
  pi->set_calibration(rep.calibration);
  pi->set_f32_nll(rep.f32_nll);
  pi->set_packed_nll(rep.packed_nll);
  RETURN_IF_ERROR(writer->Finish(man));

  for (const TensorReport& t : rep.tensors) {
    rep.f32_bytes += static_cast<uint64_t>(t.params) * 4;
    rep.int8_bytes += t.int8_bytes;
    rep.stored_bytes += t.stored_bytes;
  }
  rep.file_bytes = writer->file_bytes();
  rep.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  return rep;
}

std::string FormatPackReport(const PackReport& r) {
  std::string s;
  char line[256];
  std::snprintf(line, sizeof(line), "%-28s %10s %10s %10s %6s %-9s %5s %5s %5s %8s %6s\n", "tensor",
                "params", "int8 B", "stored B", "ratio", "codec", "alpha", "step", "prune",
                "out err", "bits/w");
  s += line;
  for (const TensorReport& t : r.tensors) {
    const double ratio = t.stored_bytes ? static_cast<double>(t.int8_bytes) / t.stored_bytes : 0;
    if (t.quantized) {
      std::snprintf(
          line, sizeof(line), "%-28s %10lld %10llu %10llu %6.3f %-9s %5.3f %5.2f %5.2f %8s %6.3f\n",
          t.name.c_str(), static_cast<long long>(t.params),
          static_cast<unsigned long long>(t.int8_bytes),
          static_cast<unsigned long long>(t.stored_bytes), ratio, t.codecs.c_str(), t.alpha,
          t.step_multiplier, t.prune,
          t.output_rel_error < 0 ? "-" : Fmt("%.5f", t.output_rel_error).c_str(), t.entropy_bits);
    } else {
      std::snprintf(line, sizeof(line), "%-28s %10lld %10llu %10llu %6.3f %-9s\n", t.name.c_str(),
                    static_cast<long long>(t.params), static_cast<unsigned long long>(t.int8_bytes),
                    static_cast<unsigned long long>(t.stored_bytes), ratio, t.codecs.c_str());
    }
    s += line;
  }
  std::snprintf(line, sizeof(line),
                "total: f32 %llu B, INT8 %llu B, stored blocks %llu B (%.3fx smaller than INT8), "
                "file %llu B (%.3fx)\n",
                static_cast<unsigned long long>(r.f32_bytes),
                static_cast<unsigned long long>(r.int8_bytes),
                static_cast<unsigned long long>(r.stored_bytes),
                static_cast<double>(r.int8_bytes) / static_cast<double>(r.stored_bytes),
                static_cast<unsigned long long>(r.file_bytes),
                static_cast<double>(r.int8_bytes) / static_cast<double>(r.file_bytes));
  s += line;
  if (r.f32_nll > 0) {
    std::snprintf(line, sizeof(line),
                  "calibration NLL: f32 %.5f, INT8 %.5f (+%.3f%% ppl), packed %.5f (+%.3f%% ppl)\n",
                  r.f32_nll, r.plain_int8_nll, 100 * (std::exp(r.plain_int8_nll - r.f32_nll) - 1),
                  r.packed_nll, 100 * (std::exp(r.packed_nll - r.f32_nll) - 1));
    s += line;
  }
  if (r.synthetic) s += "SYNTHETIC weights: for speed and memory benchmarks only\n";
  return s;
}

}  // namespace dcomp::packer
