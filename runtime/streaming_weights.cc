#include "runtime/streaming_weights.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include "runtime/memory_stats.h"
#include "engine/transformer.h"
#include "kernels/kernels.h"
#include "storage/codec.h"

namespace dcomp::runtime {

namespace pb = storage::pb;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Row scales must be finite and >= 0; `what` names the file and tensor.
Status CheckScales(std::span<const float> s, const std::string& what) {
  for (size_t r = 0; r < s.size(); ++r) {
    if (!std::isfinite(s[r]) || s[r] < 0) {
      return DataLossError(what + ": row " + std::to_string(r) + " has an invalid scale");
    }
  }
  return Status::Ok();
}

// The layer matrices in LayerWeights order.
constexpr const char* kLayerMatrices[] = {
    "attn_q.weight",   "attn_k.weight",   "attn_v.weight", "attn_output.weight",
    "ffn_gate.weight", "ffn_down.weight", "ffn_up.weight"};

struct TensorLayout {
  int tensor = -1;
  size_t rows = 0, cols = 0, stride = 0;
  size_t q_off = 0, scale_off = 0, rowsum_off = 0;  // in the unit's decoded layout
  uint32_t first_block = 0;                         // the scale block; rows follow
  size_t rows_per_block = 0, row_blocks = 0;
};

// One block of a unit to decode: the scale block or a block of rows.
struct WorkBlock {
  uint32_t block = 0;
  int t = 0;  // index into the unit's tensors
  bool scale = false;
  size_t row0 = 0, rows = 0;
};

}  // namespace

struct StreamingWeights::Impl {
  // One matrix of a compressed unit, decoded inline (Decode::kInline) from the unit's stored
  // range wherever it is in RAM: the compressed tier or a staging buffer.
  class InlineMatrix : public RowBlockSource {
   public:
    InlineMatrix(const Impl* m, const TensorLayout* t, uint64_t range_begin, const uint8_t* range)
        : m_(m), t_(t), range_begin_(range_begin), range_(range) {}
    size_t num_blocks() const override { return t_->row_blocks; }
    size_t rows_per_block() const override { return t_->rows_per_block; }
    Status DecodeRows(size_t k, int8_t* q, int32_t* row_sum) const override {
      return m_->DecodeInline(*t_, range_begin_, range_, k, q, row_sum);
    }

   private:
    const Impl* m_;
    const TensorLayout* t_;
    uint64_t range_begin_;
    const uint8_t* range_;
  };
  // Views of a unit decoded inline (the matrices must not move while the views exist).
  struct InlineViews {
    std::vector<InlineMatrix> mats;
    LayerWeights layer;
    LinearWeights head;
  };

  struct Unit {
    std::vector<TensorLayout> tensors;  // layer: kLayerMatrices order; output: one
    std::vector<WorkBlock> work;
    uint64_t range_begin = 0, range_end = 0;
    uint32_t first_block = 0, last_block = 0;  // of the range
    size_t decoded_size = 0;
    Tier tier = Tier::kFlash;
    PageBuffer decoded, compressed;
    LayerWeights layer_view;
    LinearWeights head_view;
    std::vector<std::vector<float>> scales;  // per tensor, always decoded (for kInline)
    InlineViews compressed_views;            // over `compressed`
  };
  struct Item {
    int unit = 0, slot = -1, staging = -1;
    enum State { kReading, kDecoding, kReady, kFailed } state = kReading;
    bool cancelled = false;
    size_t blocks_left = 0;
    Status error = Status::Ok();
    const uint8_t* stored = nullptr;  // the unit's range in RAM (staging or compressed tier)
    uint8_t* dst = nullptr;
    double decode_seconds = 0;
    LayerWeights layer_view;
    LinearWeights head_view;
    InlineViews inline_views;  // kInline: over the staging buffer
  };
  struct Task {
    std::shared_ptr<Item> item;
    size_t work = 0;
  };

  StreamingWeights* self = nullptr;
  const storage::ContainerReader* reader = nullptr;
  RuntimeOptions opt;
  ThreadPool* pool = nullptr;
  int cores = 1;
  int n_layers = 0;
  std::vector<Unit> units;
  std::vector<std::vector<float>> vectors;
  std::vector<float> embd_scales;
  int embd_tensor = -1;
  bool tied = false;
  size_t max_raw_block = 0, max_stored_block = 0, max_padded_block = 0, max_block_rows = 0;
  // Decoding inline: bytes and thread-seconds (all compute threads), read at token boundaries.
  mutable std::atomic<uint64_t> inline_bytes{0}, inline_ns{0};
  FixedMemory fixed;
  PlanConstraints constraints;

  std::unique_ptr<storage::BlockReader> io_reader;   // prefetcher thread
  std::unique_ptr<storage::BlockReader> aux_reader;  // compute thread: lookups, plan loads
  storage::BlockDecoder aux_decoder;
  PageBuffer lookup_stored, lookup_raw;
  int64_t lookup_block = -1;

  mutable std::mutex mu;
  std::condition_variable cv;
  Plan plan;                                          // guarded by mu
  RuntimeStats st;                                    // guarded by mu
  double io_window_bytes = 0, io_window_seconds = 0;  // guarded by mu: decayed read totals
  double io_sustained = 0;         // guarded by mu: bytes/s sustained (0: unknown)
  bool io_sustained_seen = false;  // guarded by mu: measured by a read-bound pass
  double io_burst = 0;          // guarded by mu: the probe's first half, the rate after idle time
  bool replan_pending = false;  // guarded by mu
  std::string replan_reason;    // guarded by mu
  std::vector<PageBuffer> slots, staging;
  std::vector<int> free_slots, free_staging;  // guarded by mu
  std::deque<std::shared_ptr<Item>> items;    // guarded by mu: in unit order
  int in_flight = 0;                          // guarded by mu: items reading or decoding
  std::vector<int> seq;                       // streamed units in execution order
  std::vector<int> seq_pos;                   // unit -> index in seq (-1)
  size_t next_pos = 0;                        // guarded by mu
  bool paused = true, stop = false;           // guarded by mu
  std::deque<Task> tasks;                     // guarded by mu
  int active_decode = 0;                      // guarded by mu
  std::vector<std::thread> decoders;
  std::thread prefetcher, monitor;

  size_t pass_tokens = 0;  // compute thread: tokens of the current pass
  Status Calibrate(Rates* rates);

  std::shared_ptr<Item> held;  // compute thread
  Clock::time_point held_since;
  // Compute thread, this pass: seconds and multiply-adds in resident units (and in units decoded
  // ahead), and in units decoded inline.
  double token_compute = 0, token_inline = 0;
  // The pass in progress: when it began, and the bytes read and wait time before it.
  Clock::time_point pass_start{};
  uint64_t pass_flash0 = 0;
  double pass_wait0 = 0;
  uint64_t token_macs = 0, token_inline_macs = 0;

  ~Impl() {
    {
      std::lock_guard<std::mutex> l(mu);
      stop = true;
    }
    cv.notify_all();
    if (prefetcher.joinable()) prefetcher.join();
    if (monitor.joinable()) monitor.join();
    for (auto& t : decoders) t.join();
  }

