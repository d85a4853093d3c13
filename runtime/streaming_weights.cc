#include "runtime/streaming_weights.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "base/clock.h"
#include "base/mutex.h"
#include "base/packed_codes.h"
#include "base/page_buffer.h"
#include "engine/transformer.h"
#include "runtime/block_lookup.h"
#include "runtime/controller.h"
#include "runtime/internal/test_hooks.h"
#include "runtime/memory_stats.h"
#include "runtime/prefetcher.h"
#include "runtime/unit_decoder.h"
#include "runtime/unit_layout.h"

namespace dcomp::runtime {

namespace pb = storage::pb;

namespace {

// What a run without a budget may count on: the memory free now plus what the process already
// holds (`fixed`), within the cgroup's limit if there is one. Only the start-up compute probe uses
// it (it takes at most half of what is left above `fixed`).
uint64_t UnbudgetedCeiling(uint64_t fixed) {
  const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  uint64_t c = pages > 0 && page > 0
                   ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) + fixed
                   : std::numeric_limits<uint64_t>::max();
  if (const uint64_t limit = CgroupMemoryLimit(); limit != 0) c = std::min(c, limit);
  return c;
}

}  // namespace

struct StreamingWeights::Impl {
  // A unit's residency: its tier and the RAM it holds there (compute thread).
  struct Resident {
    Tier tier = Tier::kFlash;
    size_t head = 0;                 // kFlash: its first `head` matrices packed in `decoded`
    PageBuffer decoded, compressed;  // kDecoded and kPacked use `decoded`
    LayerWeights layer_view;         // kDecoded, kPacked
    LinearWeights head_view;
    InlineViews compressed_views;  // kCompressed, decoded inline
  };

  const storage::ContainerReader* reader = nullptr;
  RuntimeOptions opt;
  ThreadPool* pool = nullptr;
  int cores = 1;
  ModelLayout layout;
  FixedMemory fixed;
  std::unique_ptr<UnitDecoder> decoder;
  std::unique_ptr<BlockLookup> lookup;  // compute thread
  std::vector<Resident> resident;       // compute thread
  std::unique_ptr<Controller> controller;
  // Declared after everything its threads read: destroyed (and joined) first.
  std::unique_ptr<Prefetcher> prefetcher;

  Plan current;  // the plan in force, the compute thread's copy
  mutable Mutex plan_mu;
  Plan published GUARDED_BY(plan_mu);  // the same, for other threads

  // Compute thread, this pass: seconds and multiply-adds in resident units (and in units decoded
  // ahead), and in units decoded inline.
  size_t pass_tokens = 0;
  Clock::time_point held_since;
  double token_compute = 0, token_inline = 0, token_flash_hold = 0;
  uint64_t token_macs = 0, token_inline_macs = 0;

  Status Open(const DcmModelFile& file);
  void Account(const ProcMemory& before, int32_t context_length, const ModelConfig& config);
  Status LoadDecoded(int u);
  // Unit u's first `matrices` matrices (all by default) into its packed layout.
  Status LoadPacked(int u, size_t matrices = std::numeric_limits<size_t>::max());
  Status LoadCompressed(int u);
  Status ApplyPlan(Plan np);
  Status MaybeReplan();
  Status EndPass(size_t next_tokens);
};

StreamingWeights::~StreamingWeights() = default;

int32_t KvCachePositions(const RuntimeOptions& o, int32_t context_length) {
  if (o.kv_cache_tokens > 0) return o.kv_cache_tokens;
  return static_cast<int32_t>(
      std::min<int64_t>(static_cast<int64_t>(std::max(1, o.kv_cache_contexts)) * context_length,
                        std::numeric_limits<int32_t>::max()));
}

uint64_t PeakRssBytes() {
  Result<ProcMemory> m = ReadProcMemory();
  return m.ok() ? m->hwm : 0;
}

Result<std::unique_ptr<StreamingWeights>> StreamingWeights::Open(const DcmModelFile& file,
                                                                 const RuntimeOptions& options,
                                                                 ThreadPool* compute_pool) {
  auto w = std::unique_ptr<StreamingWeights>(new StreamingWeights());
  RETURN_IF_ERROR(w->Init(file, options, compute_pool));
  return w;
}

