// LatencyWindow: quantiles over the last N observations plus all-time count and sum (the shape of
// a Prometheus summary). Thread-safe.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "base/mutex.h"

namespace dcomp::server {

class LatencyWindow {
 public:
  explicit LatencyWindow(size_t capacity = 4096) : ring_(capacity) {}

  void Add(double seconds) EXCLUDES(mu_) {
    MutexLock l(&mu_);
    ring_[next_ % ring_.size()] = seconds;
    ++next_;
    sum_ += seconds;
  }

  struct Summary {
    double p50 = 0, p95 = 0, p99 = 0;
    uint64_t count = 0;
    double sum = 0;
  };
  // Nearest-rank quantiles of the window; zeros when empty.
  Summary Get() const EXCLUDES(mu_) {
    std::vector<double> v;
    Summary s;
    {
      MutexLock l(&mu_);
      s.count = next_;
      s.sum = sum_;
      const auto n = static_cast<ptrdiff_t>(std::min<uint64_t>(next_, ring_.size()));
      v.assign(ring_.begin(), ring_.begin() + n);
    }
    if (v.empty()) return s;
    std::sort(v.begin(), v.end());
    const auto q = [&](double p) {
      const auto rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
      return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
    };
    s.p50 = q(0.50);
    s.p95 = q(0.95);
    s.p99 = q(0.99);
    return s;
  }

 private:
  mutable Mutex mu_;
  std::vector<double> ring_ GUARDED_BY(mu_);
  uint64_t next_ GUARDED_BY(mu_) = 0;
  double sum_ GUARDED_BY(mu_) = 0;
};

}  // namespace dcomp::server
