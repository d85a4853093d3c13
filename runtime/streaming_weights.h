// StreamingWeights: the streaming runtime's front, a WeightSource over a .dcm container that keeps
// the process under a RAM budget. Each unit (a layer's matrices, or the output matrix) is decoded
// (INT8 ready for the kernels), compressed in RAM, or on flash, per a Plan (runtime/planner.h).
// The front owns the residency of units and applies plans; the work is done by its components,
// each in its own file with its own state and lock:
//  - unit_layout: where each unit's blocks are and how it is laid out decoded (built at open);
//  - unit_decoder: decoding blocks into that layout, and the views handed to the transformer;
//  - prefetcher: reads the next flash units ahead of compute into staging buffers, and hands units
//    to be decoded ahead to the decode pool (decode_pool), in execution order;
//  - controller: calibration, rates, budget, memory pressure and re-planning decisions;
//  - block_lookup: the compute thread's own reads (embedding rows, units loaded into RAM tiers).
// Compressed units (in RAM or in staging) are decoded in one of two ways (Plan::decode):
//  - inline: the matrices are handed to the transformer as RowBlockSources; its compute threads
//    decode each block of rows into a per-thread scratch and multiply it at once. No decoded copy
//    of a unit exists, so the budget goes to tiers, and decoded rows are read from cache.
//  - ahead: the decode pool decodes whole units into a ring of decoded slots while compute runs on
//    the previous one.
// Plans are applied between tokens; memory is freed before it is allocated, so the resident set
// stays under max(old, new) plan while switching.
//
// Output never depends on the plan: decoding is exact and the kernels' results do not depend on
// thread counts. A read or CRC failure fails the acquiring call with DATA_LOSS naming the block;
// the runtime stays usable and retries the unit on the next request.
//
// Threading: AcquireLayer/ReleaseLayer/EmbedToken/AcquireOutput/BeginPass come from one compute
// thread (the transformer's); SetBudget, plan() and stats() may be called from any thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/json.h"
#include "base/thread_pool.h"
#include "engine/dcm_model.h"
#include "engine/transformer.h"
#include "engine/weights.h"
#include "runtime/planner.h"
#include "storage/block_reader.h"

namespace dcomp::runtime {
namespace internal {
struct TestHooks;
}  // namespace internal

struct RuntimeOptions {
  // What the whole process may hold: bytes (0: no limit) or a % of the INT8 model size.
  BudgetSpec budget;
  Policy policy = Policy::kAdaptive;
  int32_t context_length = 0;  // the transformer's (0 = the model's)
  // KV-cache positions held for all sequences together (the KV account): kv_cache_tokens, or
  // kv_cache_contexts times the context length when it is 0.
  int32_t kv_cache_tokens = 0;
  int32_t kv_cache_contexts = 1;
  KvType kv_cache_type = KvType::kF32;
  int32_t max_logit_rows = 1;  // logits rows one request holds (1: generation; eval: more)
  int32_t max_batch = 1;       // requests stepped together (each a logits row and a sampler)
  int cores = 0;               // 0: the CPUs this process may run on
  storage::BlockReaderOptions reader;
  bool adapt = true;  // re-plan from measurements
  // Fixed choices (tests of determinism): 0 leaves them to the policy.
  int force_slots = 0;
  int force_decode_threads = 0;
  int force_compute_threads = 0;
  int force_decode = 0;      // 1 + int(Decode): decode inline or ahead only
  int force_flash_head = 0;  // 1 + k: flash layers hold k matrices packed (Plan::flash_head)
  // Tests only (runtime/internal/test_hooks.h); null in production.
  std::shared_ptr<const internal::TestHooks> test_hooks;
};

struct RuntimeStats {
  uint64_t tokens = 0;               // passes over layer 0
  uint64_t flash_bytes = 0;          // compressed bytes read while streaming
  double io_seconds = 0;             // prefetcher time in reads
  uint64_t decoded_bytes = 0;        // raw bytes decoded while streaming
  double decode_thread_seconds = 0;  // decode pool time
  double compute_seconds = 0;        // between acquire and release
  double wait_seconds = 0;           // compute stalled on the pipeline
  uint64_t replans = 0;
  std::string last_replan;          // why
  uint64_t errors = 0;              // failed acquisitions (DATA_LOSS ...)
  double pressure_some_avg10 = -1;  // last PSI reading (-1: none)
  double budget_factor = 1;         // budget scaling applied under pressure
  Rates rates;                      // current estimates
  // 0: no limit. effective_budget is the budget the plan in force was made for (a new budget
  // takes effect at the next token boundary, or at once when the model is idle).
  uint64_t budget = 0, effective_budget = 0, minimum_budget = 0;
  FixedMemory fixed;
  std::string reader_backend;
};

class StreamingWeights : public WeightSource {
 public:
  // `file` must outlive the runtime. `compute_pool` is the transformer's pool (owned by the
  // caller); the runtime sets how many of its threads take part.
  static Result<std::unique_ptr<StreamingWeights>> Open(const DcmModelFile& file,
                                                        const RuntimeOptions& options,
                                                        ThreadPool* compute_pool);
  ~StreamingWeights() override;

  const ModelConfig& config() const override { return config_; }
  const GlobalWeights& globals() const override { return globals_; }
  Result<const LayerWeights*> AcquireLayer(int layer) override;
  void ReleaseLayer(int layer) override;
  Status EmbedToken(int32_t token, float* out) override;
  Result<const LinearWeights*> AcquireOutput() override;
  void ReleaseOutput() override;
  Status BeginPass(size_t tokens) override;

  // Sets a new budget (a percentage is of int8_bytes()). Fails with RESOURCE_EXHAUSTED, naming
  // the smallest budget that works, when none fits; otherwise the new plan (`chosen`, if not null)
  // is applied at the next token boundary (or by ApplyPendingPlan).
  Status SetBudget(const BudgetSpec& budget, Plan* chosen = nullptr);
  // Applies a pending re-plan now (the compute thread, between requests).
  Status ApplyPendingPlan();

  Plan plan() const;
  RuntimeStats stats() const;
  const std::vector<UnitInfo>& units() const;
  uint64_t int8_bytes() const { return int8_bytes_; }  // every matrix decoded
  void ToJson(JsonWriter& j) const;                    // plan + stats

 private:
  struct Impl;
  StreamingWeights() = default;
  Status Init(const DcmModelFile& file, const RuntimeOptions& options, ThreadPool* pool);
  Result<const void*> AcquireUnit(int unit);
  void ReleaseUnit(int unit);

  ModelConfig config_;
  GlobalWeights globals_;
  uint64_t int8_bytes_ = 0;
  std::unique_ptr<Impl> impl_;
};

// The KV-cache positions `o` holds for all sequences at a context of `context_length` tokens:
// o.kv_cache_tokens, or o.kv_cache_contexts contexts when it is 0.
int32_t KvCachePositions(const RuntimeOptions& o, int32_t context_length);

// Peak-resident-set helper for tools: "VmHWM" in bytes, 0 if unknown.
uint64_t PeakRssBytes();

}  // namespace dcomp::runtime
