// PageBuffer: whole pages, zero-filled and resident from the start (so the runtime's account of
// its memory holds from the allocation on), also under qemu-user.
#include "base/page_buffer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>

namespace dcomp {
namespace {

// The process's resident set in bytes (/proc/self/statm; under qemu-user, the emulator's, which
// holds the guest's pages).
size_t RssBytes() {
  std::ifstream f("/proc/self/statm");
  size_t total = 0, resident = 0;
  f >> total >> resident;
  return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

TEST(PageBufferTest, WholePagesZeroFilledAndResident) {
  for (size_t size : {size_t{1}, size_t{4097}, size_t{3} << 20, (size_t{16} << 20) + 12345}) {
    const size_t before = RssBytes();
    Result<PageBuffer> b = PageBuffer::Allocate(size, "test");
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    const size_t grown = RssBytes() - before;
    EXPECT_EQ(b->size(), RoundUpToPage(size));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data()) % kPageSize, 0u);
    if (size >= (size_t{1} << 20)) {  // resident before any access (less 256 KiB of slack)
      EXPECT_GE(grown + (size_t{256} << 10), b->size()) << size;
    }
    bool zero = true;
    for (size_t i = 0; i < b->size(); i += 997) zero &= b->data()[i] == 0;
    EXPECT_TRUE(zero) << size;
    b->data()[b->size() - 1] = 1;  // writable to the last byte
  }
}

// Buffers of four huge pages and more start on a huge-page boundary (when the kernel offers
// transparent huge pages; the note says which) and are resident and zero-filled like the others.
TEST(PageBufferTest, LargeBuffersStartOnAHugePage) {
  EXPECT_FALSE(HugePageNote().empty());
  const size_t huge = HugePageBytes();
  if (huge == 0) GTEST_SKIP() << "huge pages: " << HugePageNote();
  EXPECT_EQ(huge & (huge - 1), 0u);
  const size_t size = 4 * huge + 3 * kPageSize + 1;
  const size_t before = RssBytes();
  Result<PageBuffer> b = PageBuffer::Allocate(size, "test");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->size(), RoundUpToPage(size));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data()) % huge, 0u);
  EXPECT_GE(RssBytes() - before + (size_t{256} << 10), b->size());
  bool zero = true;
  for (size_t i = 0; i < b->size(); i += 4093) zero &= b->data()[i] == 0;
  EXPECT_TRUE(zero);
  b->data()[b->size() - 1] = 1;
  b->Reset();
  const size_t small = RoundUpToPage(huge / 2 + 1);  // below the threshold: base pages only
  Result<PageBuffer> c = PageBuffer::Allocate(small, "test");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->size(), small);
}

TEST(PageBufferTest, MovesOwnership) {
  Result<PageBuffer> b = PageBuffer::Allocate(size_t{9} << 20, "test");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  PageBuffer moved = std::move(*b);
  EXPECT_TRUE(b->empty());
  EXPECT_EQ(moved.size(), size_t{9} << 20);
}

}  // namespace
}  // namespace dcomp
