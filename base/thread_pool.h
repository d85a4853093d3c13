// ThreadPool: a persistent pool for data-parallel loops (row-parallel kernels, attention heads).
//
// The calling thread takes part in every loop, so ThreadPool(1) runs everything inline with no
// synchronisation. Workers spin briefly after a loop (decode steps come microseconds apart) and
// then sleep on a futex, so an idle pool costs no CPU. ParallelFor is not reentrant and must be
// called from one thread at a time (the owner of the pool); the callback runs concurrently on all
// threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace dcomp {

class ThreadPool {
 public:
  // `num_threads` counts the calling thread; values < 1 mean 1.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }
  // Threads that take part in the next loops (1..num_threads(); clamped). The others stay asleep.
  // Only the owner calls it, between loops (the runtime's controller moves cores between compute
  // and decoding this way). Results never depend on it.
  void set_active_threads(int n);
  int active_threads() const { return active_; }

  // Calls fn(begin, end) on disjoint chunks covering [0, n), each chunk at least `grain` long
  // (except the last). Returns when every chunk is done.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

 private:
  void WorkerLoop(int index);
  void RunChunks();

  std::vector<std::thread> workers_;
  // Current job (written by the owner before `generation_` is bumped).
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 1;
  int active_ = 1;
  std::atomic<int> job_workers_{0};  // workers [0, job_workers_) take part in the current loop
  std::atomic<int64_t> next_{0};
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace dcomp