const std::vector<UnitInfo>& StreamingWeights::units() const { return impl_->layout.infos; }

// The memory that does not depend on the plan.
void StreamingWeights::Impl::Account(const ProcMemory& before, int32_t context_length,
                                     const ModelConfig& config) {
  FixedMemory& f = fixed;
  f.baseline = before.rss;
  f.vectors = layout.vector_bytes();
  const int32_t ctx = context_length == 0 ? config.context_length : context_length;
  const size_t vocab = static_cast<size_t>(config.vocab_size);
  f.kv_cache = KvCache::Bytes(config, KvCachePositions(opt, ctx), opt.kv_cache_type);
  f.activations = Transformer::MemoryBytes(config, ctx) - Transformer::KvCacheBytes(config, ctx);
  // Logits rows, one more, and each request's sampler candidates (8 bytes per id).
  const uint64_t batch = static_cast<uint64_t>(std::max(1, opt.max_batch));
  f.request =
      (std::max<uint64_t>(static_cast<uint64_t>(std::max(1, opt.max_logit_rows)), batch) + 1) *
          vocab * 4 +
      batch * vocab * 8;
  f.lookup = lookup->bytes();
  // Per core, a decode-pool worker (a zstd context of ~160 KiB and a row scratch) and a compute
  // thread decoding inline (the same, plus a block of padded rows, their row sums and their row
  // scales as f32).
  f.decoders =
      static_cast<uint64_t>(cores) * (2 * (RoundUpToPage(layout.max_raw_block) + (192u << 10)) +
                                      RoundUpToPage(layout.max_padded_block) +
                                      2 * RoundUpToPage(layout.max_block_rows * sizeof(int32_t)));
  // Thread stacks, the heap's own growth and page tables of the buffers: measured about 1 MiB on
  // x86-64; 2 MiB leaves room.
  f.margin = 2u << 20;
}

Status StreamingWeights::Init(const DcmModelFile& file, const RuntimeOptions& options,
                              ThreadPool* compute_pool) {
  impl_ = std::make_unique<Impl>();
  Impl& m = *impl_;
  m.reader = &file.reader();
  m.opt = options;
  m.pool = compute_pool;
  config_ = file.config();
  if (options.cores > 0) {
    m.cores = options.cores;
  } else {
    cpu_set_t set;
    m.cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  }
  m.cores = std::max(1, std::min(m.cores, compute_pool->num_threads()));

  // What the process holds before the runtime allocates: measured, after dropping the pages of
  // the mapping that parsing the manifest touched.
  m.reader->DropMappedPages();
  ASSIGN_OR_RETURN(ProcMemory before, ReadProcMemory());
  ASSIGN_OR_RETURN(m.layout, BuildModelLayout(file, config_));
  m.reader->DropMappedPages();
  globals_.final_norm = m.layout.final_norm;
  int8_bytes_ = m.layout.int8_bytes;
  m.decoder = std::make_unique<UnitDecoder>(m.reader, &m.layout);
  m.resident.resize(m.layout.units.size());

  const internal::TestHooks hooks =
      options.test_hooks != nullptr ? *options.test_hooks : internal::TestHooks{};
  auto open_reader = [&]() -> Result<std::unique_ptr<storage::BlockReader>> {
    ASSIGN_OR_RETURN(std::unique_ptr<storage::BlockReader> rd,
                     storage::OpenBlockReader(m.reader->path(), options.reader));
    if (hooks.wrap_reader) rd = hooks.wrap_reader(std::move(rd));
    return rd;
  };
  ASSIGN_OR_RETURN(std::unique_ptr<storage::BlockReader> io_reader, open_reader());
  ASSIGN_OR_RETURN(std::unique_ptr<storage::BlockReader> aux_reader, open_reader());
  ASSIGN_OR_RETURN(m.lookup, BlockLookup::Create(m.reader, std::move(aux_reader), m.layout));
  m.Account(before, options.context_length, config_);

  Rates rates;
  IoProbe probe;
  const uint64_t budget = options.budget.Resolve(int8_bytes_);
  if (hooks.rates != nullptr) {
    rates = *hooks.rates;
  } else {
    // Without a budget the probe borrows from what the machine (or the cgroup) has free.
    const uint64_t fixed = m.fixed.total();
    const uint64_t ceiling = budget != 0 ? budget : UnbudgetedCeiling(fixed);
    const uint64_t headroom = ceiling > fixed ? ceiling - fixed : 0;
    RETURN_IF_ERROR(Calibrate(*m.decoder, m.lookup.get(), static_cast<size_t>(config_.dim),
                              headroom, &rates, &probe));
  }
  rates.cores = m.cores;
  const ControllerOptions co{
      options.policy,
      {options.force_slots, options.force_compute_threads, options.force_decode_threads,
       options.force_decode, options.force_flash_head},
      options.adapt};
  m.controller = std::make_unique<Controller>(&m.layout.infos, m.fixed, co, budget, rates, probe);
  ASSIGN_OR_RETURN(Plan first, m.controller->FirstPlan());
  m.prefetcher = std::make_unique<Prefetcher>(m.decoder.get(), std::move(io_reader),
                                              m.controller.get(), m.cores);
  if (hooks.watch_pressure) m.controller->StartPressureMonitor();
  return m.ApplyPlan(std::move(first));
}

