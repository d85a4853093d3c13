// Scheduler: dcompd's continuous batching. Admitted generation requests wait in a FIFO; up to
// `max_batch` of them run together, one Transformer::Step per token position for all of them (so
// every layer is read, and decoded when it is compressed, once per step for the whole batch),
// each with its own KV cache and sampler. A request joins at the next step (its prompt in chunks,
// beside the others' decode tokens) and leaves as soon as it ends or its client goes away.
//
// Admission is FIFO and by memory: a request holds its prompt plus max_tokens - 1 positions of KV
// cache (within the context) while it runs, from a pool of `kv_cache_bytes` that the runtime's
// plan reserves in the budget. The head of the queue waits until its cache fits (later requests
// do not overtake it, so long prompts are not starved); one that could not fit even alone is
// refused at Submit. Tokens are the same as alone whatever runs beside (the transformer's batch
// invariance), so scheduling never changes a request's output.
//
// Threading: one scheduler thread runs every forward step (holding `engine_mu` during each step,
// which the daemon also takes to apply a new plan between steps); Submit, Cancel and the stats
// may be called from any thread. A Job's results are read by the thread that submitted it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"
#include "engine/generate.h"
#include "engine/tokenizer.h"
#include "engine/transformer.h"

namespace dcomp::server {

// One request as the scheduler runs it, shared by the submitting thread (which reads its events)
// and the scheduler thread (which produces them).
class Job {
 public:
  struct Token {
    int32_t id;
    std::string text;
  };
  // Waits up to `timeout` for new tokens or the end, and moves the tokens produced so far into
  // `out`. Returns true when the job has ended (status() and result() are final then, and every
  // token has been handed out).
  bool Wait(std::chrono::milliseconds timeout, std::vector<Token>* out) EXCLUDES(mu_);
  // Asks the scheduler to drop the job: it leaves the queue, or the batch before the next step.
  void Cancel();
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }

  // Final once Wait returned true.
  const Status& status() const { return status_; }
  const GenerateResult& result() const { return result_; }
  double queue_seconds() const { return queue_seconds_; }  // submit to the first step
  uint64_t kv_bytes() const { return kv_bytes_; }

 private:
  friend class Scheduler;
  Job(GenerationStream stream, uint64_t kv_bytes, std::chrono::steady_clock::time_point t)
      : stream_(std::move(stream)), kv_bytes_(kv_bytes), submitted_(t) {}
  void Push(int32_t id, std::string text) EXCLUDES(mu_);
  void End(Status s, GenerateResult r) EXCLUDES(mu_);

  // The scheduler thread's.
  GenerationStream stream_;
  KvCache cache_;
  const uint64_t kv_bytes_;
  const std::chrono::steady_clock::time_point submitted_;
  double queue_seconds_ = 0;
  // Written by End() before `ended_` is set under mu_; read after Wait returned true.
  Status status_ = Status::Ok();
  GenerateResult result_;

  std::atomic<bool> cancelled_{false};
  std::atomic<class Scheduler*> scheduler_{nullptr};  // to wake on Cancel
  Mutex mu_;
  CondVar cv_;
  std::vector<Token> tokens_ GUARDED_BY(mu_);
  bool ended_ GUARDED_BY(mu_) = false;
};

class Scheduler {
 public:
  struct Options {
    int max_batch = 8;
    int queue_depth = 16;         // waiting + running at most
    uint64_t kv_cache_bytes = 0;  // the KV pool; 0: no limit
    KvType kv_type = KvType::kF32;
    std::string kv_note;  // how the pool was sized, for errors ("kv_cache_tokens 1024")
    // Called on the scheduler thread, with engine_mu held, when the last running request has
    // ended, and then every `idle_tick` while the model stays idle: the daemon applies a plan
    // that was deferred while it was busy, or one that memory pressure asked for meanwhile.
    std::function<void()> on_idle;
    std::chrono::milliseconds idle_tick{1000};
  };
  // `model`, `tok` and `engine_mu` must outlive the scheduler.
  Scheduler(Transformer* model, const Tokenizer* tok, Mutex* engine_mu, const Options& options);
  ~Scheduler();  // ends the jobs still queued or running with UNAVAILABLE
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Validates the request (GenerationStream::Start) and queues it: RESOURCE_EXHAUSTED when the
  // queue is full or its KV cache could never fit (naming the bytes it needs and the pool's).
  Result<std::shared_ptr<Job>> Submit(const GenerateRequest& req) EXCLUDES(mu_);
  void set_queue_depth(int depth) EXCLUDES(mu_);

  struct Stats {
    int waiting = 0, running = 0, queue_depth = 0, max_batch = 0;
    uint64_t kv_pool_bytes = 0, kv_used_bytes = 0;
    uint64_t steps = 0;          // forward steps run
    uint64_t step_tokens = 0;    // tokens in them
    uint64_t step_requests = 0;  // requests in them (batch sizes summed)
  };
  Stats stats() const EXCLUDES(mu_);
  // False when requests are running and no step ended within `limit` (the watchdog).
  bool Progressing(std::chrono::nanoseconds limit) const;

 private:
  friend class Job;
  void Loop() EXCLUDES(mu_);
  // Moves queue heads into the batch while they fit; drops cancelled jobs. Scheduler thread.
  void Admit() REQUIRES(mu_);
  // One forward step over the batch; ends the jobs that finished. Scheduler thread.
  void RunStep() EXCLUDES(mu_);
  void Finish(const std::shared_ptr<Job>& job, Status s) EXCLUDES(mu_);
  void Wake();

  Transformer* const model_;
  const Tokenizer* const tok_;
  Mutex* const engine_mu_;
  const int max_batch_;
  const uint64_t kv_pool_;
  const KvType kv_type_;
  const std::string kv_note_;
  const std::function<void()> on_idle_;
  const std::chrono::milliseconds idle_tick_;

  mutable Mutex mu_;
  CondVar cv_;
  std::deque<std::shared_ptr<Job>> waiting_ GUARDED_BY(mu_);
  int queue_depth_ GUARDED_BY(mu_);
  int running_count_ GUARDED_BY(mu_) = 0;
  uint64_t kv_used_ GUARDED_BY(mu_) = 0;
  bool stop_ GUARDED_BY(mu_) = false;
  bool wake_ GUARDED_BY(mu_) = false;
  Stats counters_ GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Job>> running_;  // scheduler thread
  std::vector<float> logits_;                  // scheduler thread
  std::atomic<int64_t> last_step_ns_{0};
  std::thread thread_;
};

}  // namespace dcomp::server
