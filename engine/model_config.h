// ModelConfig: the hyper-parameters of a decoder-only transformer (Llama / Qwen2 family) as read
// from a model file. Plain value type.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"

namespace dcomp {

enum class Activation : int32_t {
  kSilu = 0,      // SwiGLU: silu(gate) * up (llama, qwen)
  kGeluTanh = 1,  // GeGLU: gelu_tanh(gate) * up (gemma)
};

enum class RopeStyle : int32_t {
  kInterleaved = 0,  // rotate pairs (2i, 2i+1): llama2.c and GGUF "llama"
  kNeox = 1,         // rotate pairs (i, i + head_dim/2): GGUF "qwen2"
};

struct ModelConfig {
  std::string arch;  // "llama", "qwen2", "qwen3" or "gemma3"
  std::string name;
  int32_t dim = 0;
  int32_t hidden_dim = 0;
  int32_t n_layers = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t vocab_size = 0;
  int32_t context_length = 0;
  float rope_theta = 10000.0f;
  // Llama 3.x frequency scaling: RoPE frequency i (< head_dim / 2) is rope_theta^(-2i/head_dim)
  // divided by rope_freq_factors[i]. Empty: no scaling.
  std::vector<float> rope_freq_factors;
  float rms_eps = 1e-5f;
  RopeStyle rope_style = RopeStyle::kInterleaved;
  bool tied_output = true;  // the output matrix is the token embedding
  bool qkv_bias = false;    // q/k/v projections have biases (qwen2)
  bool qk_norm = false;     // per-head RMSNorm of q and k before RoPE (qwen3, gemma3)
  // Gemma 3: embeddings multiplied by embedding_scale (sqrt(dim)); GeGLU; RMSNorm of the attention
  // and FFN outputs before each residual add (post_norms); sliding-window attention on the layers
  // IsSlidingLayer names, whose RoPE uses rope_theta_local and no frequency scaling.
  float embedding_scale = 1.0f;
  Activation activation = Activation::kSilu;
  bool post_norms = false;
  int32_t sliding_window = 0;   // keys attended by a sliding layer, the query's included; 0: none
  int32_t sliding_pattern = 0;  // layer l is global when l % pattern == pattern - 1; 0: all slide
  float rope_theta_local = 10000.0f;
  // Matrix inputs computed Hadamard-transformed (kernels::HadamardTransform), one bit per kind of
  // input, bit i for LinearInput value i (engine/layer_schema.h), in every layer: the matrices
  // reading them hold W * H / block. Spreads the activations' outlier channels over their blocks,
  // so that their 8-bit quantization loses less. Not the output's input when it is the embedding.
  uint32_t hadamard_inputs = 0;
  bool synthetic = false;  // weights are synthetic (speed/memory benchmarks only)
  // Synthetic models: the code width `dcomp synth` drew each matrix role at ("attn_q",
  // "token_embd", ...), which `dcomp pack` keeps (GGUF dcomp.synthetic.bits.<role>).
  std::map<std::string, int> synthetic_bits;
  // And per role split into groups of rows, each group's width (GGUF
  // dcomp.synthetic.group_bits.<role>, int32 array, 4..7 each): the rows are split as rate
  // allocation splits a real model's.
  std::map<std::string, std::vector<int>> synthetic_group_bits;
  // And per role of a layer, each layer's width (GGUF dcomp.synthetic.layer_bits.<role>, int32
  // array of n_layers widths, 4..8), in place of the role's: widths mixed depth for depth as in
  // the real pack the profile comes from.
  std::map<std::string, std::vector<int>> synthetic_layer_bits;
  // And the shape of the non-uniform levels the codes below 8 bits were drawn on (GGUF
  // dcomp.synthetic.level_shape; 0 or absent: uniform levels), which `dcomp pack` keeps.
  double synthetic_level_shape = 0;

  int32_t kv_dim() const { return n_kv_heads * head_dim; }
  // Width of the attention (q and the attention output): n_heads * head_dim, which need not be
  // dim (Qwen3, Gemma 3).
  int32_t q_dim() const { return n_heads * head_dim; }
  bool IsSlidingLayer(int layer) const {
    return sliding_window > 0 &&
           (sliding_pattern == 0 || layer % sliding_pattern < sliding_pattern - 1);
  }
  // Checks positivity, divisibility (n_heads % n_kv_heads == 0, even head_dim) and sane upper
  // bounds; the message names the field.
  Status Validate() const;
  // "llama dim=192 hidden=512 layers=6 heads=6/2 vocab=4096 ctx=512".
  std::string Summary() const;
};

}  // namespace dcomp
