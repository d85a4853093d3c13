// Picks one KernelTable at start-up from CPU features; DCOMP_KERNELS=<name> overrides.
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "kernels/internal.h"

#if defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace dcomp::kernels {
namespace {

struct Candidate {
  const KernelTable* table;
  bool supported;
};

std::vector<Candidate> Candidates() {
  std::vector<Candidate> c;
  c.push_back({&internal::kRefTable, true});
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512vnni = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512vnni");
  c.push_back({&internal::kAvx2Table, avx2});
  c.push_back({&internal::kAvx512VnniTable, avx512vnni});
#endif
#if defined(__aarch64__)
  const unsigned long hwcap = getauxval(AT_HWCAP);
  c.push_back({&internal::kNeonTable, (hwcap & HWCAP_ASIMD) != 0});
  c.push_back({&internal::kNeonDotprodTable, (hwcap & HWCAP_ASIMDDP) != 0});
#endif
  return c;
}

std::string CpuFeatures() {
  std::string s;
#if defined(__x86_64__)
  __builtin_cpu_init();
  const std::pair<const char*, bool> feats[] = {
      {"avx2", __builtin_cpu_supports("avx2")},
      {"fma", __builtin_cpu_supports("fma")},
      {"avx512f", __builtin_cpu_supports("avx512f")},
      {"avx512bw", __builtin_cpu_supports("avx512bw")},
      {"avx512vl", __builtin_cpu_supports("avx512vl")},
      {"avx512vnni", __builtin_cpu_supports("avx512vnni")}};
  for (const auto& [name, on] : feats) {
    if (on) {
      if (!s.empty()) s += ' ';
      s += name;
    }
  }
#elif defined(__aarch64__)
  const unsigned long hwcap = getauxval(AT_HWCAP);
  if (hwcap & HWCAP_ASIMD) s += "asimd";
  if (hwcap & HWCAP_ASIMDDP) s += " asimddp";
#endif
  return s.empty() ? "baseline" : s;
}

struct Selection {
  const KernelTable* table;
  std::string note;
};

Selection Select() {
  const auto cands = Candidates();
  const KernelTable* best = cands.front().table;
  for (const auto& c : cands) {
    if (c.supported) best = c.table;
  }
  std::string note;
  const char* forced = std::getenv("DCOMP_KERNELS");
  if (forced != nullptr && *forced != '\0') {
    bool found = false;
    for (const auto& c : cands) {
      if (std::strcmp(c.table->name, forced) == 0 && c.supported) {
        best = c.table;
        found = true;
      }
    }
    note = found ? " (forced by DCOMP_KERNELS)"
                 : std::string(" (DCOMP_KERNELS=") + forced + " is unknown or unsupported here)";
  }
  return {best, std::string(best->name) + note + " [cpu: " + CpuFeatures() + "]"};
}

const Selection& TheSelection() {
  static const Selection s = Select();
  return s;
}

}  // namespace

const KernelTable& Kernels() { return *TheSelection().table; }
std::string KernelSelectionNote() { return TheSelection().note; }
const KernelTable& RefKernels() { return internal::kRefTable; }

std::vector<const KernelTable*> AvailableKernelTables() {
  std::vector<const KernelTable*> out;
  for (const auto& c : Candidates()) {
    if (c.supported) out.push_back(c.table);
  }
  return out;
}

}  // namespace dcomp::kernels
