#include "storage/fault_injection.h"

#include <unistd.h>

#include <cerrno>

namespace dcomp::storage {

void FaultInjector::set_schedule(const FaultSchedule& s) {
  std::lock_guard<std::mutex> l(mu_);
  s_ = s;
  flipped_.store(false);
}

FaultSchedule FaultInjector::schedule() const {
  std::lock_guard<std::mutex> l(mu_);
  return s_;
}

ssize_t FaultInjector::Pread(int fd, void* buf, size_t size, off_t offset) {
  const FaultSchedule s = schedule();
  const int64_t call = calls_.fetch_add(1);
  if (s.eintr_every > 0 && call % s.eintr_every == 0) {
    faults_.fetch_add(1);
    errno = EINTR;
    return -1;
  }
  if (s.eio_from_call >= 0 && call >= s.eio_from_call && call < s.eio_from_call + s.eio_calls) {
    faults_.fetch_add(1);
    errno = EIO;
    return -1;
  }
  if (s.max_bytes_per_call > 0 && size > s.max_bytes_per_call) {
    faults_.fetch_add(1);
    size = s.max_bytes_per_call;
  }
  return ::pread(fd, buf, size, offset);
}

PreadFn FaultInjector::MakePread() {
  return
      [this](int fd, void* buf, size_t size, off_t offset) { return Pread(fd, buf, size, offset); };
}

class FaultInjectingReader : public BlockReader {
 public:
  FaultInjectingReader(FaultInjector* f, std::unique_ptr<BlockReader> inner)
      : BlockReader(inner->path(), UniqueFd(), inner->file_size(), inner->direct()),
        f_(f),
        inner_(std::move(inner)) {}
  Status Read(uint64_t offset, size_t size, uint8_t* dst) override {
    RETURN_IF_ERROR(inner_->Read(offset, size, dst));
    f_->reads_.fetch_add(1);
    const int64_t at = f_->schedule().flip_at_offset;
    if (at >= 0 && static_cast<uint64_t>(at) >= offset &&
        static_cast<uint64_t>(at) - offset < size && !f_->flipped_.exchange(true)) {
      f_->faults_.fetch_add(1);
      dst[static_cast<uint64_t>(at) - offset] ^= 0x10;
    }
    return Status::Ok();
  }
  void DropCache(uint64_t offset, uint64_t size) override { inner_->DropCache(offset, size); }
  std::string backend() const override { return inner_->backend() + " + fault injection"; }

 private:
  FaultInjector* f_;
  std::unique_ptr<BlockReader> inner_;
};

std::unique_ptr<BlockReader> FaultInjector::Wrap(std::unique_ptr<BlockReader> inner) {
  return std::make_unique<FaultInjectingReader>(this, std::move(inner));
}

}  // namespace dcomp::storage
