// Pack stage 5: rate allocation. The INT8 model's NLL is measured; then every matrix alone is tried
// at narrower code widths (7, 6, 5, 4 bits, each with its best clip), and per-matrix widths are
// chosen under the --max-ppl-increase budget so as to minimise the packed (RAM) size. A matrix
// whose rows are tokens (the embedding, the output) is split into groups of rows, each with its own
// width, when its 7-bit codes cost little: rare tokens need fewer bits than common ones.

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "base/packed_codes.h"
#include "engine/generate.h"
#include "engine/layer_schema.h"
#include "packer/internal/pack_state.h"
#include "packer/internal/pack_util.h"

namespace dcomp::packer::internal {
namespace {

// The residual stream of an evaluation's steps (ResidualTap), one vector per point: each holds
// the concatenation of its steps' rows. Steps come in the same order in every pass (the same
// sequences, chunked the same way), so a replay reads them back in order.
using ResidualRecord = std::vector<std::vector<float>>;

// Records every `stride`-th point of a pass from the embeddings.
class Recorder : public ResidualTap {
 public:
  Recorder(ResidualRecord* rec, int stride) : rec_(rec), stride_(stride) {
    for (auto& r : *rec) r.clear();
  }
  int StartPoint() override { return 0; }
  void Load(int, float*, size_t, size_t) override {}
  void Passed(int point, const float* x, size_t n, size_t dim) override {
    if (point == 0 || point % stride_ != 0) return;
    std::vector<float>& r = (*rec_)[static_cast<size_t>(point)];
    r.insert(r.end(), x, x + n * dim);
  }

 private:
  ResidualRecord* rec_;
  int stride_;
};

// Starts every step of a pass at recorded point `start`.
class Replayer : public ResidualTap {
 public:
  Replayer(const ResidualRecord* rec, int start) : rec_(rec), start_(start) {}
  int StartPoint() override { return start_; }
  void Load(int point, float* x, size_t n, size_t dim) override {
    const std::vector<float>& r = (*rec_)[static_cast<size_t>(point)];
    std::copy_n(r.begin() + static_cast<ptrdiff_t>(cursor_), n * dim, x);
    cursor_ += n * dim;
  }
  void Passed(int, const float*, size_t, size_t) override {}

