// ModelFile over a GGUF file (architectures llama and qwen2).
#include <cmath>
#include <cstdio>
#include <optional>
#include <set>

#include "base/mutex.h"
#include "base/packed_codes.h"
#include "engine/internal/model_formats.h"

namespace dcomp::internal {
namespace {

// RoPE frequency scaling, into c->rope_freq_factors (after head_dim and rope_theta are read). A
// rope_freqs.weight tensor gives the factors (what converters write for Llama 3.x); otherwise
// rope.scaling.type: "none"; "linear" (every frequency divided by rope.scaling.factor); "llama3"
// (Llama 3.1's definition: wavelengths shorter than original_context_length / high_freq_factor
// keep their frequency, longer than original_context_length / low_freq_factor are divided by
// factor, and those between are interpolated; the two frequency factors default to 1 and 4).
// Gemma 3 (after dim is read): embeddings scaled by sqrt(dim), GeGLU, post-norms, and interleaved
// sliding-window layers: attention.sliding_window keys, every sliding_window_pattern-th layer
// global (6 unless the file says), the sliding layers' RoPE base rope.freq_base_swa (10000 unless
// the file says). As converted to GGUF, Gemma's RMSNorm weights already include their +1.
Status ReadGemma3(const GgufFile& g, const std::string& a, ModelConfig* c) {
  c->embedding_scale = std::sqrt(static_cast<float>(c->dim));
  c->activation = Activation::kGeluTanh;
  c->post_norms = true;
  ASSIGN_OR_RETURN(int64_t window, g.GetInt(a + "attention.sliding_window"));
  if (window < 1 || window > (1 << 20)) {
    return InvalidArgumentError(a + "attention.sliding_window = " + std::to_string(window) +
                                ", expected 1..1048576");
  }
  c->sliding_window = static_cast<int32_t>(window);
  c->sliding_pattern = 6;
  if (g.Find(a + "attention.sliding_window_pattern")) {
    ASSIGN_OR_RETURN(int64_t pattern, g.GetInt(a + "attention.sliding_window_pattern"));
    if (pattern < 1 || pattern > 1024) {
      return InvalidArgumentError(a + "attention.sliding_window_pattern = " +
                                  std::to_string(pattern) + ", expected 1..1024");
    }
    c->sliding_pattern = static_cast<int32_t>(pattern);
  }
  if (g.Find(a + "rope.freq_base_swa")) {
    ASSIGN_OR_RETURN(double theta, g.GetFloat(a + "rope.freq_base_swa"));
    c->rope_theta_local = static_cast<float>(theta);
  }
  return Status::Ok();
}

// The int32 array of code widths at `key`, each in [lo, hi] (else an error naming the entry and
// calling the range `what`).
Result<std::vector<int>> ReadWidths(const GgufFile& g, const std::string& key, int lo, int hi,
                                    const std::string& what) {
  ASSIGN_OR_RETURN(const std::vector<GgufValue>* widths, g.GetArray(key, GgufType::kInt32));
  std::vector<int> out;
  for (size_t k = 0; k < widths->size(); ++k) {
    const int64_t b = (*widths)[k].i;
    if (b < lo || b > hi) {
      return InvalidArgumentError(key + "[" + std::to_string(k) + "] = " + std::to_string(b) +
                                  ", expected " + what + " in " + std::to_string(lo) + ".." +
                                  std::to_string(hi));
    }
    out.push_back(static_cast<int>(b));
  }
  return out;
}

// A synthetic model's code widths (dcomp synth): per matrix role (dcomp.synthetic.bits.<role>,
// 4..8), per layer of a role (dcomp.synthetic.layer_bits.<role>, int32 array of one width per
// layer, 4..8) and per group of rows of a role (dcomp.synthetic.group_bits.<role>, int32 array,
// 4..7); and the inputs it computes Hadamard-transformed (dcomp.synthetic.hadamard_inputs).
Status ReadSyntheticWidths(const GgufFile& g, ModelConfig* c) {
  const std::string bits_key = "dcomp.synthetic.bits.", group_key = "dcomp.synthetic.group_bits.";
  const std::string layer_key = "dcomp.synthetic.layer_bits.";
  for (const auto& [key, value] : g.metadata()) {
    if (key == "dcomp.synthetic.hadamard_inputs") {  // checked with the config (Validate)
      ASSIGN_OR_RETURN(const int64_t mask, g.GetInt(key));
      if (mask < 0 || mask > 0xFFFF) {
        return InvalidArgumentError(key + " = " + std::to_string(mask) +
                                    ", expected a mask of bits 0..4");
      }
      c->hadamard_inputs = static_cast<uint32_t>(mask);
      continue;
    }
    if (key == "dcomp.synthetic.level_shape") {
      ASSIGN_OR_RETURN(const double a, g.GetFloat(key));
      bool distinct = a >= 0 && a <= 8;
      for (int b = kMinPackedBits; b <= kMaxLevelBits && distinct && a > 0; ++b) {
        distinct = CodeLevelsProblem(b, LevelTable(b, a)).empty();
      }
      if (!distinct) {
        return InvalidArgumentError(key + " = " + std::to_string(a) +
                                    ", expected 0 (uniform levels) or a shape whose levels are "
                                    "distinct at every width it applies to (up to about 3.3)");
      }
      c->synthetic_level_shape = a;
      continue;
    }
    if (key.rfind(bits_key, 0) == 0) {
      ASSIGN_OR_RETURN(int64_t b, g.GetInt(key));
      if (b < 4 || b > 8) {
        return InvalidArgumentError(key + " = " + std::to_string(b) +
                                    ", expected a code width in 4..8");
      }
      c->synthetic_bits[key.substr(bits_key.size())] = static_cast<int>(b);
      continue;
    }
    if (key.rfind(layer_key, 0) == 0) {
      ASSIGN_OR_RETURN(std::vector<int> widths,
                       ReadWidths(g, key, kMinPackedBits, 8, "a code width"));
      if (widths.size() != static_cast<size_t>(c->n_layers)) {
        return InvalidArgumentError(key + " has " + std::to_string(widths.size()) +
                                    " widths, expected one per layer (" +
                                    std::to_string(c->n_layers) + ")");
      }
      c->synthetic_layer_bits[key.substr(layer_key.size())] = std::move(widths);
      continue;
    }
    if (key.rfind(group_key, 0) != 0) continue;
    ASSIGN_OR_RETURN(std::vector<int> widths,
                     ReadWidths(g, key, kMinPackedBits, kMaxPackedBits, "a packed code width"));
    if (widths.empty() || widths.size() > 4096) {
      return InvalidArgumentError(key + " has " + std::to_string(widths.size()) +
                                  " widths, expected 1..4096 (one per group of rows)");
    }
    c->synthetic_group_bits[key.substr(group_key.size())] = std::move(widths);
  }
  return Status::Ok();
}

Status ReadRopeScaling(const GgufFile& g, const std::string& a, ModelConfig* c) {
  const int n = c->head_dim / 2;
  if (const GgufTensorInfo* t = g.FindTensor("rope_freqs.weight")) {
    if (t->ne.size() != 1 || t->ne[0] != n) {
      return InvalidArgumentError("rope_freqs.weight has " + std::to_string(t->ne.size()) +
                                  " dimensions of which the first is " +
                                  std::to_string(t->ne.empty() ? 0 : t->ne[0]) +
                                  ", expected one of head_dim / 2 = " + std::to_string(n));
    }
    c->rope_freq_factors.resize(static_cast<size_t>(n));
    return GgmlToF32(t->type, t->data, n, c->rope_freq_factors.data())
        .WithContext("rope_freqs.weight");
  }
  std::string type = "none";
  if (g.Find(a + "rope.scaling.type")) {
    ASSIGN_OR_RETURN(type, g.GetString(a + "rope.scaling.type"));
  }
  if (type == "none") return Status::Ok();
  if (type != "linear" && type != "llama3") {
    return UnimplementedError(a + "rope.scaling.type '" + type +
                              "' is not supported (supported: none, linear, llama3)");
  }
  auto positive = [&](const std::string& key, std::optional<double> fallback) -> Result<double> {
    if (!g.Find(a + key)) {
      if (fallback) return *fallback;
      return InvalidArgumentError(a + key + " is required by rope scaling '" + type + "'");
    }
    ASSIGN_OR_RETURN(double v, g.GetFloat(a + key));
    if (!(v > 0.0) || !std::isfinite(v)) {
      return InvalidArgumentError(a + key + " = " + std::to_string(v) +
                                  ", expected a positive number");
    }
    return v;
  };
  ASSIGN_OR_RETURN(const double factor, positive("rope.scaling.factor", std::nullopt));
  c->rope_freq_factors.assign(static_cast<size_t>(n), static_cast<float>(factor));
  if (type == "linear") return Status::Ok();
  ASSIGN_OR_RETURN(const double original,
                   positive("rope.scaling.original_context_length", std::nullopt));
  ASSIGN_OR_RETURN(const double low, positive("rope.scaling.low_freq_factor", 1.0));
  ASSIGN_OR_RETURN(const double high, positive("rope.scaling.high_freq_factor", 4.0));
  if (!(high > low)) {
    return InvalidArgumentError(a + "rope.scaling.high_freq_factor must exceed low_freq_factor");
  }
  for (int i = 0; i < n; ++i) {
    const double freq = std::pow(static_cast<double>(c->rope_theta), -2.0 * i / c->head_dim);
    const double wavelen = 2.0 * M_PI / freq;
    double scaled = freq / factor;
    if (wavelen < original / high) {
      scaled = freq;
    } else if (wavelen <= original / low) {
      const double smooth = (original / wavelen - low) / (high - low);
      scaled = (1.0 - smooth) * freq / factor + smooth * freq;
    }
    c->rope_freq_factors[static_cast<size_t>(i)] = static_cast<float>(freq / scaled);
  }
  return Status::Ok();
}

class GgufModel : public ModelFile {
 public:
  static Result<std::unique_ptr<ModelFile>> Open(const std::string& path);
  const ModelConfig& config() const override { return config_; }
  const TokenizerSpec& tokenizer() const override { return tokenizer_; }
  const std::vector<TensorDesc>& tensors() const override { return descs_; }
  Result<std::vector<float>> ReadF32(const std::string& name) const override;
  std::string format() const override { return format_; }
  const std::string& path() const override { return gguf_->path(); }

