// One schema of a transformer layer's weights, shared by every weight source (in memory, the
// streaming runtime), the importers and the packer: each matrix's tensor name (after "blk.N."),
// where it goes in LayerWeights, which activation it multiplies (LinearInput: what the packer's
// calibration observes) and its shape in terms of the model config, plus the layer's vectors.
// The order of kLayerMatrices is LayerWeights' order (the streaming runtime's units use it).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/model_config.h"
#include "engine/weights.h"

namespace dcomp {

// The inputs of the linear maps, as the packer's calibration sees them.
enum class LinearInput {
  kAttnIn,     // attention-norm output: input of wq, wk, wv
  kAttnOut,    // attention output: input of wo
  kFfnIn,      // ffn-norm output: input of w_gate, w_up
  kFfnHidden,  // silu(gate) * up: input of w_down
  kHeadIn,     // final-norm output: input of the output matrix
};

// "attn_in", "attn_out", "ffn_in", "ffn_hidden" or "head_in".
inline const char* LinearInputName(LinearInput in) {
  switch (in) {
    case LinearInput::kAttnIn: return "attn_in";
    case LinearInput::kAttnOut: return "attn_out";
    case LinearInput::kFfnIn: return "ffn_in";
    case LinearInput::kFfnHidden: return "ffn_hidden";
    case LinearInput::kHeadIn: return "head_in";
  }
  return "?";
}

// Whether the model computes input `in` Hadamard-transformed (ModelConfig::hadamard_inputs).
inline bool HadamardInput(const ModelConfig& c, LinearInput in) {
  return (c.hadamard_inputs >> static_cast<int>(in) & 1u) != 0;
}

// The names of the inputs the model computes Hadamard-transformed, in LinearInput order.
inline std::vector<const char*> HadamardInputNames(const ModelConfig& c) {
  std::vector<const char*> names;
  for (int i = 0; i <= static_cast<int>(LinearInput::kHeadIn); ++i) {
    if (HadamardInput(c, static_cast<LinearInput>(i))) {
      names.push_back(LinearInputName(static_cast<LinearInput>(i)));
    }
  }
  return names;
}

// A matrix dimension in terms of the config.
enum class Extent { kDim, kKvDim, kHidden, kQDim, kHeadDim };
inline int64_t ExtentOf(Extent e, const ModelConfig& c) {
  switch (e) {
    case Extent::kDim: return c.dim;
    case Extent::kKvDim: return c.kv_dim();
    case Extent::kHidden: return c.hidden_dim;
    case Extent::kQDim: return c.q_dim();
    case Extent::kHeadDim: return c.head_dim;
  }
  return 0;
}

struct LayerMatrix {
  const char* name;                    // "attn_q.weight"
  LinearWeights LayerWeights::*field;  // &LayerWeights::wq
  LinearInput input;
  Extent rows, cols;
  const char* bias;  // its bias tensor when the config has qkv_bias, else nullptr
};

inline constexpr LayerMatrix kLayerMatrices[] = {
    {"attn_q.weight", &LayerWeights::wq, LinearInput::kAttnIn, Extent::kQDim, Extent::kDim,
     "attn_q.bias"},
    {"attn_k.weight", &LayerWeights::wk, LinearInput::kAttnIn, Extent::kKvDim, Extent::kDim,
     "attn_k.bias"},
    {"attn_v.weight", &LayerWeights::wv, LinearInput::kAttnIn, Extent::kKvDim, Extent::kDim,
     "attn_v.bias"},
    {"attn_output.weight", &LayerWeights::wo, LinearInput::kAttnOut, Extent::kDim, Extent::kQDim,
     nullptr},
    {"ffn_gate.weight", &LayerWeights::w_gate, LinearInput::kFfnIn, Extent::kHidden, Extent::kDim,
     nullptr},
    {"ffn_down.weight", &LayerWeights::w_down, LinearInput::kFfnHidden, Extent::kDim,
     Extent::kHidden, nullptr},
    {"ffn_up.weight", &LayerWeights::w_up, LinearInput::kFfnIn, Extent::kHidden, Extent::kDim,
     nullptr},
};
inline constexpr int kLayerMatrixCount = sizeof(kLayerMatrices) / sizeof(kLayerMatrices[0]);

// A layer's norm vectors (f32), where they go, the input before whose matrices they are stored,
// their length, and which models have them.
enum class VectorPresence { kAlways, kQkNorm, kPostNorms };
struct LayerVector {
  const char* name;
  const float* LayerWeights::*field;
  LinearInput output;
  Extent size;
  VectorPresence presence;
};
inline constexpr LayerVector kLayerNorms[] = {
    {"attn_norm.weight", &LayerWeights::attn_norm, LinearInput::kAttnIn, Extent::kDim,
     VectorPresence::kAlways},
    // Per-head RMSNorm of q and k (after the projections, before RoPE).
    {"attn_q_norm.weight", &LayerWeights::q_norm, LinearInput::kAttnOut, Extent::kHeadDim,
     VectorPresence::kQkNorm},
    {"attn_k_norm.weight", &LayerWeights::k_norm, LinearInput::kAttnOut, Extent::kHeadDim,
     VectorPresence::kQkNorm},
    // Gemma 3: RMSNorm of the attention output before the residual add.
    {"post_attention_norm.weight", &LayerWeights::attn_post_norm, LinearInput::kFfnIn, Extent::kDim,
     VectorPresence::kPostNorms},
    {"ffn_norm.weight", &LayerWeights::ffn_norm, LinearInput::kFfnIn, Extent::kDim,
     VectorPresence::kAlways},
    // Gemma 3: RMSNorm of the FFN output before the residual add.
    {"post_ffw_norm.weight", &LayerWeights::ffn_post_norm, LinearInput::kFfnHidden, Extent::kDim,
     VectorPresence::kPostNorms}};
// Whether models of config `c` have vector `v`.
inline bool HasLayerVector(const LayerVector& v, const ModelConfig& c) {
  switch (v.presence) {
    case VectorPresence::kAlways: return true;
    case VectorPresence::kQkNorm: return c.qk_norm;
    case VectorPresence::kPostNorms: return c.post_norms;
  }
  return false;
}

// A layer's inputs in execution order: the order its tensors are stored in (CanonicalTensors).
inline constexpr LinearInput kLayerInputs[] = {LinearInput::kAttnIn, LinearInput::kAttnOut,
                                               LinearInput::kFfnIn, LinearInput::kFfnHidden};

// The layer matrix whose tensor name ends in ".SUFFIX" after "blk.N.", or nullptr.
inline const LayerMatrix* FindLayerMatrix(std::string_view tensor_name) {
  for (const LayerMatrix& m : kLayerMatrices) {
    const std::string_view suffix = m.name;
    if (tensor_name.size() > suffix.size() && tensor_name.ends_with(suffix) &&
        tensor_name[tensor_name.size() - suffix.size() - 1] == '.') {
      return &m;
    }
  }
  return nullptr;
}

// A matrix's role, the same in every layer: "attn_q" for "blk.N.attn_q.weight", "token_embd" for
// "token_embd.weight" (the tensor name without "blk.N." and ".weight").
inline std::string_view MatrixRole(std::string_view tensor_name) {
  if (tensor_name.ends_with(".weight")) tensor_name.remove_suffix(7);
  if (tensor_name.starts_with("blk.")) {
    const size_t dot = tensor_name.find('.', 4);
    if (dot != std::string_view::npos) tensor_name.remove_prefix(dot + 1);
  }
  return tensor_name;
}

}  // namespace dcomp
