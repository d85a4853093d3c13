// Fault injection for the read path (tests, and the fault benchmarks of the runtime): a pread
// substitute that makes the system call misbehave on a schedule, and a BlockReader wrapper that
// corrupts data after a successful read. Thread-safe; the schedule can change between requests
// (a fault is "transient" when the schedule is cleared afterwards).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "storage/block_reader.h"

namespace dcomp::storage {

struct FaultSchedule {
  int64_t eintr_every = 0;        // every k-th call fails with EINTR first (0: never)
  size_t max_bytes_per_call = 0;  // short reads: at most this many bytes per call (0: no limit)
  int64_t eio_from_call = -1;     // calls [eio_from_call, eio_from_call + eio_calls) fail with EIO
  int64_t eio_calls = 0;
  // FaultInjectingReader: the first Read after set_schedule whose range covers this file offset
  // returns that byte with one bit flipped (once; -1: never). Aimed at an offset, not at the n-th
  // Read, so that the corrupted byte is one the reader's caller uses whatever it prefetched.
  int64_t flip_at_offset = -1;
};

class FaultInjector {
 public:
  void set_schedule(const FaultSchedule& s);
  FaultSchedule schedule() const;
  // Counters since construction.
  int64_t calls() const { return calls_.load(); }
  int64_t faults() const { return faults_.load(); }
  int64_t reads() const { return reads_.load(); }

  // A PreadFn (BlockReaderOptions::pread) bound to this injector (which must outlive it).
  PreadFn MakePread();
  // Wraps `inner` so that one Read covering `flip_at_offset` returns a flipped bit (CRC checks).
  std::unique_ptr<BlockReader> Wrap(std::unique_ptr<BlockReader> inner);

 private:
  friend class FaultInjectingReader;
  ssize_t Pread(int fd, void* buf, size_t size, off_t offset);
  mutable std::mutex mu_;
  FaultSchedule s_;
  std::atomic<int64_t> calls_{0}, faults_{0}, reads_{0};
  std::atomic<bool> flipped_{false};  // flip_at_offset has fired since set_schedule
};

}  // namespace dcomp::storage
