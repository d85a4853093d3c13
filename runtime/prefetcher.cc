#include "runtime/prefetcher.h"

#include <algorithm>

#include "base/clock.h"

namespace dcomp::runtime {

Prefetcher::Prefetcher(const UnitDecoder* decoder, std::unique_ptr<storage::BlockReader> reader,
                       Controller* controller, int decode_threads)
    : decoder_(decoder),
      reader_(std::move(reader)),
      backend_(reader_->backend()),
      controller_(controller) {
  pool_ = std::make_unique<DecodePool>(
      decoder, decode_threads, decoder->layout().max_raw_block,
      [this](const std::shared_ptr<DecodePool::Job>& job) { OnDecoded(job); });
  thread_ = std::thread([this] { Loop(); });
}

Prefetcher::~Prefetcher() {
  {
    MutexLock l(&mu_);
    stop_ = true;
  }
  cv_.NotifyAll();
  thread_.join();
  pool_.reset();  // joins the workers while the ring they report to still exists
}

void Prefetcher::FreeItem(const std::shared_ptr<Item>& it) {  // the item is finished
  if (it->slot >= 0) free_slots_.push_back(it->slot);
  it->slot = -1;
  if (it->staging >= 0) free_staging_.push_back(it->staging);  // kInline: held until released
  it->staging = -1;
}

// Takes an item out of the ring: its buffers are freed now if it is finished, else when its last
// block completes.
void Prefetcher::Drop(const std::shared_ptr<Item>& it) {
  if (it->state == Item::kReady || it->state == Item::kFailed) {
    FreeItem(it);
  } else {
    it->cancelled = true;
  }
}

// kAhead: the last block is decoded; kInline: the read is done (or the item was dropped first).
void Prefetcher::Complete(const std::shared_ptr<Item>& it) {
  const bool ahead = decode_ == Decode::kAhead;
  if (ahead && it->staging >= 0) {  // decoded: the compressed bytes are no longer needed
    free_staging_.push_back(it->staging);
    it->staging = -1;
  }
  --in_flight_;
  if (it->cancelled) {  // dropped while read or decoded: nobody takes it, and it measured nothing
    FreeItem(it);
    cv_.NotifyAll();
    return;
  }
  if (it->error.ok() && !ahead) {
    it->state = Item::kReady;
    const PackedHead& h = HeadOf(it->unit);
    decoder_->BuildInlineViews(it->unit, it->stored, &it->inline_views, /*crc_checked=*/false,
                               h.matrices, h.base);
  } else if (it->error.ok()) {
    it->state = Item::kReady;
    decoder_->BuildViews(it->unit, it->dst, &it->layer_view, &it->head_view);
    controller_->OnUnitDecoded(decoder_->layout().infos[static_cast<size_t>(it->unit)].raw_bytes,
                               it->decode_seconds);
  } else {
    it->state = Item::kFailed;
  }
  cv_.NotifyAll();
}

void Prefetcher::OnDecoded(const std::shared_ptr<DecodePool::Job>& job) {
  MutexLock l(&mu_);
  Complete(std::static_pointer_cast<Item>(job));
}

const Prefetcher::PackedHead& Prefetcher::HeadOf(int u) const {
  static const PackedHead kNone;
  return static_cast<size_t>(u) < heads_.size() && decode_ == Decode::kInline
             ? heads_[static_cast<size_t>(u)]
             : kNone;
}

// Reads a flash unit into a staging buffer (mu_ released while reading).
void Prefetcher::ReadFlashUnit(const std::shared_ptr<Item>& it) {
  const UnitLayout& U = decoder_->unit(it->unit);
  it->staging = free_staging_.back();
  free_staging_.pop_back();
  uint8_t* buf = staging_[static_cast<size_t>(it->staging)].data();
  mu_.Unlock();
  const auto t0 = Clock::now();
  const size_t head = HeadOf(it->unit).matrices;  // the packed head is not read
  const uint64_t begin = U.tail_begin[head], n = U.tail_end[head] - begin;
  Status s = reader_->Read(begin, n, buf);
  if (!s.ok()) s = decoder_->BlockError(U, s);
  const double dt = Seconds(t0, Clock::now());
  reader_->DropCache(begin, n);
  if (s.ok()) controller_->OnRead(n, dt);
  mu_.Lock();
  if (s.ok()) {
    counters_.flash_bytes += n;
    counters_.io_seconds += dt;
  }
  it->stored = buf;
  it->error = s;
}

void Prefetcher::Loop() {
  MutexLock l(&mu_);
  for (;;) {
    cv_.Wait(&mu_, [&] {
      mu_.AssertHeld();
      if (stop_) return true;
      if (paused_ || seq_.empty()) return false;
      const bool room = decode_ == Decode::kAhead ? !free_slots_.empty() : !free_staging_.empty();
      return room && static_cast<int>(items_.size()) < max_items_;
    });
    if (stop_) return;
    const bool ahead = decode_ == Decode::kAhead;  // fixed while not paused
    const int u = seq_[next_pos_];
    next_pos_ = (next_pos_ + 1) % seq_.size();
    auto it = std::make_shared<Item>();
    it->unit = u;
    if (ahead) {
      it->slot = free_slots_.back();
      free_slots_.pop_back();
      it->dst = slots_[static_cast<size_t>(it->slot)].data();
    }
    items_.push_back(it);
    ++in_flight_;
    const uint8_t* in_ram = stored_[static_cast<size_t>(u)];
    if (in_ram == nullptr) {
      cv_.Wait(&mu_, [&] {
        mu_.AssertHeld();
        return stop_ || !free_staging_.empty();
      });
      if (stop_) return;
      if (it->cancelled) {  // dropped while waiting for a staging buffer: no read
        Complete(it);
        continue;
      }
      ReadFlashUnit(it);
      if (!it->error.ok() || it->cancelled || !ahead) {
        Complete(it);
        continue;
      }
    } else {  // a compressed unit's copy in RAM, checked when it was loaded
      it->stored = in_ram;
      it->crc_checked = true;
    }
    it->state = Item::kDecoding;
    l.Unlock();
    pool_->Submit(it);
    l.Lock();
  }
}

void Prefetcher::Drain() {
  MutexLock l(&mu_);
  paused_ = true;
  for (auto& it : items_) Drop(it);
  items_.clear();
  cv_.NotifyAll();
  cv_.Wait(&mu_, [&] {
    mu_.AssertHeld();
    return in_flight_ == 0;
  });
}

Status Prefetcher::Allocate(int slots, uint64_t slot_bytes, int staging, uint64_t staging_bytes) {
  slots_.clear();
  staging_.clear();
  for (int i = 0; i < slots; ++i) {
    ASSIGN_OR_RETURN(PageBuffer b, PageBuffer::Allocate(slot_bytes, "a decoded slot"));
    slots_.push_back(std::move(b));
  }
  for (int i = 0; i < staging; ++i) {
    ASSIGN_OR_RETURN(PageBuffer b, PageBuffer::Allocate(staging_bytes, "an I/O staging buffer"));
    staging_.push_back(std::move(b));
  }
  return Status::Ok();
}

void Prefetcher::Start(std::vector<int> seq, std::vector<const uint8_t*> stored,
                       std::vector<PackedHead> heads, Decode decode, int decode_threads) {
  pool_->SetActive(decode_threads);
  MutexLock l(&mu_);
  seq_ = std::move(seq);
  seq_pos_.assign(stored.size(), -1);
  for (size_t i = 0; i < seq_.size(); ++i)
    seq_pos_[static_cast<size_t>(seq_[i])] = static_cast<int>(i);
  stored_ = std::move(stored);
  heads_ = std::move(heads);
  decode_ = decode;
  const bool ahead = decode == Decode::kAhead;
  max_items_ = ahead ? slots() : staging();
  free_slots_.clear();
  for (int i = 0; i < slots(); ++i) free_slots_.push_back(i);
  free_staging_.clear();
  for (int i = 0; i < staging(); ++i) free_staging_.push_back(i);
  next_pos_ = 0;
  const bool flash = std::any_of(seq_.begin(), seq_.end(),
                                 [&](int u) { return stored_[static_cast<size_t>(u)] == nullptr; });
  paused_ = seq_.empty() || (ahead && slots_.empty()) || (flash && staging_.empty());
  cv_.NotifyAll();
}

Result<const Prefetcher::Item*> Prefetcher::Acquire(int u) {
  MutexLock l(&mu_);
  if (paused_) return FailedPreconditionError("the pipeline is paused");
  const auto t0 = Clock::now();
  for (;;) {
    while (!items_.empty() && items_.front()->unit != u) {
      Drop(items_.front());
      items_.pop_front();
      cv_.NotifyAll();
    }
    if (items_.empty()) {
      next_pos_ = static_cast<size_t>(seq_pos_[static_cast<size_t>(u)]);
      cv_.NotifyAll();
      cv_.Wait(&mu_, [&] {
        mu_.AssertHeld();
        return stop_ || !items_.empty();
      });
      if (stop_) return CancelledError("the runtime is shutting down");
      continue;
    }
    std::shared_ptr<Item> it = items_.front();
    cv_.Wait(&mu_, [&] {
      mu_.AssertHeld();
      return it->state == Item::kReady || it->state == Item::kFailed;
    });
    counters_.wait_seconds += Seconds(t0, Clock::now());
    if (it->state == Item::kFailed) {
      items_.pop_front();
      FreeItem(it);
      ++counters_.errors;
      cv_.NotifyAll();
      return it->error;
    }
    held_ = it;
    return it.get();
  }
}

void Prefetcher::Release() {
  if (held_ == nullptr) return;
  MutexLock l(&mu_);
  if (!items_.empty() && items_.front() == held_) items_.pop_front();
  FreeItem(held_);
  held_.reset();
  cv_.NotifyAll();
}

Prefetcher::Counters Prefetcher::counters() const {
  MutexLock l(&mu_);
  return counters_;
}

}  // namespace dcomp::runtime
