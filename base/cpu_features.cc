#include "base/cpu_features.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#if defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#endif

namespace dcomp {
namespace {

// Reads /sys/devices/system/cpu/cpu0/cache/index*/{level,type,size}: the size of the highest-level
// data or unified cache ("32768K", "2M").
uint64_t LastLevelCacheBytes() {
  uint64_t best_bytes = 0;
  int best_level = 0;
  for (int i = 0; i < 16; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    int level = 0;
    char type[32] = {}, size[32] = {};
    FILE* f = std::fopen((dir + "level").c_str(), "r");
    if (f == nullptr) break;
    const bool got_level = std::fscanf(f, "%d", &level) == 1;
    std::fclose(f);
    f = std::fopen((dir + "type").c_str(), "r");
    const bool got_type = f != nullptr && std::fscanf(f, "%31s", type) == 1;
    if (f != nullptr) std::fclose(f);
    f = std::fopen((dir + "size").c_str(), "r");
    const bool got_size = f != nullptr && std::fscanf(f, "%31s", size) == 1;
    if (f != nullptr) std::fclose(f);
    if (!got_level || !got_type || !got_size || std::string(type) == "Instruction") continue;
    char* end = nullptr;
    uint64_t bytes = std::strtoull(size, &end, 10);
    // The kernel writes "<n>K"; a size of 0, an unknown suffix or an absurd value is skipped.
    if (end == size || bytes == 0 || bytes > (uint64_t{1} << 30)) continue;
    if (*end == 'K') {
      bytes <<= 10;
    } else if (*end == 'M') {
      bytes <<= 20;
    } else if (*end != '\0') {
      continue;
    }
    if (level > best_level || (level == best_level && bytes > best_bytes)) {
      best_level = level;
      best_bytes = bytes;
    }
  }
  return best_bytes;
}

CpuFeatures Detect() {
  CpuFeatures f;
#if defined(__x86_64__)
  __builtin_cpu_init();
  f.sse42 = __builtin_cpu_supports("sse4.2");
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
  f.avx512vbmi = __builtin_cpu_supports("avx512vbmi");
  f.avx512vbmi2 = __builtin_cpu_supports("avx512vbmi2");
#elif defined(__aarch64__)
  const unsigned long hwcap = getauxval(AT_HWCAP);
  f.asimd = (hwcap & HWCAP_ASIMD) != 0;
  f.asimddp = (hwcap & HWCAP_ASIMDDP) != 0;
  f.crc32 = (hwcap & HWCAP_CRC32) != 0;
#endif
  f.last_level_cache_bytes = LastLevelCacheBytes();
  return f;
}

}  // namespace

std::string CpuFeatures::Describe() const {
  const std::pair<const char*, bool> all[] = {{"avx2", avx2},
                                              {"fma", fma},
                                              {"avx512f", avx512f},
                                              {"avx512bw", avx512bw},
                                              {"avx512vl", avx512vl},
                                              {"avx512vnni", avx512vnni},
                                              {"avx512vbmi", avx512vbmi},
                                              {"asimd", asimd},
                                              {"asimddp", asimddp}};
  std::string s;
  for (const auto& [name, on] : all) {
    if (!on) continue;
    if (!s.empty()) s += ' ';
    s += name;
  }
  return s.empty() ? "baseline" : s;
}

const CpuFeatures& Cpu() {
  static const CpuFeatures features = Detect();
  return features;
}

}  // namespace dcomp
