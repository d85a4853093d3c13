#include "daemon/request_queue.h"

#include <algorithm>
#include <string>

namespace dcomp::server {

RequestQueue::Ticket::~Ticket() {
  if (q_ != nullptr) q_->Leave(id_);
}

Result<RequestQueue::Ticket> RequestQueue::Admit() {
  MutexLock lock(&mu_);
  if (static_cast<int>(queue_.size()) >= depth_) {
    return ResourceExhaustedError("the request queue is full (" + std::to_string(queue_.size()) +
                                  " requests waiting or running, queue_depth " +
                                  std::to_string(depth_) + "); retry later");
  }
  const uint64_t id = next_id_++;
  queue_.push_back(id);
  return Ticket(this, id);
}

bool RequestQueue::IsTurn(uint64_t id) const {
  return !running_ && !queue_.empty() && queue_.front() == id;
}

Status RequestQueue::WaitTurn(const Ticket& t, const std::function<Status()>& stop,
                              std::chrono::milliseconds poll) {
  MutexLock lock(&mu_);
  for (;;) {
    if (IsTurn(t.id_)) {
      running_ = true;
      return Status::Ok();
    }
    lock.Unlock();
    Status s = stop();
    lock.Lock();
    if (!s.ok()) return s;
    // Until its turn comes (a Leave notifies) or `poll` passes: then `stop` is polled again.
    cv_.WaitFor(&mu_, poll, [&] {
      mu_.AssertHeld();
      return IsTurn(t.id_);
    });
  }
}

void RequestQueue::Leave(uint64_t id) {
  {
    MutexLock lock(&mu_);
    auto it = std::find(queue_.begin(), queue_.end(), id);
    if (it == queue_.end()) return;
    if (it == queue_.begin() && running_) running_ = false;
    queue_.erase(it);
  }
  cv_.NotifyAll();
}

void RequestQueue::set_depth(int depth) {
  MutexLock lock(&mu_);
  depth_ = depth;
}

int RequestQueue::depth() const {
  MutexLock lock(&mu_);
  return depth_;
}

int RequestQueue::waiting() const {
  MutexLock lock(&mu_);
  return static_cast<int>(queue_.size()) - (running_ ? 1 : 0);
}

int RequestQueue::running() const {
  MutexLock lock(&mu_);
  return running_ ? 1 : 0;
}

}  // namespace dcomp::server