  // ---- decoding -------------------------------------------------------------------------------
  // Block i of tensor T (`rows` rows of codes, stored bytes at `stored_range` + its offset from
  // `range_begin`) into q, rows padded to the stride with zeros, and their row sums. `scratch`
  // takes rows * cols bytes when rows need padding.
  Status DecodeRowBlock(const TensorLayout& T, uint32_t i, uint64_t range_begin,
                        const uint8_t* stored_range, size_t rows, int8_t* q, int32_t* row_sum,
                        storage::BlockDecoder* dec, uint8_t* scratch) const {
    const pb::Block& b = reader->block(i);
    std::span<const uint8_t> stored(stored_range + (b.offset() - range_begin), b.stored_size());
    const size_t n = rows * T.cols;
    if (T.stride == T.cols) {
      RETURN_IF_ERROR(reader->DecodeBlock(
          i, stored, std::span<uint8_t>(reinterpret_cast<uint8_t*>(q), n), dec));
    } else {
      RETURN_IF_ERROR(reader->DecodeBlock(i, stored, std::span<uint8_t>(scratch, n), dec));
      for (size_t r = 0; r < rows; ++r) {
        std::memcpy(q + r * T.stride, scratch + r * T.cols, T.cols);
        std::memset(q + r * T.stride + T.cols, 0, T.stride - T.cols);
      }
    }
    if (!kernels::Kernels().row_sums_q8(q, rows, T.stride, row_sum)) {
      return DataLossError(reader->path() + ": " + reader->DescribeBlock(i) +
                           ": code -128 (codes are in [-127, 127])");
    }
    return Status::Ok();
  }

  // One work item of a unit into its decoded layout at dst. Scales come from the copy decoded
  // and checked at open.
  Status DecodeWork(const Unit& U, const WorkBlock& w, const uint8_t* stored_range, uint8_t* dst,
                    storage::BlockDecoder* dec, uint8_t* scratch) const {
    const TensorLayout& T = U.tensors[static_cast<size_t>(w.t)];
    if (w.scale) {
      std::memcpy(dst + T.scale_off, U.scales[static_cast<size_t>(w.t)].data(),
                  T.rows * sizeof(float));
      return Status::Ok();
    }
    return DecodeRowBlock(T, w.block, U.range_begin, stored_range, w.rows,
                          reinterpret_cast<int8_t*>(dst + T.q_off) + w.row0 * T.stride,
                          reinterpret_cast<int32_t*>(dst + T.rowsum_off) + w.row0, dec, scratch);
  }

  LinearWeights View(const Unit& U, size_t t, const uint8_t* base) const {
    const TensorLayout& T = U.tensors[t];
    LinearWeights v;
    v.quantized = true;
    v.q8 = {reinterpret_cast<const int8_t*>(base + T.q_off),
            reinterpret_cast<const float*>(base + T.scale_off),
            reinterpret_cast<const int32_t*>(base + T.rowsum_off),
            T.rows,
            T.cols,
            T.stride};
    return v;
  }

  // Unit u's views: the output matrix into *head, or a layer's matrices into *layer with its
  // norms and biases (pinned); view(t) gives tensor t's matrix.
  template <typename ViewFn>
  void AssembleViews(int u, ViewFn view, LayerWeights* layer, LinearWeights* head) const {
    if (u == n_layers) {
      *head = view(0);
      return;
    }
    *layer = units[static_cast<size_t>(u)].layer_view;
    LinearWeights* dst[] = {&layer->wq,     &layer->wk,     &layer->wv,  &layer->wo,
                            &layer->w_gate, &layer->w_down, &layer->w_up};
    for (size_t i = 0; i < 7; ++i) {
      const float* bias = dst[i]->bias;
      *dst[i] = view(i);
      dst[i]->bias = bias;
    }
  }

  void BuildViews(int u, const uint8_t* base, LayerWeights* layer, LinearWeights* head) const {
    const Unit& U = units[static_cast<size_t>(u)];
    AssembleViews(
        u, [&](size_t t) { return View(U, t, base); }, layer, head);
  }

  // Block k of tensor T's rows, from the unit's stored range in RAM, into q (padded rows) and
  // row_sum. Any compute thread.
  Status DecodeInline(const TensorLayout& T, uint64_t range_begin, const uint8_t* range, size_t k,
                      int8_t* q, int32_t* row_sum) const {
    thread_local storage::BlockDecoder dec;
    thread_local std::vector<uint8_t> scratch;
    const auto t0 = Clock::now();
    const uint32_t i = T.first_block + 1 + static_cast<uint32_t>(k);
    const size_t rows = std::min(T.rows_per_block, T.rows - k * T.rows_per_block);
    if (T.stride != T.cols && scratch.size() < rows * T.cols) scratch.resize(rows * T.cols);
    RETURN_IF_ERROR(
        DecodeRowBlock(T, i, range_begin, range, rows, q, row_sum, &dec, scratch.data()));
    inline_bytes.fetch_add(reader->block(i).raw_size(), std::memory_order_relaxed);
    inline_ns.fetch_add(static_cast<uint64_t>(std::chrono::nanoseconds(Clock::now() - t0).count()),
                        std::memory_order_relaxed);
    return Status::Ok();
  }

  // Views of unit u decoded inline from its stored range at `range`.
  void BuildInlineViews(int u, const uint8_t* range, InlineViews* v) const {
    const Unit& U = units[static_cast<size_t>(u)];
    v->mats.clear();
    v->mats.reserve(U.tensors.size());
    for (const TensorLayout& T : U.tensors) v->mats.emplace_back(this, &T, U.range_begin, range);
    auto view = [&](size_t t) {
      const TensorLayout& T = U.tensors[t];
      LinearWeights w;
      w.quantized = true;
      w.q8 = {nullptr, U.scales[t].data(), nullptr, T.rows, T.cols, T.stride};
      w.blocks = &v->mats[t];
      return w;
    };
    AssembleViews(u, view, &v->layer, &v->head);
  }

  Status BlockError(const Unit& U, const Status& s) const {
    return Status(s.code() == StatusCode::kDataLoss || s.code() == StatusCode::kAborted ||
                          s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kInternal
                      ? StatusCode::kDataLoss
                      : s.code(),
                  "reading blocks " + std::to_string(U.first_block) + ".." +
                      std::to_string(U.last_block) + " (" + reader->DescribeBlock(U.first_block) +
                      " ..): " + s.message());
  }

  // Reads a unit's whole (page-aligned) range; a failure names the unit's blocks.
  Status ReadUnit(storage::BlockReader* r, const Unit& U, uint8_t* dst) const {
    const uint64_t size = U.range_end - U.range_begin;
    Status s = r->Read(U.range_begin, size, dst);
    if (!s.ok()) return BlockError(U, s);
    return Status::Ok();
  }

  // Reads the pages holding block i into lookup_stored (page-aligned, as O_DIRECT needs) and
  // returns where its stored bytes start there. Compute thread.
  Result<const uint8_t*> ReadBlockPages(uint32_t i) {
    const pb::Block& b = reader->block(i);
    const uint64_t begin = b.offset() / kPageSize * kPageSize;
    const uint64_t end =
        std::min<uint64_t>(RoundUpToPage(b.offset() + b.stored_size()), aux_reader->file_size());
    RETURN_IF_ERROR(aux_reader->Read(begin, end - begin, lookup_stored.data()));
    return lookup_stored.data() + (b.offset() - begin);
  }

  // ---- pipeline -------------------------------------------------------------------------------
  void FreeItem(const std::shared_ptr<Item>& it) {  // mu held; the item is finished
    if (it->slot >= 0) free_slots.push_back(it->slot);
    it->slot = -1;
    if (it->staging >= 0) free_staging.push_back(it->staging);  // kInline: held until released
    it->staging = -1;
  }

  // Takes an item out of the ring: its slot is freed now if it is finished, else when its last
  // block completes.
  void Drop(const std::shared_ptr<Item>& it) {  // mu held
    if (it->state == Item::kReady || it->state == Item::kFailed) {
      FreeItem(it);
    } else {
      it->cancelled = true;
    }
  }

