#include "engine/dcm_model.h"

#include <cmath>
#include <cstring>

namespace dcomp {

namespace pb = storage::pb;

pb::ModelConfig ModelConfigToProto(const ModelConfig& c) {
  pb::ModelConfig p;
  p.set_arch(c.arch);
  p.set_name(c.name);
  p.set_dim(c.dim);
  p.set_hidden_dim(c.hidden_dim);
  p.set_n_layers(c.n_layers);
  p.set_n_heads(c.n_heads);
  p.set_n_kv_heads(c.n_kv_heads);
  p.set_head_dim(c.head_dim);
  p.set_vocab_size(c.vocab_size);
  p.set_context_length(c.context_length);
  p.set_rope_theta(c.rope_theta);
  for (float f : c.rope_freq_factors) p.add_rope_freq_factors(f);
  p.set_rms_eps(c.rms_eps);
  p.set_rope_style(static_cast<int32_t>(c.rope_style));
  p.set_tied_output(c.tied_output);
  p.set_qkv_bias(c.qkv_bias);
  p.set_qk_norm(c.qk_norm);
  p.set_embedding_scale(c.embedding_scale);
  p.set_activation(static_cast<int32_t>(c.activation));
  p.set_post_norms(c.post_norms);
  p.set_sliding_window(c.sliding_window);
  p.set_sliding_pattern(c.sliding_pattern);
  p.set_rope_theta_local(c.rope_theta_local);
  p.set_hadamard_inputs(c.hadamard_inputs);
  p.set_synthetic(c.synthetic);
  return p;
}

ModelConfig ModelConfigFromProto(const pb::ModelConfig& p) {
  ModelConfig c;
  c.arch = p.arch();
  c.name = p.name();
  c.dim = p.dim();
  c.hidden_dim = p.hidden_dim();
  c.n_layers = p.n_layers();
  c.n_heads = p.n_heads();
  c.n_kv_heads = p.n_kv_heads();
  c.head_dim = p.head_dim();
  c.vocab_size = p.vocab_size();
  c.context_length = p.context_length();
  c.rope_theta = p.rope_theta();
  c.rope_freq_factors.assign(p.rope_freq_factors().begin(), p.rope_freq_factors().end());
  c.rms_eps = p.rms_eps();
  c.rope_style = p.rope_style() == 1 ? RopeStyle::kNeox : RopeStyle::kInterleaved;
  c.tied_output = p.tied_output();
  c.qkv_bias = p.qkv_bias();
  c.qk_norm = p.qk_norm();
  c.embedding_scale = p.embedding_scale() > 0 ? p.embedding_scale() : 1.0f;
  c.activation = static_cast<Activation>(p.activation());
  c.post_norms = p.post_norms();
  c.sliding_window = p.sliding_window();
  c.sliding_pattern = p.sliding_pattern();
  c.rope_theta_local = p.rope_theta_local() > 0 ? p.rope_theta_local() : 10000.0f;
  c.hadamard_inputs = p.hadamard_inputs();
  c.synthetic = p.synthetic();
  return c;
}

pb::Tokenizer TokenizerToProto(const TokenizerSpec& t) {
  pb::Tokenizer p;
  p.set_model(t.model);
  for (const auto& s : t.tokens) p.add_tokens(s);
  for (float s : t.scores) p.add_scores(s);
  for (TokenType tt : t.token_types) p.add_token_types(static_cast<int32_t>(tt));
  for (const auto& m : t.merges) p.add_merges(m);
  p.set_bos_id(t.bos_id);
  p.set_eos_id(t.eos_id);
  p.set_unk_id(t.unk_id);
  p.set_add_bos(t.add_bos);
  p.set_add_space_prefix(t.add_space_prefix);
  p.set_pre(t.pre);
  p.set_chat_template(t.chat_template);
  if (t.eot_id >= 0) p.set_eot_id(t.eot_id);
  return p;
}

TokenizerSpec TokenizerFromProto(const pb::Tokenizer& p) {
  TokenizerSpec t;
  t.model = p.model();
  t.tokens.assign(p.tokens().begin(), p.tokens().end());
  t.scores.assign(p.scores().begin(), p.scores().end());
  for (int32_t v : p.token_types()) t.token_types.push_back(static_cast<TokenType>(v));
  t.merges.assign(p.merges().begin(), p.merges().end());
  t.bos_id = p.bos_id();
  t.eos_id = p.eos_id();
  t.unk_id = p.unk_id();
  t.add_bos = p.add_bos();
  t.add_space_prefix = p.add_space_prefix();
  if (!p.pre().empty()) t.pre = p.pre();
  t.chat_template = p.chat_template();
  t.eot_id = p.has_eot_id() ? p.eot_id() : -1;
  return t;
}

Result<std::unique_ptr<DcmModelFile>> DcmModelFile::Open(const std::string& path) {
  auto m = std::unique_ptr<DcmModelFile>(new DcmModelFile());
  ASSIGN_OR_RETURN(m->reader_, storage::ContainerReader::Open(path));
  const pb::Manifest& man = m->reader_->manifest();
  m->config_ = ModelConfigFromProto(man.config());
  if (Status s = m->config_.Validate(); !s.ok()) {
    return InvalidArgumentError(path + ": manifest config: " + s.message());
  }
  m->tokenizer_ = TokenizerFromProto(man.tokenizer());
  for (const pb::Tensor& t : man.tensors()) {
    m->tensors_.push_back(
        {t.name(), t.rows(), t.cols(), t.type() == pb::TENSOR_Q8_ROW ? "Q8_ROW" : "F32"});
  }
  return m;
}

std::string DcmModelFile::format() const {
  const auto& h = reader_->header();
  return ".dcm " + std::to_string(h.version_major) + "." + std::to_string(h.version_minor);
}

bool DcmModelFile::stores_q8(const std::string& name) const {
  int t = reader_->FindTensor(name);
  return t >= 0 && reader_->manifest().tensors(t).type() == pb::TENSOR_Q8_ROW;
}

Result<std::vector<uint8_t>> DcmModelFile::DecodeTensorData(int t) const {
  const pb::Tensor& T = reader_->manifest().tensors(t);
  const uint32_t first = T.first_block() + (T.type() == pb::TENSOR_Q8_ROW ? 1 : 0);
  const uint32_t end = T.first_block() + T.num_blocks();
  size_t total = 0;
  for (uint32_t b = first; b < end; ++b) total += reader_->block(b).raw_size();
  std::vector<uint8_t> out(total);
  storage::BlockDecoder dec;
  size_t off = 0;
  for (uint32_t b = first; b < end; ++b) {
    const size_t n = reader_->block(b).raw_size();
    RETURN_IF_ERROR(reader_->ReadBlock(b, std::span<uint8_t>(out.data() + off, n), &dec));
    off += n;
  }
  return out;
}

Result<std::vector<float>> DcmModelFile::DecodeScales(int t) const {
  storage::BlockDecoder dec;
  return reader_->ReadRowScales(t, &dec);  // checked by the reader
}

Result<Q8Tensor> DcmModelFile::ReadQ8(const std::string& name) const {
  const int t = reader_->FindTensor(name);
  if (t < 0) return NotFoundError(path() + ": no tensor '" + name + "'");
  const pb::Tensor& T = reader_->manifest().tensors(t);
  if (T.type() != pb::TENSOR_Q8_ROW) return ModelFile::ReadQ8(name);
  Q8Tensor q;
  q.rows = T.rows();
  q.cols = T.cols();
  ASSIGN_OR_RETURN(q.scale, DecodeScales(t));
  ASSIGN_OR_RETURN(std::vector<uint8_t> codes, DecodeTensorData(t));
  q.q.assign(codes.begin(), codes.end());
  if (T.row_order_size() > 0) {  // stored out of order (checked: a permutation): back in order
    const size_t cols = static_cast<size_t>(q.cols);
    std::vector<int8_t> in_order(q.q.size());
    std::vector<float> scale(q.scale.size());
    for (size_t i = 0; i < static_cast<size_t>(q.rows); ++i) {
      const size_t r = T.row_order(static_cast<int>(i));
      std::copy_n(q.q.begin() + static_cast<ptrdiff_t>(i * cols), cols,
                  in_order.begin() + static_cast<ptrdiff_t>(r * cols));
      scale[r] = q.scale[i];
    }
    q.q = std::move(in_order);
    q.scale = std::move(scale);
  }
  for (size_t i = 0; i < q.q.size(); ++i) {
    if (q.q[i] == -128) {
      return DataLossError(path() + ": tensor '" + name + "': code -128 at row " +
                           std::to_string(i / static_cast<size_t>(q.cols)) +
                           " (codes are in [-127, 127])");
    }
  }
  return q;
}

Result<std::vector<float>> DcmModelFile::ReadF32(const std::string& name) const {
  const int t = reader_->FindTensor(name);
  if (t < 0) return NotFoundError(path() + ": no tensor '" + name + "'");
  const pb::Tensor& T = reader_->manifest().tensors(t);
  const size_t rows = static_cast<size_t>(T.rows()), cols = static_cast<size_t>(T.cols());
  std::vector<float> out(rows * cols);
  if (T.type() == pb::TENSOR_F32) {
    ASSIGN_OR_RETURN(std::vector<uint8_t> raw, DecodeTensorData(t));
    std::memcpy(out.data(), raw.data(), raw.size());
    return out;
  }
  ASSIGN_OR_RETURN(Q8Tensor q, ReadQ8(name));
  for (size_t i = 0; i < out.size(); ++i) out[i] = q.q[i] * q.scale[i / cols];
  return out;
}

}  // namespace dcomp