Status StreamingWeights::Impl::LoadDecoded(int u) {
  Resident& R = resident[static_cast<size_t>(u)];
  const UnitLayout& U = decoder->unit(u);
  ASSIGN_OR_RETURN(R.decoded, PageBuffer::Allocate(U.decoded_size, "a decoded unit"));
  for (const WorkBlock& w : U.work) {
    if (w.scale) {  // from the decoded copy: nothing to read
      RETURN_IF_ERROR(
          decoder->DecodeWork(U, w, nullptr, R.decoded.data(), lookup->decoder(), nullptr));
      continue;
    }
    Result<const uint8_t*> stored = lookup->ReadBlockPages(w.block);
    if (!stored.ok()) return decoder->BlockError(U, stored.status());
    // DecodeWork addresses the block relative to the unit range start.
    const uint8_t* range = *stored - (reader->block(w.block).offset() - U.range_begin);
    RETURN_IF_ERROR(
        decoder->DecodeWork(U, w, range, R.decoded.data(), lookup->decoder(), lookup->raw()));
  }
  lookup->reader()->DropCache(U.range_begin, U.range_end - U.range_begin);
  decoder->BuildViews(u, R.decoded.data(), &R.layer_view, &R.head_view);
  return Status::Ok();
}

Status StreamingWeights::Impl::LoadPacked(int u, size_t matrices) {
  Resident& R = resident[static_cast<size_t>(u)];
  const UnitLayout& U = decoder->unit(u);
  const bool whole = matrices >= U.tensors.size();
  ASSIGN_OR_RETURN(R.decoded,
                   PageBuffer::Allocate(whole ? U.packed_size : U.tensors[matrices].p_off,
                                        whole ? "a packed unit" : "a packed head"));
  std::vector<int8_t> q(layout.max_padded_block);  // one block of rows, decoded before packing
  std::vector<int32_t> sums(layout.max_block_rows);
  for (const WorkBlock& w : U.work) {
    if (static_cast<size_t>(w.t) >= matrices) continue;
    const uint8_t* range = nullptr;
    if (!w.scale) {
      Result<const uint8_t*> stored = lookup->ReadBlockPages(w.block);
      if (!stored.ok()) return decoder->BlockError(U, stored.status());
      range = *stored - (reader->block(w.block).offset() - U.range_begin);
    }
    RETURN_IF_ERROR(decoder->DecodeWorkPacked(U, w, range, R.decoded.data(), lookup->decoder(),
                                              lookup->raw(), q.data(), sums.data()));
  }
  lookup->reader()->DropCache(U.range_begin, U.range_end - U.range_begin);
  if (whole) decoder->BuildPackedViews(u, R.decoded.data(), &R.layer_view, &R.head_view);
  return Status::Ok();
}