  // mu held; kAhead: the last block is decoded; kInline: the read is done.
  void Complete(const std::shared_ptr<Item>& it) {
    const bool ahead = plan.decode == Decode::kAhead;
    if (ahead && it->staging >= 0) {  // decoded: the compressed bytes are no longer needed
      free_staging.push_back(it->staging);
      it->staging = -1;
    }
    --in_flight;
    if (it->error.ok() && !ahead) {
      it->state = Item::kReady;
      BuildInlineViews(it->unit, it->stored, &it->inline_views);
    } else if (it->error.ok()) {
      it->state = Item::kReady;
      const uint64_t raw = self->units_[static_cast<size_t>(it->unit)].raw_bytes;
      BuildViews(it->unit, it->dst, &it->layer_view, &it->head_view);
      st.decoded_bytes += raw;
      st.decode_thread_seconds += it->decode_seconds;
      if (it->decode_seconds > 0) {
        const double rate = static_cast<double>(raw) / it->decode_seconds;
        st.rates.decode_bytes_per_s = 0.8 * st.rates.decode_bytes_per_s + 0.2 * rate;
      }
    } else {
      it->state = Item::kFailed;
    }
    if (it->cancelled) FreeItem(it);
    cv.notify_all();
  }

  void PrefetchLoop() {
    std::unique_lock<std::mutex> l(mu);
    for (;;) {
      cv.wait(l, [&] {
        if (stop) return true;
        if (paused || seq.empty()) return false;
        return plan.decode == Decode::kAhead
                   ? !free_slots.empty() && static_cast<int>(items.size()) < plan.slots
                   : !free_staging.empty() && static_cast<int>(items.size()) < plan.staging;
      });
      if (stop) return;
      const bool ahead = plan.decode == Decode::kAhead;  // fixed while not paused
      const int u = seq[next_pos];
      next_pos = (next_pos + 1) % seq.size();
      auto it = std::make_shared<Item>();
      it->unit = u;
      if (ahead) {
        it->slot = free_slots.back();
        free_slots.pop_back();
        it->dst = slots[static_cast<size_t>(it->slot)].data();
      }
      items.push_back(it);
      ++in_flight;
      Unit& U = units[static_cast<size_t>(u)];
      if (U.tier == Tier::kFlash) {
        cv.wait(l, [&] { return stop || !free_staging.empty(); });
        if (stop) return;
        it->staging = free_staging.back();
        free_staging.pop_back();
        uint8_t* buf = staging[static_cast<size_t>(it->staging)].data();
        l.unlock();
        const auto t0 = Clock::now();
        Status s = ReadUnit(io_reader.get(), U, buf);
        const double dt = Seconds(t0, Clock::now());
        io_reader->DropCache(U.range_begin, U.range_end - U.range_begin);
        l.lock();
        if (s.ok()) {
          const uint64_t n = U.range_end - U.range_begin;
          st.flash_bytes += n;
          st.io_seconds += dt;
          if (dt > 0) {
            // Bytes over seconds, both decayed: a throttled device serves some reads at
            // once and holds others, and a mean of per-read rates would overestimate it.
            io_window_bytes = 0.8 * io_window_bytes + static_cast<double>(n);
            io_window_seconds = 0.8 * io_window_seconds + dt;
            UpdateIoRate();
          }
        }
        it->stored = buf;
        if (!s.ok() || it->cancelled || !ahead) {
          it->error = s;
          Complete(it);
          continue;
        }
      } else {
        it->stored = U.compressed.data();
      }
      it->state = Item::kDecoding;
      it->blocks_left = U.work.size();
      for (size_t w = 0; w < U.work.size(); ++w) tasks.push_back({it, w});
      cv.notify_all();
    }
  }

  void DecodeLoop(int index) {
    storage::BlockDecoder dec;
    std::vector<uint8_t> scratch(max_raw_block);
    std::unique_lock<std::mutex> l(mu);
    for (;;) {
      cv.wait(l, [&] { return stop || (index < active_decode && !tasks.empty()); });
      if (stop) return;
      Task t = std::move(tasks.front());
      tasks.pop_front();
      Item& it = *t.item;
      const bool skip = it.cancelled || !it.error.ok();
      Status s = Status::Ok();
      if (!skip) {
        l.unlock();
        const auto t0 = Clock::now();
        s = DecodeWork(units[static_cast<size_t>(it.unit)],
                       units[static_cast<size_t>(it.unit)].work[t.work], it.stored, it.dst, &dec,
                       scratch.data());
        const double dt = Seconds(t0, Clock::now());
        l.lock();
        it.decode_seconds += dt;
      }
      if (!s.ok() && it.error.ok()) it.error = s;
      if (--it.blocks_left == 0) Complete(t.item);
    }
  }

  void MonitorLoop() {
    int calm = 0;
    std::unique_lock<std::mutex> l(mu);
    while (!stop) {
      cv.wait_for(l, std::chrono::seconds(1), [&] { return stop; });
      if (stop) return;
      l.unlock();
      Result<MemoryPressure> p = ReadMemoryPressure();
      l.lock();
      if (!p.ok()) return;  // no PSI on this kernel
      st.pressure_some_avg10 = p->some_avg10;
      if (p->some_avg10 > 10.0 && st.budget_factor > 0.6) {
        st.budget_factor = std::max(0.6, st.budget_factor - 0.1);
        calm = 0;
        RequestReplan("memory pressure (some avg10 " + std::to_string(p->some_avg10) + "%)");
      } else if (p->some_avg10 < 1.0 && st.budget_factor < 1.0 && ++calm >= 10) {
        st.budget_factor = std::min(1.0, st.budget_factor + 0.1);
        calm = 0;
        RequestReplan("memory pressure eased");
      }
    }
  }

  void RequestReplan(std::string why) {  // mu held
    replan_pending = true;
    replan_reason = std::move(why);
  }

  uint64_t EffectiveBudget() const {                                      // mu held
    if (st.budget == 0) return std::numeric_limits<uint64_t>::max() / 4;  // no limit
    if (st.budget_factor >= 1.0) return st.budget;
    // Under memory pressure: a smaller share of the budget, never below what works.
    const uint64_t e = static_cast<uint64_t>(static_cast<double>(st.budget) * st.budget_factor);
    return std::max(e, st.minimum_budget);
  }

  // The read rate the planner uses (mu held): the rate of single reads, but no more than what
  // read-bound passes sustained. A throttled device (cgroup blkio) serves reads that follow idle
  // time faster than it can keep up, which the per-read rate alone would count as its speed.
  void UpdateIoRate() {
    const double per_read = io_window_seconds > 0 ? io_window_bytes / io_window_seconds : 0;
    double r = per_read > 0 ? per_read : st.rates.io_bytes_per_s;
    if (io_sustained > 0) r = std::min(r, io_sustained);
    st.rates.io_bytes_per_s = r;
    // Reads after idle time (the probe's first half, single reads) much faster than it sustains.
    if (io_sustained > 0) {
      st.rates.io_credits_idle = std::max(per_read, io_burst) > 1.5 * io_sustained;
    }
  }

  Result<Plan> MakePlan(uint64_t budget, const Rates& rates) const {
    return ChoosePlan(self->units_, fixed, rates, budget, opt.policy, constraints);
  }

