#include "runtime/planner.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>

#include "base/flags.h"

namespace dcomp::runtime {

const char* TierName(Tier t) {
  switch (t) {
    case Tier::kDecoded: return "decoded";
    case Tier::kCompressed: return "compressed";
    case Tier::kFlash: return "flash";
    case Tier::kPacked: return "packed";
  }
  return "?";
}

const char* PolicyName(Policy p) {
  switch (p) {
    case Policy::kAdaptive: return "adaptive";
    case Policy::kAllCompressed: return "all-compressed";
    case Policy::kStreamAll: return "stream-all";
    case Policy::kStaticSplit: return "static-split";
    case Policy::kAllDecoded: return "all-decoded";
    case Policy::kAllPacked: return "all-packed";
  }
  return "?";
}

Result<Policy> ParsePolicy(const std::string& s) {
  for (Policy p : {Policy::kAdaptive, Policy::kAllCompressed, Policy::kStreamAll,
                   Policy::kStaticSplit, Policy::kAllDecoded, Policy::kAllPacked}) {
    if (s == PolicyName(p)) return p;
  }
  return InvalidArgumentError("policy '" + s +
                              "': expected adaptive, all-compressed, stream-all, static-split, "
                              "all-decoded or all-packed");
}

const char* DecodeName(Decode d) { return d == Decode::kInline ? "inline" : "ahead"; }

Result<int> ParseDecodeConstraint(const std::string& s) {
  if (s == "auto") return 0;
  for (Decode d : {Decode::kInline, Decode::kAhead}) {
    if (s == DecodeName(d)) return 1 + static_cast<int>(d);
  }
  return InvalidArgumentError("decode '" + s + "': expected auto, inline or ahead");
}

const HeadSplit* FlashHead(const UnitInfo& u, int flash_head) {
  return flash_head > 0 && static_cast<size_t>(flash_head) <= u.heads.size()
             ? &u.heads[static_cast<size_t>(flash_head) - 1]
             : nullptr;
}

int Plan::count(Tier t) const {
  return static_cast<int>(std::count(tiers.begin(), tiers.end(), t));
}

std::string Plan::Summary() const {
  char buf[512];
  std::snprintf(
      buf, sizeof buf,
      "%s: %d decoded (%s), %d packed (%s), %d compressed (%s), %d on flash (%s/token%s); "
      "decode %s; "
      "%d slots x %s, %d staging x %s; %d compute + %d decode threads; total %s; "
      "est %.1f ms/token",
      PolicyName(policy), count(Tier::kDecoded), FormatBytes(decoded_bytes).c_str(),
      count(Tier::kPacked), FormatBytes(packed_bytes).c_str(), count(Tier::kCompressed),
      FormatBytes(compressed_bytes).c_str(), count(Tier::kFlash),
      FormatBytes(flash_bytes_per_token).c_str(),
      flash_head > 0 ? (", first " + std::to_string(flash_head) +
                        " matrices of each held packed: " + FormatBytes(flash_head_bytes))
                           .c_str()
                     : "",
      DecodeName(decode), slots, FormatBytes(slot_bytes).c_str(), staging,
      FormatBytes(staging_bytes).c_str(), compute_threads, decode_threads,
      FormatBytes(total_bytes).c_str(), est_seconds_per_token * 1e3);
  return buf;
}

void Plan::ToJson(JsonWriter& j) const {
  j.String("policy", PolicyName(policy));
  j.String("decode", DecodeName(decode));
  j.BeginArray("tiers");
  for (Tier t : tiers) j.RawValue(JsonEscape(TierName(t)));
  j.EndArray();
  j.Int("flash_head_matrices", flash_head);
  j.Int("slots", slots).Int("staging", staging);
  j.Int("compute_threads", compute_threads).Int("decode_threads", decode_threads);
  j.Int("slot_bytes", static_cast<int64_t>(slot_bytes));
  j.Int("staging_bytes", static_cast<int64_t>(staging_bytes));
  j.Int("decoded_bytes", static_cast<int64_t>(decoded_bytes));
  j.Int("packed_bytes", static_cast<int64_t>(packed_bytes));
  j.Int("flash_head_bytes", static_cast<int64_t>(flash_head_bytes));
  j.Int("compressed_bytes", static_cast<int64_t>(compressed_bytes));
  j.Int("flash_bytes_per_token", static_cast<int64_t>(flash_bytes_per_token));
  j.Int("decode_bytes_per_token", static_cast<int64_t>(decode_bytes_per_token));
  j.Int("fixed_bytes", static_cast<int64_t>(fixed_bytes));
  j.Int("total_bytes", static_cast<int64_t>(total_bytes));
  j.Double("est_ms_per_token", est_seconds_per_token * 1e3);
}

uint64_t PlanBytes(const std::vector<UnitInfo>& units, const FixedMemory& fixed, Plan& p) {
  p.slot_bytes = p.staging_bytes = p.decoded_bytes = p.packed_bytes = p.compressed_bytes = 0;
  p.flash_head_bytes = 0;
  p.flash_bytes_per_token = p.decode_bytes_per_token = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    const UnitInfo& U = units[u];
    // Decoding ahead, every compressed or flash unit passes through a decoded slot.
    if (p.decode == Decode::kAhead && !IsResident(p.tiers[u])) {
      p.slot_bytes = std::max(p.slot_bytes, U.decoded_bytes);
    }
    switch (p.tiers[u]) {
      case Tier::kDecoded: p.decoded_bytes += U.decoded_bytes; break;
      case Tier::kPacked: p.packed_bytes += U.packed_bytes; break;
      case Tier::kCompressed:
        p.compressed_bytes += U.compressed_bytes;
        p.decode_bytes_per_token += U.raw_bytes;
        break;
      case Tier::kFlash:
        if (const HeadSplit* h = FlashHead(U, p.flash_head); h != nullptr) {
          p.flash_head_bytes += h->head_packed_bytes;
          p.staging_bytes = std::max(p.staging_bytes, h->tail_compressed_bytes);
          p.flash_bytes_per_token += h->tail_compressed_bytes;
          p.decode_bytes_per_token += h->tail_raw_bytes;
        } else {
          p.staging_bytes = std::max(p.staging_bytes, U.compressed_bytes);
          p.flash_bytes_per_token += U.compressed_bytes;
          p.decode_bytes_per_token += U.raw_bytes;
        }
        break;
    }
  }
  p.fixed_bytes = fixed.total();
  p.total_bytes = p.fixed_bytes + p.decoded_bytes + p.packed_bytes + p.compressed_bytes +
                  p.flash_head_bytes + static_cast<uint64_t>(p.slots) * p.slot_bytes +
                  static_cast<uint64_t>(p.staging) * p.staging_bytes;
  return p.total_bytes;
}

