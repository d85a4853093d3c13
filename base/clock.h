// The monotonic clock the runtime measures with, and durations in seconds.
#pragma once

#include <chrono>

namespace dcomp {

using Clock = std::chrono::steady_clock;

// Seconds from a to b (negative if b is earlier).
inline double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace dcomp
