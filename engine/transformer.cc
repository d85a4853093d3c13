#include "engine/transformer.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>

#include "kernels/ops.h"

namespace dcomp {
namespace {
// A parallel region costs a few microseconds of wake-up and join; below this many multiply-adds the
// work runs on the calling thread (about 2-4 us of int8 GEMV on one core).
constexpr size_t kMinParallelMacs = size_t{1} << 18;
}  // namespace

void Transformer::Parallel(size_t work, int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                           int64_t grain) {
  if (work < kMinParallelMacs) {
    fn(0, n);
  } else {
    pool_->ParallelFor(n, fn, grain);
  }
}

Result<std::unique_ptr<Transformer>> Transformer::Create(WeightSource* weights, ThreadPool* pool,
                                                         int32_t context_length,
                                                         const kernels::KernelTable* kt) {
  const ModelConfig& c = weights->config();
  RETURN_IF_ERROR(c.Validate());
  if (context_length < 0) {
    return InvalidArgumentError("context length must be >= 0 (0 = the model's)");
  }
  const int32_t ctx = context_length == 0 ? c.context_length : context_length;
  return std::unique_ptr<Transformer>(
      new Transformer(weights, pool, ctx, kt != nullptr ? kt : &kernels::Kernels()));
}

Transformer::Transformer(WeightSource* w, ThreadPool* pool, int32_t ctx,
                         const kernels::KernelTable* kt)
    : weights_(w), pool_(pool), kt_(kt), cfg_(w->config()), ctx_(ctx) {
  const size_t hd = static_cast<size_t>(cfg_.head_dim);
  // RoPE tables: the global layers' (rope_theta, frequency factors) and, when the model has
  // sliding-window layers, theirs (rope_theta_local, unscaled).
  auto table = [&](double theta, const std::vector<float>& factors, std::vector<float>* out) {
    out->resize(static_cast<size_t>(ctx_) * hd);
    for (int32_t p = 0; p < ctx_; ++p) {
      for (size_t i = 0; i < hd / 2; ++i) {
        const double freq = std::pow(theta, -2.0 * static_cast<double>(i) / hd) /
                            (factors.empty() ? 1.0 : factors[i]);
        const double angle = p * freq;
        (*out)[static_cast<size_t>(p) * hd + 2 * i] = static_cast<float>(std::cos(angle));
        (*out)[static_cast<size_t>(p) * hd + 2 * i + 1] = static_cast<float>(std::sin(angle));
      }
    }
  };
  table(cfg_.rope_theta, cfg_.rope_freq_factors, &rope_);
  if (cfg_.sliding_window > 0) table(cfg_.rope_theta_local, {}, &rope_local_);
  const size_t b = static_cast<size_t>(std::min(kMaxBatch, ctx_));
  const size_t dim = static_cast<size_t>(cfg_.dim), hid = static_cast<size_t>(cfg_.hidden_dim);
  const size_t qd = static_cast<size_t>(cfg_.q_dim()), kvd = static_cast<size_t>(cfg_.kv_dim());
  rows_.reserve(b);
  x_.resize(b * dim);
  xn_.resize(b * dim);
  q_.resize(b * qd);
  k_.resize(b * kvd);
  v_.resize(b * kvd);
  att_.resize(b * qd);
  hb_.resize(b * hid);
  hb2_.resize(b * hid);
  xq_.resize(b * kernels::PaddedCols(std::max({dim, hid, qd})));
  xq_scale_.resize(b);
}

Result<KvType> ParseKvType(std::string_view name) {
  if (name == "f32") return KvType::kF32;
  if (name == "int8") return KvType::kInt8;
  return InvalidArgumentError("KV cache type '" + std::string(name) + "': expected f32 or int8");
}

const char* KvTypeName(KvType t) { return t == KvType::kInt8 ? "int8" : "f32"; }

KvCache::KvCache(const ModelConfig& c, int32_t capacity, KvType type)
    : type_(type), cap_(capacity) {
  const size_t positions = static_cast<size_t>(c.n_layers) * static_cast<size_t>(capacity);
  const size_t n = positions * static_cast<size_t>(c.kv_dim());
  if (type == KvType::kF32) {
    k_.assign(n, 0.0f);
    v_.assign(n, 0.0f);
  } else {
    kq_.assign(n, 0);
    vq_.assign(n, 0);
    ks_.assign(positions * static_cast<size_t>(c.n_kv_heads), 0.0f);
    vs_.assign(positions * static_cast<size_t>(c.n_kv_heads), 0.0f);
  }
}

size_t KvCache::Bytes(const ModelConfig& c, int32_t capacity, KvType type) {
  const size_t positions = static_cast<size_t>(c.n_layers) * static_cast<size_t>(capacity);
  const size_t kvd = static_cast<size_t>(c.kv_dim());
  return type == KvType::kF32
             ? 2 * positions * kvd * sizeof(float)
             : 2 * positions * (kvd + static_cast<size_t>(c.n_kv_heads) * sizeof(float));
}

size_t Transformer::KvCacheBytes(const ModelConfig& c, int32_t context_length) {
  return KvCache::Bytes(c, context_length == 0 ? c.context_length : context_length);
}

size_t Transformer::MemoryBytes(const ModelConfig& c, int32_t context_length) {
  const size_t ctx = static_cast<size_t>(context_length == 0 ? c.context_length : context_length);
  const size_t hd = static_cast<size_t>(c.head_dim), dim = static_cast<size_t>(c.dim),
               hid = static_cast<size_t>(c.hidden_dim), qd = static_cast<size_t>(c.q_dim()),
               kvd = static_cast<size_t>(c.kv_dim());
  const size_t b = std::min<size_t>(kMaxBatch, ctx);
  const size_t floats = ctx * hd * (c.sliding_window > 0 ? 2 : 1)  // rope tables
                        + 2 * b * dim + 2 * b * qd + 2 * b * kvd + 2 * b * hid +
                        b;  // x, xn, q, att, k, v, hb, hb2, xq_scale
  return KvCacheBytes(c, context_length) + floats * sizeof(float) +
         static_cast<size_t>(c.vocab_size) * sizeof(float) +  // row_scratch_ (Tensor.row_order)
         b * kernels::PaddedCols(std::max({dim, hid, qd})) + b * sizeof(Row);
}

size_t Transformer::scratch_bytes() const {
  return (x_.size() + xn_.size() + q_.size() + k_.size() + v_.size() + att_.size() + hb_.size() +
          hb2_.size() + xq_scale_.size() + rope_.size() + rope_local_.size() +
          row_scratch_.capacity()) *
             sizeof(float) +
         xq_.size() + rows_.capacity() * sizeof(Row);
}

Status Transformer::ValidateTokens(std::span<const int32_t> tokens) const {
  if (tokens.empty()) return InvalidArgumentError("Forward: no tokens");
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= cfg_.vocab_size) {
      return InvalidArgumentError("token id " + std::to_string(tokens[i]) + " at index " +
                                  std::to_string(i) + " is outside the vocabulary [0, " +
                                  std::to_string(cfg_.vocab_size) + ")");
    }
  }
  return Status::Ok();
}