 private:
  const ResidualRecord* rec_;
  int start_;
  size_t cursor_ = 0;
};

// The residual record keeps at most this many bytes (every point of stories3M's 4,096 trial tokens:
// 36 MiB; TinyLlama-1.1B's 2,048: 740 MiB, kept at every third point).
constexpr size_t kMaxRecordBytes = size_t{256} << 20;

// The f32 model's probabilities are kept beside its log-probabilities up to this many bytes
// (stories3M's 4,096 trial tokens: 128 MiB; TinyLlama-1.1B's vocabulary would need 500 MiB and
// computes them in each pass instead).
constexpr size_t kMaxProbabilityBytes = size_t{256} << 20;

// The KL trials run on the first calibration sequences, at least kMinTrialSequences and more
// while they hold at most kMaxTrialTokens tokens and their f32 log-probabilities fit
// kMaxTrialLogitBytes: the first 4,096 of stories3M's default 8,192 calibration tokens (16 x 256),
// 8 sequences of TinyLlama-1.1B's (its 32,000-token vocabulary). Over six calibration seeds, 16
// sequences rather than 8 held stories3M 0.02 bits/weight smaller at the same perplexity on both
// halves of the dev text, with less spread between seeds; 32 (of 8,192 tokens) took 2.5x the
// packing time for no clear gain (BENCHMARKS.md).
constexpr size_t kMaxTrialLogitBytes = size_t{256} << 20;
constexpr size_t kMaxTrialTokens = 4096;
constexpr size_t kMinTrialSequences = 8;

size_t TrialSequences(const std::vector<std::vector<int32_t>>& calib, int32_t vocab) {
  size_t n = 0, tokens = 0;
  for (const auto& seq : calib) {
    tokens += seq.size();
    const size_t bytes = tokens * static_cast<size_t>(std::max(vocab, 1)) * sizeof(float);
    if (n >= kMinTrialSequences && (tokens > kMaxTrialTokens || bytes > kMaxTrialLogitBytes)) break;
    ++n;
  }
  return n;
}

// Per token below `vocab`, the share of the tokens of `seqs` that are it.
std::vector<double> TokenShares(const std::vector<std::vector<int32_t>>& seqs, size_t vocab) {
  std::vector<double> f(vocab, 0.0);
  size_t n = 0;
  for (const auto& seq : seqs) n += seq.size();
  for (const auto& seq : seqs) {
    for (int32_t t : seq) {
      if (t >= 0 && static_cast<size_t>(t) < vocab)
        f[static_cast<size_t>(t)] += 1.0 / static_cast<double>(n);
    }
  }
  return f;
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
    const ModelConfig& cfg = f32->config();
    k.vocab_ = static_cast<size_t>(cfg.vocab_size);
    ASSIGN_OR_RETURN(auto tf, Transformer::Create(f32, pool, ctx));
    std::vector<float> logits;
    size_t tokens = 0;
    for (const auto& s : k.seqs_) tokens += s.size();
    k.ref_.reserve(tokens * k.vocab_);
    for (const auto& s : k.seqs_) {
      tf->Reset();
      RETURN_IF_ERROR(tf->Forward(s, true, &logits));
      for (size_t t = 0; t < s.size(); ++t) {
        k.ref_.insert(k.ref_.end(), logits.begin() + static_cast<ptrdiff_t>(t * k.vocab_),
                      logits.begin() + static_cast<ptrdiff_t>((t + 1) * k.vocab_));
        LogSoftmax(k.ref_.data() + k.ref_.size() - k.vocab_, k.vocab_);
      }
    }
    // The f32 model's probabilities, exp of its log-probabilities, once for every pass's KL sums
    // (computed in each pass, they took 12% of a stories3M pack on a Zen 1 core), when they fit.
    if (k.ref_.size() * sizeof(double) <= kMaxProbabilityBytes) {
      k.ref_prob_.resize(k.ref_.size());
      pool->ParallelFor(
          static_cast<int64_t>(k.ref_.size()),
          [&](int64_t b, int64_t e) {
            for (auto i = static_cast<size_t>(b); i < static_cast<size_t>(e); ++i)
              k.ref_prob_[i] = ProbabilityOf(k.ref_[i]);
          },
          4096);
    }
    const size_t points = 2 * static_cast<size_t>(cfg.n_layers);
    const size_t bytes = points * tokens * static_cast<size_t>(cfg.dim) * sizeof(float);
    k.stride_ =
        static_cast<int>(std::max<size_t>(1, (bytes + kMaxRecordBytes - 1) / kMaxRecordBytes));
    k.record_.resize(points + 1);
    return k;
  }

  // The KL of `w` from the embeddings on.
  Result<double> Kl(WeightSource* w) const { return Run(w, nullptr); }

  // Kl(w), recording the residuals on the way for KlFrom.
  Result<double> Record(WeightSource* w) {
    Recorder tap(&record_, stride_);
    recorded_ = false;
    ASSIGN_OR_RETURN(const double kl, Run(w, &tap));
    recorded_ = true;
    return kl;
  }

  // Kl(w), bit for bit, when w holds the weights of the last Record() before point `point`
  // (ResidualTap): the pass starts at the latest recorded point at or before it.
  Result<double> KlFrom(WeightSource* w, int point) const {
    const int start = recorded_ ? point / stride_ * stride_ : 0;
    if (start <= 0) return Run(w, nullptr);
    Replayer tap(&record_, start);
    return Run(w, &tap);
  }

  // Frees the record (KlFrom then runs whole passes).
  void DropRecord() {
    record_ = ResidualRecord(record_.size());
    recorded_ = false;
  }

  // Per token, the f32 model's mean probability of it over the evaluated positions.
  std::vector<double> MeanProbability() const {
    std::vector<double> p(vocab_, 0.0);
    const size_t positions = vocab_ ? ref_.size() / vocab_ : 0;
    for (size_t pos = 0; pos < positions; ++pos) {
      for (size_t v = 0; v < vocab_; ++v) p[v] += Probability(pos * vocab_ + v);
    }
    for (double& x : p) x /= static_cast<double>(std::max<size_t>(positions, 1));
    return p;
  }

  // Per token, the share of the evaluated positions whose input it is.
  std::vector<double> InputFrequency() const { return TokenShares(seqs_, vocab_); }

