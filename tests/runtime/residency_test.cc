// Residency planning: budgets parse, every plan fits its budget, the smallest budget is named when
// none fits, and the adaptive search is never estimated slower than a fixed policy.
#include <gtest/gtest.h>

#include "runtime/controller.h"
#include "runtime/planner.h"

namespace dcomp::runtime {
namespace {

// A TinyLlama-like model: 22 layers of 44 MB (34 MB compressed) and a 65 MB output matrix.
// An INT8 model (its packed form is its decoded form), or with every code at 6 bits.
std::vector<UnitInfo> TinyLlamaUnits(bool six_bits = false) {
  const uint64_t lp = six_bits ? 33'226'752 : 44'040'192, op = six_bits ? 49'545'216 : 65'792'000;
  std::vector<UnitInfo> u(22,
                          UnitInfo{"layer", 44'040'192, 33'800'000, 44'000'000, 44'040'192, lp});
  u.push_back({"output", 65'792'000, 50'400'000, 65'700'000, 65'536'000, op});
  return u;
}

FixedMemory Fixed() {
  FixedMemory f;
  f.baseline = 9 << 20;
  f.kv_cache = 23 << 20;
  f.activations = 1 << 20;
  f.margin = 2 << 20;
  return f;
}

TEST(ResidencyTest, ParsesBudgets) {
  EXPECT_EQ(*ParseBudget("600MiB", 0), 600ull << 20);
  EXPECT_EQ(*ParseBudget("600M", 0), 600ull << 20);
  EXPECT_EQ(*ParseBudget("1.5GB", 0), 1'500'000'000ull);
  EXPECT_EQ(*ParseBudget("4096", 0), 4096u);
  EXPECT_EQ(*ParseBudget("50%", 1000), 500u);
  for (const char* bad : {"", "MiB", "12XB", "-5", "0%", "1.2.3M", "%"}) {
    EXPECT_EQ(ParseBudget(bad, 1000).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ResidencyTest, TooSmallBudgetNamesTheSmallestThatWorks) {
  const auto units = TinyLlamaUnits();
  const uint64_t min = MinimumBudget(units, Fixed());
  Result<Plan> p = ChoosePlan(units, Fixed(), Rates{}, min - 1, Policy::kAdaptive);
  ASSERT_EQ(p.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(p.status().message().find(std::to_string(min)), std::string::npos)
      << p.status().message();
  ASSERT_TRUE(ChoosePlan(units, Fixed(), Rates{}, min, Policy::kAdaptive).ok());
  // A fixed policy that cannot fit says what it needs.
  EXPECT_EQ(ChoosePlan(units, Fixed(), Rates{}, 600 << 20, Policy::kAllCompressed).status().code(),
            StatusCode::kResourceExhausted);
}

TEST(ResidencyTest, PlansFitAndTheAdaptivePlanIsNeverEstimatedSlower) {
  const auto units = TinyLlamaUnits();
  uint64_t int8 = 0;
  for (const auto& u : units) int8 += u.decoded_bytes;
  for (double io : {80e6, 800e6, 3e9}) {
    Rates r;
    r.io_bytes_per_s = io;
    r.decode_bytes_per_s = 1.5e9;
    r.compute_macs_per_s = 2e10;
    for (double frac : {0.25, 0.35, 0.5, 0.75, 1.0, 1.2}) {
      const uint64_t budget = static_cast<uint64_t>(frac * static_cast<double>(int8));
      Result<Plan> a = ChoosePlan(units, Fixed(), r, budget, Policy::kAdaptive);
      ASSERT_TRUE(a.ok()) << a.status().ToString();
      EXPECT_LE(a->total_bytes, budget);
      for (Policy p : {Policy::kAllCompressed, Policy::kStreamAll, Policy::kStaticSplit,
                       Policy::kAllDecoded}) {
        Result<Plan> f = ChoosePlan(units, Fixed(), r, budget, p);
        if (!f.ok()) continue;
        EXPECT_LE(f->total_bytes, budget);
        EXPECT_LE(a->est_seconds_per_token, f->est_seconds_per_token * 1.0001)
            << PolicyName(p) << " at " << frac << " io " << io << "\n"
            << a->Summary() << "\n"
            << f->Summary();
      }
    }
  }
}

TEST(ResidencyTest, DecodingInlineNeedsNoSlotsAndKeepsMoreInRam) {
  const auto units = TinyLlamaUnits();
  Rates r;
  r.io_bytes_per_s = 800e6;
  const uint64_t budget = 600ull << 20;
  auto in_ram = [](const Plan& p) { return p.count(Tier::kDecoded) + p.count(Tier::kCompressed); };
  Result<Plan> in = ChoosePlan(units, Fixed(), r, budget, Policy::kAdaptive,
                               {0, 0, 0, 1 + static_cast<int>(Decode::kInline)});
  Result<Plan> ahead = ChoosePlan(units, Fixed(), r, budget, Policy::kAdaptive,
                                  {0, 0, 0, 1 + static_cast<int>(Decode::kAhead)});
  ASSERT_TRUE(in.ok() && ahead.ok());
  EXPECT_EQ(in->decode, Decode::kInline);
  EXPECT_EQ(in->slots, 0);
  EXPECT_EQ(in->decode_threads, 0);
  EXPECT_EQ(in->slot_bytes, 0u);
  EXPECT_EQ(ahead->decode, Decode::kAhead);
  EXPECT_GE(ahead->slots, 1);
  EXPECT_GE(in_ram(*in), in_ram(*ahead)) << in->Summary() << "\n" << ahead->Summary();
  // Fixing the slots means decoding ahead.
  Result<Plan> slots = ChoosePlan(units, Fixed(), r, budget, Policy::kAdaptive, {2, 0, 0, 0});
  ASSERT_TRUE(slots.ok());
  EXPECT_EQ(slots->decode, Decode::kAhead);
  EXPECT_EQ(slots->slots, 2);
  // The smallest budget streams everything through one staging buffer, decoding inline.
  const uint64_t min = MinimumBudget(units, Fixed());
  Result<Plan> smallest = ChoosePlan(units, Fixed(), r, min, Policy::kAdaptive);
  ASSERT_TRUE(smallest.ok());
  EXPECT_EQ(smallest->decode, Decode::kInline);
  EXPECT_EQ(smallest->count(Tier::kFlash), static_cast<int>(units.size()));
}

TEST(ResidencyTest, ReloadCountsOnlyUnitsPromotedToARamTier) {
  const auto units = TinyLlamaUnits();
  Rates r;
  r.io_bytes_per_s = 100e6;
  r.decode_bytes_per_s = 200e6;
  Plan from, to;
  from.tiers.assign(units.size(), Tier::kFlash);
  from.tiers[0] = Tier::kDecoded;
  from.tiers[1] = Tier::kCompressed;
  to = from;
  EXPECT_EQ(ReloadSeconds(units, r, from, to), 0.0);
  to.tiers[0] = Tier::kFlash;       // demoted: nothing to read
  to.tiers[1] = Tier::kDecoded;     // read again and decoded
  to.tiers[2] = Tier::kCompressed;  // read
  const double want = 33.8e6 / 100e6 + 44e6 / 200e6 + 33.8e6 / 100e6;
  EXPECT_NEAR(ReloadSeconds(units, r, from, to), want, 1e-9);
  to.tiers.back() = Tier::kCompressed;  // the output
  EXPECT_NEAR(ReloadSeconds(units, r, from, to), want + 50.4e6 / 100e6, 1e-9);
  // Staged reads are repeated.
  from.staging = 2;
  from.staging_bytes = 40'000'000;
  EXPECT_NEAR(ReloadSeconds(units, r, from, to), want + 50.4e6 / 100e6 + 0.8, 1e-9);
}

// Decoding inline on two threads: the first 5 layers entropy-coded in RAM, the rest on flash.
Plan InlineStreamingPlan(const std::vector<UnitInfo>& units) {
  Plan p;
  p.decode = Decode::kInline;
  p.tiers.assign(units.size(), Tier::kFlash);
  for (size_t u = 0; u < 5; ++u) p.tiers[u] = Tier::kCompressed;
  p.compute_threads = 2;
  return p;
}

TEST(ResidencyTest, ADeviceThatCreditsIdleTimeDoesNotSerialiseOneStagingBuffer) {
  const auto units = TinyLlamaUnits();
  Rates r;
  r.io_bytes_per_s = 800e6;
  Plan p = InlineStreamingPlan(units);
  p.staging = 1;
  const double serial = EstimateSeconds(units, r, p);
  p.staging = 2;
  const double overlapped = EstimateSeconds(units, r, p);
  EXPECT_GT(serial, overlapped * 1.2);
  r.io_credits_idle = true;
  p.staging = 1;
  EXPECT_DOUBLE_EQ(EstimateSeconds(units, r, p), overlapped);
}

// With one staging buffer, compute's hold of each flash unit delays the next read: the estimate
// adds that hold at Rates::flash_hold_factor (2 until measured). With two it overlaps the reads.
TEST(ResidencyTest, OneStagingBufferCountsTheFlashUnitsHoldAtItsFactor) {
  const auto units = TinyLlamaUnits();
  Rates r;
  r.io_bytes_per_s = 800e6;
  Plan p = InlineStreamingPlan(units);
  p.staging = 1;
  EXPECT_EQ(r.flash_hold_factor, 2.0);
  r.flash_hold_factor = 1;
  const double one = EstimateSeconds(units, r, p);
  const double hold = p.est_flash_hold_seconds;
  EXPECT_GT(hold, 0);
  r.flash_hold_factor = 3;
  EXPECT_NEAR(EstimateSeconds(units, r, p), one + 2 * hold, 1e-9 * one);
  p.staging = 2;
  const double two = EstimateSeconds(units, r, p);
  EXPECT_DOUBLE_EQ(p.est_flash_hold_seconds, hold);
  EXPECT_LT(two, one);
  r.flash_hold_factor = 1;
  EXPECT_DOUBLE_EQ(EstimateSeconds(units, r, p), two);
  // Decoding ahead, no flash unit is held by compute.
  p.decode = Decode::kAhead;
  p.slots = p.decode_threads = 2;
  EstimateSeconds(units, r, p);
  EXPECT_EQ(p.est_flash_hold_seconds, 0.0);
}

// The controller measures the factor from decode steps that stream inline: the first measurement
// replaces the default, later ones move it by a fifth. Prompt passes measure nothing.
TEST(ResidencyTest, TheControllerMeasuresHowLongComputeHoldsFlashUnits) {
  const auto units = TinyLlamaUnits();
  Rates r;
  r.io_bytes_per_s = 800e6;
  ControllerOptions o;
  o.adapt = false;
  Controller c(&units, Fixed(), o, 0, r, IoProbe{});
  Plan p = InlineStreamingPlan(units);
  p.staging = 2;
  EstimateSeconds(units, r, p);
  ASSERT_GT(p.est_flash_hold_seconds, 0);
  EXPECT_EQ(c.stats().rates.flash_hold_factor, 2.0);
  PassSample s;
  s.tokens = 1;
  s.flash_hold_seconds = 3 * p.est_flash_hold_seconds;
  c.EndPass(s, p);
  EXPECT_NEAR(c.stats().rates.flash_hold_factor, 3.0, 1e-9);
  s.flash_hold_seconds = p.est_flash_hold_seconds;
  c.EndPass(s, p);
  EXPECT_NEAR(c.stats().rates.flash_hold_factor, 0.8 * 3.0 + 0.2 * 1.0, 1e-9);
  s.tokens = 7;
  s.flash_hold_seconds = 10 * p.est_flash_hold_seconds;
  c.EndPass(s, p);
  EXPECT_NEAR(c.stats().rates.flash_hold_factor, 2.6, 1e-9);
}

// Packed units cost no decoding: when they are as fast as decoded ones the controller packs
// everything (fewer bytes); when they are slower it decodes what fits, and packs when the budget
// holds the packed model but not the decoded one; all-packed is a fixed policy.
TEST(ResidencyTest, PackedWhenItIsAsFastOrWhenOnlyItFits) {
  const auto units = TinyLlamaUnits(true);
  uint64_t packed = 0, decoded = 0;
  for (const UnitInfo& u : units) packed += u.packed_bytes, decoded += u.decoded_bytes;
  Rates r;
  Result<Plan> p = ChoosePlan(units, Fixed(), r, 4ull << 30, Policy::kAdaptive);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->count(Tier::kPacked), static_cast<int>(units.size()));
  EXPECT_EQ(p->packed_bytes, packed);
  r.packed_macs_per_s = r.compute_macs_per_s / 1.3;  // unpacking-bound: 1.3x INT8's time
  p = ChoosePlan(units, Fixed(), r, 4ull << 30, Policy::kAdaptive);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->count(Tier::kDecoded), static_cast<int>(units.size()));
  const uint64_t between = Fixed().total() + (packed + decoded) / 2;
  p = ChoosePlan(units, Fixed(), r, between, Policy::kAdaptive);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->count(Tier::kPacked), static_cast<int>(units.size())) << p->Summary();
  p = ChoosePlan(units, Fixed(), r, between, Policy::kAllPacked);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->count(Tier::kPacked), static_cast<int>(units.size()));
  EXPECT_EQ(ChoosePlan(units, Fixed(), r, between, Policy::kAllDecoded).status().code(),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(*ParsePolicy("all-packed"), Policy::kAllPacked);
  EXPECT_STREQ(TierName(Tier::kPacked), "packed");
}

// A packed unit takes the longer of its unpacking time and its INT8 time scaled by the bytes it
// reads: when unpacking keeps up, 6-bit codes are estimated at 3/4 of the INT8 time and the
// search packs everything even though the budget holds the decoded model.
TEST(ResidencyTest, PackedProductsAreBoundByUnpackingOrByBytes) {
  const auto units = TinyLlamaUnits(true);
  const UnitInfo& layer = units[0];
  const double bytes = static_cast<double>(layer.packed_bytes) / layer.decoded_bytes;
  Rates r;
  EXPECT_DOUBLE_EQ(PackedComputeRatio(layer, r), 1.0);  // unknown: as fast as INT8
  r.packed_macs_per_s = 3 * r.compute_macs_per_s;
  EXPECT_DOUBLE_EQ(PackedComputeRatio(layer, r), bytes);
  EXPECT_NEAR(bytes, 0.75, 0.01);
  Result<Plan> packed = ChoosePlan(units, Fixed(), r, 4ull << 30, Policy::kAdaptive);
  Result<Plan> decoded = ChoosePlan(units, Fixed(), r, 4ull << 30, Policy::kAllDecoded);
  ASSERT_TRUE(packed.ok() && decoded.ok());
  EXPECT_EQ(packed->count(Tier::kPacked), static_cast<int>(units.size()));
  EXPECT_NEAR(packed->est_seconds_per_token / decoded->est_seconds_per_token, 0.75, 0.01);
  r.packed_macs_per_s = r.compute_macs_per_s / 1.5;
  EXPECT_DOUBLE_EQ(PackedComputeRatio(layer, r), 1.5);
  // An INT8 unit (packed = decoded bytes) is never estimated faster packed.
  r.packed_macs_per_s = 3 * r.compute_macs_per_s;
  EXPECT_DOUBLE_EQ(PackedComputeRatio(TinyLlamaUnits()[0], r), 1.0);
}

// The compute probe runs out of cache only for a model larger than the last-level cache, over 3x
// the cache within [8 MiB, 256 MiB], and only when the budget's headroom holds twice that.
TEST(ResidencyTest, ComputeProbeLeavesTheCacheOnlyForALargerModelAndWithinTheBudget) {
  constexpr uint64_t MiB = 1 << 20;
  EXPECT_EQ(ComputeProbeBytes(30 * MiB, 32 * MiB, 1ull << 40), 0u);  // fits the cache
  EXPECT_EQ(ComputeProbeBytes(33 * MiB, 32 * MiB, 1ull << 40), 96 * MiB);
  EXPECT_EQ(ComputeProbeBytes(1ull << 30, 32 * MiB, 192 * MiB), 96 * MiB);
  EXPECT_EQ(ComputeProbeBytes(1ull << 30, 32 * MiB, 192 * MiB - 1), 0u);   // the budget is short
  EXPECT_EQ(ComputeProbeBytes(1ull << 30, 2 * MiB, 1ull << 40), 8 * MiB);  // a Pi 5's 2 MiB L3
  EXPECT_EQ(ComputeProbeBytes(1ull << 30, 128 * MiB, 1ull << 40), 256 * MiB);
}

// The read probe reads as the prefetcher does, a unit's range at once (up to 16 MiB: the io_uring
// reader's queue of 1 MiB chunks), within half the budget's headroom, and never less than the
// 1 MiB it read before (or the whole range when that is less).
TEST(ResidencyTest, ReadProbeReadsUnitsAtOnceWithinTheBudget) {
  constexpr uint64_t MiB = 1 << 20;
  EXPECT_EQ(ReadProbeBytes(256 * MiB, 20 * MiB, 1ull << 40), kReadProbeMaxBytes);
  EXPECT_EQ(ReadProbeBytes(256 * MiB, 3 * MiB, 1ull << 40), 3 * MiB);  // small units
  EXPECT_EQ(ReadProbeBytes(256 * MiB, 20 * MiB, 10 * MiB), 5 * MiB);   // half the headroom
  EXPECT_EQ(ReadProbeBytes(256 * MiB, 20 * MiB, 0), 1 * MiB);          // never below 1 MiB
  // Whole MiB, so that every read of an O_DIRECT probe starts 4096-aligned.
  EXPECT_EQ(ReadProbeBytes(256 * MiB, 5 * MiB + 12345, 1ull << 40), 5 * MiB);
  EXPECT_EQ(ReadProbeBytes(256 * MiB, 20 * MiB, 7 * MiB + 3), 3 * MiB);
  EXPECT_EQ(ReadProbeBytes(300 * 1024, 100 * 1024, 1ull << 40), 300 * 1024);  // the whole range
  EXPECT_EQ(ReadProbeBytes(300 * 1024, 100 * 1024, 0), 300 * 1024);
}

// Read-bound plans tie on their estimate whatever their RAM units cost to compute. When entropy
// coding gained little (its stored range about its packed size, 5% of its blocks entropy-coded),
// the units held in RAM are held packed, not entropy-coded, even at a budget that would fit one
// more entropy-coded unit than packed ones would: the estimate is the reads', and the plan with
// less CPU work per token wins the tie (less of the pass on the critical path).
TEST(ResidencyTest, ReadBoundPlansHoldPackedRatherThanEntropyCodedUnitsOfTheSameSize) {
  auto units = TinyLlamaUnits(true);
  for (UnitInfo& u : units) {
    u.compressed_bytes = u.packed_bytes - u.packed_bytes / 200;
    u.packed_raw_bytes = u.raw_bytes - u.raw_bytes / 20;
  }
  Rates r;
  r.io_bytes_per_s = 3e8;  // the three streamed units' reads take longer than the whole pass's work
  r.packed_macs_per_s = 3 * r.compute_macs_per_s;
  r.io_credits_idle = true;
  uint64_t packed = 0;
  for (const UnitInfo& u : units) packed += u.packed_bytes;
  const uint64_t budget = Fixed().total() + packed - 2 * units[0].packed_bytes;
  Result<Plan> p = ChoosePlan(units, Fixed(), r, budget, Policy::kAdaptive);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->count(Tier::kCompressed), 0) << p->Summary();
  EXPECT_GT(p->count(Tier::kPacked), 0) << p->Summary();
  EXPECT_GT(p->count(Tier::kFlash), 0) << p->Summary();
  // The same tiers with the packed units held entropy-coded: as fast by the estimate, more work.
  Plan c = *p;
  for (Tier& t : c.tiers) {
    if (t == Tier::kPacked) t = Tier::kCompressed;
  }
  EstimateSeconds(units, r, c);
  EXPECT_NEAR(c.est_seconds_per_token, p->est_seconds_per_token, 1e-3 * p->est_seconds_per_token);
  EXPECT_GT(c.est_cpu_seconds_per_token, p->est_cpu_seconds_per_token * 1.01);
}

// The splits of a TinyLlama layer's seven matrices (LayerWeights order: q, k, v, o, gate, down,
// up), each matrix's bytes in proportion to its weights.
void AddHeads(UnitInfo& u) {
  const double w[] = {4, 0.5, 0.5, 4, 11, 11, 11};
  double total = 0;
  for (double x : w) total += x;
  double head = 0;
  for (size_t k = 1; k < 7; ++k) {
    head += w[k - 1] / total;
    HeadSplit h;
    h.head_packed_bytes = static_cast<uint64_t>(head * static_cast<double>(u.packed_bytes));
    h.tail_compressed_bytes =
        static_cast<uint64_t>((1 - head) * static_cast<double>(u.compressed_bytes));
    h.tail_raw_bytes = static_cast<uint64_t>((1 - head) * static_cast<double>(u.raw_bytes));
    h.tail_packed_raw_bytes =
        static_cast<uint64_t>((1 - head) * static_cast<double>(u.packed_raw_bytes));
    h.head_macs = static_cast<uint64_t>(head * static_cast<double>(u.macs_per_token));
    u.heads.push_back(h);
  }
}

// Between "whole layers packed" and "whole layers on flash", a read-bound plan can hold part of
// each streamed layer packed: fewer bytes read per token for the same memory.
TEST(ResidencyTest, FlashLayersHoldAPackedHeadWhenThatReadsLess) {
  auto units = TinyLlamaUnits(true);
  for (UnitInfo& u : units) {
    u.compressed_bytes = u.packed_bytes;
    u.packed_raw_bytes = u.raw_bytes;
    if (u.name == "layer") AddHeads(u);
  }
  Rates r;
  r.io_bytes_per_s = 1e9;
  r.packed_macs_per_s = 2 * r.compute_macs_per_s;
  uint64_t packed = 0;
  for (const UnitInfo& u : units) packed += u.packed_bytes;
  const uint64_t budget = Fixed().total() + packed - 2 * units[0].packed_bytes;
  Result<Plan> p = ChoosePlan(units, Fixed(), r, budget, Policy::kAdaptive);
  ASSERT_TRUE(p.ok());
  EXPECT_GT(p->flash_head, 0) << p->Summary();
  EXPECT_EQ(p->decode, Decode::kInline);
  EXPECT_LE(p->total_bytes, budget);
  // Whole layers only (the constraint 1 + 0): more bytes read, slower by the estimate.
  Result<Plan> whole = ChoosePlan(units, Fixed(), r, budget, Policy::kAdaptive, {0, 0, 0, 0, 1});
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(whole->flash_head, 0);
  EXPECT_LT(p->flash_bytes_per_token, whole->flash_bytes_per_token) << p->Summary() << "\n"
                                                                    << whole->Summary();
  EXPECT_LT(p->est_seconds_per_token, whole->est_seconds_per_token);
  // The account: each flash layer's head is held packed, its tail read and staged; the output
  // matrix, on flash, is read whole.
  uint64_t packed_units = 0, heads = 0, read = 0, staged = 0;
  int split = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    if (p->tiers[u] == Tier::kPacked) packed_units += units[u].packed_bytes;
    if (p->tiers[u] != Tier::kFlash) continue;
    const HeadSplit* h = FlashHead(units[u], p->flash_head);
    if (h != nullptr) ++split;
    heads += h != nullptr ? h->head_packed_bytes : 0;
    read += h != nullptr ? h->tail_compressed_bytes : units[u].compressed_bytes;
    staged = std::max(staged, h != nullptr ? h->tail_compressed_bytes : units[u].compressed_bytes);
  }
  EXPECT_GT(split, 0);
  EXPECT_EQ(p->packed_bytes, packed_units);
  EXPECT_EQ(p->flash_head_bytes, heads);
  EXPECT_EQ(p->flash_bytes_per_token, read);
  EXPECT_EQ(p->staging_bytes, staged);
  EXPECT_EQ(p->total_bytes, Fixed().total() + p->decoded_bytes + p->compressed_bytes +
                                packed_units + heads + static_cast<uint64_t>(p->staging) * staged);
  // A head forced on units that do not split (the output matrix, or a model without splits):
  // none is held or reported.
  auto whole_units = units;
  for (UnitInfo& u : whole_units) u.heads.clear();
  Result<Plan> none =
      ChoosePlan(whole_units, Fixed(), r, 1ull << 40, Policy::kStreamAll, {0, 0, 0, 0, 1 + 3});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->count(Tier::kFlash), static_cast<int>(units.size()));
  EXPECT_EQ(none->flash_head, 0);
  EXPECT_EQ(none->flash_head_bytes, 0u);
  Plan moved = *p;
  moved.flash_head = p->flash_head == 1 ? 2 : 1;
  // Changing the head re-reads and packs the flash layers' heads.
  const double reload = ReloadSeconds(units, r, *p, moved) - ReloadSeconds(units, r, *p, *p);
  double want = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    const HeadSplit* h = FlashHead(units[u], moved.flash_head);
    if (moved.tiers[u] != Tier::kFlash || h == nullptr) continue;
    want += static_cast<double>(units[u].compressed_bytes - h->tail_compressed_bytes) /
                r.io_bytes_per_s +
            static_cast<double>(units[u].raw_bytes - h->tail_raw_bytes) / r.decode_bytes_per_s;
  }
  EXPECT_GT(want, 0);
  EXPECT_NEAR(reload, want, 1e-9 * want);
}

