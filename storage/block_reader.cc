#include "storage/block_reader.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace dcomp::storage {
namespace {
constexpr uint64_t kDirectAlign = 4096;
}

Status BlockReader::ReadBatch(std::span<const ReadRequest> requests) {
  for (const ReadRequest& r : requests) RETURN_IF_ERROR(Read(r.offset, r.size, r.dst));
  return Status::Ok();
}

void BlockReader::DropCache(uint64_t offset, uint64_t size) {
  if (!direct_) {
    posix_fadvise(fd_.get(), static_cast<off_t>(offset), static_cast<off_t>(size),
                  POSIX_FADV_DONTNEED);
  }
}

Status BlockReader::CheckRequest(uint64_t offset, size_t size, const uint8_t* dst) const {
  if (offset > file_size_ || size > file_size_ - offset) {
    return TruncatedError(offset, size, offset > file_size_ ? 0 : file_size_ - offset);
  }
  if (direct_ && (offset % kDirectAlign != 0 || reinterpret_cast<uintptr_t>(dst) % kDirectAlign)) {
    return InvalidArgumentError(path_ + ": O_DIRECT read at offset " + std::to_string(offset) +
                                " needs 4096-aligned offsets and buffers");
  }
  return Status::Ok();
}

Status BlockReader::ReadError(int err, uint64_t offset, size_t size) const {
  return ErrnoToStatus(err, path_ + ": read of " + std::to_string(size) + " bytes at offset " +
                                std::to_string(offset));
}

Status BlockReader::TruncatedError(uint64_t offset, size_t size, uint64_t got) const {
  return DataLossError(path_ + ": read of " + std::to_string(size) + " bytes at offset " +
                       std::to_string(offset) + " got only " + std::to_string(got) +
                       " (file truncated?)");
}

namespace {

// Bytes actually requested from the kernel for `size` bytes at `offset`.
size_t IoSize(bool direct, size_t size) {
  return direct ? (size + kDirectAlign - 1) / kDirectAlign * kDirectAlign : size;
}

class PreadReader : public BlockReader {
 public:
  PreadReader(std::string path, UniqueFd fd, uint64_t file_size, bool direct, PreadFn fn,
              std::string why)
      : BlockReader(std::move(path), std::move(fd), file_size, direct),
        pread_(std::move(fn)),
        why_(std::move(why)) {}

  Status Read(uint64_t offset, size_t size, uint8_t* dst) override {
    RETURN_IF_ERROR(CheckRequest(offset, size, dst));
    const size_t want = IoSize(direct_, size);
    size_t done = 0;
    int retries = 0;
    while (done < size) {
      const ssize_t n =
          pread_ ? pread_(fd_.get(), dst + done, want - done, static_cast<off_t>(offset + done))
                 : ::pread(fd_.get(), dst + done, want - done, static_cast<off_t>(offset + done));
      if (n < 0) {
        if ((errno == EINTR || errno == EAGAIN) && ++retries < 1000) continue;
        return ReadError(errno, offset, size);
      }
      if (n == 0) return TruncatedError(offset, size, done);
      done += static_cast<size_t>(n);
      // O_DIRECT resumes only at aligned positions; a short direct read is rare (signals): redo
      // it from the last aligned position.
      if (direct_ && done < size && done % kDirectAlign != 0) done -= done % kDirectAlign;
    }
    return Status::Ok();
  }

  std::string backend() const override {
    return std::string("pread") + (direct_ ? " O_DIRECT" : "") + why_;
  }

 private:
  PreadFn pread_;
  std::string why_;
};

class UringReader : public BlockReader {
 public:
  static Result<std::unique_ptr<UringReader>> Create(std::string path, UniqueFd fd,
                                                     uint64_t file_size, bool direct,
                                                     const BlockReaderOptions& o) {
    auto r = std::unique_ptr<UringReader>(
        new UringReader(std::move(path), std::move(fd), file_size, direct));
    r->depth_ = std::max(1u, o.queue_depth);
    r->chunk_ = std::max<size_t>(kDirectAlign, o.chunk_bytes / kDirectAlign * kDirectAlign);
    const int rc = io_uring_queue_init(r->depth_, &r->ring_, 0);
    if (rc < 0) return ErrnoToStatus(-rc, "io_uring_queue_init");
    r->ring_ok_ = true;
    return r;
  }
  ~UringReader() override {
    if (ring_ok_) io_uring_queue_exit(&ring_);
  }

  Status Read(uint64_t offset, size_t size, uint8_t* dst) override {
    const ReadRequest r{offset, size, dst};
    return ReadBatch({&r, 1});
  }