Status StreamingWeights::Impl::LoadCompressed(int u) {
  Resident& R = resident[static_cast<size_t>(u)];
  const UnitLayout& U = decoder->unit(u);
  ASSIGN_OR_RETURN(R.compressed,
                   PageBuffer::Allocate(U.range_end - U.range_begin, "a compressed unit"));
  if (Status s = lookup->ReadRange(U.range_begin, U.range_end, R.compressed.data()); !s.ok()) {
    return decoder->BlockError(U, s);
  }
  // Checked once here: the products then read the blocks every token without checking again.
  if (Status s = decoder->CheckRange(u, R.compressed.data()); !s.ok()) {
    return decoder->BlockError(U, s);
  }
  decoder->BuildInlineViews(u, R.compressed.data(), &R.compressed_views, /*crc_checked=*/true);
  return Status::Ok();
}

// Compute thread, no unit held.
Status StreamingWeights::Impl::ApplyPlan(Plan np) {
  prefetcher->Drain();
  lookup->cached_block = -1;
  Status status = prefetcher->Allocate(0, 0, 0, 0);  // frees the pipeline's buffers
  if (np.decode != Decode::kInline) np.flash_head = 0;
  // The packed head a flash unit holds under np.
  auto head_of = [&](size_t u) -> size_t {
    return np.tiers[u] == Tier::kFlash && FlashHead(layout.infos[u], np.flash_head) != nullptr
               ? static_cast<size_t>(np.flash_head)
               : 0;
  };
  auto free_unit = [&](size_t u) {
    resident[u].decoded.Reset();
    resident[u].compressed.Reset();
    resident[u].tier = Tier::kFlash;
    resident[u].head = 0;
  };
  // Free before allocating: demotions first.
  for (size_t u = 0; u < resident.size(); ++u) {
    if (resident[u].tier != np.tiers[u] || resident[u].head != head_of(u)) free_unit(u);
  }
  for (size_t u = 0; u < resident.size() && status.ok(); ++u) {
    const size_t head = head_of(u);
    if (resident[u].tier == np.tiers[u] && resident[u].head == head) continue;
    const int iu = static_cast<int>(u);
    Status s = np.tiers[u] == Tier::kDecoded  ? LoadDecoded(iu)
               : np.tiers[u] == Tier::kPacked ? LoadPacked(iu)
               : np.tiers[u] == Tier::kFlash  ? LoadPacked(iu, head)
                                              : LoadCompressed(iu);
    if (s.ok()) {
      resident[u].tier = np.tiers[u];
      resident[u].head = head;
    } else {
      free_unit(u);
      status = s;
    }
  }
  for (size_t u = 0; u < resident.size(); ++u) np.tiers[u] = resident[u].tier;  // achieved
  // Every flash unit holds the plan's head, or (a load failed, or none splits) none does.
  bool held = false, missing = false;
  for (size_t u = 0; u < resident.size(); ++u) {
    if (resident[u].tier != Tier::kFlash) continue;
    held |= resident[u].head > 0;
    missing |= resident[u].head != head_of(u);
  }
  if (missing) {
    for (size_t u = 0; u < resident.size(); ++u) {
      if (resident[u].tier == Tier::kFlash) free_unit(u);
    }
  }
  if (missing || !held) np.flash_head = 0;
  PlanBytes(layout.infos, fixed, np);
  const bool ahead = np.decode == Decode::kAhead;
  // Units that go through the pipeline: decoding ahead, every unit not decoded; inline, flash
  // units only (compressed ones are decoded by the compute threads from RAM).
  auto piped = [&](const Resident& R) {
    return ahead ? !IsResident(R.tier) : R.tier == Tier::kFlash;
  };
  const bool streamed = std::any_of(resident.begin(), resident.end(), piped);
  if (streamed && ahead) {
    np.slots = std::max(np.slots, 1);
    np.decode_threads = std::max(np.decode_threads, 1);
  }
  if (np.count(Tier::kFlash) > 0) np.staging = std::max(np.staging, 1);
  if (status.ok()) {
    status = prefetcher->Allocate(np.slots, np.slot_bytes, np.staging, np.staging_bytes);
  }
  np.slots = prefetcher->slots();
  np.staging = prefetcher->staging();
  PlanBytes(layout.infos, fixed, np);
  pool->set_active_threads(np.compute_threads);
  std::vector<int> seq;
  std::vector<const uint8_t*> stored(resident.size(), nullptr);
  std::vector<Prefetcher::PackedHead> heads(resident.size());
  for (size_t u = 0; u < resident.size(); ++u) {
    if (!piped(resident[u])) continue;
    seq.push_back(static_cast<int>(u));
    if (resident[u].tier == Tier::kCompressed) stored[u] = resident[u].compressed.data();
    if (resident[u].head > 0) heads[u] = {resident[u].head, resident[u].decoded.data()};
  }
  prefetcher->Start(std::move(seq), std::move(stored), std::move(heads), np.decode,
                    np.decode_threads);
  current = np;
  MutexLock l(&plan_mu);
  published = std::move(np);
  return status;
}