 private:
  Result<double> Run(WeightSource* w, ResidualTap* tap) const {
    ASSIGN_OR_RETURN(auto tf, Transformer::Create(w, pool_, ctx_));
    tf->set_residual_tap(tap);
    std::vector<float> logits;
    std::vector<double> kl;
    double sum = 0;
    size_t pos = 0, count = 0;
    for (const auto& s : seqs_) {
      tf->Reset();
      RETURN_IF_ERROR(tf->Forward(s, true, &logits));
      // Each position's KL on the pool, summed in order (the same sum whatever the threads).
      kl.assign(s.size(), 0.0);
      pool_->ParallelFor(static_cast<int64_t>(s.size()), [&](int64_t b, int64_t e) {
        for (size_t t = static_cast<size_t>(b); t < static_cast<size_t>(e); ++t) {
          float* q = logits.data() + t * vocab_;
          LogSoftmax(q, vocab_);
          const size_t at = (pos + t) * vocab_;
          kl[t] = KlTerm(ref_.data() + at, ref_prob_.empty() ? nullptr : ref_prob_.data() + at, q,
                         vocab_);
        }
      });
      for (double d : kl) sum += d;
      pos += s.size();
      count += s.size();
    }
    return count ? sum / static_cast<double>(count) : 0.0;
  }
  // ProbabilityOf(ref_[i]), kept or computed: the same double either way.
  double Probability(size_t i) const {
    return ref_prob_.empty() ? ProbabilityOf(ref_[i]) : ref_prob_[i];
  }
  static void LogSoftmax(float* x, size_t n) {
    const float lz = static_cast<float>(LogSumExp({x, n}));
    for (size_t i = 0; i < n; ++i) x[i] -= lz;
  }
  std::vector<std::vector<int32_t>> seqs_;
  std::vector<float> ref_;        // [position][vocab] log-probabilities of the f32 model
  std::vector<double> ref_prob_;  // their exp, or empty when over kMaxProbabilityBytes
  ThreadPool* pool_ = nullptr;
  int32_t ctx_ = 0;
  size_t vocab_ = 0;
  ResidualRecord record_;  // [point][tokens][dim], every stride_-th point
  int stride_ = 1;
  bool recorded_ = false;
};

// The first residual point (ResidualTap) whose pass reads matrix `m`: a pass from there computes
// everything `m` changes.
int FirstPointReading(const Matrix& m, const ModelConfig& cfg) {
  if (const LayerMatrix* lm = FindLayerMatrix(m.name); lm != nullptr) {
    const bool ffn = lm->input == LinearInput::kFfnIn || lm->input == LinearInput::kFfnHidden;
    return 2 * m.layer + (ffn ? 1 : 0);
  }
  // The output matrix alone is read after the last layer; the embedding (tied or not) first.
  return m.layer == cfg.n_layers && MatrixRole(m.name) == "output" ? 2 * cfg.n_layers : 0;
}

// One code width of one matrix: its packed bits (the objective), the order-0 entropy of its codes
// (what entropy coding stores; reported) and the KL increase it costs alone, of which `charged` is
// expected beyond what the trials measure (SplitIntoGroups).
struct Option {
  int bits;
  float clip;
  double packed_bits, entropy_bits, dkl;
  double charged = 0;
};
// What one list of options sets: a whole matrix (group < 0) or one group of its rows.
struct Part {
  size_t matrix;
  int group;
};

struct Options {
  std::vector<std::vector<Option>> o;  // per part, widest first
  std::vector<Part> parts;
  size_t size() const { return o.size(); }
  const std::vector<Option>& operator[](size_t i) const { return o[i]; }
};

// The token matrices (rows: the vocabulary) of at least kGroupMinRows rows are split into
// kRowGroups groups of rows when their 7-bit codes cost at most kGroupShare of the budget (each
// group's options are then measured).
constexpr size_t kGroupMinRows = 256;
constexpr size_t kRowGroups = 16;
constexpr double kGroupShare = 0.5;

bool IsTokenMatrix(const Matrix& m) {
  const std::string_view role = MatrixRole(m.name);
  return role == "token_embd" || role == "output";
}

// The rows of token matrix `m` by use on the calibration text, most used first (ties in token
// order): as input, how often each token appears; as output, the f32 model's mean probability of
// each token (both per position; `mean_probability` is KlEvaluator::MeanProbability()). Groups
// of rows then hold tokens of like use.
std::vector<uint32_t> RowsByUse(const PackState& s, const std::vector<double>& mean_probability,
                                const Matrix& m) {
  const std::string_view role = MatrixRole(m.name);
  std::vector<double> use =
      role == "token_embd" ? TokenShares(s.calib, m.rows) : std::vector<double>(m.rows, 0.0);
  if (role == "output" || (role == "token_embd" && s.cfg.tied_output)) {
    for (size_t r = 0; r < std::min(mean_probability.size(), m.rows); ++r)
      use[r] += mean_probability[r];
  }
  std::vector<uint32_t> order(m.rows);
  for (size_t r = 0; r < m.rows; ++r) order[r] = static_cast<uint32_t>(r);
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return use[a] > use[b]; });
  return order;
}

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
// at their current codes, which must be those of kl's record: each pass starts at the first
// residual point that reads the matrix tried.
Result<Options> WidthOptions(PackState& s, const KlEvaluator& kl, double kl_base, double budget) {
  std::vector<Matrix>& mats = s.mats;
  PackWeights& qw = *s.qw;
  Options o;
  o.o.resize(mats.size());
  std::vector<std::vector<Option>>& opts = o.o;
  for (size_t i = 0; i < mats.size(); ++i) {
    o.parts.push_back({i, -1});
    Matrix& m = mats[i];
    const double n = static_cast<double>(m.rows * m.cols);
    opts[i].push_back({8, 1.0f, 8 * n, m.entropy * n, 0.0, 0.0});
    const GptqFactor g = GptqFactorOf(m);  // one factor for every width
    const std::vector<float> ms = g.cols != 0 ? std::vector<float>() : InputMeanSquare(m);
    for (int bits = 7; bits >= kMinPackedBits; --bits) {
      QuantParams p = ParamsOf(m);
      p.bits = bits;
      UseGptq(g, &p);  // as Quantize does
      if (g.cols == 0) p.clip = ChooseClip(m.w, m.rows, m.cols, p, ms, kClipCandidates);
      QuantizedMatrix q = QuantizeMatrix(m.w, m.rows, m.cols, p);
      qw.SetMatrix(m, &q);
      ASSIGN_OR_RETURN(double d, kl.KlFrom(&qw, FirstPointReading(m, s.cfg)));
      opts[i].push_back(
          {bits, p.clip, bits * n, CodeEntropyBits(q) * n, std::max(0.0, d - kl_base), 0.0});
      if (d - kl_base > budget) break;  // narrower widths only cost more
    }
    qw.SetMatrix(m, &m.q);
    s.Progress("rate allocation", static_cast<double>(i + 1) / static_cast<double>(mats.size()));
  }
  return o;
}