  Status ReadBatch(std::span<const ReadRequest> requests) override {
    // Split into chunks; each chunk is one SQE, resubmitted for its remainder on a short read.
    struct Chunk {
      uint64_t offset;
      size_t size;  // bytes wanted from the file
      uint8_t* dst;
      size_t done = 0;
      int retries = 0;
    };
    std::vector<Chunk> chunks;
    for (const ReadRequest& r : requests) {
      RETURN_IF_ERROR(CheckRequest(r.offset, r.size, r.dst));
      for (size_t off = 0; off < r.size; off += chunk_) {
        chunks.push_back({r.offset + off, std::min(chunk_, r.size - off), r.dst + off});
      }
    }
    Status status = Status::Ok();
    size_t next = 0, in_flight = 0;
    std::vector<size_t> retry;  // chunks to resubmit
    auto submit = [&](size_t i) {
      Chunk& c = chunks[i];
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      const size_t want = IoSize(direct_, c.size) - c.done;
      io_uring_prep_read(sqe, fd_.get(), c.dst + c.done, static_cast<unsigned>(want),
                         c.offset + c.done);
      io_uring_sqe_set_data64(sqe, i);
      ++in_flight;
    };
    while (next < chunks.size() || in_flight > 0 || !retry.empty()) {
      // Fill the queue (not after an error: only drain what is in flight).
      while (status.ok() && in_flight < depth_ && (!retry.empty() || next < chunks.size())) {
        if (!retry.empty()) {
          submit(retry.back());
          retry.pop_back();
        } else {
          submit(next++);
        }
      }
      if (in_flight == 0) break;
      int rc = io_uring_submit_and_wait(&ring_, 1);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        // The ring itself failed: nothing more completes reliably. Wait out what is in flight.
        if (status.ok()) status = ErrnoToStatus(-rc, path_ + ": io_uring_submit");
      }
      io_uring_cqe* cqe = nullptr;
      while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
        const size_t i = static_cast<size_t>(io_uring_cqe_get_data64(cqe));
        const int res = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
        --in_flight;
        Chunk& c = chunks[i];
        if (res < 0) {
          if ((res == -EINTR || res == -EAGAIN) && ++c.retries < 1000) {
            retry.push_back(i);
          } else if (status.ok()) {
            status = ReadError(-res, c.offset, c.size);
          }
          continue;
        }
        if (res == 0 && c.done < c.size) {
          if (status.ok()) status = TruncatedError(c.offset, c.size, c.done);
          continue;
        }
        c.done += static_cast<size_t>(res);
        if (c.done < c.size) {
          if (direct_ && c.done % kDirectAlign != 0) c.done -= c.done % kDirectAlign;
          retry.push_back(i);
        }
      }
      if (!status.ok()) retry.clear();
    }
    return status;
  }

  std::string backend() const override {
    return std::string("io_uring") + (direct_ ? " O_DIRECT" : "");
  }

 private:
  UringReader(std::string path, UniqueFd fd, uint64_t file_size, bool direct)
      : BlockReader(std::move(path), std::move(fd), file_size, direct) {}
  io_uring ring_{};
  bool ring_ok_ = false;
  unsigned depth_ = 16;
  size_t chunk_ = 1u << 20;
};

}  // namespace

Result<ReaderBackend> ParseReaderBackend(const std::string& s) {
  if (s == "auto") return ReaderBackend::kAuto;
  if (s == "io_uring") return ReaderBackend::kUring;
  if (s == "pread") return ReaderBackend::kPread;
  return InvalidArgumentError("reader '" + s + "': expected auto, io_uring or pread");
}

Result<std::unique_ptr<BlockReader>> OpenBlockReader(const std::string& path,
                                                     const BlockReaderOptions& o) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (o.direct ? O_DIRECT : 0));
  if (fd < 0) return ErrnoToStatus(errno, "open " + path + (o.direct ? " (O_DIRECT)" : ""));
  UniqueFd ufd(fd);
  struct stat st {};
  if (fstat(fd, &st) != 0) return ErrnoToStatus(errno, "stat " + path);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  std::string why;
  if (o.backend != ReaderBackend::kPread && !o.pread) {
    UniqueFd dup_fd(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!dup_fd.valid()) return ErrnoToStatus(errno, "dup " + path);
    auto r = UringReader::Create(path, std::move(dup_fd), size, o.direct, o);
    if (r.ok()) return std::unique_ptr<BlockReader>(std::move(r).value());
    if (o.backend == ReaderBackend::kUring) {
      return UnavailableError(path + ": io_uring: " + r.status().message());
    }
    why = " (io_uring unavailable: " + r.status().message() + ")";
  }
  return std::unique_ptr<BlockReader>(
      new PreadReader(path, std::move(ufd), size, o.direct, o.pread, why));
}

}  // namespace dcomp::storage