Status StreamingWeights::Impl::MaybeReplan() {  // compute thread, at a token boundary
  std::optional<Controller::Replan> r = controller->TakeReplan();
  if (!r) return Status::Ok();
  ASSIGN_OR_RETURN(Plan np, controller->MakePlan(r->budget, r->rates));
  Status s = ApplyPlan(std::move(np));
  controller->NoteReplanned(r->why);
  return s;
}

// The pass that ran ends; the next, of `next_tokens` tokens, begins (compute thread).
Status StreamingWeights::Impl::EndPass(size_t next_tokens) {
  PassSample p;
  p.tokens = pass_tokens;
  decoder->TakeInlineCounters(&p.inline_bytes, &p.inline_seconds);
  p.resident_seconds = token_compute;
  p.inline_unit_seconds = token_inline;
  p.flash_hold_seconds = token_flash_hold;
  p.resident_macs = token_macs;
  p.inline_macs = token_inline_macs;
  const Prefetcher::Counters c = prefetcher->counters();
  p.flash_bytes = c.flash_bytes;
  p.wait_seconds = c.wait_seconds;
  controller->EndPass(p, current);
  token_compute = token_inline = token_flash_hold = 0;
  token_macs = token_inline_macs = 0;
  pass_tokens = next_tokens;
  return MaybeReplan();
}

Status StreamingWeights::BeginPass(size_t tokens) { return impl_->EndPass(tokens); }

Result<const LayerWeights*> StreamingWeights::AcquireLayer(int layer) {
  if (layer < 0 || layer >= config_.n_layers) {
    return OutOfRangeError("layer " + std::to_string(layer) + " out of range");
  }
  ASSIGN_OR_RETURN(const void* p, AcquireUnit(layer));
  return static_cast<const LayerWeights*>(p);
}

void StreamingWeights::ReleaseLayer(int layer) { ReleaseUnit(layer); }

Result<const LinearWeights*> StreamingWeights::AcquireOutput() {
  ASSIGN_OR_RETURN(const void* p, AcquireUnit(config_.n_layers));
  return static_cast<const LinearWeights*>(p);
}

void StreamingWeights::ReleaseOutput() { ReleaseUnit(config_.n_layers); }

Result<const void*> StreamingWeights::AcquireUnit(int u) {
  Impl& m = *impl_;
  Impl::Resident& R = m.resident[static_cast<size_t>(u)];
  const bool head = u == config_.n_layers;
  const bool inline_decode = m.current.decode == Decode::kInline;
  if (IsResident(R.tier)) {
    m.held_since = Clock::now();
    return head ? static_cast<const void*>(&R.head_view) : &R.layer_view;
  }
  if (R.tier == Tier::kCompressed && inline_decode) {
    m.held_since = Clock::now();
    return head ? static_cast<const void*>(&R.compressed_views.head) : &R.compressed_views.layer;
  }
  Result<const Prefetcher::Item*> acquired = m.prefetcher->Acquire(u);
  if (acquired.status().code() == StatusCode::kFailedPrecondition) {
    return UnavailableError("the runtime has no pipeline buffers (the last plan failed to apply: " +
                            m.controller->stats().last_replan + ")");
  }
  ASSIGN_OR_RETURN(const Prefetcher::Item* it, std::move(acquired));
  m.held_since = Clock::now();
  if (inline_decode) {
    return head ? static_cast<const void*>(&it->inline_views.head) : &it->inline_views.layer;
  }
  return head ? static_cast<const void*>(&it->head_view) : &it->layer_view;
}