double PackedBytesRatio(const UnitInfo& u) {
  return u.decoded_bytes > 0 && u.packed_bytes > 0
             ? static_cast<double>(u.packed_bytes) / static_cast<double>(u.decoded_bytes)
             : 1.0;
}

double PackedComputeRatio(const UnitInfo& u, const Rates& r) {
  const double unpack = r.packed_macs_per_s > 0 ? r.compute_macs_per_s / r.packed_macs_per_s : 1.0;
  return std::max(unpack, PackedBytesRatio(u));
}

namespace {

// Decoding inline: every thread decodes and multiplies; a flash unit's staging buffer is busy
// from its read until its last block is multiplied.
double EstimateInline(const std::vector<UnitInfo>& units, const Rates& r, Plan& p) {
  const double speedup = 1.0 + (p.compute_threads - 1) * r.compute_parallel_efficiency;
  double cpu = 0, io = 0, flash_cpu = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    const UnitInfo& U = units[u];
    const double ratio = PackedComputeRatio(U, r);
    // A flash layer's packed head runs the packed products; the rest is decoded inline.
    const HeadSplit* h = p.tiers[u] == Tier::kFlash ? FlashHead(U, p.flash_head) : nullptr;
    const uint64_t head_macs = h != nullptr ? h->head_macs : 0;
    const uint64_t raw = h != nullptr ? h->tail_raw_bytes : U.raw_bytes;
    const uint64_t packed_raw = h != nullptr ? h->tail_packed_raw_bytes : U.packed_raw_bytes;
    // Packed units, and the packed blocks of units decoded inline, run the packed products.
    const double packed_share =
        p.tiers[u] == Tier::kPacked ? 1.0
        : IsResident(p.tiers[u])
            ? 0.0
            : static_cast<double>(packed_raw) / static_cast<double>(std::max<uint64_t>(raw, 1));
    double c = static_cast<double>(U.macs_per_token - head_macs) / r.compute_macs_per_s *
                   (1.0 + (ratio - 1.0) * packed_share) +
               static_cast<double>(head_macs) / r.compute_macs_per_s * ratio;
    if (!IsResident(p.tiers[u])) c += static_cast<double>(raw - packed_raw) / r.decode_bytes_per_s;
    cpu += c / speedup;
    if (p.tiers[u] == Tier::kFlash) {
      io += static_cast<double>(h != nullptr ? h->tail_compressed_bytes : U.compressed_bytes) /
            r.io_bytes_per_s;
      flash_cpu += c / speedup;
    }
  }
  // With one staging buffer the next read starts only when the last flash unit is released.
  p.est_flash_hold_seconds = flash_cpu;
  const double io_eff =
      p.staging >= 2 || r.io_credits_idle ? io : io + r.flash_hold_factor * flash_cpu;
  p.est_cpu_seconds_per_token = cpu * speedup;  // the work, whatever the threads
  return std::max(cpu, io_eff);
}

}  // namespace

