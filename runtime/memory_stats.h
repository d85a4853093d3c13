// The process's own memory as the kernel reports it (/proc/self/status) and the system's memory
// pressure (/proc/pressure/memory, PSI). Used by the runtime's account and by the benchmarks.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"

namespace dcomp::runtime {

struct ProcMemory {
  uint64_t rss = 0;  // VmRSS, bytes
  uint64_t hwm = 0;  // VmHWM (peak RSS), bytes
};
Result<ProcMemory> ReadProcMemory();
// Resets VmHWM to the current RSS (writes 5 to /proc/self/clear_refs).
Status ResetPeakRss();

struct MemoryPressure {
  double some_avg10 = 0;  // % of the last 10 s some task stalled on memory
  double full_avg10 = 0;  // % of the last 10 s all tasks stalled on memory
};
// UNAVAILABLE when the kernel has no PSI.
Result<MemoryPressure> ReadMemoryPressure(const std::string& path = "/proc/pressure/memory");

// The memory limit of this process's cgroup in bytes (v2 memory.max or v1
// memory.limit_in_bytes; the smallest if both), 0 when there is none or it cannot be read.
uint64_t CgroupMemoryLimit(const std::string& proc_cgroup = "/proc/self/cgroup",
                           const std::string& cgroup_root = "/sys/fs/cgroup");

}  // namespace dcomp::runtime
