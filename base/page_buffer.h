// PageBuffer: an anonymous, page-aligned memory region of its own (mmap/munmap), for the large
// buffers whose memory the runtime accounts exactly: decoded layers, compressed layers held in RAM,
// I/O staging. Unlike the heap, freeing one returns its pages to the kernel at once, so the
// process's resident set follows the plan. Allocate() populates every page (MAP_POPULATE, or
// MADV_POPULATE_WRITE after asking for transparent huge pages for buffers of four huge pages and
// more) and writes each once, so a buffer counts fully from the start and never faults later.
// Movable, not copyable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "base/status.h"

namespace dcomp {

inline constexpr size_t kPageSize = 4096;
inline constexpr size_t RoundUpToPage(size_t n) {
  return (n + kPageSize - 1) / kPageSize * kPageSize;
}

// The transparent huge page size large buffers start on and ask for (the kernel's hpage_pmd_size),
// or 0: THP absent or "never" in the kernel, or DCOMP_HUGE_PAGES=0. Read once.
size_t HugePageBytes();
// HugePageBytes() in words, for the start-up log.
std::string HugePageNote();

class PageBuffer {
 public:
  PageBuffer() = default;
  // `size` bytes rounded up to whole pages, zero-filled and resident. RESOURCE_EXHAUSTED when the
  // kernel refuses.
  static Result<PageBuffer> Allocate(size_t size, const char* what);
  PageBuffer(PageBuffer&& o) noexcept : data_(o.data_), size_(o.size_) {
    o.data_ = nullptr;
    o.size_ = 0;
  }
  PageBuffer& operator=(PageBuffer&& o) noexcept;
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;
  ~PageBuffer() { Reset(); }

  void Reset();
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }  // a multiple of kPageSize
  bool empty() const { return size_ == 0; }
  std::span<uint8_t> span() const { return {data_, size_}; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace dcomp