 private:
  std::unique_ptr<GgufFile> gguf_;
  ModelConfig config_;
  TokenizerSpec tokenizer_;
  std::vector<TensorDesc> descs_;
  std::string format_;
};

Result<std::unique_ptr<ModelFile>> GgufModel::Open(const std::string& path) {
  auto m = std::make_unique<GgufModel>();
  ASSIGN_OR_RETURN(m->gguf_, GgufFile::Open(path));
  const GgufFile& g = *m->gguf_;
  ModelConfig& c = m->config_;
  ASSIGN_OR_RETURN(c.arch, g.GetString("general.architecture"));
  if (c.arch != "llama" && c.arch != "qwen2" && c.arch != "qwen3" && c.arch != "gemma3") {
    return UnimplementedError("GGUF " + path + ": architecture '" + c.arch +
                              "' is not supported (supported: llama, qwen2, qwen3, gemma3)");
  }
  if (g.tensors().empty()) {
    return InvalidArgumentError("GGUF " + path +
                                ": the file has no tensors (a vocabulary-only GGUF?)");
  }
  auto name = g.GetString("general.name");
  c.name = name.ok() ? *name : c.arch;
  const std::string a = c.arch + ".";
  auto get_int = [&](const std::string& key, int32_t* out) -> Status {
    ASSIGN_OR_RETURN(int64_t v, g.GetInt(a + key));
    if (v <= 0 || v > INT32_MAX) {
      return InvalidArgumentError("GGUF " + path + ": " + a + key + " = " + std::to_string(v) +
                                  " is out of range");
    }
    *out = static_cast<int32_t>(v);
    return Status::Ok();
  };
  RETURN_IF_ERROR(get_int("embedding_length", &c.dim));
  RETURN_IF_ERROR(get_int("feed_forward_length", &c.hidden_dim));
  RETURN_IF_ERROR(get_int("block_count", &c.n_layers));
  RETURN_IF_ERROR(get_int("attention.head_count", &c.n_heads));
  RETURN_IF_ERROR(get_int("context_length", &c.context_length));
  c.n_kv_heads = c.n_heads;
  if (g.Find(a + "attention.head_count_kv"))
    RETURN_IF_ERROR(get_int("attention.head_count_kv", &c.n_kv_heads));
  if (g.Find(a + "attention.key_length")) {
    // Heads of their own width (Qwen3): q is n_heads * key_length wide, not dim.
    RETURN_IF_ERROR(get_int("attention.key_length", &c.head_dim));
    int32_t value_length = c.head_dim;
    if (g.Find(a + "attention.value_length")) {
      RETURN_IF_ERROR(get_int("attention.value_length", &value_length));
    }
    if (value_length != c.head_dim) {
      return UnimplementedError("GGUF " + path + ": " + a +
                                "attention.value_length = " + std::to_string(value_length) +
                                " differs from key_length = " + std::to_string(c.head_dim));
    }
  } else if (c.dim % c.n_heads != 0) {
    return InvalidArgumentError("GGUF " + path + ": " + a +
                                "embedding_length = " + std::to_string(c.dim) +
                                " is not a multiple of head_count = " + std::to_string(c.n_heads) +
                                " (and no attention.key_length)");
  } else {
    c.head_dim = c.dim / c.n_heads;
  }
  if (g.Find(a + "rope.dimension_count")) {
    int32_t rope_dims = 0;
    RETURN_IF_ERROR(get_int("rope.dimension_count", &rope_dims));
    if (rope_dims != c.head_dim) {
      return UnimplementedError("GGUF " + path + ": partial rotary embedding (" + a +
                                "rope.dimension_count = " + std::to_string(rope_dims) +
                                ", head_dim = " + std::to_string(c.head_dim) + ")");
    }
  }
  if (g.Find(a + "rope.freq_base")) {
    ASSIGN_OR_RETURN(double theta, g.GetFloat(a + "rope.freq_base"));
    c.rope_theta = static_cast<float>(theta);
  }
  if (g.Find(a + "attention.layer_norm_rms_epsilon")) {
    ASSIGN_OR_RETURN(double eps, g.GetFloat(a + "attention.layer_norm_rms_epsilon"));
    c.rms_eps = static_cast<float>(eps);
  }
  RETURN_IF_ERROR(ReadRopeScaling(g, a, &c).WithContext("GGUF " + path));
  c.rope_style = c.arch == "llama" ? RopeStyle::kInterleaved : RopeStyle::kNeox;
  c.qkv_bias = c.arch == "qwen2";
  c.qk_norm = c.arch == "qwen3" || c.arch == "gemma3";
  if (c.arch == "gemma3") RETURN_IF_ERROR(ReadGemma3(g, a, &c).WithContext("GGUF " + path));
  c.tied_output = g.FindTensor("output.weight") == nullptr;
  if (auto syn = g.GetBool("dcomp.synthetic"); syn.ok()) c.synthetic = *syn;
  if (c.synthetic) RETURN_IF_ERROR(ReadSyntheticWidths(g, &c).WithContext("GGUF " + path));

  ASSIGN_OR_RETURN(m->tokenizer_, GgufTokenizerSpec(g));
  c.vocab_size = static_cast<int32_t>(m->tokenizer_.tokens.size());
  if (const GgufTensorInfo* emb = g.FindTensor("token_embd.weight");
      emb != nullptr && emb->ne.size() == 2 && emb->ne[1] != c.vocab_size) {
    return InvalidArgumentError("GGUF " + path + ": token_embd.weight has " +
                                std::to_string(emb->ne[1]) + " rows but the vocabulary has " +
                                std::to_string(c.vocab_size) + " tokens");
  }
  RETURN_IF_ERROR(c.Validate().WithContext("GGUF " + path));

  std::map<std::string, int> type_counts;
  for (const GgufTensorInfo& t : g.tensors()) {
    if (t.ne.size() > 2) {
      return UnimplementedError("GGUF " + path + ": tensor '" + t.name + "' has " +
                                std::to_string(t.ne.size()) + " dimensions");
    }
    if (GgmlBlock block; !GgmlReadableBlock(t.type, &block)) {
      return UnimplementedError(
          "GGUF " + path + ": tensor '" + t.name + "' has type " + GgmlTypeName(t.type) +
          ", which dcomp cannot read (readable: " + GgmlReadableTypeNames() + ")");
    }
    TensorDesc d;
    d.name = t.name;
    d.cols = t.ne[0];
    d.rows = t.ne.size() == 2 ? t.ne[1] : 1;
    d.dtype = GgmlTypeName(t.type);
    m->descs_.push_back(d);
    type_counts[d.dtype]++;
  }
  m->format_ = "GGUF v" + std::to_string(g.version()) + " (";
  bool first = true;
  for (const auto& [t, n] : type_counts) {
    m->format_ += (first ? "" : ", ") + std::to_string(n) + " " + t;
    first = false;
  }
  m->format_ += ")";
  return std::unique_ptr<ModelFile>(std::move(m));
}

Result<std::vector<float>> GgufModel::ReadF32(const std::string& name) const {
  const GgufTensorInfo* t = gguf_->FindTensor(name);
  if (t == nullptr) return NotFoundError("GGUF " + path() + ": no tensor '" + name + "'");
  int64_t n = 1;
  for (int64_t d : t->ne) n *= d;
  std::vector<float> out(static_cast<size_t>(n));
  RETURN_IF_ERROR(GgmlToF32(t->type, t->data, n, out.data())
                      .WithContext("GGUF " + path() + ": tensor '" + name + "'"));
  for (float v : out) {
    if (!std::isfinite(v)) {
      return DataLossError("GGUF " + path() + ": tensor '" + name +
                           "' contains a non-finite value");
    }
  }
  return out;
}

}  // namespace

Result<TokenizerSpec> GgufTokenizerSpec(const GgufFile& g) {
  const std::string where = "GGUF " + g.path() + ": ";
  TokenizerSpec s;
  ASSIGN_OR_RETURN(s.model, g.GetString("tokenizer.ggml.model"));
  ASSIGN_OR_RETURN(const std::vector<GgufValue>* tokens,
                   g.GetArray("tokenizer.ggml.tokens", GgufType::kString));
  s.tokens.reserve(tokens->size());
  for (const auto& v : *tokens) s.tokens.push_back(v.str);
  if (g.Find("tokenizer.ggml.scores")) {
    ASSIGN_OR_RETURN(const std::vector<GgufValue>* scores,
                     g.GetArray("tokenizer.ggml.scores", GgufType::kFloat32));
    for (const auto& v : *scores) s.scores.push_back(static_cast<float>(v.f));
  }
  if (g.Find("tokenizer.ggml.token_type")) {
    ASSIGN_OR_RETURN(const std::vector<GgufValue>* types,
                     g.GetArray("tokenizer.ggml.token_type", GgufType::kInt32));
    for (const auto& v : *types) {
      if (v.i < 0 || v.i > 6) {
        return InvalidArgumentError(where + "tokenizer.ggml.token_type has invalid value " +
                                    std::to_string(v.i));
      }
      s.token_types.push_back(static_cast<TokenType>(v.i));
    }
  }
  if (g.Find("tokenizer.ggml.merges")) {
    ASSIGN_OR_RETURN(const std::vector<GgufValue>* merges,
                     g.GetArray("tokenizer.ggml.merges", GgufType::kString));
    for (const auto& v : *merges) s.merges.push_back(v.str);
  }
  if (g.Find("tokenizer.ggml.pre")) {
    ASSIGN_OR_RETURN(s.pre, g.GetString("tokenizer.ggml.pre"));
  } else if (s.model == "gpt2") {
    // As llama.cpp does; said once per file and process.
    static Mutex mu;
    static std::set<std::string>* warned = new std::set<std::string>();
    MutexLock lock(&mu);
    if (warned->insert(g.path()).second) {
      std::fprintf(stderr,
                   "note: %s has no tokenizer.ggml.pre; using the default (GPT-2) pre-tokenizer\n",
                   g.path().c_str());
    }
  }
  auto get_id = [&](const std::string& key, int32_t* out) -> Status {
    if (!g.Find(key)) return Status::Ok();
    ASSIGN_OR_RETURN(int64_t v, g.GetInt(key));
    // llama.cpp writes -1 as 0xFFFFFFFF for "none".
    *out = (v < 0 || v >= static_cast<int64_t>(s.tokens.size())) ? -1 : static_cast<int32_t>(v);
    return Status::Ok();
  };
  RETURN_IF_ERROR(get_id("tokenizer.ggml.bos_token_id", &s.bos_id));
  RETURN_IF_ERROR(get_id("tokenizer.ggml.eos_token_id", &s.eos_id));
  RETURN_IF_ERROR(get_id("tokenizer.ggml.unknown_token_id", &s.unk_id));
  RETURN_IF_ERROR(get_id("tokenizer.ggml.eot_token_id", &s.eot_id));
  if (g.Find("tokenizer.chat_template")) {
    ASSIGN_OR_RETURN(s.chat_template, g.GetString("tokenizer.chat_template"));
  }
  s.add_bos = s.model == "llama" || (s.model == "gpt2" && PreTokenizer::AddsBosByDefault(s.pre));
  if (g.Find("tokenizer.ggml.add_bos_token")) {
    ASSIGN_OR_RETURN(s.add_bos, g.GetBool("tokenizer.ggml.add_bos_token"));
  }
  s.add_space_prefix = s.model == "llama";
  if (g.Find("tokenizer.ggml.add_space_prefix")) {
    ASSIGN_OR_RETURN(s.add_space_prefix, g.GetBool("tokenizer.ggml.add_space_prefix"));
  }
  return s;
}

Result<std::unique_ptr<ModelFile>> OpenGgufModel(const std::string& path) {
  return GgufModel::Open(path);
}

}  // namespace dcomp::internal
