// Residency planning: where each streamable unit of a model lives (decoded, compressed in RAM, on
// flash), how many decoded slots and I/O staging buffers the pipeline has, and how many threads
// compute and decode; chosen to minimise the estimated time per token under a RAM budget.
//
// A unit is one transformer layer's matrices, or the output matrix (the last unit). The memory
// account is exact for everything the runtime allocates (tiers, slots, staging, decoder scratch)
// and for the transformer's KV cache and activations (by the same formula the transformer
// allocates with); what the process held before the runtime started (binary, libraries, manifest,
// tokenizer) is measured, not estimated. Pure functions, no I/O: the controller and the tests call
// them with measured or synthetic rates.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/json.h"
#include "base/status.h"

namespace dcomp::runtime {

// Where a unit lives: decoded (INT8 codes, as the kernels read them), packed (its codes at their
// packed width, which the kernels read directly; 8-bit tensors as INT8), compressed (its stored
// blocks in RAM, entropy-decoded every token), or on flash (read and decoded every token).
enum class Tier { kDecoded, kCompressed, kFlash, kPacked };
const char* TierName(Tier t);
// Decoded and packed units are held ready for the kernels: nothing is read or decoded per token.
inline bool IsResident(Tier t) { return t == Tier::kDecoded || t == Tier::kPacked; }

// A layer on flash that holds its first k matrices packed in RAM (Plan::flash_head) and reads
// only the rest every token.
struct HeadSplit {
  uint64_t head_packed_bytes = 0;      // the k matrices packed (as packed_bytes)
  uint64_t tail_compressed_bytes = 0;  // the 4 KiB-aligned file range of the others
  uint64_t tail_raw_bytes = 0;         // of raw_bytes, the others'
  uint64_t tail_packed_raw_bytes = 0;  // of packed_raw_bytes, the others'
  uint64_t head_macs = 0;              // of macs_per_token, the k matrices'
};

struct UnitInfo {
  std::string name;                // "layer 3", "output"
  uint64_t decoded_bytes = 0;      // INT8 codes (padded rows) + scales + row sums, as kernels use
  uint64_t compressed_bytes = 0;   // its 4 KiB-aligned file range
  uint64_t raw_bytes = 0;          // bytes the decoders produce (codes + scales)
  uint64_t macs_per_token = 0;     // multiply-adds of one decode step
  uint64_t packed_bytes = 0;       // codes at their packed widths (8-bit tensors: INT8 codes, f32
                                   // scales, row sums); narrow tensors read FixedMemory's scales
  uint64_t packed_raw_bytes = 0;   // of raw_bytes, those in blocks stored packed: decoding inline
                                   // multiplies them in place, with no decoding
  std::vector<HeadSplit> heads{};  // k = 1 .. matrices - 1 at heads[k - 1]; empty: the whole unit
                                   // is streamed or held (the output matrix)
};

// Unit u's split when a plan's flash units hold their first `flash_head` matrices packed, or null
// (flash_head 0, or the unit has no such split).
const HeadSplit* FlashHead(const UnitInfo& u, int flash_head);

// Memory that does not depend on the plan.
struct FixedMemory {
  uint64_t baseline = 0;     // resident before the runtime allocated anything (measured)
  uint64_t vectors = 0;      // norms, biases, every matrix's row scales (one byte a row when coded)
  uint64_t kv_cache = 0;     // the KV caches of every sequence (RuntimeOptions::kv_cache_tokens)
  uint64_t activations = 0;  // the transformer's scratch and RoPE table
  uint64_t request = 0;      // logits and sampler buffers of one request
  uint64_t lookup = 0;       // embedding-row lookup scratch (one stored + one raw block)
  uint64_t decoders = 0;     // every decode worker's codec context and scratch
  uint64_t margin = 0;       // heap growth, thread stacks, page tables
  uint64_t total() const {
    return baseline + vectors + kv_cache + activations + request + lookup + decoders + margin;
  }
};

// Measured speeds (per thread where it says so).
struct Rates {
  double compute_macs_per_s = 2e10;           // INT8 products, one compute thread (measured on
                                              // the model: at most the memory bandwidth)
  double compute_parallel_efficiency = 0.85;  // speed-up of n threads = 1 + (n - 1) * this
  double decode_bytes_per_s = 1e9;            // raw bytes per second, one decode thread
  double packed_macs_per_s = 0;  // packed products, one thread (0: as fast as the INT8 ones)
  // Both product rates were measured out of cache (a model larger than the last-level cache):
  // packed_macs_per_s then includes its bytes read. In cache it is its unpacking's speed alone.
  bool compute_out_of_cache = false;
  double io_bytes_per_s = 1e9;  // flash read throughput (sustained)
  // The device serves reads that follow idle time faster, as a token bucket does (a cgroup blkio
  // throttle, burst-credit volumes): time it spends idle is not lost, so a single staging buffer
  // does not serialise reads with the compute of the unit read before.
  bool io_credits_idle = false;
  // How long compute holds a flash unit's staging buffer (its layer's whole pass: products,
  // inline decoding, attention and the rest) over the estimate of its products and decoding
  // alone. With one staging buffer that hold delays the next read, so the estimate counts it at
  // this factor. Measured by passes that stream decoding inline (Controller::EndPass); until then
  // 2: a one-buffer plan that was wrongly preferred to two buffers lost 25-45% of its speed (its
  // hold measured 2-3.5x its estimate), one wrongly passed over loses one unit's reads.
  double flash_hold_factor = 2.0;
  int cores = 2;
};

// Unit u's packed bytes over its decoded bytes (1 when it has no packed form).
double PackedBytesRatio(const UnitInfo& u);
// Time of unit u's packed products over its INT8 ones: the longer of the unpacking-bound time
// (compute_macs_per_s / packed_macs_per_s) and the bytes read (PackedBytesRatio). Exact when the
// INT8 products are bound by memory bandwidth, as they are on a model larger than the cache; an
// upper bound otherwise.
double PackedComputeRatio(const UnitInfo& u, const Rates& r);

enum class Policy {
  kAdaptive,       // the controller: search tiers, slots, staging and threads
  kAllCompressed,  // every unit compressed in RAM
  kStreamAll,      // every unit read from flash for every token
  kStaticSplit,    // first units compressed in RAM as far as the budget allows, the rest streamed
  kAllDecoded,     // the resident engine: every unit decoded
  kAllPacked,      // every unit packed
};
const char* PolicyName(Policy p);
Result<Policy> ParsePolicy(const std::string& s);

// Where compressed units are decoded.
enum class Decode {
  kInline,  // block by block inside the matrix products, on the compute threads: no decoded copy
            // of a unit exists, decoded rows are read from cache (no slots, no decode pool)
  kAhead,   // by the decode pool into a ring of decoded slots, ahead of compute
};
const char* DecodeName(Decode d);
// "auto" -> 0 (free), "inline" / "ahead" -> 1 + int(Decode) (PlanConstraints::decode).
Result<int> ParseDecodeConstraint(const std::string& s);

struct Plan {
  Policy policy = Policy::kAdaptive;
  Decode decode = Decode::kAhead;
  std::vector<Tier> tiers;  // per unit
  // Flash layers hold their first flash_head matrices (LayerWeights order) packed in RAM and read
  // only the others every token (decoding inline only; 0: the whole layer is read).
  int flash_head = 0;
  int slots = 0;    // decoded buffers in the pipeline (prefetch depth = slots - 1 ahead)
  int staging = 0;  // compressed I/O buffers (with kInline: flash units read ahead)
  int compute_threads = 1;
  int decode_threads = 0;
  uint64_t slot_bytes = 0, staging_bytes = 0;
  uint64_t decoded_bytes = 0, packed_bytes = 0, compressed_bytes = 0;  // the RAM tiers
  uint64_t flash_head_bytes = 0;        // the packed heads the flash layers hold (flash_head)
  uint64_t flash_bytes_per_token = 0;   // compressed bytes read per token
  uint64_t decode_bytes_per_token = 0;  // raw bytes decoded per token
  uint64_t fixed_bytes = 0;
  uint64_t total_bytes = 0;  // everything: fixed + tiers + pipeline + decoder scratch
  double est_seconds_per_token = 0;
  // CPU seconds per token of products and decoding, as one thread would spend them. Between
  // plans of the same estimate (read-bound ones) the one with less is chosen: the estimate takes
  // reads and compute as overlapping perfectly, but a pass still puts compute on the critical path.
  double est_cpu_seconds_per_token = 0;
  // Decoding inline: the estimate of the seconds per token compute holds flash units, before
  // Rates::flash_hold_factor (what the controller compares the measured hold with).
  double est_flash_hold_seconds = 0;
  int count(Tier t) const;
  std::string Summary() const;  // one line
  void ToJson(JsonWriter& j) const;
};

// Bytes the plan needs.
uint64_t PlanBytes(const std::vector<UnitInfo>& units, const FixedMemory& fixed, Plan& plan);
// Estimated seconds per token of a plan (fills plan.est_seconds_per_token).
double EstimateSeconds(const std::vector<UnitInfo>& units, const Rates& rates, Plan& plan);

// Seconds that switching from `from` to `to` stalls generation for: the reads in flight into
// staging buffers are dropped and repeated, and every unit that changes to a RAM tier is read
// from flash again (and decoded, on one thread, when it becomes decoded).
double ReloadSeconds(const std::vector<UnitInfo>& units, const Rates& rates, const Plan& from,
                     const Plan& to);

// The smallest budget any plan fits in (everything on flash, one staging buffer, decoded inline).
uint64_t MinimumBudget(const std::vector<UnitInfo>& units, const FixedMemory& fixed);

// Choices fixed from outside (0: free). Fixing slots or decode threads implies Decode::kAhead.
struct PlanConstraints {
  int slots = 0;
  int compute_threads = 0;
  int decode_threads = 0;
  int decode = 0;      // 0: free; 1 + int(Decode): that one
  int flash_head = 0;  // 0: free; 1 + k: flash layers hold k matrices packed (Plan::flash_head)
};

// The fastest plan of `policy` within `budget`, or RESOURCE_EXHAUSTED naming the smallest budget
// that works (for kAllCompressed / kAllDecoded / kAllPacked: the budget that policy needs). The
// adaptive search holds its resident layers all decoded or all packed (not a mix of the two).
Result<Plan> ChoosePlan(const std::vector<UnitInfo>& units, const FixedMemory& fixed,
                        const Rates& rates, uint64_t budget, Policy policy,
                        const PlanConstraints& constraints = {});

}  // namespace dcomp::runtime
