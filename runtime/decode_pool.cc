#include "runtime/decode_pool.h"

#include "base/clock.h"

namespace dcomp::runtime {

DecodePool::DecodePool(const UnitDecoder* decoder, int threads, size_t scratch_bytes,
                       DoneFn on_done)
    : decoder_(decoder), scratch_bytes_(scratch_bytes), on_done_(std::move(on_done)) {
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

DecodePool::~DecodePool() {
  {
    MutexLock l(&mu_);
    stop_ = true;
  }
  cv_.NotifyAll();
  for (auto& t : workers_) t.join();
}

void DecodePool::Submit(const std::shared_ptr<Job>& job) {
  const UnitLayout& U = decoder_->unit(job->unit);
  {
    MutexLock l(&mu_);
    job->blocks_left = U.work.size();
    for (size_t w = 0; w < U.work.size(); ++w) tasks_.push_back({job, w});
  }
  cv_.NotifyAll();
}

void DecodePool::SetActive(int n) {
  {
    MutexLock l(&mu_);
    active_ = n;
  }
  cv_.NotifyAll();
}

void DecodePool::WorkerLoop(int index) {
  storage::BlockDecoder dec;
  std::vector<uint8_t> scratch(scratch_bytes_);
  MutexLock l(&mu_);
  for (;;) {
    cv_.Wait(&mu_, [&] {
      mu_.AssertHeld();
      return stop_ || (index < active_ && !tasks_.empty());
    });
    if (stop_) return;
    Task t = std::move(tasks_.front());
    tasks_.pop_front();
    Job& job = *t.job;
    const bool skip = job.cancelled.load() || !job.error.ok();
    Status s = Status::Ok();
    if (!skip) {
      l.Unlock();
      const auto t0 = Clock::now();
      const UnitLayout& U = decoder_->unit(job.unit);
      s = decoder_->DecodeWork(U, U.work[t.work], job.stored, job.dst, &dec, scratch.data(),
                               job.crc_checked);
      const double dt = Seconds(t0, Clock::now());
      l.Lock();
      job.decode_seconds += dt;
    }
    if (!s.ok() && job.error.ok()) job.error = s;
    if (--job.blocks_left == 0) {
      l.Unlock();
      on_done_(t.job);
      l.Lock();
    }
  }
}

}  // namespace dcomp::runtime
