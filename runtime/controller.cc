#include "runtime/controller.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <utility>

#include "base/clock.h"
#include "base/cpu_features.h"
#include "base/flags.h"
#include "kernels/kernels.h"
#include "runtime/memory_stats.h"

namespace dcomp::runtime {

namespace {

// Decoding: up to 16 data blocks of layer 0, one thread.
Status CalibrateDecode(const UnitDecoder& decoder, BlockLookup* lookup, Rates* rates) {
  const UnitLayout& U = decoder.unit(0);
  double secs = 0;
  uint64_t bytes = 0;
  int n = 0;
  for (const WorkBlock& w : U.work) {
    if (w.scale || n == 16) continue;
    ++n;
    ASSIGN_OR_RETURN(const uint8_t* stored, lookup->ReadBlockPages(w.block));
    const auto t0 = Clock::now();
    RETURN_IF_ERROR(lookup->DecodeToRaw(w.block, stored));
    secs += Seconds(t0, Clock::now());
    bytes += decoder.reader().block(w.block).raw_size();
  }
  if (secs > 0) rates->decode_bytes_per_s = static_cast<double>(bytes) / secs;
  return Status::Ok();
}

// Flash: the units' ranges from the first, cold (cached pages dropped first and as it goes), in
// reads of `tmp`'s size back to back, for 0.25 s and at least 8 MiB, or 256 MiB; the rate of the
// second half. A token-bucket device (a cgroup blkio throttle, burst-credit volumes) serves its
// bucket first at full speed: the 800 MB/s blkio throttle of the benchmarks passes 60-80 MiB at
// ~1.7 GB/s per 100 ms slice, so a probe of a few MiB measures the burst. `tmp` is the read
// buffer (ReadProbeBytes).
Status CalibrateReads(const ModelLayout& layout, storage::BlockReader* reader, PageBuffer* tmp,
                      uint64_t total, Rates* rates, IoProbe* probe) {
  uint64_t begin = std::numeric_limits<uint64_t>::max();
  for (const UnitLayout& unit : layout.units) begin = std::min(begin, unit.range_begin);
  reader->DropCache(begin, total);
  const auto t0 = Clock::now();
  std::vector<std::pair<uint64_t, double>> marks;  // bytes read, seconds, after each read
  uint64_t read = 0;
  while (read < total && !(read >= (8u << 20) && marks.back().second > 0.25)) {
    const uint64_t len = std::min<uint64_t>(tmp->size(), total - read);
    RETURN_IF_ERROR(reader->Read(begin + read, len, tmp->data()));
    read += len;
    marks.emplace_back(read, Seconds(t0, Clock::now()));
    if (read % (16u << 20) == 0) reader->DropCache(begin + read - (16u << 20), 16u << 20);
  }
  reader->DropCache(begin, total);
  if (marks.empty()) return Status::Ok();
  // The first half ends at `half`; with a single read it is the whole probe.
  const auto& [half_bytes, half_secs] = marks[(marks.size() - 1) / 2];
  const auto& [end_bytes, end_secs] = marks.back();
  const bool halves = end_secs > half_secs;
  const double probe_bytes = static_cast<double>(halves ? end_bytes - half_bytes : end_bytes);
  const double probe_secs = halves ? end_secs - half_secs : end_secs;
  if (probe_secs > 0) {
    rates->io_bytes_per_s = probe_bytes / probe_secs;
    probe->window_bytes = probe_bytes;
    probe->window_seconds = probe_secs;
    probe->sustained = rates->io_bytes_per_s;  // refined by read-bound passes
    if (halves && half_secs > 0) probe->burst = static_cast<double>(half_bytes) / half_secs;
    rates->io_credits_idle = probe->burst > 1.5 * probe->sustained;
  }
  return Status::Ok();
}

// Multiply-adds per second of `product` over rows x cols (one warm-up call, then 8 timed).
template <typename Product>
double MacsPerSecond(size_t rows, size_t cols, Product product) {
  product();
  const auto t0 = Clock::now();
  constexpr int kReps = 8;
  for (int i = 0; i < kReps; ++i) product();
  const double s = Seconds(t0, Clock::now());
  return s > 0 ? static_cast<double>(rows * cols) * kReps / s : 0;
}

// The last-level cache the compute probe sizes itself by: DCOMP_CACHE_BYTES when set (a positive
// integer; for tests, and for a machine whose sysfs does not tell), else sysfs, else 32 MiB.
uint64_t LastLevelCacheBytes() {
  if (const char* env = std::getenv("DCOMP_CACHE_BYTES"); env != nullptr) {
    const Result<int64_t> v = ParseInt(env, "DCOMP_CACHE_BYTES");
    if (v.ok() && *v > 0) return static_cast<uint64_t>(*v);
    static std::once_flag warned;
    std::call_once(warned, [env] {
      std::fprintf(stderr,
                   "dcomp: DCOMP_CACHE_BYTES='%s' ignored: expected a positive number of bytes\n",
                   env);
    });
  }
  return Cpu().last_level_cache_bytes != 0 ? Cpu().last_level_cache_bytes : uint64_t{32} << 20;
}

// Compute: the INT8 GEMV, and the packed GEMV at the model's most common narrow width (with its
// levels: at 7 bits the AVX2 product with levels runs about a fifth slower than without), over
// one buffer: out of cache (ComputeProbeBytes) for a model larger than the last-level cache, else
// `tmp` (1 MiB, in cache; the controller corrects the INT8 rate from the first tokens).
void CalibrateCompute(size_t dim, int bits, const CodeLevels* levels, uint64_t model_bytes,
                      uint64_t headroom, PageBuffer* tmp, Rates* rates) {
  const uint64_t llc = LastLevelCacheBytes();
  PageBuffer big;
  if (const uint64_t want = ComputeProbeBytes(model_bytes, llc, headroom); want > 0) {
    Result<PageBuffer> b = PageBuffer::Allocate(want, "the compute probe");
    if (b.ok()) {
      big = *std::move(b);
      std::memset(big.data(), 0x11, big.size());  // codes that are not all zero
    }
  }
  PageBuffer* buf = big.size() > 0 ? &big : tmp;
  rates->compute_out_of_cache = big.size() > 0;
  const size_t cols = dim;
  const size_t stride = kernels::PaddedCols(cols);
  const size_t rows = std::max<size_t>(1, buf->size() / stride);
  if (rows * stride > buf->size()) return;
  std::vector<float> scale(rows, 0.01f), y(rows);
  std::vector<int32_t> rs(rows, 0);
  std::vector<int8_t> xq(stride, 1);
  const kernels::Q8MatrixView mv{
      reinterpret_cast<const int8_t*>(buf->data()), scale.data(), rs.data(), rows, cols, stride};
  const kernels::KernelTable& kt = kernels::Kernels();
  const double int8_rate =
      MacsPerSecond(rows, cols, [&] { kt.gemv_q8_q8(mv, xq.data(), 1.0f, y.data(), 0, rows); });
  if (int8_rate > 0) rates->compute_macs_per_s = int8_rate;
  // The packed product on the same bytes (timing only; PackedComputeRatio adds the bytes read).
  if (bits == 8 || int8_rate <= 0) return;
  const size_t row_bytes = kernels::PackedRowBytes(cols, bits);
  const size_t prows = std::max<size_t>(1, buf->size() / row_bytes);
  if (prows * row_bytes > buf->size()) return;
  // Row scales coded, as the packer's files hold them (base/row_scales.h).
  std::vector<uint8_t> pscale(prows, 0);
  std::vector<float> py(prows);
  const RowScaleView sv{pscale.data(), ScaleGridIndex(RoundScaleToGrid(0.01f))};
  const kernels::PackedMatrixView pv{buf->data(), sv, prows, cols, row_bytes, bits, levels};
  const double packed_rate = MacsPerSecond(
      prows, cols, [&] { kt.gemv_packed_q8(pv, xq.data(), 1.0f, py.data(), 0, prows); });
  if (packed_rate > 0) rates->packed_macs_per_s = packed_rate;
}

// The narrow width (4..7) holding the most weights of the model's units (8 if none), and the
// level table most of those weights use (one of their tensors'; null when most are linear).
struct CommonWidth {
  int bits = 8;
  const CodeLevels* levels = nullptr;
};
CommonWidth CommonPackedWidth(const ModelLayout& layout) {
  uint64_t by_bits[9] = {}, with_levels[9] = {};
  const CodeLevels* table[9] = {};
  for (const UnitLayout& U : layout.units) {
    for (const TensorLayout& T : U.tensors) {
      for (size_t k = 0; k < T.row_blocks; ++k) {
        const uint64_t n = T.BlockRows(k) * T.cols;
        const int b = T.BlockBits(k);
        by_bits[b] += n;
        if (const CodeLevels* l = T.BlockLevels(k)) {
          with_levels[b] += n;
          table[b] = l;
        }
      }
    }
  }
  CommonWidth w;
  for (int b = kMinPackedBits; b <= kMaxPackedBits; ++b) {
    if (by_bits[b] > 0 && (w.bits == 8 || by_bits[b] > by_bits[w.bits])) w.bits = b;
  }
  if (w.bits < 8 && 2 * with_levels[w.bits] > by_bits[w.bits]) w.levels = table[w.bits];
  return w;
}

}  // namespace

uint64_t ReadProbeBytes(uint64_t total, uint64_t largest_unit, uint64_t headroom) {
  constexpr uint64_t kMiB = uint64_t{1} << 20;
  const uint64_t floor = std::min(total, kMiB);
  // Whole MiB: every read but the last starts where O_DIRECT allows (4096-aligned).
  const uint64_t want =
      std::min({total, largest_unit, kReadProbeMaxBytes, headroom / 2}) / kMiB * kMiB;
  return std::max(floor, want);
}

uint64_t ComputeProbeBytes(uint64_t model_bytes, uint64_t llc_bytes, uint64_t headroom) {
  if (model_bytes <= llc_bytes) return 0;
  const uint64_t want = std::clamp<uint64_t>(3 * std::min<uint64_t>(llc_bytes, uint64_t{256} << 20),
                                             uint64_t{8} << 20, uint64_t{256} << 20);
  return want <= headroom / 2 ? want : 0;
}

Status Calibrate(const UnitDecoder& decoder, BlockLookup* lookup, size_t dim, uint64_t headroom,
                 Rates* rates, IoProbe* probe) {
  RETURN_IF_ERROR(CalibrateDecode(decoder, lookup, rates));
  const ModelLayout& layout = decoder.layout();
  uint64_t begin = std::numeric_limits<uint64_t>::max(), end = 0;
  uint64_t largest = 0;  // the largest read the prefetcher makes: a unit's whole range
  for (const UnitLayout& unit : layout.units) {
    begin = std::min(begin, unit.range_begin);
    end = std::max(end, unit.range_end);
    largest = std::max(largest, unit.range_end - unit.range_begin);
  }
  const uint64_t total = std::min<uint64_t>(end - begin, 256u << 20);
  {  // freed before the compute probe
    ASSIGN_OR_RETURN(PageBuffer buf, PageBuffer::Allocate(ReadProbeBytes(total, largest, headroom),
                                                          "the read probe"));
    RETURN_IF_ERROR(CalibrateReads(layout, lookup->reader(), &buf, total, rates, probe));
  }
  ASSIGN_OR_RETURN(PageBuffer tmp,
                   PageBuffer::Allocate(std::min<uint64_t>(total, 1u << 20), "calibration"));
  uint64_t model_bytes = 0;
  for (const UnitInfo& u : layout.infos) model_bytes += u.decoded_bytes;
  const CommonWidth common = CommonPackedWidth(layout);
  CalibrateCompute(dim, common.bits, common.levels, model_bytes, headroom, &tmp, rates);
  return Status::Ok();
}

Controller::Controller(const std::vector<UnitInfo>* units, const FixedMemory& fixed,
                       const ControllerOptions& options, uint64_t budget, const Rates& rates,
                       const IoProbe& probe)
    : units_(units), fixed_(fixed), opt_(options) {
  MutexLock l(&mu_);
  st_.minimum_budget = MinimumBudget(*units_, fixed_);
  st_.budget = budget;
  st_.rates = rates;
  st_.effective_budget = EffectiveBudget();
  io_window_bytes_ = probe.window_bytes;
  io_window_seconds_ = probe.window_seconds;
  io_sustained_ = probe.sustained;
  io_burst_ = probe.burst;
}

Controller::~Controller() {
  {
    MutexLock l(&mu_);
    stop_ = true;
  }
  cv_.NotifyAll();
  if (monitor_.joinable()) monitor_.join();
}

Result<Plan> Controller::MakePlan(uint64_t budget, const Rates& rates) const {
  return ChoosePlan(*units_, fixed_, rates, budget, opt_.policy, opt_.constraints);
}

Result<Plan> Controller::FirstPlan() const {
  uint64_t budget;
  Rates rates;
  {
    MutexLock l(&mu_);
    budget = st_.effective_budget;
    rates = st_.rates;
  }
  return MakePlan(budget, rates);
}

void Controller::StartPressureMonitor() {
  monitor_ = std::thread([this] { MonitorLoop(); });
}

void Controller::MonitorLoop() {
  int calm = 0;
  bool seen = false;  // a reading succeeded: later failures are transient
  MutexLock l(&mu_);
  while (!stop_) {
    cv_.WaitFor(&mu_, std::chrono::seconds(1), [&] {
      mu_.AssertHeld();
      return stop_;
    });
    if (stop_) return;
    l.Unlock();
    Result<MemoryPressure> p = ReadMemoryPressure();
    l.Lock();
    if (!p.ok()) {
      if (!seen) return;  // no PSI on this kernel
      continue;           // a transient failure: try again in a second
    }
    seen = true;
    st_.pressure_some_avg10 = p->some_avg10;
    if (p->some_avg10 > 10.0 && st_.budget_factor > 0.6) {
      st_.budget_factor = std::max(0.6, st_.budget_factor - 0.1);
      calm = 0;
      RequestReplan("memory pressure (some avg10 " + std::to_string(p->some_avg10) + "%)");
    } else if (p->some_avg10 < 1.0 && st_.budget_factor < 1.0 && ++calm >= 10) {
      st_.budget_factor = std::min(1.0, st_.budget_factor + 0.1);
      calm = 0;
      RequestReplan("memory pressure eased");
    }
  }
}

void Controller::RequestReplan(std::string why) {
  replan_pending_ = true;
  replan_reason_ = std::move(why);
}

uint64_t Controller::EffectiveBudget() const {
  if (st_.budget == 0) return kNoLimit;
  if (st_.budget_factor >= 1.0) return st_.budget;
  // Under memory pressure: a smaller share of the budget, never below what works.
  const uint64_t e = static_cast<uint64_t>(static_cast<double>(st_.budget) * st_.budget_factor);
  return std::max(e, st_.minimum_budget);
}

// The read rate the planner uses: the rate of single reads, but no more than what read-bound
// passes sustained. A throttled device (cgroup blkio) serves reads that follow idle time faster
// than it can keep up, which the per-read rate alone would count as its speed.
void Controller::UpdateIoRate() {
  const double per_read = io_window_seconds_ > 0 ? io_window_bytes_ / io_window_seconds_ : 0;
  double r = per_read > 0 ? per_read : st_.rates.io_bytes_per_s;
  if (io_sustained_ > 0) r = std::min(r, io_sustained_);
  st_.rates.io_bytes_per_s = r;
  // Reads after idle time (the probe's first half, single reads) much faster than it sustains.
  if (io_sustained_ > 0) {
    st_.rates.io_credits_idle = std::max(per_read, io_burst_) > 1.5 * io_sustained_;
  }
}

void Controller::OnRead(uint64_t bytes, double seconds) {
  if (seconds <= 0) return;
  MutexLock l(&mu_);
  // Bytes over seconds, both decayed: a throttled device serves some reads at once and holds
  // others, and a mean of per-read rates would overestimate it.
  io_window_bytes_ = 0.8 * io_window_bytes_ + static_cast<double>(bytes);
  io_window_seconds_ = 0.8 * io_window_seconds_ + seconds;
  UpdateIoRate();
}

void Controller::OnUnitDecoded(uint64_t raw_bytes, double seconds) {
  MutexLock l(&mu_);
  st_.decoded_bytes += raw_bytes;
  st_.decode_thread_seconds += seconds;
  if (seconds > 0) {
    const double rate = static_cast<double>(raw_bytes) / seconds;
    st_.rates.decode_bytes_per_s = 0.8 * st_.rates.decode_bytes_per_s + 0.2 * rate;
  }
}

void Controller::EndPass(const PassSample& p, const Plan& current) {
  const auto now = Clock::now();
  MutexLock l(&mu_);
  Rates& r = st_.rates;
  st_.compute_seconds += p.resident_seconds + p.inline_unit_seconds;
  st_.decoded_bytes += p.inline_bytes;
  st_.decode_thread_seconds += p.inline_seconds;
  if (p.tokens == 1) {  // the pass was one decode step
    const double speedup = 1.0 + (current.compute_threads - 1) * r.compute_parallel_efficiency;
    if (p.inline_seconds > 0) {
      r.decode_bytes_per_s =
          0.8 * r.decode_bytes_per_s + 0.2 * static_cast<double>(p.inline_bytes) / p.inline_seconds;
    }
    // The compute rate from resident units, else from inline units less their decoding.
    double macs = static_cast<double>(p.resident_macs), secs = p.resident_seconds * speedup;
    if (p.resident_macs == 0 && p.inline_unit_seconds > 0) {
      macs = static_cast<double>(p.inline_macs);
      secs = p.inline_unit_seconds * speedup - p.inline_seconds;
      if (secs < 0.05 * p.inline_unit_seconds * speedup) secs = 0;  // too noisy to tell
    }
    if (macs > 0 && secs > 0) {
      const double rate = macs / secs;
      r.compute_macs_per_s = st_.tokens <= 1 ? rate : 0.8 * r.compute_macs_per_s + 0.2 * rate;
    }
    // Decoding inline: how long compute held the flash units, over the estimate of that hold.
    const bool inline_flash = current.decode == Decode::kInline && current.count(Tier::kFlash) > 0;
    if (inline_flash && p.flash_hold_seconds > 0) {
      Plan cur = current;
      EstimateSeconds(*units_, r, cur);
      if (cur.est_flash_hold_seconds > 0) {
        const double f = std::clamp(p.flash_hold_seconds / cur.est_flash_hold_seconds, 0.25, 16.0);
        r.flash_hold_factor = hold_measured_ ? 0.8 * r.flash_hold_factor + 0.2 * f : f;
        hold_measured_ = true;
      }
    }
    // The device delivered this pass's reads in its wall time, less the time compute held the
    // only staging buffer (nothing could be read then, unless the device credits idle time).
    // When compute waited for a fifth of that time or more, the pass was bound by reads and that
    // is the sustained rate; otherwise it is a lower bound.
    const double wall = Seconds(pass_start_, now);
    const bool serial = inline_flash && current.staging == 1 && !r.io_credits_idle;
    const double read_wall = serial ? wall - p.flash_hold_seconds : wall;
    const uint64_t read = p.flash_bytes - pass_flash0_;
    if (read > 0 && wall > 0 && read_wall > 0.1 * wall) {
      const double sample = static_cast<double>(read) / read_wall;
      if (p.wait_seconds - pass_wait0_ >= 0.2 * read_wall) {  // the first replaces the probe
        io_sustained_ = io_sustained_seen_ ? 0.5 * io_sustained_ + 0.5 * sample : sample;
        io_sustained_seen_ = true;
      } else if (io_sustained_ > 0) {
        io_sustained_ = std::max(io_sustained_, sample);
      }
      UpdateIoRate();
    }
  }
  pass_start_ = now;
  pass_flash0_ = p.flash_bytes;
  pass_wait0_ = p.wait_seconds;
  ++st_.tokens;
  Adapt(current);
}

// Re-plans from measurements when a better plan is clearly available: at least 5% faster by the
// estimate, and the reload paid back within as many tokens as have run under the current plan.
// The reload is what switching stalls generation for (ReloadSeconds).
// Deciding as in ski rental: switch once staying would have cost the reload, so a short run never
// pays more than twice the better plan's time.
void Controller::Adapt(const Plan& current) {
  if (!opt_.adapt || opt_.policy != Policy::kAdaptive) return;
  if (replan_pending_ || !(st_.tokens == 3 || st_.tokens % kAdaptEvery == 0)) return;
  Result<Plan> np = MakePlan(st_.effective_budget, st_.rates);
  if (!np.ok()) return;
  Plan cur = current;
  EstimateSeconds(*units_, st_.rates, cur);
  const double gain = cur.est_seconds_per_token - np->est_seconds_per_token;
  const double reload = ReloadSeconds(*units_, st_.rates, cur, *np);
  // Not capped: a gain too small to repay the reload within one interval still repays it over a
  // long run (decoded -> packed at 100% of the INT8 size: 15 ms/token against a 0.9 s reload).
  const double horizon = static_cast<double>(st_.tokens - plan_tokens0_);
  if (gain > 0.05 * cur.est_seconds_per_token && gain * horizon > reload) {
    char why[160];
    std::snprintf(why, sizeof why,
                  "measured rates (estimate %.1f -> %.1f ms/token, reload %.0f ms)",
                  cur.est_seconds_per_token * 1e3, np->est_seconds_per_token * 1e3, reload * 1e3);
    RequestReplan(why);
  }
}

Status Controller::SetBudget(uint64_t bytes, Plan* chosen) {
  MutexLock l(&mu_);
  const uint64_t saved = st_.budget;
  st_.budget = bytes;
  Result<Plan> p = MakePlan(EffectiveBudget(), st_.rates);
  if (!p.ok() || (bytes != 0 && bytes < st_.minimum_budget)) {
    st_.budget = saved;
    if (!p.ok()) return p.status();
    return ResourceExhaustedError("a budget of " + FormatBytes(bytes) +
                                  " is below the smallest that works for this model and context (" +
                                  FormatBytes(st_.minimum_budget) + ", " +
                                  std::to_string(st_.minimum_budget) + " bytes)");
  }
  RequestReplan("budget set to " + (bytes == 0 ? std::string("unlimited") : FormatBytes(bytes)));
  if (chosen != nullptr) *chosen = *std::move(p);
  return Status::Ok();
}

std::optional<Controller::Replan> Controller::TakeReplan() {
  MutexLock l(&mu_);
  if (!replan_pending_) return std::nullopt;
  replan_pending_ = false;
  st_.effective_budget = EffectiveBudget();
  return Replan{st_.effective_budget, st_.rates, replan_reason_};
}

void Controller::NoteReplanned(const std::string& why) {
  MutexLock l(&mu_);
  ++st_.replans;
  st_.last_replan = why;
  plan_tokens0_ = st_.tokens;
}

Controller::Stats Controller::stats() const {
  MutexLock l(&mu_);
  return st_;
}

}  // namespace dcomp::runtime
