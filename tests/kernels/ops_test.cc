#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace dcomp::kernels {
namespace {

TEST(OpsTest, RmsNorm) {
  std::vector<float> x = {1, 2, 3, 4}, w = {1, 1, 2, 0.5f}, out(4);
  RmsNorm(x.data(), w.data(), 4, 1e-5f, out.data());
  const double inv = 1.0 / std::sqrt((1 + 4 + 9 + 16) / 4.0 + 1e-5);
  EXPECT_NEAR(out[0], 1 * inv, 1e-6);
  EXPECT_NEAR(out[2], 6 * inv, 1e-6);
  EXPECT_NEAR(out[3], 2 * inv, 1e-6);
}

TEST(OpsTest, SoftmaxSumsToOneAndIsStable) {
  std::vector<float> x = {1000.0f, 1001.0f, 999.0f};
  Softmax(x.data(), 3);
  EXPECT_NEAR(x[0] + x[1] + x[2], 1.0, 1e-6);
  EXPECT_GT(x[1], x[0]);
  EXPECT_NEAR(x[1] / x[0], std::exp(1.0), 1e-4);
}

TEST(OpsTest, RopeStylesRotateTheirPairs) {
  const float c = std::cos(0.5f), s = std::sin(0.5f);
  // head_dim 4: pair 0 at angle 0.5, pair 1 at angle 0 (cos 1, sin 0).
  const float cs[4] = {c, s, 1.0f, 0.0f};
  std::vector<float> a = {1, 0, 2, 3};
  RopeInterleaved(a.data(), 4, cs);
  EXPECT_NEAR(a[0], c, 1e-7);
  EXPECT_NEAR(a[1], s, 1e-7);
  EXPECT_EQ(a[2], 2);
  EXPECT_EQ(a[3], 3);
  std::vector<float> b = {1, 2, 0, 3};  // NeoX pairs (0,2) and (1,3)
  RopeNeox(b.data(), 4, cs);
  EXPECT_NEAR(b[0], c, 1e-7);
  EXPECT_NEAR(b[2], s, 1e-7);
  EXPECT_EQ(b[1], 2);
  EXPECT_EQ(b[3], 3);
}

TEST(OpsTest, SiluMulDotAxpy) {
  std::vector<float> g = {0.0f, 1.0f}, u = {5.0f, 2.0f};
  SiluMul(g.data(), u.data(), 2);
  EXPECT_EQ(g[0], 0.0f);
  EXPECT_NEAR(g[1], 2.0 / (1.0 + std::exp(-1.0)), 1e-6);
  std::vector<float> a = {1, 2, 3}, b = {4, 5, 6};
  EXPECT_EQ(DotF32(a.data(), b.data(), 3), 32.0f);
  AxpyF32(2.0f, a.data(), b.data(), 3);
  EXPECT_EQ(b, (std::vector<float>{6, 9, 12}));
}

}  // namespace
}  // namespace dcomp::kernels
