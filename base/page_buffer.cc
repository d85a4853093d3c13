#include "base/page_buffer.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace dcomp {

Result<PageBuffer> PageBuffer::Allocate(size_t size, const char* what) {
  PageBuffer b;
  if (size == 0) return b;
  const size_t n = RoundUpToPage(size);
  void* p =
      mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) {
    return ResourceExhaustedError(std::string("cannot allocate ") + std::to_string(n) +
                                  " bytes for " + what + ": " + std::strerror(errno));
  }
  // Every page written once: on Linux they are already populated (no faults), but an emulator
  // (qemu-user) may take MAP_POPULATE as a no-op.
  auto* d = static_cast<uint8_t*>(p);
  for (size_t i = 0; i < n; i += kPageSize) d[i] = 0;
  b.data_ = d;
  b.size_ = n;
  return b;
}

PageBuffer& PageBuffer::operator=(PageBuffer&& o) noexcept {
  if (this != &o) {
    Reset();
    data_ = o.data_;
    size_ = o.size_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

void PageBuffer::Reset() {
  if (data_ != nullptr) munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace dcomp
