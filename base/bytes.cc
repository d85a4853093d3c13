#include "base/bytes.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <utility>

#include "base/flags.h"

namespace dcomp {

std::string FormatBytes(uint64_t b) {
  char buf[64];
  if (b >= (1ull << 30)) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / (1ull << 30));
  } else if (b >= (1ull << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / (1ull << 20));
  } else if (b >= 1024) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(b) / 1024);
  } else {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  }
  return buf;
}

Result<BudgetSpec> ParseBudgetSpec(const std::string& s) {
  auto bad = [&] {
    return InvalidArgumentError("budget '" + s +
                                "': expected bytes with an optional unit (K, M, G, KiB, MiB, GiB, "
                                "KB, MB, GB) or a percentage of the INT8 model size (e.g. 50%)");
  };
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  Result<double> number = ParseDouble(s.substr(0, i), "budget");
  if (!number.ok()) return bad();
  const double v = *number;
  const std::string unit = s.substr(i);
  BudgetSpec spec;
  if (unit == "%") {
    if (v <= 0 || v > 1000) return bad();
    spec.percent = v;
    return spec;
  }
  static const std::pair<const char*, double> kUnits[] = {
      {"", 1.0},        {"B", 1.0},         {"K", 1024.0},       {"KiB", 1024.0},
      {"M", 1048576.0}, {"MiB", 1048576.0}, {"G", 1073741824.0}, {"GiB", 1073741824.0},
      {"KB", 1e3},      {"MB", 1e6},        {"GB", 1e9}};
  const auto* u = std::find_if(std::begin(kUnits), std::end(kUnits),
                               [&](const auto& e) { return unit == e.first; });
  if (u == std::end(kUnits)) return bad();
  const double bytes = v * u->second;
  if (bytes == 0) return spec;  // "0": no limit
  if (!(bytes >= 1) || bytes > 1e15) return bad();
  spec.bytes = static_cast<uint64_t>(std::llround(bytes));
  return spec;
}

uint64_t BudgetSpec::Resolve(uint64_t int8_bytes) const {
  if (percent <= 0) return bytes;
  return static_cast<uint64_t>(std::llround(percent / 100.0 * static_cast<double>(int8_bytes)));
}

Result<uint64_t> ParseBudget(const std::string& s, uint64_t reference_bytes) {
  ASSIGN_OR_RETURN(BudgetSpec spec, ParseBudgetSpec(s));
  return spec.Resolve(reference_bytes);
}

std::string BudgetSpec::ToString() const {
  if (percent > 0) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g%%", percent);
    return buf;
  }
  return bytes == 0 ? "unlimited" : FormatBytes(bytes);
}

}  // namespace dcomp
