// The daemon's latency window: nearest-rank quantiles over the last N samples.
#include "daemon/latency_window.h"

#include <gtest/gtest.h>

namespace dcomp::server {
namespace {

TEST(LatencyWindowTest, NearestRankQuantiles) {
  LatencyWindow w(100);
  EXPECT_EQ(w.Get().count, 0u);
  for (int i = 1; i <= 100; ++i) w.Add(i);
  auto s = w.Get();
  EXPECT_EQ(s.p50, 50);
  EXPECT_EQ(s.p95, 95);
  EXPECT_EQ(s.p99, 99);
  EXPECT_EQ(s.count, 100u);
  EXPECT_EQ(s.sum, 5050);
  for (int i = 0; i < 100; ++i) w.Add(1000);  // the window keeps the last 100
  s = w.Get();
  EXPECT_EQ(s.p50, 1000);
  EXPECT_EQ(s.count, 200u);
}

}  // namespace
}  // namespace dcomp::server
