// CPU features, detected once per process: the one place that asks the CPU (cpuid on x86-64,
// the auxiliary vector's HWCAP on aarch64; the cache sizes from sysfs). The kernels' dispatch
// table, the rANS decoder and CRC32C choose their fast paths from this struct; `Describe()` is what
// they log.
//
// Thread-safe: `Cpu()` initialises a function-local static on first use.
#pragma once

#include <cstdint>
#include <string>

namespace dcomp {

struct CpuFeatures {
  // x86-64
  bool sse42 = false;
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512vnni = false;
  bool avx512vbmi = false;  // vpermb, vpermi2b
  bool avx512vbmi2 = false;
  // aarch64
  bool asimd = false;    // NEON
  bool asimddp = false;  // the dot-product extension (SDOT/UDOT)
  bool crc32 = false;    // the CRC32 instructions (CRC32C included)
  // The largest data or unified cache of cpu0's highest level as sysfs reports it (on one VM here
  // glibc's sysconf said 384 MiB where sysfs said 32 MiB); 0 when sysfs does not say.
  uint64_t last_level_cache_bytes = 0;

  // The features above that are present, space-separated ("baseline" when none).
  std::string Describe() const;
};

// This CPU's features.
const CpuFeatures& Cpu();

}  // namespace dcomp
