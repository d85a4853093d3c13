#include "base/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace dcomp {
namespace {

TEST(ThreadPoolTest, CoversEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 3, 16, 17, 1000, 4099}) {
      for (int64_t grain : {1, 4, 16}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        pool.ParallelFor(
            n,
            [&](int64_t b, int64_t e) {
              ASSERT_LE(b, e);
              for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
            },
            grain);
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << i;
      }
    }
  }
}

TEST(ThreadPoolTest, ManySmallLoopsAndIdleSleep) {
  ThreadPool pool(3);
  std::atomic<int64_t> sum{0};
  for (int k = 0; k < 2000; ++k) {
    pool.ParallelFor(8, [&](int64_t b, int64_t e) { sum.fetch_add(e - b); });
  }
  EXPECT_EQ(sum.load(), 16000);
  // Workers fall asleep after spinning; the next loop must wake them.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  pool.ParallelFor(100, [&](int64_t b, int64_t e) { sum.fetch_add(e - b); });
  EXPECT_EQ(sum.load(), 16100);
}

TEST(ThreadPoolTest, ChunksRespectGrain) {
  ThreadPool pool(2);
  pool.ParallelFor(
      64,
      [&](int64_t b, int64_t e) {
        EXPECT_EQ(b % 16, 0);
        EXPECT_TRUE(e == 64 || (e - b) % 16 == 0);
      },
      16);
}

}  // namespace
}  // namespace dcomp