// Reads that the estimate hides behind compute still cost: between plans as fast and as much work,
// the one that reads less per token wins, even when streaming a layer would hold a little less.
TEST(ResidencyTest, AsFastPlansReadLessRatherThanHoldLess) {
  auto units = TinyLlamaUnits(true);
  for (UnitInfo& u : units) {
    u.compressed_bytes = u.packed_bytes + 4096;  // stored packed: entropy coding gained nothing
    u.packed_raw_bytes = u.raw_bytes;
    if (u.name != "layer") continue;
    AddHeads(u);
    for (HeadSplit& h : u.heads) h.tail_compressed_bytes -= 16384;  // a head + tail < the unit
  }
  Rates r;
  r.io_bytes_per_s = 1e12;  // reads hide behind compute
  r.packed_macs_per_s = 2 * r.compute_macs_per_s;
  Result<Plan> p = ChoosePlan(units, Fixed(), r, 4ull << 30, Policy::kAdaptive);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->count(Tier::kPacked), static_cast<int>(units.size())) << p->Summary();
  // The plan with one layer streamed: as fast by the estimate, as much work, fewer bytes.
  Plan streamed = *p;
  streamed.tiers[0] = Tier::kFlash;
  streamed.flash_head = 5;
  streamed.staging = 1;
  PlanBytes(units, Fixed(), streamed);
  EstimateSeconds(units, r, streamed);
  EXPECT_LT(streamed.total_bytes, p->total_bytes);
  EXPECT_NEAR(streamed.est_seconds_per_token, p->est_seconds_per_token,
              1e-3 * p->est_seconds_per_token);
  EXPECT_NEAR(streamed.est_cpu_seconds_per_token, p->est_cpu_seconds_per_token,
              1e-2 * p->est_cpu_seconds_per_token);
}

TEST(ResidencyTest, EverythingDecodedWhenItFits) {
  const auto units = TinyLlamaUnits();
  Result<Plan> p = ChoosePlan(units, Fixed(), Rates{}, 4ull << 30, Policy::kAdaptive);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->count(Tier::kDecoded), static_cast<int>(units.size()));
  EXPECT_EQ(p->slots, 0);
  EXPECT_EQ(p->decode_threads, 0);
}

}  // namespace
}  // namespace dcomp::runtime
