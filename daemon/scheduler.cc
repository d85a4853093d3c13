#include "daemon/scheduler.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "base/bytes.h"

namespace dcomp::server {
namespace {

using Clock = std::chrono::steady_clock;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

}  // namespace

bool Job::Wait(std::chrono::milliseconds timeout, std::vector<Token>* out) {
  MutexLock l(&mu_);
  cv_.WaitFor(&mu_, timeout, [&] {
    mu_.AssertHeld();
    return !tokens_.empty() || ended_;
  });
  for (Token& t : tokens_) out->push_back(std::move(t));
  tokens_.clear();
  return ended_;
}

void Job::Cancel() {
  cancelled_.store(true, std::memory_order_release);
  if (Scheduler* s = scheduler_.load(std::memory_order_acquire)) s->Wake();
}

void Job::Push(int32_t id, std::string text) {
  {
    MutexLock l(&mu_);
    tokens_.push_back({id, std::move(text)});
  }
  cv_.NotifyAll();
}

void Job::End(Status s, GenerateResult r) {
  status_ = std::move(s);
  result_ = std::move(r);
  scheduler_.store(nullptr, std::memory_order_release);
  {
    MutexLock l(&mu_);
    ended_ = true;
  }
  cv_.NotifyAll();
}

Scheduler::Scheduler(Transformer* model, const Tokenizer* tok, Mutex* engine_mu, const Options& o)
    : model_(model),
      tok_(tok),
      engine_mu_(engine_mu),
      max_batch_(std::clamp(o.max_batch, 1, Transformer::kMaxBatch)),
      kv_pool_(o.kv_cache_bytes),
      kv_type_(o.kv_type),
      kv_note_(o.kv_note),
      on_idle_(o.on_idle),
      idle_tick_(o.idle_tick),
      queue_depth_(o.queue_depth) {
  last_step_ns_.store(NowNs());
  thread_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() {
  {
    MutexLock l(&mu_);
    stop_ = true;
  }
  cv_.NotifyAll();
  thread_.join();
  const Status down = UnavailableError("dcompd is shutting down");
  std::deque<std::shared_ptr<Job>> waiting;
  {
    MutexLock l(&mu_);
    waiting.swap(waiting_);
  }
  for (const std::shared_ptr<Job>& j : waiting) j->End(down, j->stream_.TakeResult());
  while (!running_.empty()) Finish(running_.front(), down);
}

Result<std::shared_ptr<Job>> Scheduler::Submit(const GenerateRequest& req) {
  ASSIGN_OR_RETURN(GenerationStream stream,
                   GenerationStream::Start(*tok_, req, model_->context_length()));
  const int32_t positions = stream.cache_tokens();
  const uint64_t need = KvCache::Bytes(model_->config(), positions, kv_type_);
  if (kv_pool_ != 0 && need > kv_pool_) {
    return ResourceExhaustedError(
        "the request needs " + FormatBytes(need) + " (" + std::to_string(need) +
        " bytes) of KV cache for " + std::to_string(positions) + " positions (" +
        std::to_string(stream.prompt_tokens()) + " prompt tokens + max_tokens " +
        std::to_string(req.max_tokens) + " - 1); the KV cache of all requests has " +
        FormatBytes(kv_pool_) + " (" + std::to_string(kv_pool_) + " bytes, " + kv_note_ +
        ") of the budget: lower max_tokens or shorten the prompt");
  }
  auto job = std::shared_ptr<Job>(new Job(std::move(stream), need, Clock::now()));
  job->scheduler_.store(this);
  {
    MutexLock l(&mu_);
    if (stop_) return UnavailableError("dcompd is shutting down");
    if (static_cast<int>(waiting_.size()) + running_count_ >= queue_depth_) {
      return ResourceExhaustedError("the queue is full (" + std::to_string(queue_depth_) +
                                    " requests waiting or running); retry later");
    }
    waiting_.push_back(job);
    wake_ = true;
  }
  cv_.NotifyAll();
  return job;
}

void Scheduler::set_queue_depth(int depth) {
  MutexLock l(&mu_);
  queue_depth_ = depth;
}

Scheduler::Stats Scheduler::stats() const {
  MutexLock l(&mu_);
  Stats s = counters_;
  s.waiting = static_cast<int>(waiting_.size());
  s.running = running_count_;
  s.queue_depth = queue_depth_;
  s.max_batch = max_batch_;
  s.kv_pool_bytes = kv_pool_;
  s.kv_used_bytes = kv_used_;
  return s;
}

bool Scheduler::Progressing(std::chrono::nanoseconds limit) const {
  {
    MutexLock l(&mu_);
    if (running_count_ == 0) return true;
  }
  return NowNs() - last_step_ns_.load() < limit.count();
}

void Scheduler::Wake() {
  {
    MutexLock l(&mu_);
    wake_ = true;
  }
  cv_.NotifyAll();
}

void Scheduler::Admit() {
  std::erase_if(waiting_, [](const std::shared_ptr<Job>& j) {
    if (!j->cancelled()) return false;
    j->End(CancelledError("cancelled while queued"), j->stream_.TakeResult());
    return true;
  });
  while (!waiting_.empty() && running_count_ < max_batch_) {
    const std::shared_ptr<Job>& j = waiting_.front();
    if (kv_pool_ != 0 && kv_used_ + j->kv_bytes_ > kv_pool_) break;  // FIFO: nobody overtakes
    j->cache_ = KvCache(model_->config(), j->stream_.cache_tokens(), kv_type_);
    j->queue_seconds_ = std::chrono::duration<double>(Clock::now() - j->submitted_).count();
    kv_used_ += j->kv_bytes_;
    ++running_count_;
    running_.push_back(j);
    waiting_.pop_front();
  }
}

void Scheduler::Loop() {
  for (;;) {
    bool ticked = false;  // idle for a whole tick
    {
      MutexLock l(&mu_);
      ticked = !cv_.WaitFor(&mu_, idle_tick_, [&] {
        mu_.AssertHeld();
        return stop_ || wake_ || running_count_ > 0;
      });
      if (stop_) return;
      wake_ = false;
      Admit();
    }
    if (!running_.empty()) {
      RunStep();
      if (!running_.empty()) continue;
    } else if (!ticked) {
      continue;
    }
    // The last running request has just ended, or the model stayed idle for a whole tick.
    if (on_idle_) {
      MutexLock e(engine_mu_);
      on_idle_();
    }
  }
}

void Scheduler::Finish(const std::shared_ptr<Job>& job, Status s) {
  std::shared_ptr<Job> keep = job;  // `job` may refer to the element erased below
  std::erase(running_, keep);
  keep->cache_ = KvCache();
  {
    MutexLock l(&mu_);
    kv_used_ -= keep->kv_bytes_;
    --running_count_;
  }
  keep->End(std::move(s), keep->stream_.TakeResult());
  Wake();  // its room may admit the next
}

void Scheduler::RunStep() {
  for (size_t i = running_.size(); i-- > 0;) {
    if (running_[i]->cancelled()) Finish(running_[i], CancelledError("cancelled"));
  }
  // Decode tokens first (one per request), then the prompts in chunks, in admission order, up to
  // the transformer's step size.
  std::vector<SequenceInput> in;
  std::vector<std::shared_ptr<Job>> who;
  size_t room = static_cast<size_t>(Transformer::kMaxBatch);
  for (int pass = 0; pass < 2; ++pass) {
    for (const std::shared_ptr<Job>& j : running_) {
      const bool decoding = j->stream_.pending() == 1;
      if (decoding != (pass == 0) || room == 0) continue;
      const std::span<const int32_t> next = j->stream_.NextInput(room);
      in.push_back({&j->cache_, next, j->stream_.WantsLogits(next.size())});
      who.push_back(j);
      room -= next.size();
    }
  }
  if (in.empty()) return;
  Status st = Status::Ok();
  {
    MutexLock e(engine_mu_);
    st = model_->Step(in, &logits_);
  }
  last_step_ns_.store(NowNs());
  {
    MutexLock l(&mu_);
    ++counters_.steps;
    counters_.step_tokens += static_cast<uint64_t>(Transformer::kMaxBatch) - room;
    counters_.step_requests += in.size();
  }
  if (!st.ok()) {
    spdlog::warn("a generation step failed; ending its {} requests: {}", who.size(), st.ToString());
    for (const std::shared_ptr<Job>& j : who) Finish(j, st);
    return;
  }
  const size_t vocab = static_cast<size_t>(model_->config().vocab_size);
  size_t row = 0;
  for (size_t k = 0; k < in.size(); ++k) {
    Job* j = who[k].get();
    std::span<float> l;
    if (in[k].logits) l = {logits_.data() + row++ * vocab, vocab};
    j->stream_.Advance(in[k].tokens.size(), l, [j](int32_t id, const std::string& text) {
      j->Push(id, text);
      return !j->cancelled();
    });
    if (j->stream_.done())
      Finish(who[k], j->cancelled() ? CancelledError("cancelled") : Status::Ok());
  }
}

}  // namespace dcomp::server
