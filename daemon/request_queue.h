// RequestQueue: the daemon's bounded FIFO of generation requests. At most `depth` requests are in
// the queue (waiting or running); one runs at a time (the model has one KV cache), in arrival
// order. Admission fails at once with RESOURCE_EXHAUSTED when the queue is full; a waiting request
// whose client cancels (or whose deadline passes, or the daemon drains) leaves the queue within one
// poll interval and frees its place. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>

#include "base/mutex.h"
#include "base/status.h"

namespace dcomp::server {

class RequestQueue {
 public:
  explicit RequestQueue(int depth) : depth_(depth) {}

  // A place in the queue; leaving scope gives the place (and the turn, if it has it) back.
  class Ticket {
   public:
    Ticket() = default;
    Ticket(Ticket&& o) noexcept : q_(o.q_), id_(o.id_) { o.q_ = nullptr; }
    Ticket& operator=(Ticket&&) = delete;
    ~Ticket();
    bool valid() const { return q_ != nullptr; }

   private:
    friend class RequestQueue;
    Ticket(RequestQueue* q, uint64_t id) : q_(q), id_(id) {}
    RequestQueue* q_ = nullptr;
    uint64_t id_ = 0;
  };

  // A place at the back, or RESOURCE_EXHAUSTED when `depth` requests are already queued.
  Result<Ticket> Admit() EXCLUDES(mu_);
  // Blocks until `t` is at the front and nothing runs (then it runs: OK), or until `stop()` returns
  // a non-OK status (polled every `poll`), which is returned.
  Status WaitTurn(const Ticket& t, const std::function<Status()>& stop,
                  std::chrono::milliseconds poll = std::chrono::milliseconds(10)) EXCLUDES(mu_);

  void set_depth(int depth) EXCLUDES(mu_);
  int depth() const EXCLUDES(mu_);
  int waiting() const EXCLUDES(mu_);  // admitted, not running
  int running() const EXCLUDES(mu_);  // 0 or 1

 private:
  void Leave(uint64_t id) EXCLUDES(mu_);
  // `id` is at the front and nothing runs: its turn to run.
  bool IsTurn(uint64_t id) const REQUIRES(mu_);

  mutable Mutex mu_;
  CondVar cv_;  // notified when a request leaves
  int depth_ GUARDED_BY(mu_);
  uint64_t next_id_ GUARDED_BY(mu_) = 1;
  std::deque<uint64_t> queue_ GUARDED_BY(mu_);  // front runs once `running_` is set
  bool running_ GUARDED_BY(mu_) = false;
};

}  // namespace dcomp::server
