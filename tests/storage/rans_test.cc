// Every rANS decoder this CPU has (portable, AVX2, AVX-512 VBMI2, NEON) decodes exactly what the
// portable decoder decodes: the same bytes from valid streams, the same verdict and bytes from
// damaged ones, DATA_LOSS and no out-of-bounds access for truncated ones. Decoders the CPU lacks
// are skipped (the aarch64 build runs this under qemu-aarch64 for NEON). Every stream layout: 2
// and 3, which the encoder writes (3 codes the frequency table for sparse alphabets), and 1, which
// older files hold.
#include "storage/rans.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "base/packed_codes.h"
#include "tests/util/weight_codes.h"

namespace dcomp::storage {
namespace {

using testing::GaussianCodes;
using testing::LevelCodes;

std::vector<uint8_t> Encode(const std::vector<uint8_t>& in, int layout) {
  std::vector<uint8_t> enc;
  RansEncodeLayout(in, layout, &enc);
  return enc;
}

constexpr int kLayouts[] = {1, 2, 3};

class RansDecoderTest : public ::testing::TestWithParam<RansDecoder> {
 protected:
  void SetUp() override {
    const auto have = AvailableRansDecoders();
    if (std::find(have.begin(), have.end(), GetParam()) == have.end()) {
      GTEST_SKIP() << RansDecoderName(GetParam()) << " is not available on this CPU/build";
    }
  }
  void ExpectRoundTrip(const std::vector<uint8_t>& in) {
    for (int layout : kLayouts) {
      const auto enc = Encode(in, layout);
      std::vector<uint8_t> out(in.size(), 0xAA);
      ASSERT_TRUE(RansDecodeWith(GetParam(), enc, out).ok()) << in.size() << " layout " << layout;
      EXPECT_EQ(out, in) << in.size() << " layout " << layout;
    }
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

// The level check of each decoder's instruction set gives the portable table's verdict: values of
// a table's levels with, at a random place, a non-level (or none), every length to 300.
TEST_P(RansDecoderTest, LevelCheckAgreesWithThePortableOne) {
  std::mt19937 rng(17);
  for (int bits = kMinPackedBits; bits <= kMaxPackedBits; ++bits) {
    const std::vector<uint8_t> mag = SinhLevels(bits, 2.0);
    const CodeLevels l = MakeCodeLevels(bits, mag);
    std::vector<int> outside = {-128};  // values that are not levels
    for (int v = -127; v <= 127; ++v) {
      if (l.u_of[static_cast<uint8_t>(v)] < 0) outside.push_back(v);
    }
    for (size_t n = 0; n <= 300; ++n) {
      for (int trial = 0; trial < 3; ++trial) {
        std::vector<int8_t> q(n);
        for (int8_t& v : q) {
          const uint8_t m = mag[rng() % mag.size()];
          v = static_cast<int8_t>(rng() % 2 ? -m : m);
        }
        if (n > 0 && trial > 0) q[rng() % n] = static_cast<int8_t>(outside[rng() % outside.size()]);
        ASSERT_EQ(ValuesAreLevelsWith(GetParam(), q.data(), n, l), CodesFit(q.data(), n, bits, &l))
            << RansDecoderName(GetParam()) << ", " << bits << " bits, n " << n;
      }
    }
  }
}

TEST_P(RansDecoderTest, RoundTripsEverySizeAroundTheGroupSize) {
  for (size_t n = 0; n <= 300; ++n) ExpectRoundTrip(GaussianCodes(n, 20, n));
  for (size_t n : {1023, 1024, 1025, 4095, 65536, 65537, 131072 + 17}) {
    ExpectRoundTrip(GaussianCodes(n, 25, n));
  }
}

TEST_P(RansDecoderTest, RoundTripsExtremeDistributions) {
  for (const auto& v : testing::ExtremeCodeSets()) ExpectRoundTrip(v);
  for (double sigma : {2.0, 8.0, 40.0}) ExpectRoundTrip(GaussianCodes(200003, sigma, 17));
  for (int bits : {4, 6, 7}) ExpectRoundTrip(LevelCodes(100003, LevelTable(bits, 2.0), 19));
}

TEST_P(RansDecoderTest, TruncatedStreamsFailLikeThePortableDecoder) {
  const auto v = LevelCodes(40000, LevelTable(6, 2.0), 11);
  for (int layout : kLayouts) {
    const auto enc = Encode(v, layout);
    const std::string l = "layout " + std::to_string(layout) + ": ";
    for (size_t cut = 0; cut < enc.size(); cut += 251) {
      ExpectSameAsPortable(std::span<const uint8_t>(enc.data(), cut), v.size(),
                           l + "cut at " + std::to_string(cut));
    }
    // Wrong output sizes.
    for (size_t n : {v.size() - 1, v.size() + 1, v.size() + 32, v.size() - 32, v.size() + 64}) {
      ExpectSameAsPortable(enc, n, l + "output of " + std::to_string(n));
    }
  }
}

// Layout 2 keeps each state's last two symbols in its final state: streams shorter than that (no
// coded symbols at all) or ending mid-lane round-trip, and a final state that is not 2^16 plus
// the held symbols is refused. (A held symbol of a short stream is stored as it is: like every
// stored byte, the block's CRC32C covers it.)
TEST_P(RansDecoderTest, SymbolsHeldInTheFinalStatesAreChecked) {
  for (size_t n : {0, 1, 63, 64, 65, 127, 128, 129, 191, 192, 193, 255, 256, 257}) {
    ExpectRoundTrip(GaussianCodes(n, 30, n + 7));
  }
  const auto v = GaussianCodes(100, 20, 3);  // all held: the stream ends with the 64 states
  const auto enc = Encode(v, 2);
  for (size_t lane = 0; lane < 64; lane += 9) {
    auto bad = enc;
    bad[enc.size() - 256 + 4 * lane + 2] ^= 0x02;  // 2^17: the high half must be exactly 1
    std::vector<uint8_t> out(v.size());
    const Status st = RansDecodeWith(GetParam(), bad, out);
    EXPECT_EQ(st.code(), StatusCode::kDataLoss) << lane << ": " << st.message();
    if (lane < 100 - 64) continue;  // lanes 36.. hold one symbol: their byte 1 must be zero
    bad = enc;
    bad[enc.size() - 256 + 4 * lane + 1] ^= 0x01;
    EXPECT_EQ(RansDecodeWith(GetParam(), bad, out).code(), StatusCode::kDataLoss) << lane;
  }
}

TEST_P(RansDecoderTest, DamagedStreamsDecodeLikeThePortableDecoder) {
  const auto v = GaussianCodes(30000, 15, 13);
  const auto levels = LevelCodes(30000, LevelTable(6, 2.0), 13);
  const std::vector<uint8_t> enc[] = {Encode(v, 1), Encode(v, 2), Encode(levels, 3)};
  std::mt19937 rng(4);
  for (int k = 0; k < 600; ++k) {
    auto bad = enc[k % 3];
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
    junk[0] = static_cast<uint8_t>(1 + k % 3);
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
