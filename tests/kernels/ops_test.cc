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

TEST(OpsTest, HadamardBlockIsTheLargestPowerOfTwoDividingTheWidth) {
  EXPECT_EQ(HadamardBlock(192), 64u);
  EXPECT_EQ(HadamardBlock(512), 512u);
  EXPECT_EQ(HadamardBlock(5632), 512u);  // TinyLlama's FFN: 11 blocks
  EXPECT_EQ(HadamardBlock(2048), 2048u);
  EXPECT_EQ(HadamardBlock(7), 1u);
}

// H[i][j] = (-1)^popcount(i & j): the Sylvester construction, from its definition.
float Sylvester(size_t i, size_t j) { return __builtin_popcountll(i & j) % 2 == 0 ? 1.0f : -1.0f; }

TEST(OpsTest, HadamardTransformIsTheSylvesterMatrixOnEachBlock) {
  for (size_t n : {1u, 2u, 8u, 12u, 192u, 320u}) {
    const size_t b = HadamardBlock(n);
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>((i * 37 + 11) % 23) - 11.0f;
    std::vector<float> want(n, 0.0f);
    for (size_t o = 0; o < n; o += b) {
      for (size_t i = 0; i < b; ++i) {
        for (size_t j = 0; j < b; ++j) want[o + i] += Sylvester(i, j) * x[o + j];
      }
    }
    std::vector<float> y = x;
    HadamardTransform(y.data(), n);
    EXPECT_EQ(y, want) << "n = " << n;  // small integers: exact
    // H H = b I: twice is the input times the block, exactly.
    HadamardTransform(y.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(y[i], x[i] * static_cast<float>(b)) << n << " " << i;
  }
}

TEST(OpsTest, HadamardTransformKeepsAProductWhenTheMatrixIsRotated) {
  // W x = (W H / b)(H x): the identity the packer's rotated matrices rely on.
  const size_t n = 96, rows = 5, b = HadamardBlock(n);
  std::vector<float> x(n), w(rows * n);
  for (size_t i = 0; i < n; ++i) x[i] = std::sin(0.37f * static_cast<float>(i)) * 3.0f;
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::cos(0.11f * static_cast<float>(i * i % 97));
  std::vector<float> hx = x;
  HadamardTransform(hx.data(), n);
  for (size_t r = 0; r < rows; ++r) {
    std::vector<float> wr(w.begin() + static_cast<ptrdiff_t>(r * n),
                          w.begin() + static_cast<ptrdiff_t>((r + 1) * n));
    const double plain = DotF32(wr.data(), x.data(), n);
    HadamardTransform(wr.data(), n);
    for (float& v : wr) v /= static_cast<float>(b);
    EXPECT_NEAR(DotF32(wr.data(), hx.data(), n), plain, 1e-4 * (1 + std::fabs(plain)));
  }
}

}  // namespace
}  // namespace dcomp::kernels