// One width of one group of rows, measured.
struct GroupTrial {
  int bits;
  float clip;
  double entropy_bits;
  double dkl;     // the measured KL increase over the whole matrix at 7 bits
  double input;   // its input side (the embedding's rows as read at the model's input)
  double seen;    // sum over the group's tokens of f_t * (e_t - e7_t)
  double unseen;  // sum over the group's tokens of missed_t * (e_t - e7_t) (MissedInputShare)
};

// The token matrices of at least kGroupMinRows rows whose 7-bit codes cost at most kGroupShare of
// the budget are split into kRowGroups groups of rows held at 7 bits; each group alone is then
// tried at narrower widths (the others at 7), its options' increases measured from the whole matrix
// at 7 bits, whose own increase is shared among the groups by their rows. The matrix's options are
// replaced by its groups'.
//
// The rows of an embedding are also read as the model's input, and there the trials see a row only
// where its token occurs: most of a vocabulary never does in a few thousand tokens (80% of
// stories3M's 4096 tokens in 4096), so a group of rare tokens would measure nearly free at any
// width and cost on other text. Its input side is charged for the occurrences the trials missed.
// Per occurrence, a row's input cost is taken as eta * e_t, e_t its codes' relative squared error
// (a perturbation of the residual stream in proportion to its size). eta is fitted on what the
// trials do measure: the input sides of every group's trials (the measured increase less, for a
// tied embedding, its output side, from a pass that replays the residual stream up to the output)
// against sum_t f_t (e_t - e7_t), f_t the token's share of the trial inputs. Each option is then
// charged eta * sum_t missed_t (e_t - e7_t) (MissedInputShare), which counts toward the budget
// like measured KL (Apply). Groups without such a charge go no narrower than
// kUnchargedGroupMinBits: an embedding's when no input side was measured, and an untied output's
// (its rows are measured at every position, but on the calibration's distribution of tokens).
constexpr int kUnchargedGroupMinBits = 6;

