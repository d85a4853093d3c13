// Transformer: the decoder forward pass (RMSNorm, RoPE, grouped-query attention, SwiGLU) with a KV
// cache, over a WeightSource that hands out one layer at a time.
//
// Forward() appends tokens at the current position: a whole prompt at once (prefill, processed in
// chunks of up to kMaxBatch tokens with matrix-matrix kernels) or one token (decode, matrix-vector
// kernels). A Transformer is one generation stream: not thread-safe; it uses the ThreadPool it is
// given (owned by the caller) for row-parallel products and attention heads. Results do not depend
// on the number of threads.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "engine/layer_schema.h"
#include "engine/weights.h"
#include "kernels/kernels.h"

namespace dcomp {

// Receives every linear input of a forward pass (f32, [n][cols]), in execution order.
class ActivationObserver {
 public:
  virtual ~ActivationObserver() = default;
  virtual void Observe(int layer, LinearInput which, const float* x, size_t n, size_t cols) = 0;
};

class Transformer {
 public:
  static constexpr int32_t kMaxBatch = 64;

  // `context_length` 0 means the model's. `kernel_table` null means kernels::Kernels().
  static Result<std::unique_ptr<Transformer>> Create(
      WeightSource* weights, ThreadPool* pool, int32_t context_length = 0,
      const kernels::KernelTable* kernel_table = nullptr);

  // Runs `tokens` at positions [position(), position() + size). On success `logits` holds
  // vocab_size floats per token when `all_logits`, else those of the last token only.
  // InvalidArgument for a token id outside the vocabulary, OutOfRange when the context would
  // overflow; on error the position is unchanged.
  Status Forward(std::span<const int32_t> tokens, bool all_logits, std::vector<float>* logits);

  void Reset() { pos_ = 0; }
  // Calibration hook (null to remove); not owned.
  void set_observer(ActivationObserver* o) { observer_ = o; }
  int32_t position() const { return pos_; }
  int32_t context_length() const { return ctx_; }
  const ModelConfig& config() const { return cfg_; }
  // Bytes held by the KV cache and by the activation scratch (for memory accounting).
  size_t kv_cache_bytes() const { return (k_cache_.size() + v_cache_.size()) * sizeof(float); }
  size_t scratch_bytes() const;
  // What Create() allocates for `config` at `context_length` (0 = the model's): KV cache and
  // scratch (activations, RoPE table), equal to kv_cache_bytes() + scratch_bytes() after Create.
  static size_t MemoryBytes(const ModelConfig& config, int32_t context_length);
  // The KV cache part of MemoryBytes.
  static size_t KvCacheBytes(const ModelConfig& config, int32_t context_length);

 private:
  Transformer(WeightSource* w, ThreadPool* pool, int32_t ctx, const kernels::KernelTable* kt);
  Status ForwardChunk(std::span<const int32_t> tokens, bool all_logits, float* logits);

  struct LinearJob {
    const LinearWeights* w;
    float* y;
    size_t y_stride;
  };
  // y_j = W_j x for every job, all sharing the input x [n][cols]; one parallel region. Fails only
  // when a matrix's rows come from a RowBlockSource and a block cannot be decoded.
  Status RunLinears(std::span<const LinearJob> jobs, const float* x, size_t x_stride, size_t n);
  // RunLinears for matrices given as RowBlockSources: one task per block (decode, then multiply).
  Status RunBlockedLinears(std::span<const LinearJob> jobs, size_t n);
  void RunResidentLinears(std::span<const LinearJob> jobs, const float* x, size_t x_stride,
                          size_t n);
  void Attention(int layer, size_t n);
  // Runs fn over [0, n) on the pool, or inline when `work` (multiply-adds or equivalent) is too
  // small to pay for a parallel region. Results never depend on which.
  void Parallel(size_t work, int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                int64_t grain = 1);
  void Observe(int layer, LinearInput which, const float* x, size_t n, size_t cols) {
    if (observer_ != nullptr) observer_->Observe(layer, which, x, n, cols);
  }
  void PerToken(size_t n, size_t cost_per_token, const std::function<void(size_t)>& fn);

  WeightSource* weights_;
  ThreadPool* pool_;
  const kernels::KernelTable* kt_;
  ModelConfig cfg_;
  int32_t ctx_;
  int32_t pos_ = 0;
  ActivationObserver* observer_ = nullptr;

  std::vector<float> rope_;               // [ctx][head_dim/2][cos, sin]
  std::vector<float> rope_local_;         // the same for sliding-window layers (gemma3)
  std::vector<float> k_cache_, v_cache_;  // [layer][ctx][kv_dim]
  // Activations for up to kMaxBatch tokens.
  std::vector<float> x_, xn_, q_, att_, hb_, hb2_;
  std::vector<int8_t> xq_;
  std::vector<float> xq_scale_;
  struct BlockTask {
    size_t job, block;
  };
  std::vector<BlockTask> blocked_tasks_;  // RunBlockedLinears' task list, reused
};

}  // namespace dcomp