double EstimateSeconds(const std::vector<UnitInfo>& units, const Rates& r, Plan& p) {
  if (p.decode == Decode::kInline) {
    p.est_seconds_per_token = EstimateInline(units, r, p);
    return p.est_seconds_per_token;
  }
  p.est_flash_hold_seconds = 0;
  double macs = 0, decode = 0, io = 0, flash_decode = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    macs += static_cast<double>(units[u].macs_per_token) *
            (p.tiers[u] == Tier::kPacked ? PackedComputeRatio(units[u], r) : 1.0);
    if (IsResident(p.tiers[u])) continue;
    const double d = static_cast<double>(units[u].raw_bytes) / r.decode_bytes_per_s;
    decode += d;
    if (p.tiers[u] == Tier::kFlash) {
      io += static_cast<double>(units[u].compressed_bytes) / r.io_bytes_per_s;
      flash_decode += d;
    }
  }
  const double c1 = macs / r.compute_macs_per_s;  // one thread
  const double speedup = 1.0 + (p.compute_threads - 1) * r.compute_parallel_efficiency;
  const double ct = c1 / speedup;
  const int d = std::max(1, p.decode_threads);
  const double dt = decode / d;
  // With one staging buffer, reading the next flash unit waits for the last one's decoding.
  const double io_eff = p.staging >= 2 || r.io_credits_idle ? io : io + flash_decode / d;
  p.est_cpu_seconds_per_token = c1 + decode;  // the work, whatever the threads
  // CPU time: compute threads are busy for ct each (including their parallel inefficiency).
  const double cpu = (ct * p.compute_threads + decode) / std::max(1, r.cores);
  const double oversub = p.compute_threads + p.decode_threads > r.cores ? 1.1 : 1.0;
  double t;
  if (decode == 0) {
    t = ct;
  } else if (p.slots <= 1) {
    // The prefetcher takes the only slot before it reads: a streamed unit's read and decoding
    // start when the previous one is released, so read, decode and compute follow each other.
    t = io + ct + dt;
  } else {
    t = std::max({io_eff, ct, dt, cpu * oversub});
  }
  p.est_seconds_per_token = t;
  return t;
}

double ReloadSeconds(const std::vector<UnitInfo>& units, const Rates& r, const Plan& from,
                     const Plan& to) {
  // The pipeline drains: reads into staging buffers are dropped and done again.
  double s = from.count(Tier::kFlash) > 0
                 ? static_cast<double>(from.staging) * static_cast<double>(from.staging_bytes) /
                       r.io_bytes_per_s
                 : 0;
  for (size_t u = 0; u < units.size() && u < to.tiers.size(); ++u) {
    const Tier t = to.tiers[u];
    const bool same = u < from.tiers.size() && from.tiers[u] == t;
    if (t == Tier::kFlash) {
      // A flash layer's packed head is read (and packed) again when it changes.
      const HeadSplit* h = FlashHead(units[u], to.flash_head);
      if (h != nullptr && !(same && from.flash_head == to.flash_head)) {
        s += static_cast<double>(units[u].compressed_bytes - h->tail_compressed_bytes) /
                 r.io_bytes_per_s +
             static_cast<double>(units[u].raw_bytes - h->tail_raw_bytes) / r.decode_bytes_per_s;
      }
      continue;
    }
    if (same) continue;
    s += static_cast<double>(units[u].compressed_bytes) / r.io_bytes_per_s;
    if (IsResident(t)) s += static_cast<double>(units[u].raw_bytes) / r.decode_bytes_per_s;
  }
  return s;
}

uint64_t MinimumBudget(const std::vector<UnitInfo>& units, const FixedMemory& fixed) {
  Plan p;
  p.decode = Decode::kInline;
  p.tiers.assign(units.size(), Tier::kFlash);
  p.staging = 1;
  return PlanBytes(units, fixed, p);
}