  // ---- plans ----------------------------------------------------------------------------------
  Status LoadDecoded(int u) {
    Unit& U = units[static_cast<size_t>(u)];
    ASSIGN_OR_RETURN(U.decoded, PageBuffer::Allocate(U.decoded_size, "a decoded unit"));
    for (const WorkBlock& w : U.work) {
      if (w.scale) {  // from the decoded copy: nothing to read
        RETURN_IF_ERROR(DecodeWork(U, w, nullptr, U.decoded.data(), &aux_decoder, nullptr));
        continue;
      }
      Result<const uint8_t*> stored = ReadBlockPages(w.block);
      if (!stored.ok()) return BlockError(U, stored.status());
      // DecodeWork addresses the block relative to the unit range start.
      const uint8_t* range = *stored - (reader->block(w.block).offset() - U.range_begin);
      RETURN_IF_ERROR(DecodeWork(U, w, range, U.decoded.data(), &aux_decoder, lookup_raw.data()));
    }
    aux_reader->DropCache(U.range_begin, U.range_end - U.range_begin);
    BuildViews(u, U.decoded.data(), &U.layer_view, &U.head_view);
    return Status::Ok();
  }

  Status LoadCompressed(int u) {
    Unit& U = units[static_cast<size_t>(u)];
    ASSIGN_OR_RETURN(U.compressed,
                     PageBuffer::Allocate(U.range_end - U.range_begin, "a compressed unit"));
    RETURN_IF_ERROR(ReadUnit(aux_reader.get(), U, U.compressed.data()));
    aux_reader->DropCache(U.range_begin, U.range_end - U.range_begin);
    BuildInlineViews(u, U.compressed.data(), &U.compressed_views);
    return Status::Ok();
  }

  // Compute thread, no unit held.
  Status ApplyPlan(Plan np) {
    {
      std::unique_lock<std::mutex> l(mu);
      paused = true;
      for (auto& it : items) Drop(it);
      items.clear();
      cv.notify_all();
      cv.wait(l, [&] { return in_flight == 0; });
      tasks.clear();
    }
    lookup_block = -1;
    slots.clear();
    staging.clear();
    // Free before allocating: demotions first.
    for (size_t u = 0; u < units.size(); ++u) {
      if (units[u].tier != np.tiers[u]) {
        units[u].decoded.Reset();
        units[u].compressed.Reset();
        units[u].tier = Tier::kFlash;
      }
    }
    Status status = Status::Ok();
    for (size_t u = 0; u < units.size() && status.ok(); ++u) {
      if (units[u].tier == np.tiers[u]) continue;
      Status s = np.tiers[u] == Tier::kDecoded ? LoadDecoded(static_cast<int>(u))
                                               : LoadCompressed(static_cast<int>(u));
      if (s.ok()) {
        units[u].tier = np.tiers[u];
      } else {
        units[u].decoded.Reset();
        units[u].compressed.Reset();
        status = s;
      }
    }
    for (size_t u = 0; u < units.size(); ++u) np.tiers[u] = units[u].tier;  // what was achieved
    PlanBytes(self->units_, fixed, np);
    const bool ahead = np.decode == Decode::kAhead;
    // Units that go through the pipeline: decoding ahead, every unit not decoded; inline, flash
    // units only (compressed ones are decoded by the compute threads from RAM).
    auto piped = [&](const Unit& U) {
      return ahead ? U.tier != Tier::kDecoded : U.tier == Tier::kFlash;
    };
    const bool streamed = std::any_of(units.begin(), units.end(), piped);
    if (streamed && ahead) {
      np.slots = std::max(np.slots, 1);
      np.decode_threads = std::max(np.decode_threads, 1);
    }
    if (np.count(Tier::kFlash) > 0) np.staging = std::max(np.staging, 1);
    for (int i = 0; i < np.slots && status.ok(); ++i) {
      Result<PageBuffer> b = PageBuffer::Allocate(np.slot_bytes, "a decoded slot");
      if (b.ok())
        slots.push_back(std::move(b).value());
      else
        status = b.status();
    }
    for (int i = 0; i < np.staging && status.ok(); ++i) {
      Result<PageBuffer> b = PageBuffer::Allocate(np.staging_bytes, "an I/O staging buffer");
      if (b.ok())
        staging.push_back(std::move(b).value());
      else
        status = b.status();
    }
    np.slots = static_cast<int>(slots.size());
    np.staging = static_cast<int>(staging.size());
    PlanBytes(self->units_, fixed, np);
    pool->set_active_threads(np.compute_threads);
    std::lock_guard<std::mutex> l(mu);
    seq.clear();
    seq_pos.assign(units.size(), -1);
    for (size_t u = 0; u < units.size(); ++u) {
      if (piped(units[u])) {
        seq_pos[u] = static_cast<int>(seq.size());
        seq.push_back(static_cast<int>(u));
      }
    }
    free_slots.clear();
    for (int i = 0; i < np.slots; ++i) free_slots.push_back(i);
    free_staging.clear();
    for (int i = 0; i < np.staging; ++i) free_staging.push_back(i);
    next_pos = 0;
    active_decode = np.decode_threads;
    plan = std::move(np);
    paused =
        !streamed || (ahead && slots.empty()) || (plan.count(Tier::kFlash) > 0 && staging.empty());
    cv.notify_all();
    return status;
  }

  Status MaybeReplan() {  // compute thread, at a token boundary
    std::string why;
    uint64_t budget = 0;
    Rates rates;
    {
      std::lock_guard<std::mutex> l(mu);
      if (!replan_pending) return Status::Ok();
      replan_pending = false;
      why = replan_reason;
      budget = st.effective_budget = EffectiveBudget();
      rates = st.rates;
    }
    ASSIGN_OR_RETURN(Plan np, MakePlan(budget, rates));
    Status s = ApplyPlan(std::move(np));
    std::lock_guard<std::mutex> l(mu);
    ++st.replans;
    st.last_replan = why;
    return s;
  }

  // Re-plans from measurements when a better plan is clearly available (compute thread): at
  // least 5% faster by the estimate, and the reload paid back within as many tokens as have run
  // so far (at most 32, the interval between checks). The reload is what switching stalls
  // generation for (ReloadSeconds). Deciding as in ski rental: switch once staying would have cost
  // the reload, so a short run never pays more than twice the better plan's time.
  void Adapt() {
    if (!opt.adapt || opt.policy != Policy::kAdaptive) return;
    std::lock_guard<std::mutex> l(mu);
    if (replan_pending || !(st.tokens == 3 || st.tokens % kAdaptEvery == 0)) return;
    Result<Plan> np = MakePlan(st.effective_budget, st.rates);
    if (!np.ok()) return;
    Plan cur = plan;
    EstimateSeconds(self->units_, st.rates, cur);
    const double gain = cur.est_seconds_per_token - np->est_seconds_per_token;
    const double reload = ReloadSeconds(self->units_, st.rates, cur, *np);
    const double horizon = static_cast<double>(std::min<uint64_t>(st.tokens, kAdaptEvery));
    if (gain > 0.05 * cur.est_seconds_per_token && gain * horizon > reload) {
      char why[160];
      std::snprintf(why, sizeof why,
                    "measured rates (estimate %.1f -> %.1f ms/token, reload %.0f ms)",
                    cur.est_seconds_per_token * 1e3, np->est_seconds_per_token * 1e3, reload * 1e3);
      RequestReplan(why);
    }
  }
  static constexpr int kAdaptEvery = 32;  // tokens between checks (and one at token 3)
};

StreamingWeights::~StreamingWeights() = default;

uint64_t PeakRssBytes() {
  Result<ProcMemory> m = ReadProcMemory();
  return m.ok() ? m->hwm : 0;
}

Result<std::unique_ptr<StreamingWeights>> StreamingWeights::Open(const DcmModelFile& file,
                                                                 const RuntimeOptions& options,
                                                                 ThreadPool* compute_pool) {
  auto w = std::unique_ptr<StreamingWeights>(new StreamingWeights());
  RETURN_IF_ERROR(w->Init(file, options, compute_pool));
  return w;
}

