// ModelFile over a llama2.c checkpoint: legacy v0 (fp32, 28-byte header), v1 (fp32, 256-byte
// header) and v2 (Q8_0 groups, 256-byte header), with a separate tokenizer.bin.
#include <cmath>
#include <cstring>
#include <filesystem>

#include "base/file.h"
#include "engine/internal/model_formats.h"

namespace dcomp::internal {
namespace {

constexpr uint32_t kLlama2cMagic = 0x616b3432;  // "ak42"

struct Loc {
  int64_t rows, cols;
  uint64_t offset;
  bool q8;  // int8 codes followed by one f32 scale per group
};

class Llama2cModel : public ModelFile {
 public:
  static Result<std::unique_ptr<ModelFile>> Open(const std::string& path,
                                                 const std::string& tokenizer_path);
  const ModelConfig& config() const override { return config_; }
  const TokenizerSpec& tokenizer() const override { return tokenizer_; }
  const std::vector<TensorDesc>& tensors() const override { return descs_; }
  Result<std::vector<float>> ReadF32(const std::string& name) const override;
  std::string format() const override { return format_; }
  const std::string& path() const override { return file_->path(); }

 private:
  std::unique_ptr<MappedFile> file_;
  ModelConfig config_;
  TokenizerSpec tokenizer_;
  std::vector<TensorDesc> descs_;
  std::map<std::string, Loc> locs_;
  int64_t group_size_ = 0;
  std::string format_;
};

Result<std::string> FindTokenizer(const std::string& model_path, const std::string& given,
                                  int32_t vocab) {
  if (!given.empty()) return given;
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(model_path).parent_path();
  for (const std::string& cand :
       {"tok" + std::to_string(vocab) + ".bin", std::string("tokenizer.bin")}) {
    std::error_code ec;
    if (fs::exists(dir / cand, ec)) return (dir / cand).string();
  }
  return InvalidArgumentError(
      model_path +
      ": a llama2.c checkpoint carries no vocabulary; pass --tokenizer FILE "
      "(no tok" +
      std::to_string(vocab) + ".bin or tokenizer.bin beside it)");
}

Result<std::unique_ptr<ModelFile>> Llama2cModel::Open(const std::string& path,
                                                      const std::string& tokenizer_path) {
  auto m = std::make_unique<Llama2cModel>();
  ASSIGN_OR_RETURN(m->file_, MappedFile::Open(path));
  const uint8_t* base = m->file_->data();
  const uint64_t size = m->file_->size();
  auto fail = [&](const std::string& what) {
    return InvalidArgumentError("llama2.c checkpoint " + path + ": " + what);
  };
  if (size < 28) return fail("file is too short (" + std::to_string(size) + " bytes)");
  uint32_t magic;
  std::memcpy(&magic, base, 4);
  int32_t version = 0;
  int32_t h[7];
  bool shared = true;
  uint64_t off;
  if (magic == kLlama2cMagic) {
    if (size < 256) return fail("file is shorter than the 256-byte header");
    std::memcpy(&version, base + 4, 4);
    if (version != 1 && version != 2) {
      return UnimplementedError("llama2.c checkpoint " + path + ": version " +
                                std::to_string(version) + " (supported: 0, 1, 2)");
    }
    std::memcpy(h, base + 8, sizeof(h));
    shared = base[36] != 0;
    if (version == 2) {
      int32_t gs;
      std::memcpy(&gs, base + 37, 4);
      if (gs <= 0 || gs > 4096)
        return fail("group_size " + std::to_string(gs) + " is out of range");
      m->group_size_ = gs;
    }
    off = 256;
  } else {
    std::memcpy(h, base, sizeof(h));
    shared = h[5] > 0;
    h[5] = std::abs(h[5]);
    off = 28;
  }
  ModelConfig& c = m->config_;
  c.arch = "llama";
  c.name = std::filesystem::path(path).stem().string();
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.vocab_size = h[5];
  c.context_length = h[6];
  c.head_dim = c.n_heads > 0 && c.dim % c.n_heads == 0 ? c.dim / c.n_heads : 0;
  c.tied_output = shared;
  RETURN_IF_ERROR(c.Validate().WithContext(
      "llama2.c checkpoint " + path + " (is this a llama2.c .bin? the header does not parse)"));

  const int64_t dim = c.dim, hid = c.hidden_dim, kv = c.kv_dim(), L = c.n_layers, V = c.vocab_size;
  const bool q8 = version == 2;
  const int64_t gs = m->group_size_;
  auto add = [&](const std::string& name, int64_t rows, int64_t cols, bool quant) -> Status {
    const int64_t n = rows * cols;
    if (quant && n % gs != 0) {
      return fail("tensor '" + name + "' has " + std::to_string(n) +
                  " elements, not a multiple of group_size " + std::to_string(gs));
    }
    m->locs_[name] = {rows, cols, off, quant};
    m->descs_.push_back({name, rows, cols, quant ? "Q8_0(g" + std::to_string(gs) + ")" : "F32"});
    off += quant ? static_cast<uint64_t>(n + n / gs * 4) : static_cast<uint64_t>(n * 4);
    return Status::Ok();
  };
  auto layers = [&](const char* what, int64_t rows, int64_t cols, bool quant) -> Status {
    for (int64_t l = 0; l < L; ++l) {
      RETURN_IF_ERROR(add(LayerTensorName(static_cast<int>(l), what), rows, cols, quant));
    }
    return Status::Ok();
  };
  if (version == 0) {
    RETURN_IF_ERROR(add("token_embd.weight", V, dim, false));
    RETURN_IF_ERROR(layers("attn_norm.weight", 1, dim, false));
    RETURN_IF_ERROR(layers("attn_q.weight", dim, dim, false));
    RETURN_IF_ERROR(layers("attn_k.weight", kv, dim, false));
    RETURN_IF_ERROR(layers("attn_v.weight", kv, dim, false));
    RETURN_IF_ERROR(layers("attn_output.weight", dim, dim, false));
    RETURN_IF_ERROR(layers("ffn_norm.weight", 1, dim, false));
    RETURN_IF_ERROR(layers("ffn_gate.weight", hid, dim, false));
    RETURN_IF_ERROR(layers("ffn_down.weight", dim, hid, false));
    RETURN_IF_ERROR(layers("ffn_up.weight", hid, dim, false));
    RETURN_IF_ERROR(add("output_norm.weight", 1, dim, false));
    off +=
        static_cast<uint64_t>(c.context_length) * (c.head_dim / 2) * 4 * 2;  // freq_cis_real/imag
  } else {
    RETURN_IF_ERROR(layers("attn_norm.weight", 1, dim, false));
    RETURN_IF_ERROR(layers("ffn_norm.weight", 1, dim, false));
    RETURN_IF_ERROR(add("output_norm.weight", 1, dim, false));
    RETURN_IF_ERROR(add("token_embd.weight", V, dim, q8));
    RETURN_IF_ERROR(layers("attn_q.weight", dim, dim, q8));
    RETURN_IF_ERROR(layers("attn_k.weight", kv, dim, q8));
    RETURN_IF_ERROR(layers("attn_v.weight", kv, dim, q8));
    RETURN_IF_ERROR(layers("attn_output.weight", dim, dim, q8));
    RETURN_IF_ERROR(layers("ffn_gate.weight", hid, dim, q8));
    RETURN_IF_ERROR(layers("ffn_down.weight", dim, hid, q8));
    RETURN_IF_ERROR(layers("ffn_up.weight", hid, dim, q8));
  }
  if (!shared) RETURN_IF_ERROR(add("output.weight", V, dim, q8));
  if (off != size) {
    return fail("file size " + std::to_string(size) + " does not match the header's config (" +
                c.Summary() + ", expected " + std::to_string(off) +
                " bytes): truncated, or not a llama2.c checkpoint");
  }
  m->format_ = version == 0   ? "llama2.c v0 (fp32)"
               : version == 1 ? "llama2.c v1 (fp32)"
                              : "llama2.c v2 (Q8_0, group " + std::to_string(gs) + ")";
  ASSIGN_OR_RETURN(std::string tok_path, FindTokenizer(path, tokenizer_path, c.vocab_size));
  ASSIGN_OR_RETURN(m->tokenizer_, LoadLlama2cTokenizer(tok_path, c.vocab_size));
  return std::unique_ptr<ModelFile>(std::move(m));
}

Result<std::vector<float>> Llama2cModel::ReadF32(const std::string& name) const {
  auto it = locs_.find(name);
  if (it == locs_.end()) return NotFoundError(path() + ": no tensor '" + name + "'");
  const Loc& loc = it->second;
  const int64_t n = loc.rows * loc.cols;
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t* p = file_->data() + loc.offset;
  if (!loc.q8) {
    std::memcpy(out.data(), p, static_cast<size_t>(n) * 4);
  } else {
    const int8_t* q = reinterpret_cast<const int8_t*>(p);
    const uint8_t* scales = p + n;
    for (int64_t g = 0; g < n / group_size_; ++g) {
      float s;
      std::memcpy(&s, scales + g * 4, 4);
      for (int64_t k = 0; k < group_size_; ++k) {
        out[static_cast<size_t>(g * group_size_ + k)] = q[g * group_size_ + k] * s;
      }
    }
  }
  for (float v : out) {
    if (!std::isfinite(v)) {
      return DataLossError(path() + ": tensor '" + name + "' contains a non-finite value");
    }
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<ModelFile>> OpenLlama2cModel(const std::string& path,
                                                    const std::string& tokenizer_path) {
  return Llama2cModel::Open(path, tokenizer_path);
}

}  // namespace dcomp::internal
