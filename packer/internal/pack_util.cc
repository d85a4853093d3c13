#include "packer/internal/pack_util.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

#include "engine/generate.h"
#include "engine/layer_schema.h"
#include "engine/model_file.h"

namespace dcomp::packer::internal {

std::string Fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof(b), f, v);
  return b;
}

// ----- PackWeights -------------------------------------------------------------------------------

void PackWeights::SetMatrix(const Matrix& m, const QuantizedMatrix* q) {
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

void PackWeights::SetVector(const std::string& name, const std::vector<float>& v) {
  vectors_[name] = v;
  Rebind();
}

void PackWeights::SetBias(const std::string& matrix, const std::vector<float>& b) {
  bias_[matrix] = b;
  auto it = storage_.find(matrix);
  if (it != storage_.end()) it->second.bias = b;
  Rebind();
}

void PackWeights::Rebind() {
  auto lin = [&](const std::string& n) {
    auto it = storage_.find(n);
    return it == storage_.end() ? LinearWeights{} : it->second.View();
  };
  auto vec = [&](const std::string& n) -> const float* {
    auto it = vectors_.find(n);
    return it == vectors_.end() ? nullptr : it->second.data();
  };
  for (int l = 0; l < cfg_.n_layers; ++l) {
    LayerWeights& v = layers_[l].view;
    v = {};
    for (const LayerVector& n : kLayerNorms) v.*n.field = vec(LayerTensorName(l, n.name));
    for (const LayerMatrix& m : kLayerMatrices) v.*m.field = lin(LayerTensorName(l, m.name));
  }
  globals_.embedding = lin("token_embd.weight");
  globals_.final_norm = vec("output_norm.weight");
  globals_.output = cfg_.tied_output ? globals_.embedding : lin("output.weight");
}

// ----- running and quantizing the model --------------------------------------------------------

Result<double> MeanNll(WeightSource* w, ThreadPool* pool,
                       const std::vector<std::vector<int32_t>>& seqs, int32_t ctx,
                       ActivationObserver* observer) {
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

double KlTerm(const float* log_p, const double* p, const float* log_q, size_t n) {
  double d = 0;
  if (p != nullptr) {
    for (size_t v = 0; v < n; ++v) d += p[v] * (log_p[v] - log_q[v]);
  } else {
    for (size_t v = 0; v < n; ++v) d += ProbabilityOf(log_p[v]) * (log_p[v] - log_q[v]);
  }
  return d;
}

QuantParams ParamsOf(const Matrix& m) {
  QuantParams p;
  p.col_scale = m.col_scale;
  p.importance = m.importance;
  p.step_multiplier = m.step;
  p.prune = m.prune;
  p.bits = m.bits;
  p.clip = m.clip;
  p.level_shape = m.level_shape;
  return p;
}

GptqFactor GptqFactorOf(const Matrix& m) {
  if (m.stats == nullptr || m.stats->xtx.empty()) return {};
  return MakeGptqFactor(m.stats->xtx, m.stats->seen, m.cols, m.col_scale);
}

void UseGptq(const GptqFactor& g, QuantParams* p) {
  if (g.cols == 0) return;
  p->gptq = &g;
  p->row_clips = kClipCandidates;
}

size_t RowsPerGroup(size_t rows, size_t groups) {
  const size_t g = std::max<size_t>(groups, 1);
  size_t n = (rows + g - 1) / g;
  size_t align = 1;
  while (align < 64 && align * 2 <= n) align *= 2;
  return (n + align - 1) / align * align;
}

size_t GroupRow(const Matrix& m, size_t g, size_t i) {
  const size_t stored = g * m.group_rows + i;
  return m.row_order.empty() ? stored : m.row_order[stored];
}

double RowRelativeError(const Matrix& m, size_t r) {
  double err = 0, norm = 0;
  for (size_t c = 0; c < m.cols; ++c) {
    const double w = m.w[r * m.cols + c];
    const double s = m.col_scale.empty() ? 1.0 : static_cast<double>(m.col_scale[c]);
    const double d = static_cast<double>(m.q.codes[r * m.cols + c]) * m.q.scale[r] / s - w;
    err += d * d;
    norm += w * w;
  }
  return norm > 0 ? err / norm : 0.0;
}

std::vector<double> MissedInputShare(const Matrix& m, const std::vector<double>& freq,
                                     const std::vector<double>& prob) {
  double harmonic = 0;
  for (size_t k = 1; k <= m.rows; ++k) harmonic += 1.0 / static_cast<double>(k);
  std::vector<double> missed(m.rows, 0.0);
  for (size_t k = 0; k < m.rows; ++k) {
    const size_t r = m.row_order.empty() ? k : m.row_order[k];
    if (r < freq.size() && freq[r] > 0) continue;
    const double zipf = 1.0 / (static_cast<double>(k + 1) * harmonic);
    missed[r] = std::max(r < prob.size() ? prob[r] : 0.0, zipf);
  }
  return missed;
}

size_t GroupSize(const Matrix& m, size_t g) {
  return std::min(m.group_rows, m.rows - g * m.group_rows);
}

int QuantizeGroup(Matrix& m, size_t g, const GptqFactor& f) {
  QuantParams p = ParamsOf(m);
  p.bits = m.group_bits[g];
  p.clip = m.group_clip[g];
  UseGptq(f, &p);
  // Rows are quantized independently: the group's rows gathered, quantized, put back.
  const std::vector<float> w = GroupRows(m, m.w, g);
  const size_t rows = GroupSize(m, g);
  const QuantizedMatrix q = QuantizeMatrix(w, rows, m.cols, p);
  for (size_t i = 0; i < rows; ++i) {
    const size_t r = GroupRow(m, g, i);
    std::copy_n(q.codes.begin() + static_cast<ptrdiff_t>(i * m.cols), m.cols,
                m.q.codes.begin() + static_cast<ptrdiff_t>(r * m.cols));
    m.q.scale[r] = q.scale[i];
  }
  return q.max_code;
}

void Quantize(Matrix& m) {
  QuantParams p = ParamsOf(m);
  const GptqFactor g = GptqFactorOf(m);
  UseGptq(g, &p);
  if (m.groups() > 0) {
    m.bits = *std::max_element(m.group_bits.begin(), m.group_bits.end());
    m.q.rows = m.rows;
    m.q.cols = m.cols;
    m.q.codes.assign(m.rows * m.cols, 0);
    m.q.scale.assign(m.rows, 0.0f);
    m.q.max_code = 0;
    for (size_t k = 0; k < m.groups(); ++k) {
      m.q.max_code = std::max(m.q.max_code, QuantizeGroup(m, k, g));
    }
  } else {
    m.q = QuantizeMatrix(m.w, m.rows, m.cols, p);
  }
  m.entropy = CodeEntropyBits(m.q);
  m.err = m.stats
              ? RelativeOutputError(m.stats->sample, m.stats->sample_rows(), m.w, m.q, m.col_scale)
              : -1;
}

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

}  // namespace dcomp::packer::internal