Status StreamingWeights::Init(const DcmModelFile& file, const RuntimeOptions& options,
                              ThreadPool* compute_pool) {
  impl_ = std::make_unique<Impl>();
  Impl& m = *impl_;
  m.self = this;
  m.reader = &file.reader();
  m.opt = options;
  m.pool = compute_pool;
  m.constraints = {options.force_slots, options.force_compute_threads, options.force_decode_threads,
                   options.force_decode};
  const storage::ContainerReader& r = *m.reader;
  const std::string& path = r.path();
  config_ = file.config();
  m.n_layers = config_.n_layers;
  m.tied = config_.tied_output;
  if (options.cores > 0) {
    m.cores = options.cores;
  } else {
    cpu_set_t set;
    m.cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  }
  m.cores = std::max(1, std::min(m.cores, compute_pool->num_threads()));

  // What the process holds before the runtime allocates: measured, after dropping the pages of
  // the mapping that parsing the manifest touched.
  r.DropMappedPages();
  ASSIGN_OR_RETURN(ProcMemory before, ReadProcMemory());

  auto find = [&](const std::string& name, bool q8) -> Result<int> {
    const int t = r.FindTensor(name);
    if (t < 0) return NotFoundError(path + ": no tensor '" + name + "'");
    const bool is_q8 = r.manifest().tensors(t).type() == pb::TENSOR_Q8_ROW;
    if (is_q8 != q8) {
      return InvalidArgumentError(path + ": tensor '" + name + "' is " +
                                  (is_q8 ? "Q8_ROW" : "F32") + ", expected " +
                                  (q8 ? "Q8_ROW (pack the model with dcomp pack)" : "F32"));
    }
    return t;
  };
  auto read_vector = [&](const std::string& name) -> Result<std::vector<float>*> {
    RETURN_IF_ERROR(find(name, false).status());
    ASSIGN_OR_RETURN(std::vector<float> v, file.ReadF32(name));
    m.vectors.push_back(std::move(v));
    return &m.vectors.back();
  };
  m.vectors.reserve(static_cast<size_t>(config_.n_layers) * 5 + 2);

  // Units.
  const int n_units = config_.n_layers + 1;
  m.units.resize(static_cast<size_t>(n_units));
  units_.resize(static_cast<size_t>(n_units));
  auto note_block_sizes = [&](const pb::Block& b) {
    m.max_raw_block = std::max<size_t>(m.max_raw_block, b.raw_size());
    m.max_stored_block = std::max<size_t>(m.max_stored_block, b.stored_size());
  };
  // Adds tensor t to unit u: its decoded layout and its blocks.
  storage::BlockDecoder scale_decoder;  // the row-scale blocks read at open
  auto add_tensor = [&](int u, int t) -> Status {
    Impl::Unit& U = m.units[static_cast<size_t>(u)];
    const pb::Tensor& T = r.manifest().tensors(t);
    TensorLayout L;
    L.tensor = t;
    L.rows = static_cast<size_t>(T.rows());
    L.cols = static_cast<size_t>(T.cols());
    L.stride = kernels::PaddedCols(L.cols);
    L.q_off = U.decoded_size;
    U.decoded_size += (L.rows * L.stride + 63) / 64 * 64;
    L.scale_off = U.decoded_size;
    U.decoded_size += (L.rows * 4 + 63) / 64 * 64;
    L.rowsum_off = U.decoded_size;
    U.decoded_size += (L.rows * 4 + 63) / 64 * 64;
    const size_t rpb = static_cast<size_t>(T.rows_per_block());
    L.first_block = T.first_block();
    L.rows_per_block = rpb;
    L.row_blocks = T.num_blocks() - 1;
    m.max_padded_block = std::max(m.max_padded_block, rpb * L.stride);
    m.max_block_rows = std::max(m.max_block_rows, rpb);
    const int ti = static_cast<int>(U.tensors.size());
    U.tensors.push_back(L);
    // The row scales, kept decoded for decoding inline (from the mapping, checked here once).
    std::vector<float>& sc = U.scales.emplace_back(L.rows);
    RETURN_IF_ERROR(r.ReadBlock(
        T.first_block(),
        std::span<uint8_t>(reinterpret_cast<uint8_t*>(sc.data()), sc.size() * sizeof(float)),
        &scale_decoder));
    RETURN_IF_ERROR(CheckScales(sc, path + ": " + T.name()));
    U.work.push_back({T.first_block(), ti, true, 0, L.rows});
    for (uint32_t k = 1; k < T.num_blocks(); ++k) {
      const size_t row0 = (k - 1) * rpb;
      U.work.push_back({T.first_block() + k, ti, false, row0, std::min(rpb, L.rows - row0)});
    }
    for (uint32_t k = 0; k < T.num_blocks(); ++k) {
      const pb::Block& b = r.block(T.first_block() + k);
      units_[static_cast<size_t>(u)].raw_bytes += b.raw_size();
      note_block_sizes(b);
    }
    return Status::Ok();
  };
  auto set_range = [&](Impl::Unit& U) {
    U.range_begin = std::numeric_limits<uint64_t>::max();
    U.range_end = 0;
    U.first_block = std::numeric_limits<uint32_t>::max();
    for (const WorkBlock& w : U.work) {
      const pb::Block& b = r.block(w.block);
      U.range_begin = std::min<uint64_t>(U.range_begin, b.offset());
      U.range_end = std::max<uint64_t>(U.range_end, b.offset() + b.stored_size());
      U.first_block = std::min(U.first_block, w.block);
      U.last_block = std::max(U.last_block, w.block);
    }
    U.range_begin = U.range_begin / kPageSize * kPageSize;
    U.range_end = std::min<uint64_t>(RoundUpToPage(U.range_end), r.header().file_size);
  };
  for (int l = 0; l < config_.n_layers; ++l) {
    Impl::Unit& U = m.units[static_cast<size_t>(l)];
    for (const char* what : kLayerMatrices) {
      ASSIGN_OR_RETURN(int t, find(LayerTensorName(l, what), true));
      RETURN_IF_ERROR(add_tensor(l, t));
    }
    set_range(U);
    ASSIGN_OR_RETURN(std::vector<float> * an, read_vector(LayerTensorName(l, "attn_norm.weight")));
    ASSIGN_OR_RETURN(std::vector<float> * fn, read_vector(LayerTensorName(l, "ffn_norm.weight")));
    U.layer_view.attn_norm = an->data();
    U.layer_view.ffn_norm = fn->data();
    if (config_.qkv_bias) {
      const char* names[] = {"attn_q.bias", "attn_k.bias", "attn_v.bias"};
      LinearWeights* lw[] = {&U.layer_view.wq, &U.layer_view.wk, &U.layer_view.wv};
      for (int i = 0; i < 3; ++i) {
        ASSIGN_OR_RETURN(std::vector<float> * b, read_vector(LayerTensorName(l, names[i])));
        lw[i]->bias = b->data();
      }
    }
    units_[static_cast<size_t>(l)].name = "layer " + std::to_string(l);
  }
  ASSIGN_OR_RETURN(m.embd_tensor, find("token_embd.weight", true));
  {
    Impl::Unit& H = m.units.back();
    ASSIGN_OR_RETURN(int t, m.tied ? Result<int>(m.embd_tensor) : find("output.weight", true));
    RETURN_IF_ERROR(add_tensor(n_units - 1, t));
    set_range(H);
    units_.back().name = m.tied ? "output (tied embedding)" : "output";
  }
  ASSIGN_OR_RETURN(std::vector<float> * fnorm, read_vector("output_norm.weight"));
  globals_.final_norm = fnorm->data();
  {
    const pb::Tensor& E = r.manifest().tensors(m.embd_tensor);
    m.embd_scales.resize(static_cast<size_t>(E.rows()));
    RETURN_IF_ERROR(r.ReadBlock(E.first_block(),
                                std::span<uint8_t>(reinterpret_cast<uint8_t*>(m.embd_scales.data()),
                                                   m.embd_scales.size() * 4),
                                &scale_decoder));
    for (uint32_t i = 1; i < E.num_blocks(); ++i) note_block_sizes(r.block(E.first_block() + i));
  }
  r.DropMappedPages();
  for (int u = 0; u < n_units; ++u) {
    const Impl::Unit& U = m.units[static_cast<size_t>(u)];
    UnitInfo& I = units_[static_cast<size_t>(u)];
    I.decoded_bytes = RoundUpToPage(U.decoded_size);
    I.compressed_bytes = U.range_end - U.range_begin;
    for (const TensorLayout& T : U.tensors) I.macs_per_token += T.rows * T.cols;
    int8_bytes_ += I.decoded_bytes;
  }
  if (!m.tied) {
    const pb::Tensor& E = r.manifest().tensors(m.embd_tensor);
    int8_bytes_ += static_cast<uint64_t>(E.rows() * E.cols());
  }

  // Readers and lookup scratch.
  auto open_reader = [&]() -> Result<std::unique_ptr<storage::BlockReader>> {
    ASSIGN_OR_RETURN(std::unique_ptr<storage::BlockReader> rd,
                     storage::OpenBlockReader(path, options.reader));
    if (options.wrap_reader) rd = options.wrap_reader(std::move(rd));
    return rd;
  };
  ASSIGN_OR_RETURN(m.io_reader, open_reader());
  ASSIGN_OR_RETURN(m.aux_reader, open_reader());
  ASSIGN_OR_RETURN(m.lookup_stored,
                   PageBuffer::Allocate(m.max_stored_block + 2 * kPageSize, "lookup buffer"));
  ASSIGN_OR_RETURN(m.lookup_raw, PageBuffer::Allocate(m.max_raw_block, "lookup buffer"));

  // The account.
  FixedMemory& f = m.fixed;
  f.baseline = before.rss;
  for (const auto& v : m.vectors) f.vectors += v.capacity() * sizeof(float);
  for (const Impl::Unit& U : m.units) {
    for (const auto& v : U.scales) f.vectors += v.capacity() * sizeof(float);
  }
  f.vectors += m.embd_scales.capacity() * sizeof(float);
  const int32_t ctx = options.context_length == 0 ? config_.context_length : options.context_length;
  const size_t vocab = static_cast<size_t>(config_.vocab_size);
  f.kv_cache = Transformer::KvCacheBytes(config_, ctx);
  f.activations = Transformer::MemoryBytes(config_, ctx) - f.kv_cache;
  // Logits rows, plus the sampler's candidates (8 bytes per id) and one more logits row.
  f.request =
      (static_cast<uint64_t>(std::max(1, options.max_logit_rows)) + 1) * vocab * 4 + vocab * 8;
  f.lookup = m.lookup_stored.size() + m.lookup_raw.size();
  // Per core, a decode-pool worker (a zstd context of ~160 KiB and a row scratch) and a compute
  // thread decoding inline (the same, plus a block of padded rows and their row sums).
  f.decoders =
      static_cast<uint64_t>(m.cores) *
      (2 * (RoundUpToPage(m.max_raw_block) + (192u << 10)) + RoundUpToPage(m.max_padded_block) +
       RoundUpToPage(m.max_block_rows * sizeof(int32_t)));
  // Thread stacks, the heap's own growth and page tables of the buffers: measured about 1 MiB on
  // x86-64; 2 MiB leaves room.
  f.margin = 2u << 20;

  RETURN_IF_ERROR(CheckScales(m.embd_scales, path + ": token_embd.weight"));

  Rates rates;
  if (options.rates != nullptr) {
    rates = *options.rates;
  } else {
    RETURN_IF_ERROR(m.Calibrate(&rates));
  }
  rates.cores = m.cores;
  {
    std::lock_guard<std::mutex> l(m.mu);  // no other thread yet
    m.st.fixed = f;
    m.st.reader_backend = m.io_reader->backend();
    m.st.minimum_budget = MinimumBudget(units_, f);
    m.st.budget = options.budget.Resolve(int8_bytes_);
    m.st.rates = rates;
    m.st.effective_budget = m.EffectiveBudget();
  }
  ASSIGN_OR_RETURN(Plan first, m.MakePlan(m.st.effective_budget, rates));
  for (int i = 0; i < m.cores; ++i) m.decoders.emplace_back([&m, i] { m.DecodeLoop(i); });
  m.prefetcher = std::thread([&m] { m.PrefetchLoop(); });
  if (options.watch_pressure) m.monitor = std::thread([&m] { m.MonitorLoop(); });
  RETURN_IF_ERROR(m.ApplyPlan(std::move(first)));
  return Status::Ok();
}

