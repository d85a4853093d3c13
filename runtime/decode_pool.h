// The decode pool: worker threads that decode whole units, block by block, into decoded slots
// ahead of compute (Plan::decode == kAhead). One codec context and row scratch per worker
// (STYLE: one decoder context per worker); a FIFO queue of blocks, bounded by the prefetcher's
// slots. The controller sets how many workers take part (SetActive); the others sleep.
//
// A Job is one unit. Its blocks are decoded in any order by any active worker; when the last one
// is done, the worker calls `on_done(job)` without holding the pool's lock. A cancelled job's
// remaining blocks are skipped (it still completes).
//
// Thread-safe: Submit, SetActive and the destructor may be called from any thread.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"
#include "runtime/unit_decoder.h"

namespace dcomp::runtime {

class DecodePool {
 public:
  struct Job {
    int unit = 0;
    const uint8_t* stored = nullptr;  // the unit's stored range in RAM
    bool crc_checked = false;         // stored's CRCs were checked when it was read (CheckRange)
    uint8_t* dst = nullptr;           // its decoded layout
    std::atomic<bool> cancelled{false};
    // Final when on_done is called.
    Status error = Status::Ok();
    double decode_seconds = 0;  // summed over workers
    size_t blocks_left = 0;
  };
  using DoneFn = std::function<void(const std::shared_ptr<Job>&)>;

  // `threads` workers, each with `scratch_bytes` of row scratch.
  DecodePool(const UnitDecoder* decoder, int threads, size_t scratch_bytes, DoneFn on_done);
  ~DecodePool();
  DecodePool(const DecodePool&) = delete;
  DecodePool& operator=(const DecodePool&) = delete;

  // Queues every block of job->unit.
  void Submit(const std::shared_ptr<Job>& job) EXCLUDES(mu_);
  // Workers [0, n) take part.
  void SetActive(int n) EXCLUDES(mu_);

 private:
  struct Task {
    std::shared_ptr<Job> job;
    size_t work = 0;
  };
  void WorkerLoop(int index);

  const UnitDecoder* decoder_;
  const size_t scratch_bytes_;
  const DoneFn on_done_;
  Mutex mu_;
  CondVar cv_;
  std::deque<Task> tasks_ GUARDED_BY(mu_);
  int active_ GUARDED_BY(mu_) = 0;
  bool stop_ GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace dcomp::runtime
