// BlockReader: reads byte ranges of one file into caller-owned buffers; the only way the streaming
// runtime touches flash.
//
// Read(offset, size, dst) reads exactly `size` bytes or fails; ReadBatch(requests) reads several
// ranges and by default loops over Read. Short reads are resumed and EINTR/EAGAIN retried; any
// other error (EIO, a file shorter than asked) fails the call with a message naming the path,
// offset and size, after every request already in flight has completed, so `dst` is never written
// after the call returns. Buffers belong to the caller and must stay valid during the call.
//
// Two back ends: pread (always built) and io_uring (one ring per reader, batched submissions,
// large requests split into chunks kept in flight together). OpenBlockReader(kAuto) takes io_uring
// and falls back to pread when the kernel or a sandbox refuses it. With `direct` (O_DIRECT) the
// page cache is bypassed; offsets and `dst` must then be 4096-aligned and `dst` must have room for
// `size` rounded up to 4096 (the tail past the end of the file is left as is).
//
// A reader is used by one thread at a time (the runtime's prefetcher owns one).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "base/file.h"
#include "base/status.h"

namespace dcomp::storage {

struct ReadRequest {
  uint64_t offset = 0;
  size_t size = 0;
  uint8_t* dst = nullptr;
};

class BlockReader {
 public:
  virtual ~BlockReader() = default;
  virtual Status Read(uint64_t offset, size_t size, uint8_t* dst) = 0;
  virtual Status ReadBatch(std::span<const ReadRequest> requests);
  // Advises the kernel to drop cached pages of [offset, offset + size) (after a streamed range is
  // consumed, so the page cache does not grow with the model). Best effort.
  virtual void DropCache(uint64_t offset, uint64_t size);
  // "io_uring", "pread", with " O_DIRECT" when direct, and why io_uring is not used if it is not.
  virtual std::string backend() const = 0;

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_size_; }
  bool direct() const { return direct_; }

 protected:
  BlockReader(std::string path, UniqueFd fd, uint64_t file_size, bool direct)
      : path_(std::move(path)), fd_(std::move(fd)), file_size_(file_size), direct_(direct) {}
  // Checks a request against the file size and the O_DIRECT alignment rules.
  Status CheckRequest(uint64_t offset, size_t size, const uint8_t* dst) const;
  Status ReadError(int err, uint64_t offset, size_t size) const;
  Status TruncatedError(uint64_t offset, size_t size, uint64_t got) const;

  std::string path_;
  UniqueFd fd_;
  uint64_t file_size_ = 0;
  bool direct_ = false;
};

// The system call a pread reader makes; tests substitute a fault-injecting one.
using PreadFn = std::function<ssize_t(int fd, void* buf, size_t size, off_t offset)>;

enum class ReaderBackend { kAuto, kUring, kPread };
Result<ReaderBackend> ParseReaderBackend(const std::string& s);  // auto | io_uring | pread

struct BlockReaderOptions {
  ReaderBackend backend = ReaderBackend::kAuto;
  bool direct = false;            // O_DIRECT
  unsigned queue_depth = 16;      // io_uring submission queue entries
  size_t chunk_bytes = 1u << 20;  // io_uring: requests are split into chunks of this size
  PreadFn pread;                  // pread back end: the system call (empty = ::pread)
};

// Opens `path` for reading. kUring fails (UNAVAILABLE) when io_uring cannot be set up; kAuto then
// uses pread, and backend() says why.
Result<std::unique_ptr<BlockReader>> OpenBlockReader(const std::string& path,
                                                     const BlockReaderOptions& options = {});

}  // namespace dcomp::storage
