// The controller: the runtime's measurements and its decisions about them. It holds the rate
// estimates the planner works from (compute per thread, decode per thread, flash reads), the budget
// and its scaling under memory pressure, and the pending re-plan with its reason:
//  - Calibrate (at open): decode speed on layer 0's blocks, a read probe over the units' ranges,
//    and the int8 and packed products' speeds (out of cache for a model larger than the cache);
//  - observations: every read of the prefetcher (OnRead), every unit the decode pool decoded
//    (OnUnitDecoded), every forward pass (EndPass: compute rate, inline decode rate, the read rate
//    that read-bound passes sustained);
//  - decisions: a re-plan when the budget changes (SetBudget), when /proc/pressure/memory reports
//    pressure (a monitor thread), or when the measured rates promise a clearly faster plan whose
//    reload pays back (Adapt, from EndPass). The runtime's front applies re-plans between tokens
//    (TakeReplan, then NoteReplanned).
//
// Thread-safe: one lock guards all of it; the controller calls no other component while holding it.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"
#include "runtime/block_lookup.h"
#include "runtime/planner.h"
#include "runtime/unit_decoder.h"

namespace dcomp::runtime {

// What the start-up probe measured of flash: the rate of its second half (the sustained estimate
// until read-bound passes measure it) and of its first half (reads after idle time).
struct IoProbe {
  double window_bytes = 0, window_seconds = 0;
  double sustained = 0;
  double burst = 0;
};

// Measures decode, read and compute speed (see the header comment). Fills *rates; *probe gets
// the read probe's halves. `headroom`: bytes the budget leaves beyond the fixed memory, of which
// the compute probe may borrow up to half for the time it runs (out of cache; CalibrateCompute).
Status Calibrate(const UnitDecoder& decoder, BlockLookup* lookup, size_t dim, uint64_t headroom,
                 Rates* rates, IoProbe* probe);

// The bytes of each read of the read probe (Calibrate): reads as the prefetcher makes them, a
// unit's range at once, which the io_uring reader keeps in flight as chunks up to its queue depth
// (BlockReaderOptions), up to kReadProbeMaxBytes (16 chunks of 1 MiB) and half of `headroom`,
// rounded down to whole MiB (so that O_DIRECT reads stay aligned); at least 1 MiB (or `total`). 1
// MiB reads one at a time measured 1.7-2.3 GB/s on a device where the runtime's reads sustain 3.8
// GB/s, and on that rate the planner chose, on some starts and not others, a plan that reads less
// but serialises reads with compute (25% slower).
inline constexpr uint64_t kReadProbeMaxBytes = uint64_t{16} << 20;
uint64_t ReadProbeBytes(uint64_t total, uint64_t largest_unit, uint64_t headroom);

// The bytes of the compute probe's buffer (Calibrate). A model larger than the last-level cache
// streams its weights from DRAM every token, and there the INT8 and packed products run at other
// ratios than in cache (INT8 bound by bandwidth; packed by its unpacking or by its fewer bytes):
// measured in cache, the packed tier looks slower than decoded INT8 on machines where it is faster.
// So for such a model the probe runs over 3x the cache, within [8 MiB, 256 MiB], when that is at
// most half of `headroom`; it is freed before the plan allocates. 0: in cache (a 1 MiB buffer).
uint64_t ComputeProbeBytes(uint64_t model_bytes, uint64_t llc_bytes, uint64_t headroom);

// One forward pass as the front measured it.
struct PassSample {
  size_t tokens = 0;               // tokens of the pass (1: a decode step)
  uint64_t inline_bytes = 0;       // decoded inline by the compute threads
  double inline_seconds = 0;       // their thread-seconds
  double resident_seconds = 0;     // in units decoded (resident or ahead)
  double inline_unit_seconds = 0;  // in units decoded inline
  uint64_t resident_macs = 0, inline_macs = 0;
  double flash_hold_seconds = 0;  // decoding inline: wall seconds compute held flash units
  uint64_t flash_bytes = 0;       // the prefetcher's total so far
  double wait_seconds = 0;        // compute's total wait on the pipeline so far
};

struct ControllerOptions {
  Policy policy = Policy::kAdaptive;
  PlanConstraints constraints;
  bool adapt = true;  // re-plan from measurements
};

class Controller {
 public:
  // The effective budget while no budget is set (Stats: effective_budget).
  static constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max() / 4;
  Controller(const std::vector<UnitInfo>* units, const FixedMemory& fixed,
             const ControllerOptions& options, uint64_t budget, const Rates& rates,
             const IoProbe& probe);
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // The plan to start with: the fastest within the effective budget.
  Result<Plan> FirstPlan() const EXCLUDES(mu_);
  // Re-plans when /proc/pressure/memory reports pressure (once a second; none without PSI).
  void StartPressureMonitor() EXCLUDES(mu_);

