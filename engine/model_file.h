// ModelFile: read access to a model on disk (GGUF, llama2.c checkpoint; later .dcm), independent of
// its format: the config, the tokenizer and the tensors by canonical name, dequantized to f32.
//
// Canonical tensor names follow GGUF: token_embd.weight, output_norm.weight, output.weight
// (absent when tied), blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,
// ffn_down,ffn_up}.weight and blk.N.attn_{q,k,v}.bias (qwen2). Matrices are [rows=out][cols=in],
// row-major. Files are memory-mapped; ReadF32 is const and safe to call from many threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/model_config.h"
#include "engine/tokenizer.h"

namespace dcomp {

struct TensorDesc {
  std::string name;
  int64_t rows = 1;  // 1 for vectors
  int64_t cols = 0;
  std::string dtype;  // "F32", "F16", "BF16", "Q8_0"...
  int64_t numel() const { return rows * cols; }
};

// An INT8 per-row tensor as stored (a .dcm file): codes [rows][cols], unpadded, in [-127, 127];
// w[r][c] = q[r * cols + c] * scale[r].
struct Q8Tensor {
  std::vector<int8_t> q;
  std::vector<float> scale;
  int64_t rows = 0, cols = 0;
};

class ModelFile {
 public:
  virtual ~ModelFile() = default;
  virtual const ModelConfig& config() const = 0;
  virtual const TokenizerSpec& tokenizer() const = 0;
  virtual const std::vector<TensorDesc>& tensors() const = 0;
  // The tensor dequantized to f32, row-major. NotFound names the tensor.
  virtual Result<std::vector<float>> ReadF32(const std::string& name) const = 0;
  // Files that store matrices as INT8 codes (.dcm) hand them out exactly, so that W8A8 inference
  // uses the packed codes rather than re-quantizing their dequantized values.
  virtual bool stores_q8(const std::string& /*name*/) const { return false; }
  virtual Result<Q8Tensor> ReadQ8(const std::string& name) const {
    return UnimplementedError(path() + ": '" + name + "' is not stored as INT8");
  }
  // e.g. "GGUF v3 (Q8_0)" or "llama2.c v0 fp32".
  virtual std::string format() const = 0;
  virtual const std::string& path() const = 0;

  const TensorDesc* Find(const std::string& name) const;
};

// Opens a model by content (GGUF magic, llama2.c header). `tokenizer_path` is for llama2.c
// checkpoints, which carry no vocabulary; when empty, tok<vocab_size>.bin and then tokenizer.bin
// next to the model are tried. Checks that every tensor the config implies exists with the right
// shape; errors name the file and the tensor.
Result<std::unique_ptr<ModelFile>> OpenModelFile(const std::string& path,
                                                 const std::string& tokenizer_path = "");

// Canonical names.
std::string LayerTensorName(int layer, const char* what);  // ("blk.3.attn_q.weight")

// Every tensor a config implies, in execution order: token_embd (layer -1); per layer attn_norm,
// attn_q, attn_k, attn_v, [attn_{q,k,v}.bias], attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down;
// output_norm and, when not tied, output (layer n_layers). Vectors have rows = 1.
struct CanonicalTensor {
  std::string name;
  int layer = 0;
  int64_t rows = 1, cols = 0;
};
std::vector<CanonicalTensor> CanonicalTensors(const ModelConfig& c);

// Checks the tensor set of a model against its config (shared by every format).
Status CheckModelTensors(const ModelFile& file);

// f16 / bf16 to f32.
float HalfToFloat(uint16_t h);
float BFloat16ToFloat(uint16_t h);

}  // namespace dcomp

namespace dcomp {
// Only the tokenizer of a model file: works on vocabulary-only GGUF files too.
Result<TokenizerSpec> LoadTokenizerSpec(const std::string& path,
                                        const std::string& tokenizer_path = "");
}  // namespace dcomp
