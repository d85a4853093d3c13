// The row-scale grid: its values are the f32 nearest 2^(n/32), rounding picks the nearest one,
// and a reader codes a tensor's scales in one byte only when every one is exactly on the grid and
// within a byte's codes of the smallest, decoding each to the same float.
#include "base/row_scales.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace dcomp {
namespace {

TEST(RowScalesTest, GridValuesAreTheNearestFloatsToPowersOfTwo) {
  for (int32_t n = -40 * kScaleGridSteps; n <= 40 * kScaleGridSteps; ++n) {
    const long double exact = std::exp2(static_cast<long double>(n) / kScaleGridSteps);
    const float v = ScaleGridValue(n);
    const float below = std::nextafter(v, 0.0f), above = std::nextafter(v, 1e30f);
    EXPECT_LE(std::fabs(v - exact), std::fabs(below - exact)) << n;
    EXPECT_LE(std::fabs(v - exact), std::fabs(above - exact)) << n;
    EXPECT_EQ(ScaleGridIndex(v), n);
    if (n > -40 * kScaleGridSteps) {
      EXPECT_LT(ScaleGridValue(n - 1), v);
    }
  }
  EXPECT_EQ(ScaleGridValue(0), 1.0f);
  EXPECT_EQ(ScaleGridValue(-kScaleGridSteps), 0.5f);
  EXPECT_EQ(ScaleGridValue(kMinScaleGridIndex), std::numeric_limits<float>::min());
}

TEST(RowScalesTest, RoundingPicksTheNearestGridValue) {
  for (float s : {1e-7f, 3.3e-4f, 0.0123f, 0.5f, 0.99f, 1.0f, 1.7f, 1234.5f}) {
    const float g = RoundScaleToGrid(s);
    const int32_t n = ScaleGridIndex(g);
    ASSERT_NE(n, kNoScaleGridIndex) << s;
    EXPECT_LE(std::fabs(g - s), std::fabs(ScaleGridValue(n - 1) - s)) << s;
    EXPECT_LE(std::fabs(g - s), std::fabs(ScaleGridValue(n + 1) - s)) << s;
    EXPECT_LT(std::fabs(g - s) / s, 0.011f) << s;  // half a step of 2^(1/32)
  }
  EXPECT_EQ(RoundScaleToGrid(0.0f), 0.0f);
  EXPECT_EQ(RoundScaleToGrid(-1.0f), 0.0f);
  EXPECT_EQ(ScaleGridIndex(1.0001f), kNoScaleGridIndex);
  EXPECT_EQ(ScaleGridIndex(std::numeric_limits<float>::denorm_min()), kNoScaleGridIndex);
  EXPECT_EQ(ScaleGridIndex(std::numeric_limits<float>::infinity()), kNoScaleGridIndex);
}

TEST(RowScalesTest, CodedOnlyWhenEveryScaleIsOnTheGridWithinAByte) {
  std::vector<float> s;
  for (int32_t k = 0; k < 254; k += 3) s.push_back(ScaleGridValue(-300 + k));
  s.push_back(0.0f);  // an all-zero row
  s.push_back(ScaleGridValue(-300 + 254));
  const RowScales r = MakeRowScales(s);
  ASSERT_TRUE(r.coded());
  EXPECT_EQ(r.bytes(), s.size());
  EXPECT_EQ(RowScaleBytesPerRow(s), 1u);
  std::vector<float> back(s.size());
  r.Expand(0, s.size(), back.data());
  for (size_t i = 0; i < s.size(); ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(back[i]), std::bit_cast<uint32_t>(s[i])) << i;
    EXPECT_EQ(r[i], s[i]);
  }
  auto kept_f32 = [](std::vector<float> v, const char* why) {
    const RowScales k = MakeRowScales(v);
    EXPECT_FALSE(k.coded()) << why;
    EXPECT_EQ(RowScaleBytesPerRow(v), sizeof(float)) << why;
    EXPECT_EQ(k.f32, v) << why;
  };
  std::vector<float> wide = s;
  wide.push_back(ScaleGridValue(-300 + 255));  // 255 steps: code 255 means zero
  kept_f32(wide, "span");
  std::vector<float> off = s;
  off[7] = std::nextafter(off[7], 1.0f);
  kept_f32(off, "off the grid");
  std::vector<float> neg = s;
  neg[3] = -0.0f;  // would decode as +0
  kept_f32(neg, "negative zero");
  EXPECT_TRUE(MakeRowScales(std::vector<float>{0.0f, 0.0f}).coded());
}

}  // namespace
}  // namespace dcomp
