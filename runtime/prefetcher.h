// The prefetcher: the pipeline that brings streamed units to compute. A thread walks the plan's
// streamed units in execution order (wrapping from the output matrix to layer 0, so the next
// token's first layers are ready when it starts) and, for each, takes a ring item:
//  - flash units: reads the unit's compressed range into an I/O staging buffer (io_uring, pread
//    fallback; its page-cache pages dropped after use);
//  - decoding ahead (Plan::decode == kAhead): hands the stored bytes (staging, or the compressed
//    tier in RAM) to the decode pool, which decodes them into a decoded slot;
//  - decoding inline: the item is ready once read; its views decode from the staging buffer.
// Compute takes items in order (Acquire) and gives them back (Release); an item it skips is
// dropped. Memory: `slots` decoded slots and `staging` staging buffers, allocated per plan while
// the pipeline is drained. Reads and decodes are reported to the controller.
//
// Thread-safe: Acquire, Release, Drain, Allocate and Start are the compute thread's; counters()
// may be called from any thread. One lock guards the ring; the decode pool and the controller are
// called with it released or take only their own locks.
#pragma once

#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "base/mutex.h"
#include "base/page_buffer.h"
#include "base/status.h"
#include "runtime/controller.h"
#include "runtime/decode_pool.h"
#include "runtime/planner.h"
#include "runtime/unit_decoder.h"
#include "storage/block_reader.h"

namespace dcomp::runtime {

class Prefetcher {
 public:
  // A unit in the pipeline. The decode pool's job for it when it is decoded ahead.
  struct Item : DecodePool::Job {
    int slot = -1, staging = -1;
    enum State { kReading, kDecoding, kReady, kFailed } state = kReading;
    LayerWeights layer_view;  // kAhead: over the slot
    LinearWeights head_view;
    InlineViews inline_views;  // kInline: over the staging buffer
  };
  struct Counters {
    uint64_t flash_bytes = 0;  // compressed bytes read
    double io_seconds = 0;     // time in reads
    double wait_seconds = 0;   // compute stalled on the pipeline
    uint64_t errors = 0;       // failed acquisitions
  };

  // `tier(u)` must stay valid: units in RAM are read from `compressed(u)`.
  Prefetcher(const UnitDecoder* decoder, std::unique_ptr<storage::BlockReader> reader,
             Controller* controller, int decode_threads);
  ~Prefetcher();

  const std::string& reader_backend() const { return backend_; }

  // Pauses the pipeline, drops every item and waits until none is read or decoded.
  void Drain() EXCLUDES(mu_);
  // Replaces the buffers (drained only): up to `slots` decoded slots and `staging` staging
  // buffers; on an allocation failure, as many as were made (slots() / staging() tell).
  Status Allocate(int slots, uint64_t slot_bytes, int staging, uint64_t staging_bytes);
  int slots() const { return static_cast<int>(slots_.size()); }
  int staging() const { return static_cast<int>(staging_.size()); }
  // A flash unit that holds its first `matrices` matrices packed at `base` (its packed layout's
  // start; decoding inline only): only the rest is read (UnitLayout::tail_begin).
  struct PackedHead {
    size_t matrices = 0;
    const uint8_t* base = nullptr;
  };
  // Starts streaming `seq` (units in execution order; `stored[u]` is unit u's compressed range in
  // RAM, nullptr for flash units; `heads[u]` a flash unit's packed head, or empty for none) with
  // `decode_threads` decoders when decoding ahead. Stays paused when there is nothing to stream or
  // no buffer to stream with.
  void Start(std::vector<int> seq, std::vector<const uint8_t*> stored,
             std::vector<PackedHead> heads, Decode decode, int decode_threads) EXCLUDES(mu_);
  // Unit u's item, once ready (read, and decoded when decoding ahead); fails with the unit's read
  // or decode error, or FAILED_PRECONDITION when the pipeline is paused (the last plan left it no
  // buffers). Items before u are dropped. Held until Release().
  Result<const Item*> Acquire(int u) EXCLUDES(mu_);
  void Release() EXCLUDES(mu_);

  Counters counters() const EXCLUDES(mu_);

 private:
  void Loop() EXCLUDES(mu_);
  // Unit u's packed head (none unless decoding inline).
  const PackedHead& HeadOf(int u) const;
  void ReadFlashUnit(const std::shared_ptr<Item>& it) REQUIRES(mu_);
  void OnDecoded(const std::shared_ptr<DecodePool::Job>& job) EXCLUDES(mu_);
  void Complete(const std::shared_ptr<Item>& it) REQUIRES(mu_);
  void FreeItem(const std::shared_ptr<Item>& it) REQUIRES(mu_);
  void Drop(const std::shared_ptr<Item>& it) REQUIRES(mu_);

  const UnitDecoder* decoder_;
  std::unique_ptr<storage::BlockReader> reader_;  // the prefetch thread's
  const std::string backend_;
  Controller* controller_;
  // Changed only while drained (no item in flight, the thread paused).
  std::vector<PageBuffer> slots_, staging_;
  std::vector<int> seq_;                // streamed units in execution order
  std::vector<int> seq_pos_;            // unit -> index in seq_ (-1)
  std::vector<const uint8_t*> stored_;  // unit -> its range in RAM (compressed tier) or nullptr
  std::vector<PackedHead> heads_;       // unit -> its packed head (flash units decoded inline)
  Decode decode_ = Decode::kAhead;
  std::shared_ptr<Item> held_;  // the compute thread's

  mutable Mutex mu_;
  CondVar cv_;
  int max_items_ GUARDED_BY(mu_) = 0;
  std::vector<int> free_slots_ GUARDED_BY(mu_), free_staging_ GUARDED_BY(mu_);
  std::deque<std::shared_ptr<Item>> items_ GUARDED_BY(mu_);  // in unit order
  int in_flight_ GUARDED_BY(mu_) = 0;                        // items reading or decoding
  size_t next_pos_ GUARDED_BY(mu_) = 0;
  bool paused_ GUARDED_BY(mu_) = true;
  bool stop_ GUARDED_BY(mu_) = false;
  Counters counters_ GUARDED_BY(mu_);
  std::thread thread_;
  std::unique_ptr<DecodePool> pool_;  // declared last: its workers stop first
};

}  // namespace dcomp::runtime
