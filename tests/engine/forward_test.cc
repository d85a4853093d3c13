// The transformer against a naive float64 forward pass written here from the definitions, on small
// random llama (interleaved RoPE), qwen2 (NeoX RoPE, q/k/v biases) and qwen3 (q/k norms, heads
// wider than dim / n_heads) models with GQA; plus
// determinism across thread counts and between batched prefill and token-by-token decoding, and
// batch invariance: sequences stepped together (Transformer::Step) get the logits they get alone;
// passes resumed from a recorded residual (ResidualTap) equal whole ones.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <map>
#include <random>

#include "base/thread_pool.h"
#include "engine/generate.h"
#include "engine/transformer.h"
#include "tests/util/test_paths.h"
#include "tests/util/tiny_model.h"

namespace dcomp {
namespace {

using Vec = std::vector<double>;

// Naive reference: returns the logits of every position for `tokens`.
std::vector<Vec> NaiveForward(const ModelFile& f, const std::vector<int32_t>& tokens) {
  const ModelConfig& c = f.config();
  auto T = [&](const std::string& n) {
    std::vector<float> v = *f.ReadF32(n);
    return Vec(v.begin(), v.end());
  };
  const int dim = c.dim, hd = c.head_dim, kvd = c.kv_dim(), hid = c.hidden_dim, qd = c.q_dim();
  auto matvec = [](const Vec& w, const Vec& x, int rows, int cols) {
    Vec y(static_cast<size_t>(rows), 0.0);
    for (int r = 0; r < rows; ++r)
      for (int k = 0; k < cols; ++k) y[r] += w[static_cast<size_t>(r) * cols + k] * x[k];
    return y;
  };
  auto rms = [&](const Vec& x, const Vec& w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / x.size() + c.rms_eps);
    Vec y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
    return y;
  };
  auto rope = [&](double* v, int pos, bool sliding) {
    for (int i = 0; i < hd / 2; ++i) {
      const double factor = c.rope_freq_factors.empty() || sliding ? 1.0 : c.rope_freq_factors[i];
      const double theta = sliding ? c.rope_theta_local : c.rope_theta;
      const double ang = pos * std::pow(theta, -2.0 * i / hd) / factor;
      const int a = c.rope_style == RopeStyle::kNeox ? i : 2 * i;
      const int b = c.rope_style == RopeStyle::kNeox ? i + hd / 2 : 2 * i + 1;
      const double x0 = v[a], x1 = v[b];
      v[a] = x0 * std::cos(ang) - x1 * std::sin(ang);
      v[b] = x0 * std::sin(ang) + x1 * std::cos(ang);
    }
  };
  const Vec emb = T("token_embd.weight");
  const Vec out_w = c.tied_output ? emb : T("output.weight");
  std::vector<std::vector<Vec>> kc(static_cast<size_t>(c.n_layers)),
      vc(static_cast<size_t>(c.n_layers));
  std::vector<Vec> logits;
  for (size_t p = 0; p < tokens.size(); ++p) {
    Vec x(emb.begin() + tokens[p] * dim, emb.begin() + (tokens[p] + 1) * dim);
    for (double& e : x) e *= c.embedding_scale;
    for (int l = 0; l < c.n_layers; ++l) {
      auto n = [l](const char* w) { return LayerTensorName(l, w); };
      Vec xn = rms(x, T(n("attn_norm.weight")));
      Vec q = matvec(T(n("attn_q.weight")), xn, qd, dim);
      Vec k = matvec(T(n("attn_k.weight")), xn, kvd, dim);
      Vec v = matvec(T(n("attn_v.weight")), xn, kvd, dim);
      if (c.qkv_bias) {
        Vec bq = T(n("attn_q.bias")), bk = T(n("attn_k.bias")), bv = T(n("attn_v.bias"));
        for (int i = 0; i < dim; ++i) q[i] += bq[i];
        for (int i = 0; i < kvd; ++i) k[i] += bk[i], v[i] += bv[i];
      }
      if (c.qk_norm) {  // per-head RMSNorm of q and k
        const Vec qn = T(n("attn_q_norm.weight")), kn = T(n("attn_k_norm.weight"));
        auto head_norm = [&](double* head, const Vec& w) {
          const Vec normed = rms(Vec(head, head + hd), w);
          std::copy(normed.begin(), normed.end(), head);
        };
        for (int h = 0; h < c.n_heads; ++h) head_norm(&q[h * hd], qn);
        for (int h = 0; h < c.n_kv_heads; ++h) head_norm(&k[h * hd], kn);
      }
      const bool sliding = c.IsSlidingLayer(l);
      for (int h = 0; h < c.n_heads; ++h) rope(&q[h * hd], static_cast<int>(p), sliding);
      for (int h = 0; h < c.n_kv_heads; ++h) rope(&k[h * hd], static_cast<int>(p), sliding);
      // A sliding layer's query sees the last sliding_window keys, itself included.
      const size_t first = sliding && p + 1 > static_cast<size_t>(c.sliding_window)
                               ? p + 1 - static_cast<size_t>(c.sliding_window)
                               : 0;
      kc[l].push_back(k);
      vc[l].push_back(v);
      Vec att(static_cast<size_t>(qd), 0.0);
      for (int h = 0; h < c.n_heads; ++h) {
        const int kvh = h / (c.n_heads / c.n_kv_heads);
        Vec s(p + 1, 0.0);
        double mx = -1e300;
        for (size_t j = first; j <= p; ++j) {
          double d = 0;
          for (int i = 0; i < hd; ++i) d += q[h * hd + i] * kc[l][j][kvh * hd + i];
          s[j] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (size_t j = first; j <= p; ++j) sum += (s[j] = std::exp(s[j] - mx));
        for (size_t j = first; j <= p; ++j)
          for (int i = 0; i < hd; ++i) att[h * hd + i] += s[j] / sum * vc[l][j][kvh * hd + i];
      }
      Vec o = matvec(T(n("attn_output.weight")), att, dim, qd);
      if (c.post_norms) o = rms(o, T(n("post_attention_norm.weight")));
      for (int i = 0; i < dim; ++i) x[i] += o[i];
      xn = rms(x, T(n("ffn_norm.weight")));
      Vec g = matvec(T(n("ffn_gate.weight")), xn, hid, dim);
      Vec u = matvec(T(n("ffn_up.weight")), xn, hid, dim);
      for (int i = 0; i < hid; ++i) {
        g[i] = c.activation == Activation::kGeluTanh
                   ? 0.5 * g[i] *
                         (1.0 + std::tanh(std::sqrt(2.0 / M_PI) *
                                          (g[i] + 0.044715 * g[i] * g[i] * g[i]))) *
                         u[i]
                   : g[i] / (1.0 + std::exp(-g[i])) * u[i];
      }
      Vec d = matvec(T(n("ffn_down.weight")), g, dim, hid);
      if (c.post_norms) d = rms(d, T(n("post_ffw_norm.weight")));
      for (int i = 0; i < dim; ++i) x[i] += d[i];
    }
    logits.push_back(matvec(out_w, rms(x, T("output_norm.weight")), c.vocab_size, dim));
  }
  return logits;
}

struct Built {
  std::unique_ptr<ModelFile> file;
  std::unique_ptr<InMemoryWeights> weights;
};

Built Build(const testing::TinyModelOptions& o, WeightFormat fmt) {
  const std::string path = ::testing::TempDir() + "/tiny_" + std::to_string(getpid()) + "_" +
                           o.arch + std::to_string(o.seed) +
                           std::to_string(static_cast<int>(o.matrix_type)) + ".gguf";
  Status s = testing::WriteTinyModel(path, o);
  EXPECT_TRUE(s.ok()) << s.ToString();
  Built b;
  auto f = OpenModelFile(path);
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  b.file = std::move(*f);
  b.weights = std::move(*InMemoryWeights::Load(*b.file, fmt));
  return b;
}

const std::vector<int32_t> kTokens = {1, 5, 17, 3, 39, 22, 8, 8, 30, 11};

// Llama 3.x frequency scaling from a rope_freqs.weight tensor: the naive forward divides each
// frequency by its factor too, and the factors change the logits.
TEST(ForwardRopeTest, FrequencyFactorsMatchNaiveFloat64) {
  testing::TinyModelOptions o;
  o.seed = 11;
  Built plain = Build(o, WeightFormat::kF32);
  o.rope_freqs = {1.0f, 1.5f, 4.0f, 8.0f};  // head_dim 8
  o.seed = 11;
  const std::string path = ::testing::TempDir() + "/tiny_" + std::to_string(getpid()) + "_rf.gguf";
  ASSERT_TRUE(testing::WriteTinyModel(path, o).ok());
  auto f = OpenModelFile(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->config().rope_freq_factors, o.rope_freqs);
  auto w = InMemoryWeights::Load(**f, WeightFormat::kF32);
  ThreadPool pool(2);
  auto t = Transformer::Create(w->get(), &pool);
  auto t0 = Transformer::Create(plain.weights.get(), &pool);
  std::vector<float> logits, logits0;
  ASSERT_TRUE((*t)->Forward(kTokens, true, &logits).ok());
  ASSERT_TRUE((*t0)->Forward(kTokens, true, &logits0).ok());
  std::vector<Vec> ref = NaiveForward(**f, kTokens);
  const size_t V = static_cast<size_t>(o.vocab);
  double changed = 0;
  for (size_t p = 0; p < kTokens.size(); ++p) {
    for (size_t k = 0; k < V; ++k) {
      ASSERT_NEAR(logits[p * V + k], ref[p][k], 1e-4 * (1.0 + std::fabs(ref[p][k])));
      changed =
          std::max(changed, static_cast<double>(std::fabs(logits[p * V + k] - logits0[p * V + k])));
    }
  }
  EXPECT_GT(changed, 1e-3);
}

// rope.scaling.type llama3 computes Llama 3.1's factors: 1 for short wavelengths, `factor` for
// long ones, smooth between.
TEST(ForwardRopeTest, Llama3ScalingFactors) {
  testing::TinyModelOptions o;
  o.dim = 128;
  o.heads = 2;
  o.kv_heads = 1;
  o.rope_scaling_type = "llama3";
  o.rope_scaling_factor = 8.0f;
  o.rope_original_context = 64;
  const std::string path = ::testing::TempDir() + "/tiny_" + std::to_string(getpid()) + "_l3.gguf";
  ASSERT_TRUE(testing::WriteTinyModel(path, o).ok());
  auto f = OpenModelFile(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const std::vector<float>& r = (*f)->config().rope_freq_factors;
  ASSERT_EQ(r.size(), 32u);
  const double theta = (*f)->config().rope_theta;
  for (size_t i = 0; i < r.size(); ++i) {
    const double wavelen = 2 * M_PI / std::pow(theta, -2.0 * static_cast<double>(i) / 64);
    if (wavelen < 64.0 / 4) {
      EXPECT_FLOAT_EQ(r[i], 1.0f) << i;
    }
    if (wavelen > 64.0 / 1) {
      EXPECT_FLOAT_EQ(r[i], 8.0f) << i;
    }
    if (i > 0) {
      EXPECT_GE(r[i], r[i - 1]) << i;
    }
  }
  EXPECT_EQ(r.front(), 1.0f);
  EXPECT_EQ(r.back(), 8.0f);
}

class ForwardTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ForwardTest, F32MatchesNaiveFloat64) {
  testing::TinyModelOptions o;
  o.arch = GetParam();
  if (o.arch == "qwen3" || o.arch == "gemma3") o.head_dim = 16;  // attention 64 wide, dim 32
  if (o.arch == "gemma3") o.layers = 3;                          // sliding, global, sliding
  o.tied = GetParam() == "llama";
  Built b = Build(o, WeightFormat::kF32);
  ThreadPool pool(2);
  auto t = Transformer::Create(b.weights.get(), &pool);
  ASSERT_TRUE(t.ok());
  std::vector<float> logits;
  ASSERT_TRUE((*t)->Forward(kTokens, true, &logits).ok());
  std::vector<Vec> ref = NaiveForward(*b.file, kTokens);
  const size_t V = static_cast<size_t>(o.vocab);
  for (size_t p = 0; p < kTokens.size(); ++p) {
    for (size_t k = 0; k < V; ++k) {
      ASSERT_NEAR(logits[p * V + k], ref[p][k], 1e-4 * (1.0 + std::fabs(ref[p][k])))
          << "pos " << p << " token " << k;
    }
  }
}

TEST_P(ForwardTest, W8A8StaysCloseToNaive) {
  testing::TinyModelOptions o;
  o.arch = GetParam();
  if (o.arch == "qwen3" || o.arch == "gemma3") o.head_dim = 16;  // attention 64 wide, dim 32
  if (o.arch == "gemma3") o.layers = 3;                          // sliding, global, sliding
  o.dim = 64;
  o.hidden = 128;
  o.heads = 4;
  Built b = Build(o, WeightFormat::kW8A8);
  ThreadPool pool(2);
  auto t = Transformer::Create(b.weights.get(), &pool);
  std::vector<float> logits;
  ASSERT_TRUE((*t)->Forward(kTokens, true, &logits).ok());
  std::vector<Vec> ref = NaiveForward(*b.file, kTokens);
  const size_t V = static_cast<size_t>(o.vocab);
  double err = 0, norm = 0;
  for (size_t p = 0; p < kTokens.size(); ++p)
    for (size_t k = 0; k < V; ++k) {
      err += (logits[p * V + k] - ref[p][k]) * (logits[p * V + k] - ref[p][k]);
      norm += ref[p][k] * ref[p][k];
    }
  EXPECT_LT(std::sqrt(err / norm), 0.05);
}

TEST_P(ForwardTest, DeterministicAcrossThreadsAndBatching) {
  for (WeightFormat fmt : {WeightFormat::kF32, WeightFormat::kW8A8}) {
    testing::TinyModelOptions o;
    o.arch = GetParam();
    if (o.arch == "qwen3" || o.arch == "gemma3") o.head_dim = 16;  // attention 64 wide, dim 32
    if (o.arch == "gemma3") o.layers = 3;                          // sliding, global, sliding
    o.matrix_type = GgmlType::kQ8_0;
    o.ctx = 200;
    Built b = Build(o, fmt);
    // 150 tokens: more than one prefill chunk (kMaxBatch = 64).
    std::vector<int32_t> toks;
    for (int i = 0; i < 150; ++i) toks.push_back(3 + (i * 7) % 37);
    std::vector<float> base;
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      auto t = Transformer::Create(b.weights.get(), &pool);
      std::vector<float> batched, stepped;
      ASSERT_TRUE((*t)->Forward(toks, false, &batched).ok());
      (*t)->Reset();
      for (int32_t id : toks) {
        ASSERT_TRUE((*t)->Forward(std::span<const int32_t>(&id, 1), false, &stepped).ok());
      }
      EXPECT_EQ(batched, stepped) << "threads " << threads << " fmt " << WeightFormatName(fmt);
      if (base.empty()) base = batched;
      EXPECT_EQ(batched, base) << "threads " << threads << " fmt " << WeightFormatName(fmt);
    }
  }
}

// The weights of `base` before residual point `point` (ResidualTap) and of `other` (same shape)
// from there on: point 2l takes layers l.. from `other`, point 2l + 1 layer l's feed-forward half
// and layers l + 1.. .
class SplicedWeights : public WeightSource {
 public:
  SplicedWeights(WeightSource* base, WeightSource* other, int point)
      : base_(base), other_(other), point_(point) {}
  const ModelConfig& config() const override { return base_->config(); }
  const GlobalWeights& globals() const override { return base_->globals(); }
  Result<const LayerWeights*> AcquireLayer(int l) override {
    if (2 * l + 1 < point_) return base_->AcquireLayer(l);
    if (2 * l >= point_) return other_->AcquireLayer(l);
    ASSIGN_OR_RETURN(const LayerWeights* a, base_->AcquireLayer(l));
    ASSIGN_OR_RETURN(const LayerWeights* b, other_->AcquireLayer(l));
    mixed_ = *a;
    mixed_.ffn_norm = b->ffn_norm;
    mixed_.ffn_post_norm = b->ffn_post_norm;
    mixed_.w_gate = b->w_gate;
    mixed_.w_up = b->w_up;
    mixed_.w_down = b->w_down;
    return &mixed_;
  }
  void ReleaseLayer(int) override {}

