#include "engine/weights.h"

#include <algorithm>

#include "engine/layer_schema.h"

namespace dcomp {

Result<WeightFormat> ParseWeightFormat(const std::string& s) {
  if (s == "f32") return WeightFormat::kF32;
  if (s == "w8a8") return WeightFormat::kW8A8;
  return InvalidArgumentError("--weights '" + s + "': expected 'f32' or 'w8a8'");
}

const char* WeightFormatName(WeightFormat f) { return f == WeightFormat::kF32 ? "f32" : "w8a8"; }

void GemmPacked(const kernels::KernelTable& kt, const LinearWeights& w, const int8_t* x,
                size_t x_stride, const float* x_scale, size_t n_tok, float* y, size_t y_stride,
                size_t r0, size_t r1) {
  if (w.packed_blocks.empty()) {
    kt.gemm_packed_q8(w.packed, x, x_stride, x_scale, n_tok, y, y_stride, r0, r1);
    return;
  }
  const size_t rpb = w.packed_block_rows;
  for (size_t k = r0 / rpb; k < w.packed_blocks.size() && k * rpb < r1; ++k) {
    const size_t b0 = k * rpb, b1 = b0 + w.packed_blocks[k].rows;
    const size_t a = std::max(r0, b0), e = std::min(r1, b1);
    if (a < e)
      kt.gemm_packed_q8(w.packed_blocks[k], x, x_stride, x_scale, n_tok, y + b0, y_stride, a - b0,
                        e - b0);
  }
}

LinearWeights LinearStorage::View() const {
  LinearWeights v;
  v.quantized = quantized;
  if (quantized) {
    v.q8 = {q.data(), scale.data(), row_sum.data(), rows, cols, kernels::PaddedCols(cols)};
  } else {
    v.f32 = {f32.data(), rows, cols, cols};
  }
  v.bias = bias.empty() ? nullptr : bias.data();
  return v;
}

size_t LinearStorage::bytes() const {
  return f32.size() * 4 + q.size() + scale.size() * 4 + row_sum.size() * 4 + bias.size() * 4;
}

LinearStorage MakeLinear(std::vector<float> w, size_t rows, size_t cols, WeightFormat format) {
  LinearStorage s;
  s.rows = rows;
  s.cols = cols;
  if (format == WeightFormat::kF32) {
    s.f32 = std::move(w);
    return s;
  }
  s.quantized = true;
  s.q.resize(rows * kernels::PaddedCols(cols));
  s.scale.resize(rows);
  s.row_sum.resize(rows);
  kernels::QuantizeMatrixQ8(w.data(), rows, cols, s.q.data(), s.scale.data(), s.row_sum.data());
  return s;
}

LinearStorage MakeQ8Linear(std::span<const int8_t> codes, std::vector<float> scale, size_t rows,
                           size_t cols) {
  LinearStorage s;
  s.rows = rows;
  s.cols = cols;
  s.quantized = true;
  const size_t pc = kernels::PaddedCols(cols);
  s.q.assign(rows * pc, 0);
  for (size_t r = 0; r < rows; ++r) {
    std::copy_n(codes.data() + r * cols, cols, s.q.data() + r * pc);
  }
  s.scale = std::move(scale);
  s.row_sum.resize(rows);
  kernels::ComputeRowSums(s.q.data(), rows, pc, s.row_sum.data());
  return s;
}

Result<std::unique_ptr<InMemoryWeights>> InMemoryWeights::Load(const ModelFile& file,
                                                               WeightFormat format) {
  auto m = std::unique_ptr<InMemoryWeights>(new InMemoryWeights());
  m->config_ = file.config();
  m->format_ = format;
  const ModelConfig& c = m->config_;
  const size_t dim = static_cast<size_t>(c.dim), vocab = static_cast<size_t>(c.vocab_size);
  auto linear = [&](const std::string& name, size_t rows, size_t cols) -> Result<LinearStorage> {
    if (format == WeightFormat::kW8A8 && file.stores_q8(name)) {
      ASSIGN_OR_RETURN(Q8Tensor t, file.ReadQ8(name));
      return MakeQ8Linear(t.q, std::move(t.scale), rows, cols);
    }
    ASSIGN_OR_RETURN(std::vector<float> w, file.ReadF32(name));
    return MakeLinear(std::move(w), rows, cols, format);
  };
  ASSIGN_OR_RETURN(m->embedding_, linear("token_embd.weight", vocab, dim));
  ASSIGN_OR_RETURN(m->final_norm_, file.ReadF32("output_norm.weight"));
  if (!c.tied_output) {
    ASSIGN_OR_RETURN(m->output_, linear("output.weight", vocab, dim));
  }
  m->layers_.resize(static_cast<size_t>(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) {
    Layer& L = m->layers_[static_cast<size_t>(l)];
    auto name = [l](const char* what) { return LayerTensorName(l, what); };
    L.norms.resize(std::size(kLayerNorms));
    for (size_t i = 0; i < std::size(kLayerNorms); ++i) {
      if (!HasLayerVector(kLayerNorms[i], c)) continue;
      ASSIGN_OR_RETURN(L.norms[i], file.ReadF32(name(kLayerNorms[i].name)));
    }
    LinearStorage* storage[] = {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_down, &L.w_up};
    for (int i = 0; i < kLayerMatrixCount; ++i) {
      const LayerMatrix& M = kLayerMatrices[i];
      ASSIGN_OR_RETURN(*storage[i], linear(name(M.name), static_cast<size_t>(ExtentOf(M.rows, c)),
                                           static_cast<size_t>(ExtentOf(M.cols, c))));
      if (c.qkv_bias && M.bias != nullptr) {
        ASSIGN_OR_RETURN(storage[i]->bias, file.ReadF32(name(M.bias)));
      }
    }
    for (size_t i = 0; i < std::size(kLayerNorms); ++i) {
      if (!L.norms[i].empty()) L.view.*kLayerNorms[i].field = L.norms[i].data();
    }
    for (int i = 0; i < kLayerMatrixCount; ++i)
      L.view.*kLayerMatrices[i].field = storage[i]->View();
  }
  m->globals_.embedding = m->embedding_.View();
  m->globals_.final_norm = m->final_norm_.data();
  m->globals_.output = c.tied_output ? m->embedding_.View() : m->output_.View();
  return m;
}

Status WeightSource::EmbedToken(int32_t token, float* out) {
  const LinearWeights& e = globals().embedding;
  const size_t id = static_cast<size_t>(token), dim = static_cast<size_t>(config().dim);
  if (e.quantized) {
    DequantizeRow(e.q8.q + id * e.q8.stride, e.q8.scale[id], dim, out);
  } else {
    std::copy_n(e.f32.w + id * e.f32.stride, dim, out);
  }
  return Status::Ok();
}

Result<const LayerWeights*> InMemoryWeights::AcquireLayer(int layer) {
  if (layer < 0 || layer >= config_.n_layers) {
    return OutOfRangeError("layer " + std::to_string(layer) + " out of range");
  }
  return &layers_[static_cast<size_t>(layer)].view;
}

size_t InMemoryWeights::bytes() const {
  size_t b = embedding_.bytes() + output_.bytes() + final_norm_.size() * 4;
  for (const Layer& L : layers_) {
    for (const std::vector<float>& v : L.norms) b += v.size() * 4;
    for (const LinearStorage* s : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_down, &L.w_up}) {
      b += s->bytes();
    }
  }
  return b;
}

}  // namespace dcomp
