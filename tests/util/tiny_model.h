// Builds small random models as GGUF files (via GgufWriter) for engine tests: any shape, llama or
// qwen2, with optional faults (wrong shapes, missing tensors, unsupported types).
#pragma once

#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "engine/model_file.h"

namespace dcomp::testing {

struct TinyModelOptions {
  // llama, qwen2 (q/k/v biases), qwen3 (q/k norms), gemma3 (q/k norms, post-norms, GeGLU,
  // scaled embeddings, sliding-window layers: `sliding_window` keys, every second layer global)
  std::string arch = "llama";
  int sliding_window = 4;
  int head_dim = 0;  // 0: dim / heads; otherwise written as attention.key_length
  int dim = 32, hidden = 48, layers = 2, heads = 4, kv_heads = 2, vocab = 40, ctx = 16;
  bool tied = true;
  GgmlType matrix_type = GgmlType::kF32;
  uint32_t seed = 1;
  // Faults.
  int wrong_ffn_rows = 0;    // if > 0: ffn_gate of layer 0 gets this many rows
  bool drop_attn_v = false;  // omit blk.1.attn_v.weight
  bool no_tensors = false;   // vocabulary only
  // Chat: a Jinja template (tokenizer.chat_template) and ChatML's control tokens <|im_start|> and
  // <|im_end|> as tokens 3 and 4.
  std::string chat_template;
  // RoPE scaling: a rope_freqs.weight tensor (head_dim / 2 factors), and/or rope.scaling.* keys
  // (written when the type is not empty; factor and original context when positive).
  std::vector<float> rope_freqs;
  std::string rope_scaling_type;
  float rope_scaling_factor = 0.0f;
  int rope_original_context = 0;
  // Synthetic: dcomp.synthetic, with these dcomp.synthetic.group_bits.<role> and
  // dcomp.synthetic.layer_bits.<role> arrays.
  bool synthetic = false;
  std::map<std::string, std::vector<int32_t>> synthetic_group_bits;
  std::map<std::string, std::vector<int32_t>> synthetic_layer_bits;
};

inline Status WriteTinyModel(const std::string& path, const TinyModelOptions& o) {
  GgufWriter w;
  const std::string a = o.arch + ".";
  w.SetString("general.architecture", o.arch);
  w.SetString("general.name", "tiny-" + o.arch);
  w.SetU32(a + "embedding_length", static_cast<uint32_t>(o.dim));
  w.SetU32(a + "feed_forward_length", static_cast<uint32_t>(o.hidden));
  w.SetU32(a + "block_count", static_cast<uint32_t>(o.layers));
  w.SetU32(a + "attention.head_count", static_cast<uint32_t>(o.heads));
  w.SetU32(a + "attention.head_count_kv", static_cast<uint32_t>(o.kv_heads));
  w.SetU32(a + "context_length", static_cast<uint32_t>(o.ctx));
  w.SetF32(a + "rope.freq_base", o.arch == "qwen2" ? 1000000.0f : 10000.0f);
  w.SetF32(a + "attention.layer_norm_rms_epsilon", 1e-6f);
  if (o.arch == "gemma3") {
    w.SetU32(a + "attention.sliding_window", static_cast<uint32_t>(o.sliding_window));
    w.SetU32(a + "attention.sliding_window_pattern", 2);
    w.SetF32(a + "rope.freq_base_swa", 100.0f);
  }
  if (o.head_dim > 0) {
    w.SetU32(a + "attention.key_length", static_cast<uint32_t>(o.head_dim));
    w.SetU32(a + "attention.value_length", static_cast<uint32_t>(o.head_dim));
  }
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  for (int i = 3; i < o.vocab; ++i) tokens.push_back("\xE2\x96\x81t" + std::to_string(i));
  if (!o.chat_template.empty()) {
    tokens[3] = "<|im_start|>";
    tokens[4] = "<|im_end|>";
    std::vector<int32_t> types(tokens.size(), 1);   // normal
    types[0] = 2;                                   // unknown
    types[1] = types[2] = types[3] = types[4] = 3;  // control
    w.SetI32Array("tokenizer.ggml.token_type", types);
    w.SetString("tokenizer.chat_template", o.chat_template);
  }
  w.SetString("tokenizer.ggml.model", "llama");
  w.SetStringArray("tokenizer.ggml.tokens", tokens);
  w.SetF32Array("tokenizer.ggml.scores", std::vector<float>(tokens.size(), 0.0f));
  w.SetU32("tokenizer.ggml.bos_token_id", 1);
  w.SetU32("tokenizer.ggml.eos_token_id", 2);
  w.SetU32("tokenizer.ggml.unknown_token_id", 0);
  if (o.synthetic) w.SetBool("dcomp.synthetic", true);
  for (const auto& [role, widths] : o.synthetic_group_bits)
    w.SetI32Array("dcomp.synthetic.group_bits." + role, widths);
  for (const auto& [role, widths] : o.synthetic_layer_bits)
    w.SetI32Array("dcomp.synthetic.layer_bits." + role, widths);
  if (!o.rope_scaling_type.empty()) w.SetString(a + "rope.scaling.type", o.rope_scaling_type);
  if (o.rope_scaling_factor > 0) w.SetF32(a + "rope.scaling.factor", o.rope_scaling_factor);
  if (o.rope_original_context > 0) {
    w.SetU32(a + "rope.scaling.original_context_length",
             static_cast<uint32_t>(o.rope_original_context));
  }
  if (o.no_tensors) return w.Write(path);
  if (!o.rope_freqs.empty()) {
    RETURN_IF_ERROR(w.AddTensor("rope_freqs.weight", 1, static_cast<int64_t>(o.rope_freqs.size()),
                                GgmlType::kF32, o.rope_freqs));
  }

  std::mt19937 rng(o.seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto rnd = [&](int64_t n, float scale) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = nd(rng) * scale;
    return v;
  };
  auto norm = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = 1.0f + 0.1f * nd(rng);
    return v;
  };
  const int hd = o.head_dim > 0 ? o.head_dim : o.dim / o.heads, kv = o.kv_heads * hd;
  const int qd = o.heads * hd;
  auto mat = [&](const std::string& name, int rows, int cols) -> Status {
    GgmlType t = (cols % 32 == 0) ? o.matrix_type : GgmlType::kF32;
    return w.AddTensor(name, rows, cols, t,
                       rnd(int64_t{rows} * cols, 1.0f / std::sqrt(float(cols))));
  };
  RETURN_IF_ERROR(w.AddTensor("token_embd.weight", o.vocab, o.dim, GgmlType::kF32,
                              rnd(int64_t{o.vocab} * o.dim, 1.0f)));
  RETURN_IF_ERROR(w.AddTensor("output_norm.weight", 1, o.dim, GgmlType::kF32, norm(o.dim)));
  if (!o.tied) RETURN_IF_ERROR(mat("output.weight", o.vocab, o.dim));
  for (int l = 0; l < o.layers; ++l) {
    auto n = [l](const char* what) { return LayerTensorName(l, what); };
    RETURN_IF_ERROR(w.AddTensor(n("attn_norm.weight"), 1, o.dim, GgmlType::kF32, norm(o.dim)));
    RETURN_IF_ERROR(mat(n("attn_q.weight"), qd, o.dim));
    if (o.arch == "qwen3" || o.arch == "gemma3") {
      RETURN_IF_ERROR(w.AddTensor(n("attn_q_norm.weight"), 1, hd, GgmlType::kF32, norm(hd)));
      RETURN_IF_ERROR(w.AddTensor(n("attn_k_norm.weight"), 1, hd, GgmlType::kF32, norm(hd)));
    }
    if (o.arch == "gemma3") {
      RETURN_IF_ERROR(
          w.AddTensor(n("post_attention_norm.weight"), 1, o.dim, GgmlType::kF32, norm(o.dim)));
      RETURN_IF_ERROR(
          w.AddTensor(n("post_ffw_norm.weight"), 1, o.dim, GgmlType::kF32, norm(o.dim)));
    }
    RETURN_IF_ERROR(mat(n("attn_k.weight"), kv, o.dim));
    if (!(o.drop_attn_v && l == 1)) RETURN_IF_ERROR(mat(n("attn_v.weight"), kv, o.dim));
    RETURN_IF_ERROR(mat(n("attn_output.weight"), o.dim, qd));
    RETURN_IF_ERROR(w.AddTensor(n("ffn_norm.weight"), 1, o.dim, GgmlType::kF32, norm(o.dim)));
    RETURN_IF_ERROR(
        mat(n("ffn_gate.weight"), l == 0 && o.wrong_ffn_rows ? o.wrong_ffn_rows : o.hidden, o.dim));
    RETURN_IF_ERROR(mat(n("ffn_down.weight"), o.dim, o.hidden));
    RETURN_IF_ERROR(mat(n("ffn_up.weight"), o.hidden, o.dim));
    if (o.arch == "qwen2") {
      RETURN_IF_ERROR(w.AddTensor(n("attn_q.bias"), 1, o.dim, GgmlType::kF32, rnd(o.dim, 0.5f)));
      RETURN_IF_ERROR(w.AddTensor(n("attn_k.bias"), 1, kv, GgmlType::kF32, rnd(kv, 0.5f)));
      RETURN_IF_ERROR(w.AddTensor(n("attn_v.bias"), 1, kv, GgmlType::kF32, rnd(kv, 0.5f)));
    }
  }
  return w.Write(path);
}

}  // namespace dcomp::testing