Status SplitIntoGroups(PackState& s, KlEvaluator& kl, double kl_base, double budget, Options* o) {
  Options out;
  double kl_now = kl_base;  // the KL of the matrices as they stand (split ones back at 7 bits)
  const std::vector<double> freq = kl.InputFrequency();
  const std::vector<double> prob = kl.MeanProbability();
  const int head_point = 2 * s.cfg.n_layers;  // ResidualTap: the output matrix's input
  for (size_t i = 0; i < o->size(); ++i) {
    Matrix& m = s.mats[o->parts[i].matrix];
    const Option* seven = nullptr;
    for (const Option& op : (*o)[i]) seven = op.bits == 7 ? &op : seven;
    if (!IsTokenMatrix(m) || m.rows < kGroupMinRows || seven == nullptr ||
        seven->dkl > kGroupShare * budget) {
      out.o.push_back((*o)[i]);
      out.parts.push_back(o->parts[i]);
      continue;
    }
    const bool input = MatrixRole(m.name) == "token_embd";
    const bool tied_input = input && s.cfg.tied_output;
    const double kl_before = kl_now;  // another token matrix may already be at 7 bits
    m.row_order = RowsByUse(s, prob, m);
    m.group_rows = RowsPerGroup(m.rows, kRowGroups);
    const size_t groups = GroupCount(m.rows, m.group_rows);
    m.group_bits.assign(groups, 7);
    m.group_clip.assign(groups, seven->clip);
    Quantize(m);
    s.qw->SetMatrix(m, &m.q);
    // Recorded when the output side is to be told from the input side.
    ASSIGN_OR_RETURN(const double kl7, tied_input ? kl.Record(s.qw.get()) : kl.Kl(s.qw.get()));
    std::vector<double> e7;      // per row, its relative error at 7 bits
    std::vector<double> missed;  // per row, its expected input share where the trials saw none
    if (input) {
      e7.resize(m.rows);
      for (size_t r = 0; r < m.rows; ++r) e7[r] = RowRelativeError(m, r);
      missed = MissedInputShare(m, freq, prob);
    }
    const GptqFactor f = GptqFactorOf(m);
    const std::vector<float> ms = f.cols != 0 ? std::vector<float>() : InputMeanSquare(m);
    std::vector<std::vector<GroupTrial>> trials(groups);
    for (size_t g = 0; g < groups; ++g) {
      const size_t rows = GroupSize(m, g);
      trials[g].push_back(
          {7, seven->clip, CodeEntropyBits(GroupRows(m, m.q.codes, g)), 0.0, 0.0, 0.0, 0.0});
      for (int bits = 6; bits >= (input ? kMinPackedBits : kUnchargedGroupMinBits); --bits) {
        m.group_bits[g] = bits;
        if (f.cols == 0) {
          QuantParams p = ParamsOf(m);
          p.bits = bits;
          m.group_clip[g] = ChooseClip(GroupRows(m, m.w, g), rows, m.cols, p, ms, kClipCandidates);
        }
        QuantizeGroup(m, g, f);
        s.qw->SetMatrix(m, &m.q);
        ASSIGN_OR_RETURN(const double d, kl.Kl(s.qw.get()));
        GroupTrial t{
            bits, m.group_clip[g], CodeEntropyBits(GroupRows(m, m.q.codes, g)), d - kl7, 0.0, 0.0,
            0.0};
        if (input) {
          t.input = t.dkl;
          if (tied_input) {
            // The residual stream as recorded (this group's input rows at 7 bits) up to the output:
            // the output side alone.
            ASSIGN_OR_RETURN(const double head, kl.KlFrom(s.qw.get(), head_point));
            t.input -= head - kl7;
          }
          for (size_t k = 0; k < rows; ++k) {
            const size_t r = GroupRow(m, g, k);
            const double de = RowRelativeError(m, r) - e7[r];
            t.seen += freq[r] * de;
            t.unseen += missed[r] * de;
          }
        }
        trials[g].push_back(t);
        if (d - kl7 > budget) break;
      }
      m.group_bits[g] = 7;
      m.group_clip[g] = seven->clip;
      QuantizeGroup(m, g, f);
      s.qw->SetMatrix(m, &m.q);
    }
    if (tied_input) kl.DropRecord();
    double input_sum = 0, seen_sum = 0;
    for (const auto& gt : trials) {
      for (const GroupTrial& t : gt) input_sum += t.input, seen_sum += t.seen;
    }
    const bool fitted = input_sum > 0 && seen_sum > 0;
    const double eta = input && fitted ? input_sum / seen_sum : 0.0;
    const int min_bits = input && fitted ? kMinPackedBits : kUnchargedGroupMinBits;
    std::string log = "rate allocation: " + m.name + " in " + std::to_string(groups) +
                      " groups of " + std::to_string(m.group_rows) + " rows (at 7 bits: KL +" +
                      Fmt("%.5f", kl7 - kl_before) + ")";
    if (input) {
      log += fitted ? "; input cost per occurrence " + Fmt("%.4g", eta) +
                          " x relative error, charged for occurrences the trials missed"
                    : "; no input cost measured: groups at " +
                          std::to_string(kUnchargedGroupMinBits) + " bits or more";
    }
    s.Log(log);
    for (size_t g = 0; g < groups; ++g) {
      const size_t rows = GroupSize(m, g);
      const double n = static_cast<double>(rows * m.cols);
      const double share =
          std::max(0.0, kl7 - kl_before) * static_cast<double>(rows) / static_cast<double>(m.rows);
      std::vector<Option> go;
      for (const GroupTrial& t : trials[g]) {
        if (t.bits < min_bits) break;
        const double charged = eta * std::max(0.0, t.unseen);
        go.push_back({t.bits, t.clip, t.bits * n, t.entropy_bits * n,
                      share + std::max(0.0, t.dkl) + charged, charged});
      }
      out.o.push_back(std::move(go));
      out.parts.push_back({o->parts[i].matrix, static_cast<int>(g)});
    }
    kl_now = kl7;  // every group back at 7 bits
  }
  *o = std::move(out);
  return Status::Ok();
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

// The Lagrangian choice whose predicted KL increase (the sum of the single-matrix increases) is at
// most `target`: the smallest lambda (most bits saved) that fits it.
std::vector<size_t> ChoiceFor(const Options& opts, double target) {
  double lo = 1e-3, hi = 1e18;
  std::vector<size_t> choice(opts.size());
  for (int it = 0; it < 200 && hi / lo > 1.0001; ++it) {
    const double mid = std::sqrt(lo * hi);
    if (Choose(opts, mid, &choice) <= target) {
      hi = mid;
    } else {
      lo = mid;
    }
  }
  Choose(opts, hi, &choice);
  return choice;
}

// Sets every matrix to its option in `choice` (re-quantizing those that change) and returns the
// measured KL of the whole combination plus its options' charges (what the trials cannot measure).
Result<double> Apply(PackState& s, const KlEvaluator& kl, const Options& opts,
                     const std::vector<size_t>& choice) {
  std::vector<Matrix>& mats = s.mats;
  std::vector<bool> changed(mats.size(), false);
  for (size_t i = 0; i < opts.size(); ++i) {
    const Option& o = opts[i][choice[i]];
    Matrix& m = mats[opts.parts[i].matrix];
    const int g = opts.parts[i].group;
    int& bits = g < 0 ? m.bits : m.group_bits[static_cast<size_t>(g)];
    float& clip = g < 0 ? m.clip : m.group_clip[static_cast<size_t>(g)];
    if (bits != o.bits || clip != o.clip) {
      bits = o.bits;
      clip = o.clip;
      changed[opts.parts[i].matrix] = true;
    }
  }
  for (size_t i = 0; i < mats.size(); ++i) {
    if (!changed[i]) continue;
    Quantize(mats[i]);
    s.qw->SetMatrix(mats[i], &mats[i].q);
  }
  double charged = 0;
  for (size_t i = 0; i < opts.size(); ++i) charged += opts[i][choice[i]].charged;
  ASSIGN_OR_RETURN(const double measured, kl.Kl(s.qw.get()));
  return measured + charged;
}

// The predicted KL increase of a choice: the sum of its options' single-matrix increases.
double Predicted(const Options& opts, const std::vector<size_t>& choice) {
  double sum = 0;
  for (size_t i = 0; i < opts.size(); ++i) sum += opts[i][choice[i]].dkl;
  return sum;
}

// The Lagrangian choices are the lower convex hull of (bits, predicted KL): between two of them
// the budget can be left largely unspent (one large matrix changing width moves the sum a lot).
// This spends what the measurement of `cur` left: single-width narrowing steps, fewest predicted
// KL per bit saved first, one per matrix, while their predicted sum (scaled by measured over
// predicted of `cur`) fits what is left; measured, kept if the whole still fits, else undone and
// tried again with half the room. Up to 3 rounds. Returns true (the matrices stay at a choice that
// fits).
Result<bool> FillBudget(PackState& s, const KlEvaluator& kl, const Options& opts, double kl_base,
                        double limit, std::vector<size_t> cur, double cur_measured) {
  double share = 1;  // of the room left, halved after a fill that did not fit
  bool at_cur = true;
  for (int round = 0; round < 3; ++round) {
    const double pred = Predicted(opts, cur);
    const double per_pred =
        pred > 0 && cur_measured > kl_base ? (cur_measured - kl_base) / pred : 1;
    const double room = share * (limit - cur_measured) / per_pred;
    struct Step {
      size_t matrix;
      double kl_per_bit, dkl;
    };
    std::vector<Step> steps;
    for (size_t i = 0; i < opts.size(); ++i) {
      const size_t k = cur[i];
      if (k + 1 >= opts[i].size()) continue;
      const double bits = opts[i][k].packed_bits - opts[i][k + 1].packed_bits;
      const double dkl = std::max(0.0, opts[i][k + 1].dkl - opts[i][k].dkl);
      if (bits > 0) steps.push_back({i, dkl / bits, dkl});
    }
    std::stable_sort(steps.begin(), steps.end(),
                     [](const Step& a, const Step& b) { return a.kl_per_bit < b.kl_per_bit; });
    std::vector<size_t> trial = cur;
    double spent = 0;
    for (const Step& st : steps) {
      if (spent + st.dkl > room) continue;
      spent += st.dkl;
      ++trial[st.matrix];
    }
    if (trial == cur) break;
    ASSIGN_OR_RETURN(const double measured, Apply(s, kl, opts, trial));
    const bool fits = measured <= limit;
    s.Log("rate allocation: filling the budget, predicted KL +" + Fmt("%.5f", pred + spent) +
          ", measured total " + Fmt("%.5f", measured) + (fits ? " (fits)" : " (over the limit)"));
    at_cur = fits;
    if (!fits) {
      share *= 0.5;
      continue;
    }
    cur = std::move(trial);
    cur_measured = measured;
  }
  if (!at_cur) RETURN_IF_ERROR(Apply(s, kl, opts, cur).status());
  return true;
}

// Searches the Lagrangian choice whose measured combination fits the limit most closely. The
// single-matrix increases do not add up exactly (interactions), so each measurement corrects the
// next target: a secant step on the predicted increase, kept strictly between the largest
// prediction known to fit and the smallest known not to (bisected when the step leaves that
// interval or lands on a choice already measured). At most 10 measurements, fewer once the
// measured increase is within 3% below the budget or no untried choice lies in the interval.
// Leaves the matrices at the best choice that fits; returns whether one did (the widest choice,
// every matrix at 8 bits and every token matrix's groups at 7, costing at most half the budget
// each, nearly always fits; when nothing does, AllocateRates puts every matrix back at 8 bits).
Result<bool> ApplyChoice(PackState& s, const KlEvaluator& kl, const Options& opts, double kl_base,
                         double limit, double budget) {
  double fit_pred = -1, over_pred = 1e300;  // fit_pred < 0: nothing measured fits yet
  double target = budget;
  std::vector<size_t> best, last;
  double best_measured = 0;
  for (int attempt = 0; attempt < 10; ++attempt) {
    // The choice for `target`, moved inside (fit_pred, over_pred) by bisection if need be.
    std::vector<size_t> choice = ChoiceFor(opts, target);
    double pred = Predicted(opts, choice);
    for (int i = 0; i < 40 && (pred >= over_pred || pred <= fit_pred); ++i) {
      if (pred >= over_pred) {  // too high: halfway down to the largest fitting prediction
        target = 0.5 * (std::max(fit_pred, 0.0) + std::min(target, over_pred));
      } else {  // too low: halfway up to the smallest prediction over the limit
        const double lo = std::max(target, fit_pred);
        target = over_pred < 1e300 ? 0.5 * (lo + over_pred) : 2 * lo;
      }
      choice = ChoiceFor(opts, target);
      pred = Predicted(opts, choice);
    }
    if (pred >= over_pred || (pred <= fit_pred && !best.empty())) break;  // nothing untried
    ASSIGN_OR_RETURN(const double measured, Apply(s, kl, opts, choice));
    last = choice;
    const bool fits = measured <= limit;
    s.Log("rate allocation: predicted KL +" + Fmt("%.5f", pred) + ", measured total " +
          Fmt("%.5f", measured) + (fits ? " (fits)" : " (over the limit)"));
    if (fits) {
      fit_pred = pred;
      best_measured = measured;
      best = std::move(choice);
      if (measured - kl_base >= 0.97 * budget) break;
    } else {
      over_pred = pred;
    }
    target = pred * budget / std::max(measured - kl_base, 1e-12);
  }
  if (best.empty()) return false;
  if (last != best) {
    ASSIGN_OR_RETURN(best_measured, Apply(s, kl, opts, best));
    s.Log("rate allocation: back to predicted KL +" + Fmt("%.5f", fit_pred) + ", measured total " +
          Fmt("%.5f", best_measured) + " (fits)");
  }
  return FillBudget(s, kl, opts, kl_base, limit, std::move(best), best_measured);
}

}  // namespace