namespace {

// Spreads n_d resident (tier `res`), n_c compressed and the rest flash over `n` layers so that
// streamed layers are evenly interleaved with resident ones (the prefetcher reads while resident
// layers compute).
std::vector<Tier> Interleave(int n, int n_d, int n_c, Tier res = Tier::kDecoded) {
  std::vector<Tier> t(static_cast<size_t>(n));
  const int n_f = n - n_d - n_c;
  const int want[3] = {n_d, n_c, n_f};
  int got[3] = {0, 0, 0};
  for (int i = 0; i < n; ++i) {
    // Pick the tier furthest behind its share at position i + 1.
    int best = -1;
    double best_deficit = -1e9;
    for (int k = 0; k < 3; ++k) {
      if (got[k] >= want[k]) continue;
      const double deficit = static_cast<double>(want[k]) * (i + 1) / n - got[k];
      if (deficit > best_deficit) {
        best_deficit = deficit;
        best = k;
      }
    }
    ++got[best];
    t[static_cast<size_t>(i)] = best == 0 ? res : best == 1 ? Tier::kCompressed : Tier::kFlash;
  }
  return t;
}

// a strictly better than b: faster; as fast with less CPU work; as fast reading fewer bytes from
// flash per token; as fast in fewer bytes of RAM; or as all of these with more compute threads. A
// read-bound plan's estimate depends on neither its CPU work nor its threads, but its pass still
// has compute on the critical path: holding units packed rather than entropy-coded in RAM (nearly
// the same bytes when few blocks gained from entropy coding) ran 1.1-1.6x faster at 75% of the INT8
// size with the same estimate, and one thread left idle was seen to cost 10%. Reads the estimate
// hides behind compute still cost: at 90% of the INT8 size a plan that streamed one layer (18 MB a
// token) to hold 16 KB less than all-packed tied with it, and the byte rule took it.
bool Better(const Plan& a, const Plan& b) {
  if (a.est_seconds_per_token < b.est_seconds_per_token * 0.999) return true;
  if (a.est_seconds_per_token > b.est_seconds_per_token * 1.001) return false;
  if (a.est_cpu_seconds_per_token < b.est_cpu_seconds_per_token * 0.99) return true;
  if (a.est_cpu_seconds_per_token > b.est_cpu_seconds_per_token * 1.01) return false;
  if (a.flash_bytes_per_token != b.flash_bytes_per_token) {
    return a.flash_bytes_per_token < b.flash_bytes_per_token;
  }
  if (a.total_bytes != b.total_bytes) return a.total_bytes < b.total_bytes;
  return a.compute_threads > b.compute_threads;
}

}  // namespace