Status StreamingWeights::Impl::Calibrate(Rates* rates) {
  // Decoding: up to 16 data blocks of layer 0, one thread.
  const Unit& U = units[0];
  double secs = 0;
  uint64_t bytes = 0;
  int n = 0;
  for (const WorkBlock& w : U.work) {
    if (w.scale || n == 16) continue;
    ++n;
    const pb::Block& b = reader->block(w.block);
    ASSIGN_OR_RETURN(const uint8_t* stored, ReadBlockPages(w.block));
    const auto t0 = Clock::now();
    RETURN_IF_ERROR(reader->DecodeBlock(w.block, std::span<const uint8_t>(stored, b.stored_size()),
                                        std::span<uint8_t>(lookup_raw.data(), b.raw_size()),
                                        &aux_decoder));
    secs += Seconds(t0, Clock::now());
    bytes += b.raw_size();
  }
  if (secs > 0) rates->decode_bytes_per_s = static_cast<double>(bytes) / secs;
  // Flash: the units' ranges from the first, cold (cached pages dropped first and as it goes), in
  // 1 MiB reads back to back, for 0.25 s and at least 8 MiB, or 256 MiB; the rate of the second
  // half. A token-bucket device (a cgroup blkio throttle, burst-credit volumes) serves its bucket
  // first at full speed: the 800 MB/s blkio throttle of the benchmarks passes 60-80 MiB at
  // ~1.7 GB/s per 100 ms slice, so a probe of a few MiB measures the burst.
  uint64_t begin = std::numeric_limits<uint64_t>::max(), end = 0;
  for (const Unit& unit : units) {
    begin = std::min(begin, unit.range_begin);
    end = std::max(end, unit.range_end);
  }
  const uint64_t total = std::min<uint64_t>(end - begin, 256u << 20);
  ASSIGN_OR_RETURN(PageBuffer tmp,
                   PageBuffer::Allocate(std::min<uint64_t>(total, 1u << 20), "calibration"));
  aux_reader->DropCache(begin, total);
  const auto t0 = Clock::now();
  std::vector<std::pair<uint64_t, double>> marks;  // bytes read, seconds, after each read
  uint64_t read = 0;
  while (read < total && !(read >= (8u << 20) && marks.back().second > 0.25)) {
    const uint64_t len = std::min<uint64_t>(tmp.size(), total - read);
    RETURN_IF_ERROR(aux_reader->Read(begin + read, len, tmp.data()));
    read += len;
    marks.emplace_back(read, Seconds(t0, Clock::now()));
    if (read % (16u << 20) == 0) aux_reader->DropCache(begin + read - (16u << 20), 16u << 20);
  }
  aux_reader->DropCache(begin, total);
  if (!marks.empty()) {
    // The first half ends at `half`; with a single read it is the whole probe.
    const auto& [half_bytes, half_secs] = marks[(marks.size() - 1) / 2];
    const auto& [end_bytes, end_secs] = marks.back();
    const bool halves = end_secs > half_secs;
    const double probe_bytes = static_cast<double>(halves ? end_bytes - half_bytes : end_bytes);
    const double probe_secs = halves ? end_secs - half_secs : end_secs;
    if (probe_secs > 0) {
      rates->io_bytes_per_s = probe_bytes / probe_secs;
      io_window_bytes = probe_bytes;
      io_window_seconds = probe_secs;
      io_sustained = rates->io_bytes_per_s;  // refined by read-bound passes
      if (halves && half_secs > 0) io_burst = static_cast<double>(half_bytes) / half_secs;
      rates->io_credits_idle = io_burst > 1.5 * io_sustained;
    }
  }
  // Compute: int8 GEMV over the calibration buffer (in cache, so optimistic; the controller
  // corrects it from the first tokens).
  const size_t cols = static_cast<size_t>(self->config().dim);
  const size_t stride = kernels::PaddedCols(cols);
  const size_t rows = std::max<size_t>(1, tmp.size() / stride);
  if (rows * stride <= tmp.size()) {
    std::vector<float> scale(rows, 0.01f), y(rows);
    std::vector<int32_t> rs(rows, 0);
    std::vector<int8_t> xq(stride, 1);
    const kernels::Q8MatrixView mv{
        reinterpret_cast<const int8_t*>(tmp.data()), scale.data(), rs.data(), rows, cols, stride};
    const kernels::KernelTable& kt = kernels::Kernels();
    kt.gemv_q8_q8(mv, xq.data(), 1.0f, y.data(), 0, rows);
    const auto c0 = Clock::now();
    constexpr int kReps = 8;
    for (int i = 0; i < kReps; ++i) kt.gemv_q8_q8(mv, xq.data(), 1.0f, y.data(), 0, rows);
    const double cs = Seconds(c0, Clock::now());
    if (cs > 0) rates->compute_macs_per_s = static_cast<double>(rows * cols) * kReps / cs;
  }
  return Status::Ok();
}

