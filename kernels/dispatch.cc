// Picks one KernelTable at start-up from CPU features; DCOMP_KERNELS=<name> overrides.
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "base/cpu_features.h"
#include "kernels/internal.h"

namespace dcomp::kernels {
namespace {

struct Candidate {
  const KernelTable* table;
  bool supported;
};

std::vector<Candidate> Candidates() {
  std::vector<Candidate> c;
  c.push_back({&internal::kRefTable, true});
  [[maybe_unused]] const CpuFeatures& f = Cpu();
#if defined(__x86_64__)
  c.push_back({&internal::kAvx2Table, f.avx2 && f.fma});
  const bool vnni = f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni;
  c.push_back({&internal::kAvx512VnniTable, vnni});
  c.push_back({&internal::kAvx512VbmiTable, vnni && f.avx512vbmi});
#endif
#if defined(__aarch64__)
  c.push_back({&internal::kNeonTable, f.asimd});
  c.push_back({&internal::kNeonDotprodTable, f.asimddp});
#endif
  return c;
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
  return {best, std::string(best->name) + note + " [cpu: " + Cpu().Describe() + "]"};
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
