// RequestQueue: the daemon's bounded FIFO of generation requests. At most `depth` requests are in
// the queue (waiting or running); one runs at a time (the model has one KV cache), in arrival
// order. Admission fails at once with RESOURCE_EXHAUSTED when the queue is full; a waiting request
// whose client cancels (or whose deadline passes, or the daemon drains) leaves the queue within one
// poll interval and frees its place. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>

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
  Result<Ticket> Admit();
  // Blocks until `t` is at the front and nothing runs (then it runs: OK), or until `stop()` returns
  // a non-OK status (polled every `poll`), which is returned.
  Status WaitTurn(const Ticket& t, const std::function<Status()>& stop,
                  std::chrono::milliseconds poll = std::chrono::milliseconds(10));

  void set_depth(int depth);
  int depth() const;
  int waiting() const;  // admitted, not running
  int running() const;  // 0 or 1

 private:
  void Leave(uint64_t id);

  mutable std::mutex mu_;
  std::condition_variable cv_;
  int depth_;
  uint64_t next_id_ = 1;
  std::deque<uint64_t> queue_;  // front runs once `running_` is set
  bool running_ = false;
};

}  // namespace dcomp::server
