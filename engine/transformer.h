// Transformer: the decoder forward pass (RMSNorm, RoPE, grouped-query attention, SwiGLU) over a
// WeightSource that hands out one layer at a time, for sequences whose keys and values live in
// KvCaches.
//
// Step() advances several sequences at once, each at its own position in its own cache, in one
// pass over the weights: every layer is acquired once and its products run on all the tokens of
// the step together (continuous batching). Forward() is the one-sequence form over the
// transformer's own cache: a whole prompt (prefill, in chunks of up to kMaxBatch tokens) or one
// token (decode).
//
// A token's results never depend on the other tokens of its step, on how a prompt is chunked or
// on the number of threads: every per-token operation (normalization, quantization of the
// activations, RoPE, attention over its own cache) is computed alone, and the int8 products
// accumulate in integers and scale each row the same way whatever the number of tokens (the
// kernels' tests hold the matrix-matrix products bit-exact against the matrix-vector ones). The
// batch tests (tests/engine/forward_test.cc) check it for int8 and f32 weights.
//
// Not thread-safe: one caller steps it; it uses the ThreadPool it is given (owned by the caller)
// for row-parallel products and attention heads.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
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

// Calibration hook for evaluating many variants of one model that differ in one matrix: the
// residual stream x [n][dim] at the points a step can start from. Point 2l is the input of layer
// l (before its attention), 2l + 1 the input of its feed-forward part, and 2 * n_layers the input
// of the final norm and the output. A step that starts at point p > 0 takes x from Load() instead
// of computing the embeddings and the layers before p, which it neither acquires nor runs (so their
// KV cache entries are not written: every step of a sequence must start at the same point). Its
// results are bit-identical to a whole step's when Load() gives what a whole step computed there
// with the same tokens, positions and weights before p.
class ResidualTap {
 public:
  virtual ~ResidualTap() = default;
  // The point the next step starts from, in [0, 2 * n_layers] (0: the embeddings).
  virtual int StartPoint() = 0;
  // Fills x [n][dim] at the start point (when it is not 0).
  virtual void Load(int point, float* x, size_t n, size_t dim) = 0;
  // x [n][dim] at each point the step passes, from its start point on, in order.
  virtual void Passed(int point, const float* x, size_t n, size_t dim) = 0;
};

// How a KvCache stores keys and values: f32, or 8-bit codes with one scale per head and position
// (about a quarter of the bytes; not exact: see BENCHMARKS.md for its perplexity cost).
enum class KvType { kF32, kInt8 };
Result<KvType> ParseKvType(std::string_view name);  // "f32" | "int8"
const char* KvTypeName(KvType t);

// One sequence's keys and values for every layer ([layer][capacity][kv_dim] each) and how many
// positions hold them. Sized for `capacity` tokens; Reset() starts a new sequence.
class KvCache {
 public:
  KvCache() = default;
  KvCache(const ModelConfig& config, int32_t capacity, KvType type = KvType::kF32);
  int32_t position() const { return pos_; }
  int32_t capacity() const { return cap_; }
  KvType type() const { return type_; }
  void Reset() { pos_ = 0; }
  size_t bytes() const {
    return (k_.size() + v_.size() + ks_.size() + vs_.size()) * sizeof(float) + kq_.size() +
           vq_.size();
  }
  // What a cache of `capacity` tokens holds.
  static size_t Bytes(const ModelConfig& config, int32_t capacity, KvType type = KvType::kF32);

 private:
  friend class Transformer;
  KvType type_ = KvType::kF32;
  std::vector<float> k_, v_;     // kF32
  std::vector<int8_t> kq_, vq_;  // kInt8: codes, [layer][capacity][kv_dim]
  std::vector<float> ks_, vs_;   // kInt8: scales, [layer][capacity][kv_heads]
  int32_t cap_ = 0, pos_ = 0;
};

// One sequence's part of a Step: `tokens` are appended at cache->position().
struct SequenceInput {
  KvCache* cache = nullptr;
  std::span<const int32_t> tokens;
  // Logits wanted: of the last token (`logits`), or of every token (`all_logits`).
  bool logits = true;
  bool all_logits = false;
};

class Transformer {
 public:
  static constexpr int32_t kMaxBatch = 64;

  // `context_length` 0 means the model's. `kernel_table` null means kernels::Kernels().
  static Result<std::unique_ptr<Transformer>> Create(
      WeightSource* weights, ThreadPool* pool, int32_t context_length = 0,
      const kernels::KernelTable* kernel_table = nullptr);

  // Runs `tokens` at positions [position(), position() + size) of the transformer's own cache
  // (allocated for the whole context at the first call). On success `logits` holds vocab_size
  // floats per token when `all_logits`, else those of the last token only. InvalidArgument for a
  // token id outside the vocabulary, OutOfRange when the context would overflow; on error the
  // position is unchanged.
  Status Forward(std::span<const int32_t> tokens, bool all_logits, std::vector<float>* logits);

