#include "base/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#define DCOMP_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define DCOMP_CPU_RELAX() asm volatile("yield")
#else
#define DCOMP_CPU_RELAX() ((void)0)
#endif

namespace dcomp {
namespace {
// About 50-100 us of spinning before a worker sleeps.
constexpr int kSpinIterations = 20000;

// A pause, and every 64th time a yield: on a machine busy with other work, a spinning thread gives
// its core to whoever is runnable instead of burning its time slice.
inline void Relax(int i) {
  if ((i & 63) == 63) {
    std::this_thread::yield();
  } else {
    DCOMP_CPU_RELAX();
  }
}
}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  int workers = std::max(1, num_threads) - 1;
  workers_.reserve(static_cast<size_t>(workers));
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
  active_ = workers + 1;
}

void ThreadPool::set_active_threads(int n) { active_ = std::clamp(n, 1, num_threads()); }

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunks() {
  for (;;) {
    int64_t begin = next_.fetch_add(chunk_, std::memory_order_relaxed);
    if (begin >= n_) break;
    (*fn_)(begin, std::min(n_, begin + chunk_));
  }
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  bool spin = true;  // only a worker that took part in the last loop spins for the next one
  for (;;) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int i = 0; spin && gen == seen && i < kSpinIterations; ++i) {
      Relax(i);
      gen = generation_.load(std::memory_order_acquire);
    }
    while (gen == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      gen = generation_.load(std::memory_order_acquire);
    }
    seen = gen;
    if (stop_.load(std::memory_order_acquire)) return;
    spin = index < job_workers_.load(std::memory_order_acquire);
    if (!spin) continue;
    RunChunks();
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
  }
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                             int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t threads = active_;
  if (threads == 1 || n <= grain) {
    fn(0, n);
    return;
  }
  // Contiguous chunks, about two per thread, so that a late thread can still help.
  int64_t chunk = std::max(grain, (n + 2 * threads - 1) / (2 * threads));
  chunk = (chunk + grain - 1) / grain * grain;
  fn_ = &fn;
  n_ = n;
  chunk_ = chunk;
  next_.store(0, std::memory_order_relaxed);
  pending_.store(active_ - 1, std::memory_order_relaxed);
  job_workers_.store(active_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  RunChunks();
  // Join: spin briefly (workers usually finish within microseconds), then sleep, so that a worker
  // descheduled on a busy machine gets the CPU instead of being starved by our spinning.
  int p = pending_.load(std::memory_order_acquire);
  for (int i = 0; p != 0 && i < kSpinIterations; ++i) {
    Relax(i);
    p = pending_.load(std::memory_order_acquire);
  }
  while (p != 0) {
    pending_.wait(p, std::memory_order_acquire);
    p = pending_.load(std::memory_order_acquire);
  }
  fn_ = nullptr;
}

}  // namespace dcomp