// Every matrix alone is tried at narrower widths; its cost is the increase of KL(f32 || packed) on
// (a subset of) the calibration tokens, its gain the packed bits it saves. A Lagrangian choice
// spends the budget ln(1 + pct/100) - KL(INT8) where it buys the most bits; the combination is
// then measured and corrected until it fits (ApplyChoice), and what it left is spent (FillBudget).
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
      calib.begin(),
      calib.begin() + static_cast<ptrdiff_t>(TrialSequences(calib, s.cfg.vocab_size)));
  ASSIGN_OR_RETURN(KlEvaluator kl,
                   KlEvaluator::Create(s.f32w.get(), s.pool.get(), trial_seqs, s.seq_len));
  ASSIGN_OR_RETURN(const double kl_base, kl.Record(s.qw.get()));
  const double limit = std::log1p(o.max_ppl_increase / 100);
  const double budget = limit - kl_base;
  s.Log("rate allocation: KL(f32 || INT8) " + Fmt("%.5f", kl_base) + " nats, limit " +
        Fmt("%.5f", limit));
  if (!(budget > 0)) {  // a NaN budget included
    s.Log("rate allocation: INT8 alone uses the budget; every matrix left at 8 bits");
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(Options opts, WidthOptions(s, kl, kl_base, budget));
  kl.DropRecord();  // the passes below change the embedding or several matrices
  RETURN_IF_ERROR(SplitIntoGroups(s, kl, kl_base, budget, &opts));
  ASSIGN_OR_RETURN(const bool fits, ApplyChoice(s, kl, opts, kl_base, limit, budget));
  if (!fits) {
    for (Matrix& m : s.mats) {
      m.bits = 8;
      m.clip = 1;
      m.group_rows = 0;
      m.group_bits.clear();
      m.group_clip.clear();
      m.row_order.clear();
      Quantize(m);
      s.qw->SetMatrix(m, &m.q);
    }
    s.Log("rate allocation: budget not met; every matrix left at 8 bits");
  }
  ASSIGN_OR_RETURN(rep.packed_nll, MeanNll(s.qw.get(), s.pool.get(), calib, s.seq_len));
  return Status::Ok();
}

}  // namespace dcomp::packer::internal
