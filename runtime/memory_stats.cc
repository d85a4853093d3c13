#include "runtime/memory_stats.h"

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

namespace dcomp::runtime {

uint64_t CgroupMemoryLimit(const std::string& proc_cgroup, const std::string& cgroup_root) {
  Result<std::string> s = ReadFileToString(proc_cgroup);
  if (!s.ok()) return 0;
  uint64_t limit = 0;
  size_t pos = 0;
  while (pos < s->size()) {
    size_t end = s->find('\n', pos);
    if (end == std::string::npos) end = s->size();
    const std::string line = s->substr(pos, end - pos);
    pos = end + 1;
    // "0::/path" (v2) or "N:memory:/path" (v1, possibly with other controllers).
    const size_t c1 = line.find(':'), c2 = line.find(':', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos) continue;
    const std::string controllers = line.substr(c1 + 1, c2 - c1 - 1);
    const std::string path = line.substr(c2 + 1);
    std::string file;
    if (controllers.empty()) {
      file = cgroup_root + path + "/memory.max";
    } else if (("," + controllers + ",").find(",memory,") != std::string::npos) {
      file = cgroup_root + "/memory" + path + "/memory.limit_in_bytes";
    } else {
      continue;
    }
    Result<std::string> v = ReadFileToString(file);
    if (!v.ok() || v->rfind("max", 0) == 0) continue;
    const uint64_t b = std::strtoull(v->c_str(), nullptr, 10);
    if (b != 0 && b < (uint64_t{1} << 60) && (limit == 0 || b < limit)) limit = b;
  }
  return limit;
}

}  // namespace dcomp::runtime