 private:
  WeightSource *base_, *other_;
  int point_;
  LayerWeights mixed_;
};

// Records x at every point of a pass, or replays it from one point.
class TestTap : public ResidualTap {
 public:
  explicit TestTap(int start = 0) : start_(start) {}
  int StartPoint() override { return start_; }
  void Load(int point, float* x, size_t n, size_t dim) override {
    const std::vector<float>& r = rec[point];
    ASSERT_LE(cursor_ + n * dim, r.size());
    std::copy(r.begin() + cursor_, r.begin() + cursor_ + n * dim, x);
    cursor_ += n * dim;
  }
  void Passed(int point, const float* x, size_t n, size_t dim) override {
    passed.push_back(point);
    if (start_ == 0) rec[point].insert(rec[point].end(), x, x + n * dim);
  }
  std::map<int, std::vector<float>> rec;
  std::vector<int> passed;

 private:
  int start_;
  size_t cursor_ = 0;
};

// A pass started from a recorded residual point gets the logits of a whole pass over the same
// weights, bit for bit, whatever the weights from that point on (here another model's), over
// several prefill chunks; a start point outside the model fails the step.
TEST_P(ForwardTest, ResumedFromARecordedResidualMatchesAWholePass) {
  for (WeightFormat fmt : {WeightFormat::kF32, WeightFormat::kW8A8}) {
    testing::TinyModelOptions o;
    o.arch = GetParam();
    if (o.arch == "qwen3" || o.arch == "gemma3") o.head_dim = 16;  // attention 64 wide, dim 32
    o.layers = 3;
    o.ctx = 200;
    Built a = Build(o, fmt);
    o.seed = 2;
    Built b = Build(o, fmt);
    std::vector<int32_t> toks;
    for (int i = 0; i < 150; ++i) toks.push_back(3 + (i * 7) % 37);  // three prefill chunks
    ThreadPool pool(2);
    TestTap record;
    std::vector<float> base_logits;
    {
      auto t = Transformer::Create(a.weights.get(), &pool);
      (*t)->set_residual_tap(&record);
      ASSERT_TRUE((*t)->Forward(toks, true, &base_logits).ok());
    }
    const int last = 2 * o.layers;
    ASSERT_EQ(record.passed.size(), 3u * static_cast<size_t>(last + 1));  // every point, per chunk
    for (int point = 1; point <= last; ++point) {
      SplicedWeights w(a.weights.get(), b.weights.get(), point);
      std::vector<float> whole, resumed;
      auto t = Transformer::Create(&w, &pool);
      ASSERT_TRUE((*t)->Forward(toks, true, &whole).ok());
      TestTap replay(point);
      replay.rec = record.rec;
      auto r = Transformer::Create(&w, &pool);
      (*r)->set_residual_tap(&replay);
      ASSERT_TRUE((*r)->Forward(toks, true, &resumed).ok());
      EXPECT_EQ(resumed, whole) << "point " << point << " " << WeightFormatName(fmt);
      EXPECT_EQ(replay.passed.front(), point);
      if (point < last) {
        EXPECT_NE(whole, base_logits) << "point " << point;  // b's layers ran
      }
    }
    TestTap bad(last + 1);
    auto t = Transformer::Create(a.weights.get(), &pool);
    (*t)->set_residual_tap(&bad);
    std::vector<float> logits;
    EXPECT_EQ((*t)->Forward(toks, true, &logits).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ((*t)->position(), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, ForwardTest,
                         ::testing::Values("llama", "qwen2", "qwen3", "gemma3"));

TEST(TransformerTest, RejectsBadTokensAndContextOverflowWithoutSideEffects) {
  testing::TinyModelOptions o;
  Built b = Build(o, WeightFormat::kW8A8);
  ThreadPool pool(1);
  auto t = Transformer::Create(b.weights.get(), &pool);
  std::vector<float> logits;
  std::vector<int32_t> bad = {1, 40};
  Status s = (*t)->Forward(bad, false, &logits);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("token id 40"), std::string::npos);
  std::vector<int32_t> neg = {-1};
  EXPECT_EQ((*t)->Forward(neg, false, &logits).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*t)->position(), 0);
  std::vector<int32_t> many(17, 3);  // ctx 16
  s = (*t)->Forward(many, false, &logits);
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  EXPECT_EQ((*t)->position(), 0);
  std::vector<int32_t> ok(16, 3);
  EXPECT_TRUE((*t)->Forward(ok, false, &logits).ok());
  EXPECT_EQ((*t)->position(), 16);
  EXPECT_EQ((*t)->Forward(std::span<const int32_t>(ok.data(), 1), false, &logits).code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ((*t)->Forward({}, false, &logits).code(), StatusCode::kInvalidArgument);
}

// A sequence of the batch-invariance tests: a prompt, then tokens fed one at a time (fixed here, so
// that the logits of every step can be compared), joining the batch at step `join`.
struct Seq {
  std::vector<int32_t> prompt, decode;
  int join = 0;
};

std::vector<Seq> MixedSequences(uint32_t seed, int vocab) {
  std::mt19937 rng(seed);
  std::vector<Seq> seqs;
  for (int len : {1, 5, 70, 13, 2, 40, 9, 3}) {  // one prompt longer than a step
    Seq s;
    for (int i = 0; i < len; ++i) s.prompt.push_back(static_cast<int32_t>(rng() % vocab));
    const int n_decode = 1 + static_cast<int>(rng() % 12);
    for (int i = 0; i < n_decode; ++i) s.decode.push_back(static_cast<int32_t>(rng() % vocab));
    s.join = static_cast<int>(rng() % 6);
    seqs.push_back(std::move(s));
  }
  return seqs;
}

// Every logits row of `s` run alone through Forward: the prompt's last token's, then each decode
// token's.
std::vector<std::vector<float>> Alone(Transformer& t, const Seq& s) {
  std::vector<std::vector<float>> rows;
  std::vector<float> logits;
  t.Reset();
  EXPECT_TRUE(t.Forward(s.prompt, false, &logits).ok());
  rows.push_back(logits);
  for (int32_t id : s.decode) {
    EXPECT_TRUE(t.Forward(std::span<const int32_t>(&id, 1), false, &logits).ok());
    rows.push_back(logits);
  }
  return rows;
}

// The same rows with every sequence stepped together: each step takes one token of every
// sequence past its prompt and random chunks of the prompts, at most kMaxBatch tokens in all.
std::vector<std::vector<std::vector<float>>> Together(Transformer& t, const std::vector<Seq>& seqs,
                                                      uint32_t seed, KvType kv) {
  std::mt19937 rng(seed);
  const int32_t ctx = t.context_length();
  std::vector<KvCache> caches;
  for (size_t i = 0; i < seqs.size(); ++i) caches.emplace_back(t.config(), ctx, kv);
  std::vector<size_t> fed(seqs.size(), 0);
  std::vector<std::vector<std::vector<float>>> rows(seqs.size());
  const size_t vocab = static_cast<size_t>(t.config().vocab_size);
  std::vector<float> logits;
  for (int step = 0;; ++step) {
    std::vector<SequenceInput> in;
    std::vector<size_t> who;
    size_t room = Transformer::kMaxBatch;
    for (size_t i = 0; i < seqs.size() && room > 0; ++i) {
      const Seq& s = seqs[i];
      const size_t total = s.prompt.size() + s.decode.size();
      if (step < s.join || fed[i] == total) continue;
      size_t n = 1;
      const int32_t* at = fed[i] < s.prompt.size() ? s.prompt.data() + fed[i]
                                                   : s.decode.data() + (fed[i] - s.prompt.size());
      if (fed[i] < s.prompt.size()) {
        n = std::min<size_t>({s.prompt.size() - fed[i], room, 1 + rng() % 48});
      }
      const bool ends_prompt_or_decodes = fed[i] + n >= s.prompt.size();
      in.push_back({&caches[i], {at, n}, ends_prompt_or_decodes, false});
      who.push_back(i);
      room -= n;
    }
    if (in.empty()) {
      bool all_done = true;
      for (size_t i = 0; i < seqs.size(); ++i) {
        all_done &= fed[i] == seqs[i].prompt.size() + seqs[i].decode.size();
      }
      if (all_done) break;
      continue;
    }
    Status st = t.Step(in, &logits);
    EXPECT_TRUE(st.ok()) << st.ToString();
    if (!st.ok()) break;
    size_t row = 0;
    for (size_t k = 0; k < in.size(); ++k) {
      fed[who[k]] += in[k].tokens.size();
      EXPECT_EQ(caches[who[k]].position(), static_cast<int32_t>(fed[who[k]]));
      if (!in[k].logits) continue;
      rows[who[k]].emplace_back(logits.begin() + static_cast<std::ptrdiff_t>(row * vocab),
                                logits.begin() + static_cast<std::ptrdiff_t>((row + 1) * vocab));
      ++row;
    }
  }
  return rows;
}

class BatchTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BatchTest, SequencesSteppedTogetherGetTheLogitsTheyGetAlone) {
  for (WeightFormat fmt : {WeightFormat::kW8A8, WeightFormat::kF32}) {
    testing::TinyModelOptions o;
    o.arch = GetParam();
    if (o.arch == "qwen3" || o.arch == "gemma3") o.head_dim = 16;
    if (o.arch == "gemma3") o.layers = 3;
    o.matrix_type = GgmlType::kQ8_0;
    o.ctx = 128;
    Built b = Build(o, fmt);
    const std::vector<Seq> seqs = MixedSequences(11, o.vocab);
    for (int threads : {1, 3}) {
      for (KvType kv : {KvType::kF32, KvType::kInt8}) {
        ThreadPool pool(threads);
        auto t = Transformer::Create(b.weights.get(), &pool);
        ASSERT_TRUE(t.ok());
        (*t)->set_kv_type(kv);
        for (uint32_t seed : {1u, 2u}) {
          const auto together = Together(**t, seqs, seed, kv);
          for (size_t i = 0; i < seqs.size(); ++i) {
            EXPECT_EQ(together[i], Alone(**t, seqs[i]))
                << o.arch << " " << WeightFormatName(fmt) << " threads " << threads << " kv "
                << KvTypeName(kv) << " sequence " << i << " chunking seed " << seed;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, BatchTest, ::testing::Values("llama", "qwen2", "qwen3", "gemma3"));

// The 8-bit cache stays close to the f32 one (its cost on real text is in BENCHMARKS.md) and
// holds far fewer bytes (a quarter at real head sizes; these heads are 8 wide).
TEST(BatchTest, Int8KvCacheStaysCloseToF32) {
  testing::TinyModelOptions o;
  o.ctx = 64;
  Built b = Build(o, WeightFormat::kW8A8);
  ThreadPool pool(1);
  std::vector<std::vector<float>> out;
  for (KvType kv : {KvType::kF32, KvType::kInt8}) {
    auto t = Transformer::Create(b.weights.get(), &pool);
    (*t)->set_kv_type(kv);
    std::vector<float> logits;
    ASSERT_TRUE((*t)->Forward(kTokens, true, &logits).ok());
    out.push_back(logits);
  }
  double err = 0, norm = 0;
  for (size_t i = 0; i < out[0].size(); ++i) {
    err += (out[0][i] - out[1][i]) * (out[0][i] - out[1][i]);
    norm += out[0][i] * out[0][i];
  }
  EXPECT_GT(err, 0.0);  // not the f32 path in disguise
  EXPECT_LT(std::sqrt(err / norm), 0.02);
  const ModelConfig& c = b.file->config();
  EXPECT_LT(KvCache::Bytes(c, 100, KvType::kInt8) * 2, KvCache::Bytes(c, 100, KvType::kF32));
  EXPECT_EQ(KvCache(c, 100, KvType::kInt8).bytes(), KvCache::Bytes(c, 100, KvType::kInt8));
  EXPECT_EQ(*ParseKvType("int8"), KvType::kInt8);
  EXPECT_FALSE(ParseKvType("fp8").ok());
}

TEST(BatchTest, StepRejectsBadInputWithoutMovingAnyCache) {
  testing::TinyModelOptions o;
  Built b = Build(o, WeightFormat::kW8A8);
  ThreadPool pool(1);
  auto t = Transformer::Create(b.weights.get(), &pool);
  KvCache a((*t)->config(), 8), c((*t)->config(), 4);
  std::vector<float> logits;
  const std::vector<int32_t> three = {1, 2, 3}, bad = {1, 40}, five = {1, 2, 3, 4, 5};
  auto step = [&](std::vector<SequenceInput> in) { return (*t)->Step(in, &logits); };
  EXPECT_EQ(step({}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(step({{&a, three}, {&a, three}}).code(), StatusCode::kInvalidArgument);  // same cache
  Status s = step({{&a, three}, {&c, bad}});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("sequence 1"), std::string::npos) << s.ToString();
  s = step({{&a, three}, {&c, five}});  // c holds 4
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  EXPECT_NE(s.message().find("(4 tokens)"), std::string::npos) << s.ToString();
  EXPECT_EQ(step({{&a, three}, {nullptr, three}}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.position(), 0);
  EXPECT_EQ(c.position(), 0);
  const std::vector<int32_t> many(Transformer::kMaxBatch + 1, 3);
  KvCache big((*t)->config(), 16);
  EXPECT_EQ(step({{&big, {many.data(), 17}}}).code(), StatusCode::kOutOfRange);  // context 16
  ASSERT_TRUE(step({{&a, three}, {&c, three, false}}).ok());
  EXPECT_EQ(logits.size(), static_cast<size_t>(o.vocab));  // only a's row
  EXPECT_EQ(a.position(), 3);
  EXPECT_EQ(c.position(), 3);
}

// Generation streams stepped together (sampled, with a seed) produce the tokens Generate produces
// for each alone.
TEST(BatchTest, GenerationStreamsSteppedTogetherMatchGenerate) {
  testing::TinyModelOptions o;
  o.ctx = 96;
  o.vocab = 60;
  Built b = Build(o, WeightFormat::kW8A8);
  auto tok_or = Tokenizer::Create(b.file->tokenizer());
  ASSERT_TRUE(tok_or.ok()) << tok_or.status().ToString();
  const Tokenizer& tok = **tok_or;
  ThreadPool pool(2);
  auto t = Transformer::Create(b.weights.get(), &pool);
  std::vector<GenerateRequest> reqs;
  for (int i = 0; i < 6; ++i) {
    GenerateRequest r;
    r.prompt_ids = std::vector<int32_t>(static_cast<size_t>(1 + i * 7), 5 + i);
    r.prompt = "x";
    r.max_tokens = 5 + 3 * i;
    r.stop_at_eos = false;
    r.sampling.temperature = i % 2 ? 0.9f : 0.0f;
    r.sampling.top_k = 20;
    r.sampling.seed = 100 + static_cast<uint64_t>(i);
    reqs.push_back(r);
  }
  std::vector<std::vector<int32_t>> alone;
  for (const GenerateRequest& r : reqs) {
    Result<GenerateResult> g = Generate(**t, tok, r);
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    alone.push_back(g->generated_ids);
  }
  std::vector<GenerationStream> streams;
  std::vector<KvCache> caches;
  for (const GenerateRequest& r : reqs) {
    streams.push_back(*GenerationStream::Start(tok, r, (*t)->context_length()));
    caches.emplace_back((*t)->config(), streams.back().cache_tokens());
  }
  std::vector<float> logits;
  const size_t vocab = static_cast<size_t>(o.vocab);
  for (bool running = true; running;) {
    std::vector<SequenceInput> in;
    std::vector<size_t> who;
    for (size_t i = 0; i < streams.size(); ++i) {
      if (streams[i].done()) continue;
      const std::span<const int32_t> next = streams[i].NextInput(9);  // prompts in chunks
      in.push_back({&caches[i], next, streams[i].WantsLogits(next.size())});
      who.push_back(i);
    }
    running = !in.empty();
    if (!running) break;
    ASSERT_TRUE((*t)->Step(in, &logits).ok());
    size_t row = 0;
    for (size_t k = 0; k < in.size(); ++k) {
      std::span<float> l;
      if (in[k].logits) l = {logits.data() + row++ * vocab, vocab};
      streams[who[k]].Advance(in[k].tokens.size(), l, {});
    }
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    EXPECT_EQ(streams[i].TakeResult().generated_ids, alone[i]) << "request " << i;
  }
}

}  // namespace
}  // namespace dcomp
