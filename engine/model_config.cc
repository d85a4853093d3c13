#include "engine/model_config.h"

#include <cmath>

#include "engine/layer_schema.h"

namespace dcomp {

Status ModelConfig::Validate() const {
  auto bad = [](const std::string& field, int64_t v, const std::string& want) {
    return InvalidArgumentError("model config: " + field + " = " + std::to_string(v) +
                                ", expected " + want);
  };
  constexpr int32_t kMaxDim = 1 << 16;
  if (dim <= 0 || dim > kMaxDim) return bad("dim", dim, "1..65536");
  if (hidden_dim <= 0 || hidden_dim > 4 * kMaxDim)
    return bad("hidden_dim", hidden_dim, "1..262144");
  if (n_layers <= 0 || n_layers > 1024) return bad("n_layers", n_layers, "1..1024");
  if (n_heads <= 0 || n_heads > dim) return bad("n_heads", n_heads, "1..dim");
  if (n_kv_heads <= 0 || n_kv_heads > n_heads || n_heads % n_kv_heads != 0) {
    return bad("n_kv_heads", n_kv_heads, "a divisor of n_heads=" + std::to_string(n_heads));
  }
  if (head_dim <= 0 || head_dim % 2 != 0 || head_dim > 1024) {
    return bad("head_dim", head_dim, "an even number in 2..1024");
  }
  if (q_dim() > 4 * kMaxDim) return bad("n_heads * head_dim", q_dim(), "at most 262144");
  if (vocab_size <= 0 || vocab_size > (1 << 22)) return bad("vocab_size", vocab_size, "1..4194304");
  if (context_length <= 0 || context_length > (1 << 20)) {
    return bad("context_length", context_length, "1..1048576");
  }
  if (!(rope_theta > 0.0f)) return InvalidArgumentError("model config: rope_theta must be > 0");
  if (!(rope_theta_local > 0.0f)) {
    return InvalidArgumentError("model config: rope_theta_local must be > 0");
  }
  if (!(embedding_scale > 0.0f) || !std::isfinite(embedding_scale)) {
    return InvalidArgumentError("model config: embedding_scale must be a positive number");
  }
  if (sliding_window < 0) return bad("sliding_window", sliding_window, ">= 0");
  if (sliding_pattern < 0) return bad("sliding_pattern", sliding_pattern, ">= 0");
  if (activation != Activation::kSilu && activation != Activation::kGeluTanh) {
    return bad("activation", static_cast<int64_t>(activation), "0 (silu) or 1 (gelu_tanh)");
  }
  if (hadamard_inputs >= 1u << 5) {
    return bad("hadamard_inputs", hadamard_inputs, "a mask of bits 0..4 (the kinds of input)");
  }
  if (tied_output && (hadamard_inputs & (1u << 4)) != 0) {
    return InvalidArgumentError(
        "model config: hadamard_inputs transforms the output's input (bit 4), but the output is "
        "the token embedding, which the embedding lookup reads untransformed");
  }
  if (!rope_freq_factors.empty()) {
    if (static_cast<int32_t>(rope_freq_factors.size()) * 2 != head_dim) {
      return InvalidArgumentError(
          "model config: " + std::to_string(rope_freq_factors.size()) +
          " RoPE frequency factors, expected head_dim / 2 = " + std::to_string(head_dim / 2));
    }
    for (float f : rope_freq_factors) {
      if (!(f > 0.0f) || !std::isfinite(f)) {
        return InvalidArgumentError("model config: RoPE frequency factor " + std::to_string(f) +
                                    " is not a positive finite number");
      }
    }
  }
  if (!(rms_eps > 0.0f) || rms_eps > 1.0f) {
    return InvalidArgumentError("model config: rms_eps must be in (0, 1]");
  }
  return Status::Ok();
}

namespace {

// " hadamard=attn_in,ffn_in,..." (engine/layer_schema.h), or "".
std::string HadamardSummary(const ModelConfig& c) {
  std::string s;
  for (const char* name : HadamardInputNames(c))
    s += (s.empty() ? " hadamard=" : ",") + std::string(name);
  return s;
}

}  // namespace

std::string ModelConfig::Summary() const {
  return arch + " dim=" + std::to_string(dim) + " hidden=" + std::to_string(hidden_dim) +
         " layers=" + std::to_string(n_layers) + " heads=" + std::to_string(n_heads) + "/" +
         std::to_string(n_kv_heads) + " vocab=" + std::to_string(vocab_size) +
         " ctx=" + std::to_string(context_length) + HadamardSummary(*this) +
         (synthetic ? " [SYNTHETIC weights]" : "");
}

}  // namespace dcomp
