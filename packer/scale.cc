// Pack stage 3: compression-aware scaling, per group of matrices sharing an input. A group's alpha
// is the one with the smallest code entropy whose output error is no worse than alpha = 0; the
// column scales s go to the quantizer and 1/s is folded exactly upstream.

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "engine/layer_schema.h"
#include "packer/internal/pack_state.h"

namespace dcomp::packer::internal {
namespace {

constexpr float kAlphaCandidates[] = {0.0f, 0.125f, 0.25f, 0.375f, 0.5f, 0.625f, 0.75f};

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

// Matrices sharing one input, and so one column scale.
struct Group {
  std::vector<std::string> mats;
  int layer;
  LinearInput input;
};

std::vector<Group> ScalingGroups(const ModelConfig& cfg) {
  std::vector<Group> groups;
  for (int l = 0; l < cfg.n_layers; ++l) {
    for (LinearInput in : kLayerInputs) {
      Group& g = groups.emplace_back(Group{{}, l, in});
      for (const LayerMatrix& m : kLayerMatrices) {
        if (m.input == in) g.mats.push_back(LayerTensorName(l, m.name));
      }
    }
  }
  if (!cfg.tied_output) groups.push_back({{"output.weight"}, cfg.n_layers, LinearInput::kHeadIn});
  return groups;
}

// The per-channel max|x_j| the group's scales are made from.
std::vector<float> GroupMaxAbs(const Group& g, const InputStats& st, size_t hd, size_t group_q) {
  std::vector<float> max_abs = st.max_abs;
  if (g.input == LinearInput::kAttnOut) {
    // Folded into wv's rows: channels fed by the same kv channel must share one scale.
    for (size_t j = 0; j < max_abs.size(); ++j) {  // the attention width, n_heads * head_dim
      const size_t kvc = (j / hd) / group_q * hd + j % hd;
      for (size_t h = 0; h < group_q; ++h) {
        const size_t other = ((kvc / hd) * group_q + h) * hd + kvc % hd;
        max_abs[j] = std::max(max_abs[j], st.max_abs[other]);
      }
    }
  }
  return max_abs;
}

// The group's code bits and mean output error with the scales of `alpha`.
void Evaluate(PackState& state, const Group& g, const InputStats& st,
              const std::vector<float>& max_abs, float alpha, double* bits, double* err) {
  std::vector<float> s = ScalesFor(max_abs, alpha);
  double b = 0, e = 0;
  for (const std::string& name : g.mats) {
    Matrix& m = state.Find(name);
    QuantParams p;
    p.col_scale = s;
    std::vector<float> imp = Importance(max_abs, s);
    p.importance = imp;
    p.prune = m.prune;
    QuantizedMatrix q = QuantizeMatrix(m.w, m.rows, m.cols, p);
    b += CodeEntropyBits(q) * static_cast<double>(m.rows * m.cols);
    e += RelativeOutputError(st.sample, st.sample_rows(), m.w, q, s);
  }
  *bits = b;
  *err = e / static_cast<double>(g.mats.size());
}

// --alpha when given; else the candidate with the fewest bits among those whose error is no
// worse than alpha = 0's.
float ChooseAlpha(PackState& state, const Group& g, const InputStats& st,
                  const std::vector<float>& max_abs) {
  float best_alpha = 0;
  if (state.fixed_alpha >= 0) {
    best_alpha = state.fixed_alpha;
  } else {
    double b0, e0;
    Evaluate(state, g, st, max_abs, 0.0f, &b0, &e0);
    double best_bits = b0;
    for (float a : kAlphaCandidates) {
      if (a == 0) continue;
      double b, e;
      Evaluate(state, g, st, max_abs, a, &b, &e);
      if (e <= e0 && b < best_bits) best_bits = b, best_alpha = a;
    }
  }
  return best_alpha;
}

// Folds 1/s upstream of the group's input: into the norm before it, wv's rows (for wo, per kv
// channel, with the first q head's scale) or w_up's rows (for w_down).
void FoldUpstream(PackState& state, const Group& g, const std::vector<float>& s, size_t hd,
                  size_t group_q) {
  std::map<std::string, Vector>& vecs = state.vecs;
  auto n = [&](const char* w) { return LayerTensorName(g.layer, w); };
  auto div_vec = [&](std::vector<float>& v) {
    for (size_t j = 0; j < v.size(); ++j) v[j] /= s[j];
  };
  if (g.input == LinearInput::kAttnIn) div_vec(vecs[n("attn_norm.weight")].v);
  if (g.input == LinearInput::kFfnIn) div_vec(vecs[n("ffn_norm.weight")].v);
  if (g.input == LinearInput::kHeadIn) div_vec(vecs["output_norm.weight"].v);
  if (g.input == LinearInput::kAttnOut) {
    Matrix& v = state.Find(n("attn_v.weight"));
    for (size_t r = 0; r < v.rows; ++r) {
      const float sr = s[(r / hd) * group_q * hd + r % hd];  // first q head of the group
      for (size_t c = 0; c < v.cols; ++c) v.w[r * v.cols + c] /= sr;
      if (state.cfg.qkv_bias) vecs[n("attn_v.bias")].v[r] /= sr;
    }
  }
  if (g.input == LinearInput::kFfnHidden) {
    Matrix& u = state.Find(n("ffn_up.weight"));
    for (size_t r = 0; r < u.rows; ++r) {
      for (size_t c = 0; c < u.cols; ++c) u.w[r * u.cols + c] /= s[r];
    }
  }
}

}  // namespace

// m.w stays the (row-folded) f32 matrix: the quantizer applies col_scale itself, and output
// errors are measured against X W^T, which the folded model computes exactly.
Status Scale(PackState& state) {
  if (!state.need_calib || !state.o.scaling) return Status::Ok();
  const ModelConfig& cfg = state.cfg;
  const std::vector<Group> groups = ScalingGroups(cfg);
  const size_t hd = static_cast<size_t>(cfg.head_dim);
  const size_t group_q = static_cast<size_t>(cfg.n_heads / cfg.n_kv_heads);
  size_t done = 0;
  for (const Group& g : groups) {
    const InputStats* st = state.observer->Find(g.layer, g.input);
    if (st == nullptr) continue;
    // No column scales for a transformed input (1/s cannot be folded upstream of the transform);
    // its matrices keep the importance calibration gave them.
    if (HadamardInput(cfg, g.input)) continue;
    const std::vector<float> max_abs = GroupMaxAbs(g, *st, hd, group_q);
    const float best_alpha = ChooseAlpha(state, g, *st, max_abs);
    std::vector<float> s = ScalesFor(max_abs, best_alpha);
    for (const std::string& name : g.mats) {
      Matrix& m = state.Find(name);
      m.alpha = best_alpha;
      if (best_alpha != 0) m.col_scale = s;
      m.importance = Importance(max_abs, s);
    }
    if (best_alpha != 0) FoldUpstream(state, g, s, hd, group_q);  // fold 1/s upstream
    state.Progress("scaling", static_cast<double>(++done) / static_cast<double>(groups.size()));
  }
  return Status::Ok();
}

}  // namespace dcomp::packer::internal