  void OnRead(uint64_t bytes, double seconds) EXCLUDES(mu_);
  void OnUnitDecoded(uint64_t raw_bytes, double seconds) EXCLUDES(mu_);
  // A pass ended (the compute thread, at the next pass's start); `current` is the plan it ran.
  void EndPass(const PassSample& pass, const Plan& current) EXCLUDES(mu_);

  // Fails with RESOURCE_EXHAUSTED naming the smallest budget that works when none fits. On
  // success `chosen` (if not null) receives the plan the re-plan will apply.
  Status SetBudget(uint64_t bytes, Plan* chosen = nullptr) EXCLUDES(mu_);

  struct Replan {
    uint64_t budget = 0;
    Rates rates;
    std::string why;
  };
  // The pending re-plan, if any (taken: no longer pending).
  std::optional<Replan> TakeReplan() EXCLUDES(mu_);
  void NoteReplanned(const std::string& why) EXCLUDES(mu_);
  Result<Plan> MakePlan(uint64_t budget, const Rates& rates) const;

  struct Stats {
    uint64_t tokens = 0;
    uint64_t decoded_bytes = 0;
    double decode_thread_seconds = 0, compute_seconds = 0;
    uint64_t replans = 0;
    std::string last_replan;
    double pressure_some_avg10 = -1, budget_factor = 1;
    Rates rates;
    uint64_t budget = 0, effective_budget = 0, minimum_budget = 0;
  };
  Stats stats() const EXCLUDES(mu_);

  static constexpr int kAdaptEvery = 32;  // tokens between checks (and one at token 3)

 private:
  void MonitorLoop() EXCLUDES(mu_);
  void RequestReplan(std::string why) REQUIRES(mu_);
  uint64_t EffectiveBudget() const REQUIRES(mu_);
  void UpdateIoRate() REQUIRES(mu_);
  void Adapt(const Plan& current) REQUIRES(mu_);

  const std::vector<UnitInfo>* units_;
  const FixedMemory fixed_;
  const ControllerOptions opt_;

  mutable Mutex mu_;
  CondVar cv_;
  Stats st_ GUARDED_BY(mu_);
  double io_window_bytes_ GUARDED_BY(mu_) = 0;  // decayed read totals
  double io_window_seconds_ GUARDED_BY(mu_) = 0;
  double io_sustained_ GUARDED_BY(mu_) = 0;         // bytes/s sustained (0: unknown)
  bool io_sustained_seen_ GUARDED_BY(mu_) = false;  // measured by a read-bound pass
  bool hold_measured_ GUARDED_BY(mu_) = false;      // Rates::flash_hold_factor measured
  double io_burst_ GUARDED_BY(mu_) = 0;  // the probe's first half, the rate after idle time
  bool replan_pending_ GUARDED_BY(mu_) = false;
  uint64_t plan_tokens0_ GUARDED_BY(mu_) = 0;  // st_.tokens when the plan in force was applied
  std::string replan_reason_ GUARDED_BY(mu_);
  // The pass in progress: when it began, and the bytes read and wait time before it.
  std::chrono::steady_clock::time_point pass_start_ GUARDED_BY(mu_){};
  uint64_t pass_flash0_ GUARDED_BY(mu_) = 0;
  double pass_wait0_ GUARDED_BY(mu_) = 0;
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread monitor_;
};

}  // namespace dcomp::runtime