Status Transformer::Forward(std::span<const int32_t> tokens, bool all_logits,
                            std::vector<float>* logits) {
  RETURN_IF_ERROR(ValidateTokens(tokens));
  if (static_cast<int64_t>(own_.pos_) + static_cast<int64_t>(tokens.size()) > ctx_) {
    return OutOfRangeError("context full: position " + std::to_string(own_.pos_) + " + " +
                           std::to_string(tokens.size()) + " tokens exceeds the context length " +
                           std::to_string(ctx_));
  }
  if (own_.capacity() == 0) own_ = KvCache(cfg_, ctx_, own_kv_type_);
  const size_t vocab = static_cast<size_t>(cfg_.vocab_size);
  logits->resize(all_logits ? tokens.size() * vocab : vocab);
  const int32_t start = own_.pos_;
  const size_t batch = x_.size() / static_cast<size_t>(cfg_.dim);
  for (size_t off = 0; off < tokens.size(); off += batch) {
    const size_t n = std::min(batch, tokens.size() - off);
    const bool last = off + n == tokens.size();
    float* out = all_logits ? logits->data() + off * vocab : (last ? logits->data() : nullptr);
    const SequenceInput in{&own_, tokens.subspan(off, n), out != nullptr, all_logits};
    Status s = StepRows({&in, 1}, out);
    if (!s.ok()) {
      own_.pos_ = start;
      return s;
    }
  }
  return Status::Ok();
}