Result<Plan> ChoosePlan(const std::vector<UnitInfo>& units, const FixedMemory& fixed,
                        const Rates& rates, uint64_t budget, Policy policy,
                        const PlanConstraints& k) {
  const int n = static_cast<int>(units.size());
  const int layers = n - 1;  // the last unit is the output matrix
  const int cores = std::max(1, rates.cores);
  Plan best;
  bool found = false;
  uint64_t smallest = std::numeric_limits<uint64_t>::max();
  const bool ahead_forced =
      k.slots > 0 || k.decode_threads > 0 || k.decode == 1 + int(Decode::kAhead);
  const bool inline_forced = k.decode == 1 + int(Decode::kInline) || k.flash_head > 1;
  int max_head = std::numeric_limits<int>::max();
  auto consider = [&](Plan p) {
    if (p.decode == Decode::kInline ? ahead_forced : inline_forced) return;
    if (k.compute_threads > 0) p.compute_threads = k.compute_threads;
    if (k.flash_head > 0 && p.decode == Decode::kInline) p.flash_head = k.flash_head - 1;
    if (p.decode == Decode::kAhead) p.flash_head = 0;  // slots hold whole decoded units
    if (p.decode == Decode::kAhead) {
      if (k.decode_threads > 0) p.decode_threads = k.decode_threads;
      if (k.slots > 0) p.slots = k.slots;
    } else {
      p.slots = p.decode_threads = 0;
    }
    const bool streamed = p.count(Tier::kDecoded) + p.count(Tier::kPacked) < n;
    if (!streamed) {
      p.slots = p.staging = p.decode_threads = 0;
    }
    if (p.count(Tier::kFlash) == 0) p.staging = 0;
    PlanBytes(units, fixed, p);
    if (p.flash_head_bytes == 0) p.flash_head = 0;  // no flash unit splits (the output alone)
    smallest = std::min(smallest, p.total_bytes);
    if (p.total_bytes > budget) return;
    EstimateSeconds(units, rates, p);
    if (!found || Better(p, best)) {
      best = std::move(p);
      found = true;
    }
  };
  auto fixed_plan = [&](std::vector<Tier> tiers) {
    // The fixed policies: every core computing; decoding inline with two staging buffers, or
    // ahead with two slots, two staging buffers and every core decoding (one each if that is all
    // that fits), whichever is estimated faster.
    for (int depth : {2, 1}) {
      for (Decode d : {Decode::kInline, Decode::kAhead}) {
        Plan p;
        p.policy = policy;
        p.decode = d;
        p.tiers = tiers;
        p.slots = p.staging = depth;
        p.compute_threads = p.decode_threads = cores;
        consider(p);
      }
      if (found) return;
    }
  };
  switch (policy) {
    case Policy::kAllDecoded:
      fixed_plan(std::vector<Tier>(static_cast<size_t>(n), Tier::kDecoded));
      break;
    case Policy::kAllPacked:
      fixed_plan(std::vector<Tier>(static_cast<size_t>(n), Tier::kPacked));
      break;
    case Policy::kAllCompressed:
      fixed_plan(std::vector<Tier>(static_cast<size_t>(n), Tier::kCompressed));
      break;
    case Policy::kStreamAll:
      fixed_plan(std::vector<Tier>(static_cast<size_t>(n), Tier::kFlash));
      break;
    case Policy::kStaticSplit:
      // As many units compressed in RAM as fit, in execution order, the rest streamed.
      for (int keep = n; keep >= 0 && !found; --keep) {
        std::vector<Tier> t(static_cast<size_t>(n), Tier::kFlash);
        for (int i = 0; i < keep; ++i) t[static_cast<size_t>(i)] = Tier::kCompressed;
        fixed_plan(t);
      }
      break;
    case Policy::kAdaptive:
      // Flash layers may hold a packed head of as many matrices as every layer splits into.
      for (const UnitInfo& u : units) {
        if (!u.heads.empty()) max_head = std::min(max_head, static_cast<int>(u.heads.size()));
      }
      if (max_head == std::numeric_limits<int>::max()) max_head = 0;
      for (Tier res : {Tier::kDecoded, Tier::kPacked}) {
        for (Tier head : {res, Tier::kCompressed, Tier::kFlash}) {
          for (int nd = 0; nd <= layers; ++nd) {
            if (nd == 0 && res == Tier::kPacked && head != res) continue;  // searched with kDecoded
            for (int nc = 0; nc + nd <= layers; ++nc) {
              std::vector<Tier> tiers = Interleave(layers, nd, nc, res);
              tiers.push_back(head);
              const bool all_resident = nd == layers && IsResident(head);
              const bool any_flash = nd + nc < layers || head == Tier::kFlash;
              for (int staging = 1; staging <= (any_flash ? 3 : 1); ++staging) {
                for (int c = 1; c <= cores; ++c) {
                  for (int fh = 0; fh <= (any_flash && k.flash_head == 0 ? max_head : 0); ++fh) {
                    Plan p;
                    p.policy = policy;
                    p.decode = Decode::kInline;
                    p.tiers = tiers;
                    p.staging = staging;
                    p.compute_threads = c;
                    p.flash_head = fh;
                    consider(std::move(p));
                  }
                }
              }
              for (int slots = 1; slots <= (all_resident ? 1 : 4); ++slots) {
                for (int staging = 1; staging <= (any_flash ? 2 : 1); ++staging) {
                  for (int c = 1; c <= cores; ++c) {
                    for (int d = 1; d <= (all_resident ? 1 : cores); ++d) {
                      Plan p;
                      p.policy = policy;
                      p.tiers = tiers;
                      p.slots = slots;
                      p.staging = staging;
                      p.compute_threads = c;
                      p.decode_threads = d;
                      consider(std::move(p));
                    }
                  }
                }
              }
            }
          }
        }
      }
      break;
  }
  if (!found) {
    return ResourceExhaustedError(
        std::string("a budget of ") + FormatBytes(budget) + " (" + std::to_string(budget) +
        " bytes) is too small for policy " + PolicyName(policy) + ": it needs at least " +
        FormatBytes(smallest) + " (" + std::to_string(smallest) + " bytes) for this model and " +
        "context length, of which " + FormatBytes(fixed.total()) +
        " is fixed (process baseline, KV cache, activations, vectors)");
  }
  return best;
}

}  // namespace dcomp::runtime
