#include "base/cpu_features.h"

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
  f.avx512vbmi2 = __builtin_cpu_supports("avx512vbmi2");
#elif defined(__aarch64__)
  const unsigned long hwcap = getauxval(AT_HWCAP);
  f.asimd = (hwcap & HWCAP_ASIMD) != 0;
  f.asimddp = (hwcap & HWCAP_ASIMDDP) != 0;
  f.crc32 = (hwcap & HWCAP_CRC32) != 0;
#endif
  return f;
}

}  // namespace

std::string CpuFeatures::Describe() const {
  const std::pair<const char*, bool> all[] = {{"avx2", avx2},         {"fma", fma},
                                              {"avx512f", avx512f},   {"avx512bw", avx512bw},
                                              {"avx512vl", avx512vl}, {"avx512vnni", avx512vnni},
                                              {"asimd", asimd},       {"asimddp", asimddp}};
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