Status Transformer::Step(std::span<const SequenceInput> seqs, std::vector<float>* logits) {
  if (seqs.empty()) return InvalidArgumentError("Step: no sequences");
  size_t total = 0, rows = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const SequenceInput& s = seqs[i];
    const auto which = [i] { return "sequence " + std::to_string(i) + ": "; };  // errors only
    if (s.cache == nullptr) return InvalidArgumentError(which() + "no KV cache");
    for (size_t j = 0; j < i; ++j) {
      if (seqs[j].cache == s.cache) {
        return InvalidArgumentError(which() + "its cache is used twice");
      }
    }
    if (Status v = ValidateTokens(s.tokens); !v.ok()) {
      return v.WithContext("sequence " + std::to_string(i));
    }
    const int64_t end = static_cast<int64_t>(s.cache->pos_) + static_cast<int64_t>(s.tokens.size());
    if (end > s.cache->cap_ || end > ctx_) {
      return OutOfRangeError(which() + "position " + std::to_string(s.cache->pos_) + " + " +
                             std::to_string(s.tokens.size()) + " tokens exceeds its cache (" +
                             std::to_string(s.cache->cap_) + " tokens) or the context length " +
                             std::to_string(ctx_));
    }
    total += s.tokens.size();
    rows += s.all_logits ? s.tokens.size() : (s.logits ? 1 : 0);
  }
  const size_t batch = x_.size() / static_cast<size_t>(cfg_.dim);
  if (total > batch) {
    return InvalidArgumentError("Step: " + std::to_string(total) + " tokens; at most " +
                                std::to_string(batch) + " in one step");
  }
  logits->resize(rows * static_cast<size_t>(cfg_.vocab_size));
  return StepRows(seqs, rows > 0 ? logits->data() : nullptr);
}

void Transformer::PrepareInput(int layer, LinearInput which, float* x, size_t n, size_t cols) {
  if (HadamardInput(cfg_, which)) {
    PerToken(n, cols * 16, [&](size_t t) { kernels::HadamardTransform(x + t * cols, cols); });
  }
  if (observer_ != nullptr) observer_->Observe(layer, which, x, n, cols);
}

Status Transformer::RunLinears(std::span<const LinearJob> jobs, const float* x, size_t x_stride,
                               size_t n) {
  const size_t cols = jobs[0].w->cols();
  const bool quantized = jobs[0].w->quantized;
  if (quantized) {
    const size_t padded = kernels::PaddedCols(cols);
    Parallel(n * cols * 8, static_cast<int64_t>(n), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        kt_->quantize_row_q8(x + t * x_stride, cols, padded, xq_.data() + t * padded,
                             &xq_scale_[static_cast<size_t>(t)]);
      }
    });
  }
  size_t blocked = 0;
  for (const LinearJob& j : jobs) {
    if (j.w->quantized != quantized) {
      return InternalError("RunLinears: jobs mix quantized and f32 matrices");
    }
    if (j.w->blocks != nullptr) ++blocked;
  }
  if (blocked == jobs.size()) {
    RETURN_IF_ERROR(RunBlockedLinears(jobs, n));
  } else if (blocked == 0) {
    RunResidentLinears(jobs, x, x_stride, n);
  } else {  // a streamed layer that holds some matrices in RAM: each kind in its own pass
    std::vector<LinearJob> held, streamed;
    for (const LinearJob& j : jobs) (j.w->blocks != nullptr ? streamed : held).push_back(j);
    RunResidentLinears(held, x, x_stride, n);
    RETURN_IF_ERROR(RunBlockedLinears(streamed, n));
  }
  for (const LinearJob& j : jobs) {  // rows stored out of order: each output to its place
    if (j.w->row_order == nullptr) continue;
    const size_t rows = j.w->rows();
    row_scratch_.resize(rows);
    for (size_t t = 0; t < n; ++t) {
      float* y = j.y + t * j.y_stride;
      std::copy(y, y + rows, row_scratch_.begin());
      for (size_t r = 0; r < rows; ++r) y[j.w->row_order[r]] = row_scratch_[r];
    }
  }
  for (const LinearJob& j : jobs) {
    if (j.w->bias == nullptr) continue;
    for (size_t t = 0; t < n; ++t) {
      for (size_t r = 0; r < j.w->rows(); ++r) j.y[t * j.y_stride + r] += j.w->bias[r];
    }
  }
  return Status::Ok();
}

