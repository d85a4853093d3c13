// RAII wrappers for the C handles dcomp uses (file descriptors, read-only mappings) and small
// whole-file helpers. Each owner closes/unmaps exactly once; all types are movable, not copyable.
// A MappedFile's bytes stay valid for the object's lifetime; it is safe to read from many threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "base/status.h"

namespace dcomp {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Opens `path` read-only (O_CLOEXEC). Errors name the path.
Result<UniqueFd> OpenReadOnly(const std::string& path);

// A read-only, private memory mapping of a whole file.
class MappedFile {
 public:
  static Result<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }
  int fd() const { return fd_.get(); }

 private:
  MappedFile(std::string path, UniqueFd fd, const uint8_t* data, size_t size)
      : path_(std::move(path)), fd_(std::move(fd)), data_(data), size_(size) {}
  std::string path_;
  UniqueFd fd_;
  const uint8_t* data_;
  size_t size_;
};

// Reads a whole file; errors name the path.
Result<std::string> ReadFileToString(const std::string& path);
// Writes all of `data` to `fd` (retrying short writes and EINTR); errors name `path`.
Status WriteAll(int fd, std::span<const uint8_t> data, const std::string& path);
// Writes `data` to `path` atomically (temp file + fsync + rename).
Status WriteFileAtomically(const std::string& path, std::span<const uint8_t> data);

}  // namespace dcomp