void StreamingWeights::ReleaseUnit(int u) {
  Impl& m = *impl_;
  const double secs = Seconds(m.held_since, Clock::now());
  const UnitInfo& info = m.layout.infos[static_cast<size_t>(u)];
  const Tier tier = m.resident[static_cast<size_t>(u)].tier;
  uint64_t macs = info.macs_per_token;
  // A packed unit's multiply-adds count as PackedBytesRatio INT8 ones: the INT8 rate the same
  // memory bandwidth gives, so the compute rate measured on any mix of tiers stays an INT8 rate.
  // (Not PackedComputeRatio: its unpacking term is a function of the rate being measured, and
  // scaling by it would feed the measurement back into itself.) In cache, where packed products
  // are bound by their unpacking instead, this reads the INT8 rate low.
  if (tier == Tier::kPacked) {
    macs = static_cast<uint64_t>(static_cast<double>(macs) * PackedBytesRatio(info));
  }
  if (!IsResident(tier) && m.current.decode == Decode::kInline) {
    m.token_inline += secs;
    m.token_inline_macs += macs;
    if (tier == Tier::kFlash) m.token_flash_hold += secs;
  } else {
    m.token_compute += secs;
    m.token_macs += macs;
  }
  m.prefetcher->Release();
}

Status StreamingWeights::EmbedToken(int32_t token, float* out) {
  Impl& m = *impl_;
  const storage::ContainerReader& r = *m.reader;
  const size_t dim = static_cast<size_t>(config_.dim);
  const Impl::Resident& H = m.resident.back();
  // The token's row as stored (the rows of a token matrix may be stored out of order).
  const size_t row = m.layout.embd_row.empty() ? static_cast<size_t>(token)
                                               : m.layout.embd_row[static_cast<size_t>(token)];
  if (m.layout.tied && IsResident(H.tier) && H.head_view.packed.data == nullptr) {
    const kernels::Q8MatrixView& v = H.head_view.q8;
    DequantizeRow(v.q + row * v.stride, v.scale[row], dim, out);
    return Status::Ok();
  }
  if (m.layout.tied && IsResident(H.tier)) {  // packed: unpack the row
    const auto [v, vr] = PackedRowView(H.head_view, row);
    m.lookup->cached_block = -1;  // raw() is reused for the row
    int8_t* codes = reinterpret_cast<int8_t*>(m.lookup->raw());
    UnpackRows(v->data + vr * v->row_bytes, 1, dim, v->bits, codes, dim, v->levels);
    DequantizeRow(codes, v->scale[vr], dim, out);
    return Status::Ok();
  }
  const pb::Tensor& E = r.manifest().tensors(m.layout.embd_tensor);
  const size_t rpb = static_cast<size_t>(E.rows_per_block());
  const size_t k = row / rpb;
  const uint32_t block = E.first_block() + 1 + static_cast<uint32_t>(k);
  BlockLookup& lookup = *m.lookup;
  if (static_cast<int64_t>(block) != lookup.cached_block) {
    lookup.cached_block = -1;
    const pb::Block& b = r.block(block);
    const uint8_t* stored;
    if (m.layout.tied && H.tier == Tier::kCompressed) {
      stored = H.compressed.data() + (b.offset() - m.layout.units.back().range_begin);
    } else {
      Result<const uint8_t*> read = lookup.ReadBlockPages(block);
      if (!read.ok()) {
        return DataLossError("embedding lookup: reading " + r.DescribeBlock(block) + ": " +
                             read.status().message());
      }
      stored = *read;
    }
    RETURN_IF_ERROR(lookup.DecodeToRaw(block, stored));
    lookup.cached_block = block;
  }
  DequantizeRow(reinterpret_cast<const int8_t*>(lookup.raw()) + (row - k * rpb) * dim,
                m.layout.embd_scales[row], dim, out);
  return Status::Ok();
}

Status StreamingWeights::SetBudget(const BudgetSpec& budget, Plan* chosen) {
  return impl_->controller->SetBudget(budget.Resolve(int8_bytes_), chosen);
}

Status StreamingWeights::ApplyPendingPlan() { return impl_->MaybeReplan(); }

Plan StreamingWeights::plan() const {
  MutexLock l(&impl_->plan_mu);
  return impl_->published;
}