void Transformer::RunResidentLinears(std::span<const LinearJob> jobs, const float* x,
                                     size_t x_stride, size_t n) {
  const size_t cols = jobs[0].w->cols();
  const bool quantized = jobs[0].w->quantized;
  size_t total = 0;
  for (const LinearJob& j : jobs) total += j.w->rows();
  const kernels::KernelTable* kt = kt_;
  const int8_t* xq = xq_.data();
  const float* xs = xq_scale_.data();
  Parallel(
      total * cols * n, static_cast<int64_t>(total),
      [&](int64_t begin, int64_t end) {
        size_t base = 0;
        for (const LinearJob& j : jobs) {
          const size_t rows = j.w->rows();
          const size_t r0 = std::max<size_t>(static_cast<size_t>(begin), base) - base;
          const size_t r1 = std::min<size_t>(static_cast<size_t>(end), base + rows);
          if (r1 > base && r0 < rows) {
            const size_t e = r1 - base;
            const size_t padded = kernels::PaddedCols(cols);
            if (quantized && j.w->packed.data != nullptr) {  // one token: the GEMM's own GEMV
              GemmPacked(*kt, *j.w, xq, padded, xs, n, j.y, j.y_stride, r0, e);
            } else if (quantized) {
              if (n == 1) {
                kt->gemv_q8_q8(j.w->q8, xq, xs[0], j.y, r0, e);
              } else {
                kt->gemm_q8_q8(j.w->q8, xq, padded, xs, n, j.y, j.y_stride, r0, e);
              }
            } else {
              kt->gemm_f32(j.w->f32, x, x_stride, n, j.y, j.y_stride, r0, e);
            }
          }
          base += rows;
        }
      },
      16);
}

Status Transformer::RunBlockedLinears(std::span<const LinearJob> jobs, size_t n) {
  // Tasks: (job, block), in job order. Each decodes one block of rows into this thread's scratch
  // (about one codec block: it stays in L2) and multiplies it for all n tokens; a block stored
  // packed is multiplied where it lies.
  blocked_tasks_.clear();
  size_t macs = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const RowBlockSource& src = *jobs[j].w->blocks;
    for (size_t k = 0; k < src.num_blocks(); ++k) blocked_tasks_.push_back({j, k});
    macs += jobs[j].w->rows() * jobs[j].w->cols() * n;
  }
  const size_t padded = kernels::PaddedCols(jobs[0].w->cols());
  const kernels::KernelTable* kt = kt_;
  const int8_t* xq = xq_.data();
  const float* xs = xq_scale_.data();
  std::atomic<bool> failed{false};
  std::mutex error_mu;
  Status error = Status::Ok();
  // Decoding costs about as much as 8 multiply-adds per weight: always worth the pool.
  Parallel(
      macs + 8 * macs / std::max<size_t>(1, n), static_cast<int64_t>(blocked_tasks_.size()),
      [&](int64_t begin, int64_t end) {
        thread_local std::vector<int8_t> q;
        thread_local std::vector<int32_t> row_sum;
        thread_local std::vector<float> scale;
        for (int64_t i = begin; i < end && !failed.load(std::memory_order_relaxed); ++i) {
          const auto [j, k] = blocked_tasks_[static_cast<size_t>(i)];
          const LinearWeights& w = *jobs[j].w;
          const size_t rpb = w.blocks->rows_per_block();
          const size_t r0 = k * rpb, rows = std::min(rpb, w.rows() - r0);
          kernels::PackedMatrixView pv;
          Result<bool> packed = w.blocks->PackedRows(k, &pv);
          if (packed.ok() && *packed) {  // read in place: no decoding
            pv.scale = w.blocks->Scales() + r0;
            pv.rows = rows;
            pv.cols = w.q8.cols;
            kt->gemm_packed_q8(pv, xq, padded, xs, n, jobs[j].y + r0, jobs[j].y_stride, 0, rows);
            continue;
          }
          if (q.size() < rpb * w.q8.stride) q.resize(rpb * w.q8.stride);
          if (row_sum.size() < rpb) row_sum.resize(rpb);
          Status s =
              packed.ok() ? w.blocks->DecodeRows(k, q.data(), row_sum.data()) : packed.status();
          if (!s.ok()) {
            std::lock_guard<std::mutex> l(error_mu);
            if (error.ok()) error = std::move(s);
            failed.store(true, std::memory_order_relaxed);
            return;
          }
          // The block's scales as f32 (expanded when held coded).
          const kernels::RowScaleView scales = w.blocks->Scales();
          const float* s0 = scales.f32 != nullptr ? scales.f32 + r0 : nullptr;
          if (s0 == nullptr) {
            if (scale.size() < rows) scale.resize(rows);
            scales.Expand(r0, rows, scale.data());
            s0 = scale.data();
          }
          const kernels::Q8MatrixView v{q.data(), s0, row_sum.data(), rows, w.q8.cols, w.q8.stride};
          if (n == 1) {
            kt->gemv_q8_q8(v, xq, xs[0], jobs[j].y + r0, 0, rows);
          } else {
            kt->gemm_q8_q8(v, xq, padded, xs, n, jobs[j].y + r0, jobs[j].y_stride, 0, rows);
          }
        }
      },
      1);
  return error;
}