Status StreamingWeights::BeginPass(size_t tokens) {
  Impl& m = *impl_;
  // Decoding inline since the last pass: bytes and thread-seconds over all compute threads.
  const uint64_t inline_bytes = m.inline_bytes.exchange(0, std::memory_order_relaxed);
  const double inline_secs =
      static_cast<double>(m.inline_ns.exchange(0, std::memory_order_relaxed)) * 1e-9;
  const auto now = Clock::now();
  {
    std::lock_guard<std::mutex> l(m.mu);
    Rates& r = m.st.rates;
    m.st.compute_seconds += m.token_compute + m.token_inline;
    m.st.decoded_bytes += inline_bytes;
    m.st.decode_thread_seconds += inline_secs;
    if (m.pass_tokens == 1) {  // the last pass was one decode step
      const double speedup = 1.0 + (m.plan.compute_threads - 1) * r.compute_parallel_efficiency;
      if (inline_secs > 0) {
        r.decode_bytes_per_s =
            0.8 * r.decode_bytes_per_s + 0.2 * static_cast<double>(inline_bytes) / inline_secs;
      }
      // The compute rate from resident units, else from inline units less their decoding.
      double macs = static_cast<double>(m.token_macs), secs = m.token_compute * speedup;
      if (m.token_macs == 0 && m.token_inline > 0) {
        macs = static_cast<double>(m.token_inline_macs);
        secs = m.token_inline * speedup - inline_secs;
        if (secs < 0.05 * m.token_inline * speedup) secs = 0;  // too noisy to tell
      }
      if (macs > 0 && secs > 0) {
        const double rate = macs / secs;
        r.compute_macs_per_s = m.st.tokens <= 1 ? rate : 0.8 * r.compute_macs_per_s + 0.2 * rate;
      }
      // The device delivered this pass's reads in its wall time. When compute waited for a fifth
      // of it or more, the pass was bound by reads and that is the sustained rate; otherwise it
      // is a lower bound.
      const double wall = Seconds(m.pass_start, now);
      const uint64_t read = m.st.flash_bytes - m.pass_flash0;
      if (read > 0 && wall > 0) {
        const double sample = static_cast<double>(read) / wall;
        if (m.st.wait_seconds - m.pass_wait0 >= 0.2 * wall) {  // the first replaces the probe
          m.io_sustained = m.io_sustained_seen ? 0.5 * m.io_sustained + 0.5 * sample : sample;
          m.io_sustained_seen = true;
        } else if (m.io_sustained > 0) {
          m.io_sustained = std::max(m.io_sustained, sample);
        }
        m.UpdateIoRate();
      }
    }
    m.pass_start = now;
    m.pass_flash0 = m.st.flash_bytes;
    m.pass_wait0 = m.st.wait_seconds;
  }
  m.token_compute = m.token_inline = 0;
  m.token_macs = m.token_inline_macs = 0;
  m.pass_tokens = tokens;
  {
    std::lock_guard<std::mutex> l(m.mu);
    ++m.st.tokens;
  }
  m.Adapt();
  return m.MaybeReplan();
}

Result<const LayerWeights*> StreamingWeights::AcquireLayer(int layer) {
  if (layer < 0 || layer >= config_.n_layers) {
    return OutOfRangeError("layer " + std::to_string(layer) + " out of range");
  }
  ASSIGN_OR_RETURN(const void* p, AcquireUnit(layer));
  return static_cast<const LayerWeights*>(p);
}

void StreamingWeights::ReleaseLayer(int layer) { ReleaseUnit(layer); }

Result<const LinearWeights*> StreamingWeights::AcquireOutput() {
  ASSIGN_OR_RETURN(const void* p, AcquireUnit(config_.n_layers));
  return static_cast<const LinearWeights*>(p);
}

void StreamingWeights::ReleaseOutput() { ReleaseUnit(config_.n_layers); }

Result<const void*> StreamingWeights::AcquireUnit(int u) {
  Impl& m = *impl_;
  Impl::Unit& U = m.units[static_cast<size_t>(u)];
  const bool head = u == config_.n_layers;
  if (U.tier == Tier::kDecoded) {
    m.held.reset();
    m.held_since = Clock::now();
    return head ? static_cast<const void*>(&U.head_view) : &U.layer_view;
  }
  // m.plan is written only on this thread (ApplyPlan), so reading it here needs no lock.
  if (U.tier == Tier::kCompressed && m.plan.decode == Decode::kInline) {
    m.held.reset();
    m.held_since = Clock::now();
    return head ? static_cast<const void*>(&U.compressed_views.head) : &U.compressed_views.layer;
  }
  std::unique_lock<std::mutex> l(m.mu);
  if (m.paused) {
    return UnavailableError("the runtime has no pipeline buffers (the last plan failed to apply: " +
                            m.st.last_replan + ")");
  }
  const auto t0 = Clock::now();
  for (;;) {
    while (!m.items.empty() && m.items.front()->unit != u) {
      m.Drop(m.items.front());
      m.items.pop_front();
      m.cv.notify_all();
    }
    if (m.items.empty()) {
      m.next_pos = static_cast<size_t>(m.seq_pos[static_cast<size_t>(u)]);
      m.cv.notify_all();
      m.cv.wait(l, [&] { return m.stop || !m.items.empty(); });
      if (m.stop) return CancelledError("the runtime is shutting down");
      continue;
    }
    std::shared_ptr<Impl::Item> it = m.items.front();
    m.cv.wait(l,
              [&] { return it->state == Impl::Item::kReady || it->state == Impl::Item::kFailed; });
    m.st.wait_seconds += Seconds(t0, Clock::now());
    if (it->state == Impl::Item::kFailed) {
      m.items.pop_front();
      m.FreeItem(it);
      ++m.st.errors;
      m.cv.notify_all();
      return it->error;
    }
    m.held = it;
    m.held_since = Clock::now();
    if (m.plan.decode == Decode::kInline) {
      return head ? static_cast<const void*>(&it->inline_views.head) : &it->inline_views.layer;
    }
    return head ? static_cast<const void*>(&it->head_view) : &it->layer_view;
  }
}

