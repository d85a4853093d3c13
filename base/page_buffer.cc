#include "base/page_buffer.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace dcomp {

namespace {

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

Status AllocError(size_t n, const char* what) {
  return ResourceExhaustedError(std::string("cannot allocate ") + std::to_string(n) +
                                " bytes for " + what + ": " + std::strerror(errno));
}

struct HugePages {
  size_t size = 0;
  std::string note;
};

// What the kernel offers: transparent huge pages of hpage_pmd_size bytes (2 MiB with 4 KiB base
// pages, 32 MiB with 16 KiB, 512 MiB with 64 KiB) to regions that ask, unless its mode is "never".
HugePages ProbeHugePages() {
  HugePages h;
  const char* e = std::getenv("DCOMP_HUGE_PAGES");
  if (e != nullptr && std::strcmp(e, "0") == 0) {
    h.note = "off (DCOMP_HUGE_PAGES=0)";
    return h;
  }
  const std::string dir = "/sys/kernel/mm/transparent_hugepage/";
  std::ifstream enabled(dir + "enabled");
  std::string mode;
  std::getline(enabled, mode);
  if (mode.empty() || mode.find("[never]") != std::string::npos) {
    h.note = mode.empty() ? "off (no transparent huge pages in this kernel)"
                          : "off (transparent huge pages: never)";
    return h;
  }
  std::ifstream pmd(dir + "hpage_pmd_size");
  size_t v = 0;
  pmd >> v;
  if (!pmd || v < 2 * kPageSize || (v & (v - 1)) != 0) {
    h.note = "off (" + dir + "hpage_pmd_size unreadable)";
    return h;
  }
  h.size = v;
  h.note = std::to_string(v >> 10) + " KiB for buffers of " + std::to_string((4 * v) >> 20) +
           " MiB and more";
  return h;
}

const HugePages& TheHugePages() {
  static const HugePages h = ProbeHugePages();
  return h;
}

// Writes every page once: on Linux they are already populated (no faults), but an emulator
// (qemu-user) may take MAP_POPULATE and the populate advice as no-ops.
void Touch(uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i += kPageSize) p[i] = 0;
}

}  // namespace

size_t HugePageBytes() { return TheHugePages().size; }
std::string HugePageNote() { return TheHugePages().note; }

Result<PageBuffer> PageBuffer::Allocate(size_t size, const char* what) {
  PageBuffer b;
  if (size == 0) return b;
  const size_t n = RoundUpToPage(size);
  const size_t huge = HugePageBytes();
  if (huge != 0 && n >= 4 * huge) {
    // The weights stream through the large buffers every token; with base pages every 64 cache
    // lines cost a TLB miss (a two-level page walk under a hypervisor). Reserve one huge page
    // more, keep n bytes from a huge-page boundary, ask for huge pages, then populate (MAP_POPULATE
    // would fault base pages in before the advice).
    void* raw = mmap(nullptr, n + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return AllocError(n, what);
    const auto r = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t a = (r + huge - 1) / huge * huge;
    if (a > r) munmap(raw, a - r);
    if (r + huge > a) munmap(reinterpret_cast<void*>(a + n), r + huge - a);
    auto* d = reinterpret_cast<uint8_t*>(a);
    madvise(d, n, MADV_HUGEPAGE);  // advice: where it is refused the pages stay small
    // A shortage is ENOMEM; EINVAL is a kernel before 5.14, whose pages fault in when touched.
    if (madvise(d, n, MADV_POPULATE_WRITE) != 0 && errno != EINVAL) {
      const int err = errno;
      munmap(d, n);
      errno = err;
      return AllocError(n, what);
    }
    Touch(d, n);
    b.data_ = d;
    b.size_ = n;
    return b;
  }
  void* p =
      mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) return AllocError(n, what);
  auto* d = static_cast<uint8_t*>(p);
  Touch(d, n);
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