void Transformer::PerToken(size_t n, size_t cost_per_token, const std::function<void(size_t)>& fn) {
  Parallel(n * cost_per_token, static_cast<int64_t>(n), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) fn(static_cast<size_t>(t));
  });
}

void Transformer::Attention(int layer, size_t n) {
  const size_t qd = static_cast<size_t>(cfg_.q_dim()), hd = static_cast<size_t>(cfg_.head_dim);
  const size_t kv_dim = static_cast<size_t>(cfg_.kv_dim());
  const size_t heads = static_cast<size_t>(cfg_.n_heads);
  const size_t group = heads / static_cast<size_t>(cfg_.n_kv_heads);
  const float inv_sqrt = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  const bool sliding = cfg_.IsSlidingLayer(layer);
  const size_t window = static_cast<size_t>(cfg_.sliding_window);
  // Keys each row attends: its own sequence's, up to its position (within the window).
  const auto keys = [&](size_t t) {
    const size_t p = static_cast<size_t>(rows_[t].pos) + 1;
    return sliding ? std::min(p, window) : p;
  };
  size_t work = 0;
  for (size_t t = 0; t < n; ++t) work += heads * keys(t) * hd * 2;
  Parallel(work, static_cast<int64_t>(n * heads), [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    for (int64_t i = begin; i < end; ++i) {
      const size_t t = static_cast<size_t>(i) / heads, h = static_cast<size_t>(i) % heads;
      const KvCache& c = *rows_[t].cache;
      const size_t at = static_cast<size_t>(layer) * static_cast<size_t>(c.cap_);  // layer's first
      const size_t n_keys = keys(t);
      const size_t first = static_cast<size_t>(rows_[t].pos) + 1 - n_keys;  // oldest key attended
      const size_t kvh = h / group;
      const size_t off = (at + first) * kv_dim + kvh * hd;
      scores.resize(n_keys);
      if (c.type_ == KvType::kF32) {
        kernels::AttentionHead(q_.data() + t * qd + h * hd, c.k_.data() + off, c.v_.data() + off,
                               kv_dim, n_keys, hd, inv_sqrt, scores.data(),
                               att_.data() + t * qd + h * hd);
      } else {
        const size_t kvh_n = static_cast<size_t>(cfg_.n_kv_heads);
        const size_t soff = (at + first) * kvh_n + kvh;
        kernels::AttentionHeadQ8(q_.data() + t * qd + h * hd, c.kq_.data() + off,
                                 c.ks_.data() + soff, c.vq_.data() + off, c.vs_.data() + soff,
                                 kv_dim, kvh_n, n_keys, hd, inv_sqrt, scores.data(),
                                 att_.data() + t * qd + h * hd);
      }
    }
  });
}

