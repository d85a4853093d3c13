#include "base/page_buffer.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

namespace dcomp {

namespace {

constexpr size_t kHugePage = size_t{2} << 20;

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

Status AllocError(size_t n, const char* what) {
  return ResourceExhaustedError(std::string("cannot allocate ") + std::to_string(n) +
                                " bytes for " + what + ": " + std::strerror(errno));
}

// Buffers of at least a few huge pages start on a huge-page boundary and ask for transparent huge
// pages (the kernel's "madvise" mode gives them only to regions that ask): the weights stream
// through them every token, and 4 KiB pages cost a TLB miss (a two-level page walk under a
// hypervisor) every 64 cache lines. DCOMP_HUGE_PAGES=0 turns it off.
bool WantHugePages(size_t n) {
  static const bool on = [] {
    const char* e = std::getenv("DCOMP_HUGE_PAGES");
    return e == nullptr || std::strcmp(e, "0") != 0;
  }();
  return on && n >= 4 * kHugePage;
}

// Writes every page once. On Linux the pages are already populated (no faults); an emulator
// (qemu-user) may take MAP_POPULATE and the populate advice as no-ops.
void Touch(uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i += kPageSize) p[i] = 0;
}

}  // namespace

Result<PageBuffer> PageBuffer::Allocate(size_t size, const char* what) {
  PageBuffer b;
  if (size == 0) return b;
  const size_t n = RoundUpToPage(size);
  if (WantHugePages(n)) {
    // Reserve one huge page more, keep the aligned n bytes, populate them after the advice so
    // that the fault path can use huge pages (MAP_POPULATE would fault 4 KiB pages first).
    void* raw =
        mmap(nullptr, n + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return AllocError(n, what);
    const auto r = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t a = (r + kHugePage - 1) / kHugePage * kHugePage;
    if (a > r) munmap(raw, a - r);
    if (r + kHugePage > a) munmap(reinterpret_cast<void*>(a + n), r + kHugePage - a);
    auto* p = reinterpret_cast<uint8_t*>(a);
    madvise(p, n, MADV_HUGEPAGE);  // advice: without THP the pages stay 4 KiB
    // Populating reports a shortage as ENOMEM; EINVAL is a kernel before 5.14, whose pages
    // fault in as they are touched.
    if (madvise(p, n, MADV_POPULATE_WRITE) != 0 && errno != EINVAL) {
      const int err = errno;
      munmap(p, n);
      errno = err;
      return AllocError(n, what);
    }
    Touch(p, n);
    b.data_ = p;
    b.size_ = n;
    return b;
  }
  void* p =
      mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) return AllocError(n, what);
  Touch(static_cast<uint8_t*>(p), n);
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