  // Advances every sequence of `seqs` by its tokens in one pass over the weights: at most
  // kMaxBatch tokens in all, each sequence once, each cache with room for its tokens and within
  // the context length. `logits` gets vocab_size floats per wanted row, in the order of `seqs`.
  // On error (InvalidArgument, OutOfRange, or the weight source's) no cache's position changes.
  Status Step(std::span<const SequenceInput> seqs, std::vector<float>* logits);

  void Reset() { own_.Reset(); }
  // The type of the own cache (Forward's); takes effect when it is next allocated (before the
  // first Forward).
  void set_kv_type(KvType t) { own_kv_type_ = t; }
  // Calibration hook (null to remove); not owned.
  void set_observer(ActivationObserver* o) { observer_ = o; }
  // Residual hook (null to remove); not owned. A start point outside [0, 2 * n_layers] fails the
  // step with InvalidArgument.
  void set_residual_tap(ResidualTap* t) { tap_ = t; }
  int32_t position() const { return own_.position(); }
  int32_t context_length() const { return ctx_; }
  const ModelConfig& config() const { return cfg_; }
  // Bytes held by the own KV cache (0 until the first Forward) and by the activation scratch.
  size_t kv_cache_bytes() const { return own_.bytes(); }
  size_t scratch_bytes() const;
  // What a transformer of `config` at `context_length` (0 = the model's) holds once it has run
  // Forward: its own KV cache and its scratch (activations, RoPE table); equal to
  // kv_cache_bytes() + scratch_bytes() then.
  static size_t MemoryBytes(const ModelConfig& config, int32_t context_length);
  // The KV cache part of MemoryBytes.
  static size_t KvCacheBytes(const ModelConfig& config, int32_t context_length);

 private:
  Transformer(WeightSource* w, ThreadPool* pool, int32_t ctx, const kernels::KernelTable* kt);
  // One pass over the weights for rows_ (at most kMaxBatch tokens, validated by the caller).
  Status StepRows(std::span<const SequenceInput> seqs, float* logits);
  Status ValidateTokens(std::span<const int32_t> tokens) const;

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
  // The two halves of layer l for the step's n rows, each adding its output to x_.
  Status AttentionBlock(int l, const LayerWeights& w, size_t n);
  Status FeedForwardBlock(int l, const LayerWeights& w, size_t n);
  // xn_ row t = RMSNorm(x row t) * w for the n rows of [n][dim] x (x may be xn_ itself).
  void NormRows(const float* x, const float* w, size_t n);
  void Attention(int layer, size_t n);
  void Passed(int point, size_t n) {
    if (tap_ != nullptr) tap_->Passed(point, x_.data(), n, static_cast<size_t>(cfg_.dim));
  }
  // Runs fn over [0, n) on the pool, or inline when `work` (multiply-adds or equivalent) is too
  // small to pay for a parallel region. Results never depend on which.
  void Parallel(size_t work, int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                int64_t grain = 1);
  // The input `which` of layer `layer`'s matrices, n rows of `cols`, as they read it: Hadamard-
  // transformed in place where the model says so (ModelConfig::hadamard_inputs), then shown to
  // the observer.
  void PrepareInput(int layer, LinearInput which, float* x, size_t n, size_t cols);
  void PerToken(size_t n, size_t cost_per_token, const std::function<void(size_t)>& fn);

  WeightSource* weights_;
  ThreadPool* pool_;
  const kernels::KernelTable* kt_;
  ModelConfig cfg_;
  int32_t ctx_;
  ActivationObserver* observer_ = nullptr;
  ResidualTap* tap_ = nullptr;
  KvCache own_;  // Forward's sequence
  KvType own_kv_type_ = KvType::kF32;

  std::vector<float> rope_;        // [ctx][head_dim/2][cos, sin]
  std::vector<float> rope_local_;  // the same for sliding-window layers (gemma3)
  // The step's tokens, one row each: its sequence's cache and its position there.
  struct Row {
    KvCache* cache;
    int32_t pos;
  };
  std::vector<Row> rows_;
  // Activations for up to kMaxBatch tokens; k_, v_ hold the step's new keys and values until
  // they are stored in each row's cache.
  std::vector<float> x_, xn_, q_, k_, v_, att_, hb_, hb2_;
  std::vector<int8_t> xq_;
  std::vector<float> xq_scale_;
  std::vector<float> row_scratch_;  // one token's outputs, put in order (Tensor.row_order)
  struct BlockTask {
    size_t job, block;
  };
  std::vector<BlockTask> blocked_tasks_;  // RunBlockedLinears' task list, reused
};

}  // namespace dcomp