Status Transformer::AttentionBlock(int l, const LayerWeights& w, size_t n) {
  const size_t dim = static_cast<size_t>(cfg_.dim), kv_dim = static_cast<size_t>(cfg_.kv_dim());
  const size_t hd = static_cast<size_t>(cfg_.head_dim), qd = static_cast<size_t>(cfg_.q_dim());
  NormRows(x_.data(), w.attn_norm, n);
  const LinearJob qkv[] = {
      {&w.wq, q_.data(), qd}, {&w.wk, k_.data(), kv_dim}, {&w.wv, v_.data(), kv_dim}};
  PrepareInput(l, LinearInput::kAttnIn, xn_.data(), n, dim);
  RETURN_IF_ERROR(RunLinears(qkv, xn_.data(), dim, n));

  for (size_t t = 0; t < n; ++t) {
    float* q = q_.data() + t * qd;
    float* k = k_.data() + t * kv_dim;
    if (cfg_.qk_norm) {  // per-head RMSNorm, in place
      for (int h = 0; h < cfg_.n_heads; ++h) {
        kernels::RmsNorm(q + h * hd, w.q_norm, hd, cfg_.rms_eps, q + h * hd);
      }
      for (int h = 0; h < cfg_.n_kv_heads; ++h) {
        kernels::RmsNorm(k + h * hd, w.k_norm, hd, cfg_.rms_eps, k + h * hd);
      }
    }
    const float* cs = (cfg_.IsSlidingLayer(l) ? rope_local_ : rope_).data() +
                      static_cast<size_t>(rows_[t].pos) * hd;
    auto rope = cfg_.rope_style == RopeStyle::kNeox ? kernels::RopeNeox : kernels::RopeInterleaved;
    for (int h = 0; h < cfg_.n_heads; ++h) rope(q + h * hd, hd, cs);
    for (int h = 0; h < cfg_.n_kv_heads; ++h) rope(k + h * hd, hd, cs);
    // Into the row's own cache, where attention reads it.
    KvCache& c = *rows_[t].cache;
    const size_t pos =
        static_cast<size_t>(l) * static_cast<size_t>(c.cap_) + static_cast<size_t>(rows_[t].pos);
    const float* v = v_.data() + t * kv_dim;
    if (c.type_ == KvType::kF32) {
      std::memcpy(c.k_.data() + pos * kv_dim, k, kv_dim * sizeof(float));
      std::memcpy(c.v_.data() + pos * kv_dim, v, kv_dim * sizeof(float));
    } else {
      const size_t kvh_n = static_cast<size_t>(cfg_.n_kv_heads);
      for (size_t h = 0; h < kvh_n; ++h) {
        const size_t at = pos * kv_dim + h * hd;
        c.ks_[pos * kvh_n + h] = kernels::QuantizeHeadQ8(k + h * hd, hd, c.kq_.data() + at);
        c.vs_[pos * kvh_n + h] = kernels::QuantizeHeadQ8(v + h * hd, hd, c.vq_.data() + at);
      }
    }
  }
  Attention(l, n);

  const LinearJob o[] = {{&w.wo, xn_.data(), dim}};
  PrepareInput(l, LinearInput::kAttnOut, att_.data(), n, qd);
  RETURN_IF_ERROR(RunLinears(o, att_.data(), qd, n));
  if (cfg_.post_norms) NormRows(xn_.data(), w.attn_post_norm, n);
  for (size_t i = 0; i < n * dim; ++i) x_[i] += xn_[i];
  return Status::Ok();
}

Status Transformer::FeedForwardBlock(int l, const LayerWeights& w, size_t n) {
  const size_t dim = static_cast<size_t>(cfg_.dim), hid = static_cast<size_t>(cfg_.hidden_dim);
  NormRows(x_.data(), w.ffn_norm, n);
  const LinearJob up[] = {{&w.w_gate, hb_.data(), hid}, {&w.w_up, hb2_.data(), hid}};
  PrepareInput(l, LinearInput::kFfnIn, xn_.data(), n, dim);
  RETURN_IF_ERROR(RunLinears(up, xn_.data(), dim, n));
  const auto act =
      cfg_.activation == Activation::kGeluTanh ? kernels::GeluTanhMul : kernels::SiluMul;
  PerToken(n, hid * 16, [&](size_t t) { act(hb_.data() + t * hid, hb2_.data() + t * hid, hid); });
  const LinearJob down[] = {{&w.w_down, xn_.data(), dim}};
  PrepareInput(l, LinearInput::kFfnHidden, hb_.data(), n, hid);
  RETURN_IF_ERROR(RunLinears(down, hb_.data(), hid, n));
  if (cfg_.post_norms) NormRows(xn_.data(), w.ffn_post_norm, n);
  for (size_t i = 0; i < n * dim; ++i) x_[i] += xn_[i];
  return Status::Ok();
}