void StreamingWeights::ReleaseUnit(int u) {
  Impl& m = *impl_;
  const double secs = Seconds(m.held_since, Clock::now());
  const uint64_t macs = units_[static_cast<size_t>(u)].macs_per_token;
  if (m.units[static_cast<size_t>(u)].tier != Tier::kDecoded && m.plan.decode == Decode::kInline) {
    m.token_inline += secs;
    m.token_inline_macs += macs;
  } else {
    m.token_compute += secs;
    m.token_macs += macs;
  }
  if (m.held == nullptr) return;
  std::lock_guard<std::mutex> l(m.mu);
  if (!m.items.empty() && m.items.front() == m.held) m.items.pop_front();
  m.FreeItem(m.held);
  m.held.reset();
  m.cv.notify_all();
}

Status StreamingWeights::EmbedToken(int32_t token, float* out) {
  Impl& m = *impl_;
  const storage::ContainerReader& r = *m.reader;
  const size_t dim = static_cast<size_t>(config_.dim);
  const Impl::Unit& H = m.units.back();
  if (m.tied && H.tier == Tier::kDecoded) {
    const kernels::Q8MatrixView& v = H.head_view.q8;
    DequantizeRow(v.q + static_cast<size_t>(token) * v.stride, v.scale[token], dim, out);
    return Status::Ok();
  }
  const pb::Tensor& E = r.manifest().tensors(m.embd_tensor);
  const size_t rpb = static_cast<size_t>(E.rows_per_block());
  const size_t k = static_cast<size_t>(token) / rpb;
  const uint32_t block = E.first_block() + 1 + static_cast<uint32_t>(k);
  if (static_cast<int64_t>(block) != m.lookup_block) {
    m.lookup_block = -1;
    const pb::Block& b = r.block(block);
    const uint8_t* stored;
    if (m.tied && H.tier == Tier::kCompressed) {
      stored = H.compressed.data() + (b.offset() - H.range_begin);
    } else {
      Result<const uint8_t*> read = m.ReadBlockPages(block);
      if (!read.ok()) {
        return DataLossError("embedding lookup: reading " + r.DescribeBlock(block) + ": " +
                             read.status().message());
      }
      stored = *read;
    }
    RETURN_IF_ERROR(r.DecodeBlock(block, std::span<const uint8_t>(stored, b.stored_size()),
                                  std::span<uint8_t>(m.lookup_raw.data(), b.raw_size()),
                                  &m.aux_decoder));
    m.lookup_block = block;
  }
  DequantizeRow(reinterpret_cast<const int8_t*>(m.lookup_raw.data()) +
                    (static_cast<size_t>(token) - k * rpb) * dim,
                m.embd_scales[static_cast<size_t>(token)], dim, out);
  return Status::Ok();
}

Status StreamingWeights::SetBudget(const BudgetSpec& budget) {
  Impl& m = *impl_;
  const uint64_t bytes = budget.Resolve(int8_bytes_);
  std::lock_guard<std::mutex> l(m.mu);
  const uint64_t saved = m.st.budget;
  m.st.budget = bytes;
  Result<Plan> p = m.MakePlan(m.EffectiveBudget(), m.st.rates);
  if (!p.ok() || (bytes != 0 && bytes < m.st.minimum_budget)) {
    m.st.budget = saved;
    if (!p.ok()) return p.status();
    return ResourceExhaustedError("a budget of " + FormatBytes(bytes) +
                                  " is below the smallest that works for this model and context (" +
                                  FormatBytes(m.st.minimum_budget) + ", " +
                                  std::to_string(m.st.minimum_budget) + " bytes)");
  }
  m.RequestReplan("budget set to " + (bytes == 0 ? std::string("unlimited") : FormatBytes(bytes)));
  return Status::Ok();
}

Status StreamingWeights::ApplyPendingPlan() { return impl_->MaybeReplan(); }

Plan StreamingWeights::plan() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->plan;
}

RuntimeStats StreamingWeights::stats() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->st;
}

void StreamingWeights::ToJson(JsonWriter& j) const {
  const Plan p = plan();
  const RuntimeStats s = stats();
  j.BeginObjectIn("plan");
  p.ToJson(j);
  j.EndObject();
  j.BeginObjectIn("memory");
  j.Int("budget", static_cast<int64_t>(s.budget));
  j.Int("effective_budget", static_cast<int64_t>(s.effective_budget));
  j.Int("minimum_budget", static_cast<int64_t>(s.minimum_budget));
  j.Int("int8_model_bytes", static_cast<int64_t>(int8_bytes_));
  j.Int("baseline", static_cast<int64_t>(s.fixed.baseline));
  j.Int("vectors", static_cast<int64_t>(s.fixed.vectors));
  j.Int("kv_cache", static_cast<int64_t>(s.fixed.kv_cache));
  j.Int("activations", static_cast<int64_t>(s.fixed.activations));
  j.Int("request", static_cast<int64_t>(s.fixed.request));
  j.Int("lookup", static_cast<int64_t>(s.fixed.lookup));
  j.Int("decoders", static_cast<int64_t>(s.fixed.decoders));
  j.Int("margin", static_cast<int64_t>(s.fixed.margin));
  Result<ProcMemory> pm = ReadProcMemory();
  if (pm.ok()) {
    j.Int("rss", static_cast<int64_t>(pm->rss));
    j.Int("peak_rss", static_cast<int64_t>(pm->hwm));
  }
  j.EndObject();
  j.BeginObjectIn("runtime");
  j.String("reader", s.reader_backend);
  j.Int("passes", static_cast<int64_t>(s.tokens));
  j.Int("flash_bytes", static_cast<int64_t>(s.flash_bytes));
  j.Double("io_seconds", s.io_seconds);
  j.Int("decoded_bytes", static_cast<int64_t>(s.decoded_bytes));
  j.Double("decode_thread_seconds", s.decode_thread_seconds);
  j.Double("compute_seconds", s.compute_seconds);
  j.Double("wait_seconds", s.wait_seconds);
  j.Int("replans", static_cast<int64_t>(s.replans));
  j.String("last_replan", s.last_replan);
  j.Int("errors", static_cast<int64_t>(s.errors));
  j.Double("pressure_some_avg10", s.pressure_some_avg10);
  j.Double("budget_factor", s.budget_factor);
  j.Double("rate_compute_gmacs", s.rates.compute_macs_per_s / 1e9);
  j.Double("rate_decode_mbps", s.rates.decode_bytes_per_s / 1e6);
  j.Double("rate_io_mbps", s.rates.io_bytes_per_s / 1e6);
  j.Bool("io_credits_idle", s.rates.io_credits_idle);
  j.EndObject();
}

}  // namespace dcomp::runtime
