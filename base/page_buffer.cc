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
  b.data_ = static_cast<uint8_t*>(p);
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