void Transformer::NormRows(const float* x, const float* w, size_t n) {
  const size_t dim = static_cast<size_t>(cfg_.dim);
  PerToken(n, dim * 8, [&](size_t t) {
    kernels::RmsNorm(x + t * dim, w, dim, cfg_.rms_eps, xn_.data() + t * dim);
  });
}

Status Transformer::StepRows(std::span<const SequenceInput> seqs, float* logits) {
  size_t n = 0;
  for (const SequenceInput& in : seqs) n += in.tokens.size();
  const size_t dim = static_cast<size_t>(cfg_.dim);
  const GlobalWeights& g = weights_->globals();
  const int start = tap_ != nullptr ? tap_->StartPoint() : 0;
  if (start < 0 || start > 2 * cfg_.n_layers) {
    return InvalidArgumentError("residual tap: start point " + std::to_string(start) +
                                " outside [0, " + std::to_string(2 * cfg_.n_layers) + "]");
  }

  RETURN_IF_ERROR(weights_->BeginPass(n));
  // Token embeddings (or the tap's residuals), one row per token in the order of `seqs`.
  rows_.clear();
  for (const SequenceInput& in : seqs) {
    for (size_t i = 0; i < in.tokens.size(); ++i) {
      if (start == 0) {
        RETURN_IF_ERROR(weights_->EmbedToken(in.tokens[i], x_.data() + rows_.size() * dim));
      }
      rows_.push_back({in.cache, in.cache->pos_ + static_cast<int32_t>(i)});
    }
  }
  if (start > 0) {
    tap_->Load(start, x_.data(), n, dim);
  } else if (cfg_.embedding_scale != 1.0f) {
    for (size_t i = 0; i < n * dim; ++i) x_[i] *= cfg_.embedding_scale;
  }

  for (int l = start / 2; l < cfg_.n_layers; ++l) {
    ASSIGN_OR_RETURN(const LayerWeights* w, weights_->AcquireLayer(l));
    Status s;
    if (2 * l >= start) {
      Passed(2 * l, n);
      s = AttentionBlock(l, *w, n);
    }
    if (s.ok()) {
      Passed(2 * l + 1, n);
      s = FeedForwardBlock(l, *w, n);
    }
    weights_->ReleaseLayer(l);
    RETURN_IF_ERROR(s);
  }
  Passed(2 * cfg_.n_layers, n);
  const auto advance = [&] {
    for (const SequenceInput& in : seqs) in.cache->pos_ += static_cast<int32_t>(in.tokens.size());
  };
  if (logits == nullptr) {
    advance();
    return Status::Ok();
  }
  // The rows whose logits are wanted, gathered to the front of xn_ in order.
  size_t out_rows = 0, row = 0;
  for (const SequenceInput& in : seqs) {
    const size_t k = in.tokens.size();
    for (size_t i = 0; i < k; ++i, ++row) {
      if (!(in.all_logits || (in.logits && i + 1 == k))) continue;
      kernels::RmsNorm(x_.data() + row * dim, g.final_norm, dim, cfg_.rms_eps,
                       xn_.data() + out_rows * dim);
      ++out_rows;
    }
  }
  ASSIGN_OR_RETURN(const LinearWeights* head, weights_->AcquireOutput());
  const LinearJob out[] = {{head, logits, static_cast<size_t>(cfg_.vocab_size)}};
  PrepareInput(cfg_.n_layers, LinearInput::kHeadIn, xn_.data(), out_rows, dim);
  Status s = RunLinears(out, xn_.data(), dim, out_rows);
  weights_->ReleaseOutput();
  if (s.ok()) advance();
  return s;
}

}  // namespace dcomp
