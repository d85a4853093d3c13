// `dcomp pack`: the driver of the pack pipeline. The stages (packer/internal/pack_state.h) run in
// order over one PackState: import, calibration, compression-aware scaling, pruning with INT8
// quantization, rate allocation, then entropy coding and the container.
#include "packer/pack.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "base/clock.h"
#include "packer/internal/pack_state.h"
#include "packer/internal/pack_util.h"
#include "storage/codec.h"

namespace dcomp::packer {
namespace {

using internal::Fmt;

// Checks the options before anything is opened; sets s.fixed_alpha from a numeric --alpha.
Status CheckOptions(internal::PackState& s) {
  const PackOptions& o = s.o;
  if (o.block_bytes < 1024 || o.block_bytes > (64u << 20)) {
    return InvalidArgumentError("--block-size " + std::to_string(o.block_bytes) +
                                ": expected 1 KiB .. 64 MiB");
  }
  if (o.prune < 0 || o.prune >= 0.95) {
    return InvalidArgumentError("--prune " + Fmt("%g", o.prune) +
                                ": expected a ratio in [0, 0.95)");
  }
  if (!(o.max_ppl_increase >= 0) || o.max_ppl_increase > 100) {
    return InvalidArgumentError("--max-ppl-increase: expected a percentage in [0, 100]");
  }
  if (o.codec != "auto") RETURN_IF_ERROR(storage::ParseCodecName(o.codec).status());
  if (o.alpha != "auto") {
    char* end = nullptr;
    const float fixed_alpha = std::strtof(o.alpha.c_str(), &end);
    if (end == o.alpha.c_str() || *end != '\0' || !(fixed_alpha >= 0 && fixed_alpha <= 1)) {
      return InvalidArgumentError("--alpha '" + o.alpha +
                                  "': expected 'auto' or a number in [0, 1]");
    }
    s.fixed_alpha = fixed_alpha;
  }
  return Status::Ok();
}

}  // namespace

Result<PackReport> Pack(const PackOptions& o) {
  const auto t_start = Clock::now();
  internal::PackState s(o);
  RETURN_IF_ERROR(CheckOptions(s));
  RETURN_IF_ERROR(internal::Import(s));
  RETURN_IF_ERROR(internal::Calibrate(s));
  RETURN_IF_ERROR(internal::Scale(s));
  RETURN_IF_ERROR(internal::QuantizeAndPrune(s));
  RETURN_IF_ERROR(internal::AllocateRates(s));
  // Entropy coding and the container: each tensor's blocks are coded as the writer takes them.
  RETURN_IF_ERROR(internal::PrepareEncoding(s));
  RETURN_IF_ERROR(internal::WriteContainer(s));
  s.rep.seconds = Seconds(t_start, Clock::now());
  return std::move(s.rep);
}

std::string FormatPackReport(const PackReport& r) {
  std::string s;
  char line[256];
  std::snprintf(line, sizeof(line), "%-28s %10s %10s %10s %6s %-11s %5s %4s %5s %8s %6s\n",
                "tensor", "params", "int8 B", "stored B", "ratio", "codec", "alpha", "bits",
                "prune", "out err", "H/w");
  s += line;
  for (const TensorReport& t : r.tensors) {
    const double ratio = t.stored_bytes ? static_cast<double>(t.int8_bytes) / t.stored_bytes : 0;
    if (t.quantized) {
      std::snprintf(
          line, sizeof(line), "%-28s %10lld %10llu %10llu %6.3f %-11s %5.3f %4d %5.2f %8s %6.3f\n",
          t.name.c_str(), static_cast<long long>(t.params),
          static_cast<unsigned long long>(t.int8_bytes),
          static_cast<unsigned long long>(t.stored_bytes), ratio, t.codecs.c_str(), t.alpha, t.bits,
          t.prune, t.output_rel_error < 0 ? "-" : Fmt("%.5f", t.output_rel_error).c_str(),
          t.entropy_bits);
    } else {
      std::snprintf(line, sizeof(line), "%-28s %10lld %10llu %10llu %6.3f %-11s\n", t.name.c_str(),
                    static_cast<long long>(t.params), static_cast<unsigned long long>(t.int8_bytes),
                    static_cast<unsigned long long>(t.stored_bytes), ratio, t.codecs.c_str());
    }
    s += line;
  }
  // Groups of rows: the table's bits are the widest group's.
  for (const TensorReport& t : r.tensors) {
    if (t.group_bits.empty()) continue;
    std::snprintf(line, sizeof(line), "%s: %lld rows in %zu groups of %lld, bits", t.name.c_str(),
                  static_cast<long long>(t.rows), t.group_bits.size(),
                  static_cast<long long>(t.group_rows));
    s += line;
    for (int b : t.group_bits) {
      std::snprintf(line, sizeof(line), " %d", b);
      s += line;
    }
    s += ", H/w";
    for (double h : t.group_entropy_bits) {
      std::snprintf(line, sizeof(line), " %.3f", h);
      s += line;
    }
    s += "\n";
  }
  std::snprintf(line, sizeof(line),
                "total: f32 %llu B, INT8 %llu B, stored blocks %llu B (%.3fx smaller than INT8), "
                "file %llu B (%.3fx)\n",
                static_cast<unsigned long long>(r.f32_bytes),
                static_cast<unsigned long long>(r.int8_bytes),
                static_cast<unsigned long long>(r.stored_bytes),
                static_cast<double>(r.int8_bytes) / static_cast<double>(r.stored_bytes),
                static_cast<unsigned long long>(r.file_bytes),
                static_cast<double>(r.int8_bytes) / static_cast<double>(r.file_bytes));
  s += line;
  const double params = static_cast<double>(std::max<int64_t>(r.params, 1));
  std::snprintf(
      line, sizeof(line), "bits/weight: INT8 %.3f, packed in RAM %.3f (%llu B), stored %.3f\n",
      8.0 * static_cast<double>(r.int8_bytes) / params,
      8.0 * static_cast<double>(r.ram_bytes) / params, static_cast<unsigned long long>(r.ram_bytes),
      8.0 * static_cast<double>(r.stored_bytes) / params);
  s += line;
  if (r.f32_nll > 0) {
    std::snprintf(line, sizeof(line),
                  "calibration NLL: f32 %.5f, INT8 %.5f (+%.3f%% ppl), packed %.5f (+%.3f%% ppl)\n",
                  r.f32_nll, r.plain_int8_nll, 100 * (std::exp(r.plain_int8_nll - r.f32_nll) - 1),
                  r.packed_nll, 100 * (std::exp(r.packed_nll - r.f32_nll) - 1));
    s += line;
  }
  if (r.synthetic) s += "SYNTHETIC weights: for speed and memory benchmarks only\n";
  return s;
}

}  // namespace dcomp::packer
