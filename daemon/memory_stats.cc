#include "daemon/memory_stats.h"

#include <cstdio>
#include <cstring>

#include "base/file.h"

namespace dcomp::runtime {

Result<ProcMemory> ReadProcMemory() {
  ASSIGN_OR_RETURN(std::string s, ReadFileToString("/proc/self/status"));
  ProcMemory m;
  auto field = [&](const char* key) -> uint64_t {
    const size_t p = s.find(key);
    if (p == std::string::npos) return 0;
    return std::strtoull(s.c_str() + p + std::strlen(key), nullptr, 10) * 1024;
  };
  m.rss = field("VmRSS:");
  m.hwm = field("VmHWM:");
  if (m.rss == 0) return InternalError("/proc/self/status has no VmRSS");
  return m;
}

Status ResetPeakRss() {
  FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (f == nullptr) return ErrnoToStatus(errno, "open /proc/self/clear_refs");
  const bool ok = std::fputs("5", f) >= 0;
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed) return ErrnoToStatus(errno, "write /proc/self/clear_refs");
  return Status::Ok();
}

Result<MemoryPressure> ReadMemoryPressure(const std::string& path) {
  Result<std::string> s = ReadFileToString(path);
  if (!s.ok()) return UnavailableError("no memory pressure information: " + s.status().message());
  MemoryPressure p;
  const char* some = std::strstr(s->c_str(), "some avg10=");
  const char* full = std::strstr(s->c_str(), "full avg10=");
  if (some == nullptr) return UnavailableError(path + ": no 'some avg10=' line");
  p.some_avg10 = std::strtod(some + 11, nullptr);
  if (full != nullptr) p.full_avg10 = std::strtod(full + 11, nullptr);
  return p;
}

}  // namespace dcomp::runtime