RuntimeStats StreamingWeights::stats() const {
  const Controller::Stats c = impl_->controller->stats();
  const Prefetcher::Counters p = impl_->prefetcher->counters();
  RuntimeStats s;
  s.tokens = c.tokens;
  s.flash_bytes = p.flash_bytes;
  s.io_seconds = p.io_seconds;
  s.decoded_bytes = c.decoded_bytes;
  s.decode_thread_seconds = c.decode_thread_seconds;
  s.compute_seconds = c.compute_seconds;
  s.wait_seconds = p.wait_seconds;
  s.replans = c.replans;
  s.last_replan = c.last_replan;
  s.errors = p.errors;
  s.pressure_some_avg10 = c.pressure_some_avg10;
  s.budget_factor = c.budget_factor;
  s.rates = c.rates;
  s.budget = c.budget;
  s.effective_budget = c.effective_budget == Controller::kNoLimit ? 0 : c.effective_budget;
  s.minimum_budget = c.minimum_budget;
  s.fixed = impl_->fixed;
  s.reader_backend = impl_->prefetcher->reader_backend();
  return s;
}

void StreamingWeights::ToJson(JsonWriter& j) const {
  const Plan p = plan();
  const RuntimeStats s = stats();
  j.BeginObjectIn("plan");
  p.ToJson(j);
  j.EndObject();
  j.BeginObjectIn("memory");
  j.Int("budget", static_cast<int64_t>(s.budget));
  j.Int("effective_budget", static_cast<int64_t>(s.effective_budget));
  j.Int("minimum_budget", static_cast<int64_t>(s.minimum_budget));
  j.Int("int8_model_bytes", static_cast<int64_t>(int8_bytes_));
  j.Int("baseline", static_cast<int64_t>(s.fixed.baseline));
  j.Int("vectors", static_cast<int64_t>(s.fixed.vectors));
  j.Int("kv_cache", static_cast<int64_t>(s.fixed.kv_cache));
  j.Int("activations", static_cast<int64_t>(s.fixed.activations));
  j.Int("request", static_cast<int64_t>(s.fixed.request));
  j.Int("lookup", static_cast<int64_t>(s.fixed.lookup));
  j.Int("decoders", static_cast<int64_t>(s.fixed.decoders));
  j.Int("margin", static_cast<int64_t>(s.fixed.margin));
  Result<ProcMemory> pm = ReadProcMemory();
  if (pm.ok()) {
    j.Int("rss", static_cast<int64_t>(pm->rss));
    j.Int("peak_rss", static_cast<int64_t>(pm->hwm));
  }
  j.EndObject();
  j.BeginObjectIn("runtime");
  j.String("reader", s.reader_backend);
  j.Int("passes", static_cast<int64_t>(s.tokens));
  j.Int("flash_bytes", static_cast<int64_t>(s.flash_bytes));
  j.Double("io_seconds", s.io_seconds);
  j.Int("decoded_bytes", static_cast<int64_t>(s.decoded_bytes));
  j.Double("decode_thread_seconds", s.decode_thread_seconds);
  j.Double("compute_seconds", s.compute_seconds);
  j.Double("wait_seconds", s.wait_seconds);
  j.Int("replans", static_cast<int64_t>(s.replans));
  j.String("last_replan", s.last_replan);
  j.Int("errors", static_cast<int64_t>(s.errors));
  j.Double("pressure_some_avg10", s.pressure_some_avg10);
  j.Double("budget_factor", s.budget_factor);
  j.Double("rate_compute_gmacs", s.rates.compute_macs_per_s / 1e9);
  j.Double("rate_packed_gmacs", s.rates.packed_macs_per_s / 1e9);
  j.Bool("rates_out_of_cache", s.rates.compute_out_of_cache);
  j.Double("rate_decode_mbps", s.rates.decode_bytes_per_s / 1e6);
  j.Double("rate_io_mbps", s.rates.io_bytes_per_s / 1e6);
  j.Bool("io_credits_idle", s.rates.io_credits_idle);
  j.Double("flash_hold_factor", s.rates.flash_hold_factor);
  j.EndObject();
}

}  // namespace dcomp::runtime
