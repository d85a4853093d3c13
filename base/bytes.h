// Byte sizes and RAM budgets as people write them: parsing ("600MiB", "1.5GB", "50%") and
// formatting ("612.3 MiB"). A budget stays one value, a BudgetSpec, from the command line or the
// config to the runtime's planner, which resolves a percentage against the model's INT8 size.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"

namespace dcomp {

// A budget as given: bytes (0: no limit), or a percentage of the model's INT8 size.
struct BudgetSpec {
  BudgetSpec() = default;
  // A byte count is a budget (0: no limit).
  BudgetSpec(uint64_t b) : bytes(b) {}  // NOLINT(google-explicit-constructor)
  static BudgetSpec Percent(double p) {
    BudgetSpec s;
    s.percent = p;
    return s;
  }

  uint64_t bytes = 0;
  double percent = 0;  // > 0 when given as "PCT%"
  bool unlimited() const { return bytes == 0 && percent <= 0; }
  // Bytes, with a percentage taken of `int8_bytes` (the model's INT8 size); 0: no limit.
  uint64_t Resolve(uint64_t int8_bytes) const;
  // As given: "50%", "600.0 MiB" or "unlimited".
  std::string ToString() const;
};

// "600MiB", "600M" (binary multiples: K, M, G, KiB, MiB, GiB), "1.5GB" (decimal: KB, MB, GB),
// "123456" bytes, "0" (no limit) or "50%" (of the model's INT8 size).
Result<BudgetSpec> ParseBudgetSpec(const std::string& s);
// ParseBudgetSpec resolved against `reference_bytes` (the model's INT8 size).
Result<uint64_t> ParseBudget(const std::string& s, uint64_t reference_bytes);

std::string FormatBytes(uint64_t b);  // "612.3 MiB"

}  // namespace dcomp
