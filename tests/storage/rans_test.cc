// Every rANS decoder this CPU has (portable, AVX2, AVX-512 VBMI2, NEON) decodes exactly what the
// portable decoder decodes: the same bytes from valid streams, the same verdict and bytes from
// damaged ones, DATA_LOSS and no out-of-bounds access for truncated ones. Decoders the CPU lacks
// are skipped (the aarch64 build runs this under qemu-aarch64 for NEON).
#include "storage/rans.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace dcomp::storage {
namespace {

// Bytes distributed like int8 weight codes: a rounded Gaussian of standard deviation `sigma`.
std::vector<uint8_t> GaussianCodes(size_t n, double sigma, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0, sigma);
  std::vector<uint8_t> v(n);
  for (auto& b : v) {
    const double x = std::clamp(std::round(d(rng)), -127.0, 127.0);
    b = static_cast<uint8_t>(static_cast<int8_t>(x));
  }
  return v;
}

std::vector<uint8_t> Encode(const std::vector<uint8_t>& in) {
  std::vector<uint8_t> enc;
  RansEncode(in, &enc);
  return enc;
}

class RansDecoderTest : public ::testing::TestWithParam<RansDecoder> {
 protected:
  void SetUp() override {
    const auto have = AvailableRansDecoders();
    if (std::find(have.begin(), have.end(), GetParam()) == have.end()) {
      GTEST_SKIP() << RansDecoderName(GetParam()) << " is not available on this CPU/build";
    }
  }
  void ExpectRoundTrip(const std::vector<uint8_t>& in) {
    const auto enc = Encode(in);
    std::vector<uint8_t> out(in.size(), 0xAA);
    ASSERT_TRUE(RansDecodeWith(GetParam(), enc, out).ok()) << in.size();
    EXPECT_EQ(out, in) << in.size();
  }
  // The decoder under test and the portable one give the same verdict and the same bytes.
  void ExpectSameAsPortable(std::span<const uint8_t> stored, size_t n, const std::string& what) {
    std::vector<uint8_t> a(n, 1), b(n, 2);
    const Status sa = RansDecodeWith(GetParam(), stored, a);
    const Status sb = RansDecodePortable(stored, b);
    ASSERT_EQ(sa.ok(), sb.ok()) << what << ": " << sa.message() << " / " << sb.message();
    if (sa.ok()) {
      EXPECT_EQ(a, b) << what;
    } else {
      EXPECT_EQ(sa.code(), StatusCode::kDataLoss) << what << ": " << sa.message();
    }
  }
};

TEST_P(RansDecoderTest, RoundTripsEverySizeAroundTheGroupSize) {
  for (size_t n = 0; n <= 300; ++n) ExpectRoundTrip(GaussianCodes(n, 20, n));
  for (size_t n : {1023, 1024, 1025, 4095, 65536, 65537, 131072 + 17}) {
    ExpectRoundTrip(GaussianCodes(n, 25, n));
  }
}

TEST_P(RansDecoderTest, RoundTripsExtremeDistributions) {
  ExpectRoundTrip(std::vector<uint8_t>(100000, 7));  // single symbol
  std::vector<uint8_t> two(100000, 0);
  two[5000] = 255;  // one very rare symbol: long runs without refills, then a burst
  ExpectRoundTrip(two);
  std::vector<uint8_t> all(256 * 300);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint8_t>(i * 131 + i / 256);
  ExpectRoundTrip(all);  // uniform: nearly every state refills on every symbol
  std::mt19937 rng(3);
  std::vector<uint8_t> random(123457);
  for (auto& b : random) b = static_cast<uint8_t>(rng());
  ExpectRoundTrip(random);
  ExpectRoundTrip(GaussianCodes(300000, 0.3, 9));  // very skewed
  for (double sigma : {2.0, 8.0, 40.0}) ExpectRoundTrip(GaussianCodes(200003, sigma, 17));
}

TEST_P(RansDecoderTest, TruncatedStreamsFailLikeThePortableDecoder) {
  const auto v = GaussianCodes(40000, 20, 11);
  const auto enc = Encode(v);
  for (size_t cut = 0; cut < enc.size(); cut += 251) {
    ExpectSameAsPortable(std::span<const uint8_t>(enc.data(), cut), v.size(),
                         "cut at " + std::to_string(cut));
  }
  // Wrong output sizes.
  for (size_t n : {v.size() - 1, v.size() + 1, v.size() + 32, v.size() - 32}) {
    ExpectSameAsPortable(enc, n, "output of " + std::to_string(n));
  }
}

TEST_P(RansDecoderTest, DamagedStreamsDecodeLikeThePortableDecoder) {
  const auto v = GaussianCodes(30000, 15, 13);
  const auto enc = Encode(v);
  std::mt19937 rng(4);
  for (int k = 0; k < 500; ++k) {
    auto bad = enc;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) {
      bad[rng() % bad.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
    }
    ExpectSameAsPortable(bad, v.size(), "damage " + std::to_string(k));
  }
  // Random bytes behind a valid tag.
  for (int k = 0; k < 200; ++k) {
    std::vector<uint8_t> junk(64 + rng() % 4096);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    junk[0] = 1;
    ExpectSameAsPortable(junk, rng() % 5000, "junk " + std::to_string(k));
  }
}

INSTANTIATE_TEST_SUITE_P(Decoders, RansDecoderTest,
                         ::testing::Values(RansDecoder::kPortable, RansDecoder::kAvx2,
                                           RansDecoder::kAvx512Vbmi2, RansDecoder::kNeon),
                         [](const auto& p) { return std::string(RansDecoderName(p.param)); });

TEST(RansDecoderSelection, PicksAnAvailableDecoderAndSaysWhich) {
  const auto have = AvailableRansDecoders();
  ASSERT_FALSE(have.empty());
  EXPECT_EQ(have.front(), RansDecoder::kPortable);
  EXPECT_NE(std::find(have.begin(), have.end(), SelectedRansDecoder()), have.end());
  EXPECT_NE(RansDecoderNote().find(RansDecoderName()), std::string::npos);
  EXPECT_NE(RansDecoderNote().find("cpu:"), std::string::npos);
}

}  // namespace
}  // namespace dcomp::storage
