#include "daemon/request_queue.h"

#include <algorithm>
#include <string>

namespace dcomp::server {

RequestQueue::Ticket::~Ticket() {
  if (q_ != nullptr) q_->Leave(id_);
}

Result<RequestQueue::Ticket> RequestQueue::Admit() {
  std::lock_guard<std::mutex> lock(mu_);
  if (static_cast<int>(queue_.size()) >= depth_) {
    return ResourceExhaustedError("the request queue is full (" + std::to_string(queue_.size()) +
                                  " requests waiting or running, queue_depth " +
                                  std::to_string(depth_) + "); retry later");
  }
  const uint64_t id = next_id_++;
  queue_.push_back(id);
  return Ticket(this, id);
}

Status RequestQueue::WaitTurn(const Ticket& t, const std::function<Status()>& stop,
                              std::chrono::milliseconds poll) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (!running_ && !queue_.empty() && queue_.front() == t.id_) {
      running_ = true;
      return Status::Ok();
    }
    lock.unlock();
    Status s = stop();
    lock.lock();
    if (!s.ok()) return s;
    cv_.wait_for(lock, poll);
  }
}

void RequestQueue::Leave(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = std::find(queue_.begin(), queue_.end(), id);
    if (it == queue_.end()) return;
    if (it == queue_.begin() && running_) running_ = false;
    queue_.erase(it);
  }
  cv_.notify_all();
}

void RequestQueue::set_depth(int depth) {
  std::lock_guard<std::mutex> lock(mu_);
  depth_ = depth;
}

int RequestQueue::depth() const {
  std::lock_guard<std::mutex> lock(mu_);
  return depth_;
}

int RequestQueue::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(queue_.size()) - (running_ ? 1 : 0);
}

int RequestQueue::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_ ? 1 : 0;
}

}  // namespace dcomp::server
